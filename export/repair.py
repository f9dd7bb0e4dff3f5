"""Repair: which ops a quantized file keeps at a higher precision, chosen by measured effect.

An op's own error (the isolated per-layer report, `keras_unet.export.quantization`) does not
say what it does to the output: MobileNetV3's stem is not among the worst rows, yet keeping
it in float gained 1.2-1.8 points of agreement, while a repair ranked by SQNR kept 21 ONNX
nodes in float for gains within the noise. So the report only shortlists; the choice is made
on the whole file, as AIMET's AMP and the LiteRT quantizer's auto-quant recipes do:

1. **Candidates.** The stem (`Int8Session.leading_nodes`), the head
   (`Int8Session.trailing_nodes`: the classifier, what follows it and the convolution it
   reads; its error moves pixels across class boundaries, which no row of the report
   shows), up to `MAX_SEGMENTS` contiguous stretches of the model in its layer order
   (`Int8Session.layer_order`; int8 loss spread over many layers, as in MobileNetV3's
   encoder, shows in no single row but in the stretch that holds it) and the `SHORTLIST`
   worst rows of the report, each with what must change precision with it
   (`Int8Session.expand`), each at precision the caller allows (`precisions`: `"float"`,
   or `"int16"`, 16-bit activations with 8-bit weights, for an integer-only file;
   `keras_unet.export.int8._precisions`).
2. **Measured end to end.** Each candidate is added to what is kept, the whole file is
   quantized and verified on the verification images: its *gain* is the agreement over the
   current file's, its *cost* the latency over the current file's, timed here
   (`Int8Session.time_ms`), at least `MIN_COST_SHARE` of it (smaller differences are timing
   noise). A session that does not time files is costed by a model instead: each op kept in
   float costs one unit, each op at int16 `INT16_UNITS` (it stays on an integer
   accelerator, at about half the int8 rate).
3. **Greedy by gain per cost.** Candidates that gain are added in order of gain per cost, the
   file verified after each addition; an addition that does not raise agreement is undone.
   The search stops once a file clears the target with its standard error (the caller's
   `cleared`). When a round's shortlist is spent, the next round reports again with what is
   kept (keeping one op changes what the next sees) and shortlists anew, up to `MAX_ROUNDS`.
   Never more than `limit` ops are kept.
4. **Trimmed back.** A file that clears the target with a group of at least `MIN_TRIM` ops
   kept (a stretch, mostly) is tried again with half of that group back at int8, then
   half of what is left, while the file still clears it (at most `TRIM_TRIALS` files):
   a stretch holds the loss, not every op of it needs the higher precision. Each trial is
   a `Candidate` with `trimmed` set; `added` marks the trims kept.

Every file built is recorded by the caller (`measure`), so the choice among the files that
clear the target (`keras_unet.export.int8`: the fastest one measured) sees them all.
Why: see docs/notes/2026-12-06-sensitivity-driven-repair.md and, for the stretches,
docs/notes/2026-12-07-repair-target-and-segments.md, and for the trim
docs/notes/2026-12-08-trim-and-int16-writer.md.

Example:
```python
from keras_unet.export.repair import Kept, search

candidates = search(session, measure, images, "percentile", rows, start,
                    cleared, limit=24, precisions=("int16", "float"))
[c.to_dict() for c in candidates]
```
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Optional

# Groups measured per round: each costs a quantization and a verification.
SHORTLIST = 6
# Contiguous stretches of the model measured in the first round, beside the stem, the head
# and the worst rows: each holds at most half the ops repair may keep (two fit), and there
# are at most MAX_SEGMENTS of them (each costs a quantization and a verification); a model
# of fewer than MIN_SEGMENTS such stretches has none (its rows are candidates enough).
MAX_SEGMENTS = 12
MIN_SEGMENTS = 3
MAX_ROUNDS = 2
# Trimming what cleared the target: groups of at least MIN_TRIM ops are halved, at most
# TRIM_TRIALS files in all (each costs a quantization and a verification).
MIN_TRIM = 4
TRIM_TRIALS = 6
# Latency differences under this share of the file's own latency are timing noise.
MIN_COST_SHARE = 0.02
# Cost-model units of an op kept at int16 (an op kept in float costs 1).
INT16_UNITS = 0.5
PRECISIONS = ("int16", "float")


@dataclasses.dataclass(frozen=True)
class Kept:
    """The ops of a file kept above int8: in `float`, and at `int16` activations."""

    float: tuple = ()
    int16: tuple = ()

    def plus(self, nodes: list, precision: str) -> "Kept":
        """These ops and `nodes` at `precision` (float wins over int16 for an op in both)."""
        if precision == "float":
            floats = tuple(dict.fromkeys(self.float + tuple(nodes)))
            return Kept(floats, tuple(n for n in self.int16 if n not in floats))
        added = tuple(n for n in nodes if n not in self.float)
        return Kept(self.float, tuple(dict.fromkeys(self.int16 + added)))

    @property
    def nodes(self) -> tuple:
        return self.float + self.int16

    def __len__(self) -> int:
        return len(self.float) + len(self.int16)


@dataclasses.dataclass
class Candidate:
    """One candidate measured by the search.

    Attributes:
        nodes: the format's node names it changes.
        names: their Keras layer names (else the node names).
        precision: `"int16"` or `"float"`.
        agreement: the whole file's verified agreement with it added (None: the runtime
            refused the file, `error` says why).
        gain: `agreement` minus the file it was added to.
        cost: latency over that file in ms (`cost_unit` `"ms"`), or cost-model units
            (`"units"`).
        added: whether the greedy step kept it.
        step: the order of the step that kept it (1 first; None: not kept). Candidates that
            gained nothing alone may be kept together in one step (a file the runtime refused
            alone can load with its neighbours kept too): they share a step.
        step_gain: the agreement that step added to the file kept before it; the summary
            reports this, not the candidate's gain alone (`gain`), which may be negative.
        trimmed: a trial of `nodes` back at int8 in a file that cleared the target (its
            `gain` and `cost` are the change that brings, mostly negative); `added`: the
            file still cleared it, and the ops stayed at int8.
    """

    nodes: list
    names: list
    precision: str
    agreement: Optional[float] = None
    gain: Optional[float] = None
    cost: Optional[float] = None
    cost_unit: str = "ms"
    added: bool = False
    error: Optional[str] = None
    step: Optional[int] = None
    step_gain: Optional[float] = None
    trimmed: bool = False

    @property
    def ratio(self) -> float:
        return (self.gain or 0.0) / max(self.cost or 0.0, 1e-9)

    def to_dict(self) -> dict:
        return {key: value for key, value in dataclasses.asdict(self).items()
                if key != "nodes"}


def search(session: Any, measure: Callable[[Kept], Any], images: Any, variant: str,
           rows: Optional[list], start: Any, cleared: Callable[[Any], bool], limit: int,
           precisions: tuple, names: Callable[[list], list] = list) -> list:
    """Choose what to keep above int8, greedily by measured gain per cost (module docstring).

    Args:
        session: the format's `Int8Session`.
        measure: `(Kept) -> entry or None`: quantize with those ops kept, verify, record the
            attempt; an entry has `.agreement`, `.report` and `.quantized` (None: refused).
        images: the verification images (for the per-layer report of later rounds).
        variant: the calibration variant.
        rows: the per-layer report of the all-int8 file (None: nothing to shortlist from).
        start: the all-int8 entry the search starts from (None when it did not load).
        cleared: `(report) -> bool`, whether a file clears the target with its error.
        limit: most ops kept.
        precisions: the precisions a candidate may take, from `PRECISIONS`.
        names: node names -> Keras layer names, for the record.

    Returns:
        Every `Candidate` measured, in order (`added` marks those the greedy step kept). The
        files themselves reach the caller through `measure`, which records each one.
    """
    time_ms = _timed_once(session)
    kept = Kept()
    current_agreement = start.agreement if start is not None else 0.0
    current_ms = time_ms(start.quantized) if start is not None else None
    timed = current_ms is not None
    candidates: list = []
    for round_index in range(MAX_ROUNDS):
        if round_index:
            rows = session.report(images, list(kept.float), variant)
        groups = _shortlist(session, rows, kept, ends=round_index == 0, limit=limit)
        measured = []
        for nodes in groups:
            for precision in precisions:
                trial = kept.plus(nodes, precision)
                if len(trial) > limit or trial == kept:
                    continue
                candidate = Candidate(list(nodes), names(list(nodes)), precision)
                entry = _measured(candidate, trial, measure, candidates, current_agreement)
                if entry is None:
                    continue
                candidate.cost, candidate.cost_unit = _cost(time_ms, entry, kept, trial,
                                                            current_ms)
                measured.append((candidate, tuple(nodes), precision))
        added_groups: set = set()  # the groups kept this round
        for candidate, nodes, precision in sorted(
                (m for m in measured if (m[0].gain or 0.0) > 0), key=lambda m: -m[0].ratio):
            trial = kept.plus(list(nodes), precision)
            if nodes in added_groups or len(trial) > limit:
                continue
            entry = measure(trial)
            if entry is None or entry.agreement <= current_agreement:
                continue  # it helped alone, not on top of what is kept now
            _keep([candidate], entry.agreement - current_agreement, candidates)
            kept, current_agreement = trial, entry.agreement
            added_groups.add(nodes)
            if timed:
                current_ms = time_ms(entry.quantized)
            if cleared(entry.report):
                return _trim(session, measure, kept, entry, cleared, candidates, time_ms, names)
        if not added_groups:
            # Nothing gained on its own; a file the runtime refused may load with its
            # neighbours kept too (XNNPack refuses an int8 op between float ones outside its
            # scale limits): keep the groups one after another, worst first, as they load.
            kept, current_agreement, done = _refused_together(
                candidates, measure, kept, current_agreement, cleared, limit)
            if done:
                return candidates
        if rows is None or not measured:
            break
    return candidates


def _measured(candidate: Candidate, trial: Kept, measure: Callable, candidates: list,
              agreement: float) -> Any:
    """Record `candidate`, measure the file with `trial` kept, and set the candidate's
    agreement and its gain over `agreement`; the entry, or None when the runtime refused it."""
    candidates.append(candidate)
    entry = measure(trial)
    if entry is None:
        candidate.error = "the runtime refused the file"
        return None
    candidate.agreement = entry.agreement
    candidate.gain = round(entry.agreement - agreement, 6)
    return entry


def _trim(session: Any, measure: Callable, kept: Kept, entry: Any, cleared: Callable,
          candidates: list, time_ms: Callable, names: Callable[[list], list] = list) -> list:
    """Put halves of the large kept groups back at int8 while the file still clears the
    target (step 4 of the module docstring); returns `candidates` with the trials added.

    A half goes back with what must change precision with it: the ops left kept are expanded
    again (`Int8Session.expand`), so an op reading a kept op's output stays kept."""
    trials = TRIM_TRIALS
    current_ms = time_ms(entry.quantized)
    for group in [c for c in candidates if c.added and len(c.nodes) >= MIN_TRIM]:
        left = [node for node in group.nodes if node in kept.nodes]
        while len(left) >= 2 and trials:
            half = len(left) // 2
            for back in (left[half:], left[:half]):
                if not trials:
                    break
                trial = _without(session, kept, back, group.precision)
                if trial == kept:
                    continue
                trials -= 1
                # What actually goes back: expanding the rest may keep some of `back`.
                gone = [node for node in kept.nodes if node not in trial.nodes]
                candidate = Candidate(gone, names(gone), group.precision, trimmed=True)
                trimmed = _measured(candidate, trial, measure, candidates, entry.agreement)
                if trimmed is None:
                    continue
                ms = time_ms(trimmed.quantized)
                if ms is not None and current_ms is not None:
                    candidate.cost = round(ms - current_ms, 4)
                else:
                    # The search's cost model (`_cost`): a float op 1 unit, an int16 op
                    # INT16_UNITS; here what the ops going back take off.
                    candidate.cost_unit = "units"
                    candidate.cost = float(len(trial.float) - len(kept.float) + INT16_UNITS
                                           * (len(trial.int16) - len(kept.int16)))
                if cleared(trimmed.report):
                    candidate.added = True
                    kept, entry, current_ms = trial, trimmed, ms
                    left = [node for node in left if node in kept.nodes]
                    break
            else:
                break  # neither half can go back: the rest of this group stays
    return candidates


def _without(session: Any, kept: Kept, back: list, precision: str) -> Kept:
    """`kept` with `back` returned to int8 at `precision`'s list, the rest expanded again."""
    own = kept.float if precision == "float" else kept.int16
    rest = [node for node in own if node not in back]
    again = tuple(dict.fromkeys(n for n in session.expand(rest) if n in own)) if rest else ()
    if precision == "float":
        return Kept(again, kept.int16)
    return Kept(kept.float, again)


def _refused_together(candidates: list, measure: Callable, kept: Kept, agreement: float,
                      cleared: Callable, limit: int) -> tuple:
    """Add the groups that gained nothing alone (refused files among them), cumulatively,
    keeping each file that loads and gains; returns `(kept, agreement, cleared)`."""
    trial = kept
    pending: list = []  # added to the trial since the last file kept
    for candidate in [c for c in candidates if not c.added and not (c.gain or 0) > 0]:
        trial = trial.plus(candidate.nodes, candidate.precision)
        if len(trial) > limit:
            break
        pending.append(candidate)
        entry = measure(trial)
        if entry is not None and entry.agreement > agreement:
            _keep(pending, entry.agreement - agreement, candidates)
            pending = []
            if cleared(entry.report):
                return trial, entry.agreement, True
            kept, agreement = trial, entry.agreement
    return kept, agreement, False


def _keep(together: list, gain: float, candidates: list) -> None:
    """Mark `together` as kept in one step that gained `gain`."""
    step = 1 + max((c.step for c in candidates if c.step is not None), default=0)
    for candidate in together:
        candidate.added, candidate.step, candidate.step_gain = True, step, round(gain, 6)


def _shortlist(session: Any, rows: Optional[list], kept: Kept, ends: bool, limit: int) -> list:
    """The stem, the head and the model's contiguous segments (first round), then the
    `SHORTLIST` worst rows' groups not yet kept."""
    from keras_unet.export.quantization.report import worst_nodes

    groups: list = []
    if ends:
        for nodes in (session.leading_nodes(), session.trailing_nodes()):
            group = tuple(node for node in nodes if node not in kept.float)
            if group and group not in groups:
                groups.append(group)
        for group in _segments(session, rows, kept, limit):
            if group not in groups:
                groups.append(group)
    wanted = len(groups) + SHORTLIST
    passed_over = list(kept.nodes)
    while rows and len(groups) < wanted:
        new = worst_nodes(rows, n=1, skip=passed_over)
        if not new:
            break
        passed_over += new
        group = tuple(node for node in session.expand(new) if node not in kept.float)
        if group and group not in groups:
            groups.append(group)
    return groups


def _segments(session: Any, rows: Optional[list], kept: Kept, limit: int) -> list:
    """Groups of the report's nodes, contiguous in the model's layer order (a row is placed at
    the first of its layers; `name` joins fused layers with "+"), each of at most `limit // 2`
    nodes (more when `MAX_SEGMENTS` would not cover the model), with what must change
    precision with it; none when the order or the report is unknown, or the model is smaller
    than `MIN_SEGMENTS` of them."""
    order = {name: index for index, name in enumerate(session.layer_order())}
    placed = []
    for row in rows or []:
        positions = [order[name] for name in row["name"].split("+") if name in order]
        if positions and row["node"] not in kept.float:
            placed.append((min(positions), row["node"]))
    nodes = list(dict.fromkeys(node for _, node in sorted(placed, key=lambda item: item[0])))
    size = max(limit // 2, 1)
    if len(nodes) < MIN_SEGMENTS * size:
        return []
    size = max(size, -(-len(nodes) // MAX_SEGMENTS))
    groups = []
    for start in range(0, len(nodes), size):
        group = tuple(n for n in session.expand(nodes[start:start + size]) if n not in kept.float)
        if group:
            groups.append(group)
    return groups


def _timed_once(session: Any) -> Callable[[bytes], Optional[float]]:
    """`session.time_ms`, remembered per file: the greedy step keeps a candidate's own file
    when it adds that candidate first, and timing it again would only add noise and time."""
    timings: dict = {}

    def time_ms(model_bytes: bytes) -> Optional[float]:
        key = hashlib.sha256(model_bytes).digest()
        if key not in timings:
            timings[key] = session.time_ms(model_bytes)
        return timings[key]

    return time_ms


def _cost(time_ms: Callable[[bytes], Optional[float]], entry: Any, kept: Kept, trial: Kept,
          current_ms: Optional[float]) -> tuple:
    """`(cost, unit)` of going from `kept` to `trial`: ms over the current file when the
    session times files, else cost-model units."""
    if current_ms is not None:
        ms = time_ms(entry.quantized)
        if ms is not None:
            return round(max(ms - current_ms, MIN_COST_SHARE * current_ms), 4), "ms"
    units = (len(set(trial.float) - set(kept.float))
             + INT16_UNITS * len(set(trial.int16) - set(kept.int16)))
    return float(units), "units"
