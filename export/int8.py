"""The int8 step of the export pipeline: quantize, verify, and repair what falls short.

Two thresholds: `agreement_floor` (default 0.95), below which nothing is written, and
`AGREEMENT_TARGET` (0.985, or the floor when higher), what repair aims for. A file *meets the
target* when its verified agreement does by `CONFIDENCE_Z` standard errors (the bootstrap
`agreement_se` over the verification images): 32 images carry noise of about 0.001, so a
file that meets the target by its verified figure alone may fall short of it on other images.
Why: see docs/notes/2026-11-28-int8-matrix-history.md (the margin, the stem, the held-out
images) and docs/notes/2026-11-27-percentile-ranges.md (the calibrations tried) and
docs/notes/2026-12-07-bias-correction.md (the corrected variant) and
docs/notes/2026-12-07-gptq-weight-rounding.md (the rounded one).

1. Quantize with each calibration the format has (TFLite: ranges clipped at the 99.99th
   percentile, then min/max; ONNX: the same two, then onnxruntime's Entropy), every
   layer in int8, and verify each on held-out images (`keras_unet.export.holdout`). When
   the best of them does not meet the target, it is tried again with each convolution's
   bias corrected for its int8 weights (`"percentile+bias"`,
   `keras_unet.export.quantization.bias_correction`), and with each convolution's weights
   rounded against the calibration images (`"percentile+gptq"`,
   `keras_unet.export.quantization.weight_rounding`), where the session can
   (`can_correct_biases`, `can_round_weights`); the rounded weights are also tried when
   the best meets the target but agrees below `ROUNDING_BELOW` (0.995). They cost no
   speed, so all are tried and the best is kept.
   `repair=False` tries only the first calibration, uncorrected.
2. Best still below the target: repair (`keras_unet.export.repair`) keeps ops at a higher
   precision, chosen by their measured effect on the whole file: the stem, the head and
   the worst rows of the per-layer report are candidates, each measured end to end at every
   precision it allows (float; for an integer-only file int16 activations, never float),
   then added greedily by agreement gained per latency cost until a file
   meets the target; never more than `MAX_KEPT` ops, past which the file has lost what
   int8 gains, and while the best calibration meets the floor never more than a third
   (`TARGET_SHARE`) of the model's quantized ops (the target is worth a few layers, not a
   float model). The isolated report stays as the diagnosis (`--report`).
3. The choice: of the files that meet the target, the fastest, timed in turn here (the
   all-int8 file, when it meets it, is chosen without timing: nothing is faster), and of
   those within timing noise of it the one with the fewest ops kept; without timings, the
   one with the fewest ops kept. Repair's trims (`keras_unet.export.repair`, step 4) give
   it files with fewer ops that still meet the target. Else the best calibration when it reaches
   the target by its verified figure alone (no margin); else the file with the fewest ops
   kept that does. Else, when the best calibration meets the floor: if no file beats it by
   more than `CONFIDENCE_Z` standard errors, it is written (kept ops would cost speed for
   noise); otherwise the best agreement found, less that noise, stands in for the target
   and the fastest file that reaches it is written (on 11-class CamVid, MobileNetV3-small's
   all-int8 file verified 0.955 and repair's best 0.981). Else the best of all. Below the
   floor the export is refused with the best agreement found, and the report of that best
   attempt. A file written short of the target carries a warning (`Int8Outcome.shortfall`).

A file the runtime cannot load is passed over, recorded with the runtime's message
(`Attempt.error`): XNNPack prepares an int8 op only within its scale limits, so a badly
calibrated ADD can make the all-int8 file unloadable while a file with that op in float
loads. Repair then starts from the first calibration; when nothing loads, the export fails
with the runtime's message and writes nothing.

Every attempt is recorded (`Attempt`), and every candidate repair measured
(`Int8Outcome.candidates`: its gain and cost); the chosen file's kept layers and calibration
go into the result, the metadata and the printed summary; so does what the kept layers cost
in speed, when the session can time a file (`time_ms`): the chosen file and the best
all-int8 one timed in turn on this machine (`Int8Outcome.latency_ms`, the metadata's
`int8.kept_float_latency_ms`).

The same step serves `quantize="int16x8"` (every activation 16-bit): its calibrations are
tried alike, and repair may keep ops in float unless the file must be integer-only.

A format takes part through an `Int8Session` (`keras_unet.export.int8_session`):
`variants` (calibrations to try, in order), `quantize(keep_float, variant, keep_int16) -> bytes`,
`report(images, keep_float, variant) -> rows or None` (None: nothing to measure),
`metadata` (a dict recorded under the file's `"int8"` metadata), `time_ms(bytes) -> ms or
None` (latency of a file here, None when speed checks are off), `leading_nodes() -> nodes`
(the stem), `trailing_nodes() -> nodes` (the head) and `expand(nodes) -> nodes` (what else must stay float with them: TFLite adds
the ops reading a kept op's output, whose input would otherwise be quantized at the same
bad range); the base class gives the defaults.

Example:
```python
from keras_unet.export.int8 import quantize_verified
from keras_unet.export.job import open_job
from keras_unet.export.options import ExportOptions
from keras_unet.export.stamp import Stamper
from keras_unet.export.tflite import CONVERTER, TFLiteOptions

options = ExportOptions(quantize="int8", calibration_data="data/train")
with open_job("model.keras", options) as job:
    session = CONVERTER.session(job, TFLiteOptions("int8", "uint8"))
    outcome = quantize_verified(job, session, Stamper(job, CONVERTER, "int8"), 0.98)
outcome.kept_float, outcome.verification.agreement_iou
```
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Callable, Optional

from keras_unet.export import verify
from keras_unet.export.converter import float_ops_phrase
from keras_unet.export.quantization.variants import BIAS_SUFFIX, GPTQ_SUFFIX
from keras_unet.runtime.timing import median_in_turn

# What repair aims for: agreement a user cannot tell from the Keras masks; the benchmarks'
# int8 gate (`keras_unet.benchmarks.targets`). 0.98 until files verified above 0.98 by two
# standard errors measured 0.982-0.984 on the test images, where the gate is 0.985
# (docs/notes/2026-12-07-repair-target-and-segments.md).
AGREEMENT_TARGET = 0.985
# Below this verified agreement the best calibration is also tried with its weights rounded
# against the calibration images ("+gptq"), even when it meets the target: it costs no
# speed, only export time, and a whole-model int16x8 file (whose activations are fine)
# gains the most from it. The matrix's int16x8 gate.
ROUNDING_BELOW = 0.995
# Standard errors of the verification agreement a file must clear the target by: one
# sided, ~98% that the images' own noise did not lift it over.
CONFIDENCE_Z = 2.0
# Past this many ops in float the file has lost most of what int8 gains (the
# dequantize/quantize pairs around each float op cost time too): refuse instead.
MAX_KEPT = 24
# Repair toward the target from a file that already meets the floor keeps at most this
# share of the quantized ops in float (a U-Net without batch norm needed 9 of 32).
TARGET_SHARE = 1 / 3
# How an attempt passed over for a float op in an integer-only export begins its `error`.
NOT_INTEGER_ONLY = "not integer-only"
# Rounds of timing the all-int8 and the repaired file in turn: the two alternate so that
# a machine's drift reaches both.
LATENCY_ROUNDS = 3


@dataclasses.dataclass
class Attempt:
    """One quantized file tried by the repair loop."""

    calibration: str
    kept_float: list
    agreement_iou: float
    pixel_agreement: float  # both None when the runtime could not load the file
    passed: bool
    error: Optional[str] = None  # why the runtime could not load it
    kept_int16: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Int8Outcome:
    """What `quantize_verified` chose.

    Args:
        file: the chosen file, stamped with its metadata (`keras_unet.export.stamp`).
        verification: its `VerificationReport`.
        calibration: the calibration variant it used.
        kept_float: Keras layer names (else op names) of the ops left in float.
        kept_nodes: the format's node names of those ops.
        attempts: every `Attempt`, in order.
        kept_int16: Keras layer names (else op names) of the ops kept at int16 activations.
        kept_int16_nodes: the format's node names of those ops.
        candidates: every repair `Candidate` measured (`keras_unet.export.repair`).
        layer_report: per-layer rows of the chosen file (or None if not computed).
        latency_ms: with layers kept in float, `{"all_int8": ms, "this_file": ms}`: the
            best all-int8 file and the chosen one, timed in turn here (medians of
            `LATENCY_ROUNDS`); empty when nothing was kept or the session cannot time.
        shortfall: when the chosen file does not meet the target (by its standard errors),
            one sentence for the user: by how much, what repair tried, and what keeps more
            (`--quantize int16x8`, quantization-aware training); None when it meets it.
    """

    file: Any
    verification: Any
    calibration: str
    kept_float: list
    kept_nodes: list
    attempts: list
    layer_report: Optional[list] = None
    latency_ms: dict = dataclasses.field(default_factory=dict)
    kept_int16: list = dataclasses.field(default_factory=list)
    kept_int16_nodes: list = dataclasses.field(default_factory=list)
    candidates: list = dataclasses.field(default_factory=list)
    shortfall: Optional[str] = None

    @property
    def model_bytes(self) -> bytes:
        """The chosen file's bytes, metadata included."""
        return self.file.model_bytes


class _Tried(typing.NamedTuple):
    """One attempt as the choice needs it: the verified file and how it was made."""

    agreement: float
    file: Any  # stamped with its metadata, as verified
    report: object  # its VerificationReport
    variant: str
    kept: Any  # `repair.Kept`
    rows: list  # the per-layer report the kept ops were chosen from
    quantized: bytes  # before metadata


def _names(rows, nodes):
    by_node = {row["node"]: row["name"] for row in rows or []}
    return [by_node.get(node, node) for node in nodes]


def quantize_verified(job: Any, session: Any, stamp: Callable, agreement_floor: float,
                      repair: bool = True, want_report: bool = False,
                      integer_only: bool = False) -> Int8Outcome:
    """Quantize and verify; repair (keep layers at a higher precision) toward `AGREEMENT_TARGET`.

    Args:
        job: the pipeline's `ExportJob`.
        session: the format's `Int8Session` for the job (`Converter.session`).
        stamp: `(model_bytes, int8) -> StampedFile` (`keras_unet.export.stamp.Stamper`):
            the file with its metadata, `int8` its `"int8"` section, so the file verified
            is the file written.
        agreement_floor: lowest accepted `agreement_iou`.
        repair: try the other calibrations, and keep layers at a higher precision while
            below the target (`AGREEMENT_TARGET`, or the floor when higher).
        want_report: also build the per-layer report of the chosen file when it passed at
            once (a repaired or refused file always gets one).
        integer_only: repair never keeps an op in float (int16 activations only).

    Returns:
        an `Int8Outcome`; raises `keras_unet.export.verify.VerificationError` with
        `.outcome` (the best attempt, its layer report) when nothing meets the floor.

    Example:
    ```python
    outcome = quantize_verified(job, session, Stamper(job, CONVERTER, "int8"), 0.98)
    ```
    """
    from keras_unet.export.repair import Kept, search

    images, _ = job.verification_images()
    target = max(agreement_floor, AGREEMENT_TARGET)
    attempts, tried = [], []
    built: dict = {}

    def confident(report):
        return report.agreement_iou - CONFIDENCE_Z * report.agreement_se >= target

    def attempt(variant, kept, rows, quantized=None):
        """The attempt's `_Tried`, or None when the runtime cannot load it."""
        if (variant, kept) in built:
            return built[(variant, kept)]
        if quantized is None:
            quantized = session.quantize(list(kept.float), variant, kept.int16)
        names_float, names_int16 = _names(rows, kept.float), _names(rows, kept.int16)
        refused = session.refusal(quantized) or (
            _not_integer_only(stamp.converter, quantized) if integer_only else None)
        if refused is not None:
            attempts.append(Attempt(variant, names_float, None, None, False, error=refused,
                                    kept_int16=names_int16))
            built[(variant, kept)] = None
            return None
        try:
            stamped = stamp(quantized, _section(variant, names_float, session.metadata,
                                                names_int16))
            report = verify.verify_bytes(job, stamp.converter, stamped.model_bytes,
                                         _mode(session), agreement_floor=agreement_floor,
                                         threshold=job.threshold, raise_on_failure=False)
        except (RuntimeError, ValueError) as error:
            # The runtime refused the file (the runner reports it as a ValueError from the
            # runtime's RuntimeError): XNNPack prepares int8 ops only within its scale
            # limits (an ADD whose input and output scales differ by more than 2**10).
            # Another calibration, or that op at a higher precision, may load.
            refused = error if isinstance(error, RuntimeError) else error.__cause__
            if isinstance(error, verify.VerificationError) or not isinstance(refused, RuntimeError):
                raise
            attempts.append(Attempt(variant, names_float, None, None, False,
                                    error=str(refused).splitlines()[0], kept_int16=names_int16))
            built[(variant, kept)] = None
            return None
        attempts.append(Attempt(variant, names_float, report.agreement_iou,
                                report.pixel_agreement, report.passed, kept_int16=names_int16))
        entry = _Tried(report.agreement_iou, stamped, report, variant, kept, rows, quantized)
        tried.append(entry)
        built[(variant, kept)] = entry
        return entry

    # Calibrations cost no speed: try them all, every layer at the mode's precision.
    seen = set()
    for variant in session.variants if repair else session.variants[:1]:
        first = session.quantize([], variant)
        if first in seen:  # this calibration chose the same ranges as an earlier one
            continue
        seen.add(first)
        attempt(variant, Kept(), None, quantized=first)
    # None when no calibration gave a file the runtime loads: repair may still find one.
    best_int8 = max(tried, key=lambda entry: entry.agreement) if tried else None
    if repair and best_int8 is not None:
        for suffix in _weight_treatments(session, best_int8, confident):
            # The best calibration again, its convolutions' biases corrected for the int8
            # weights ("+bias"), or their weights rounded against the calibration images
            # ("+gptq"). No speed cost; kept only when it verifies better (bias correction
            # helped one CamVid model by a point and cost another 0.2; see
            # quantization.bias_correction, quantization.weight_rounding).
            attempt(best_int8.variant + suffix, Kept(), None)
        best_int8 = max(tried, key=lambda entry: entry.agreement)
    precisions = _precisions(session, integer_only)
    candidates: list = []
    rows = None
    if repair and precisions and (best_int8 is None or not confident(best_int8.report)):
        variant = best_int8.variant if best_int8 else session.variants[0]
        rows = session.report(images, [], variant)
        limit = MAX_KEPT
        if rows is not None and best_int8 is not None and best_int8.report.passed:
            limit = min(MAX_KEPT, int(TARGET_SHARE * len(rows)))
        candidates = search(
            session, lambda kept: attempt(variant, kept, rows), images, variant, rows, best_int8,
            lambda report: confident(report), limit, precisions,
            names=lambda nodes: _names(rows, nodes))
    if not tried:  # every attempt was refused by the runtime
        raise RuntimeError(
            f"No {_mode(session)} file could be loaded by the runtime ({len(attempts)} attempt(s), up "
            f"to {max(len(a.kept_float) + len(a.kept_int16) for a in attempts)} op(s) kept at a "
            f"higher precision): {attempts[0].error}. Nothing was written.")
    chosen = _choose(session, best_int8, tried, target, confident)
    _, stamped, report, variant, kept, best_rows, quantized = chosen
    layer_report = best_rows
    if len(kept) or not report.passed or want_report:
        rows = session.report(images, list(kept.float), variant)
        if rows is not None:  # None: every op kept in float, nothing quantized to report on
            layer_report = rows
    names_float, names_int16 = _names(best_rows, kept.float), _names(best_rows, kept.int16)
    latency = {}
    if len(kept) and report.passed and best_int8 is not None:
        latency = _latency_cost(session, best_int8.file.model_bytes, stamped.model_bytes)
        if latency:  # the same graph, with what its kept layers cost in its metadata
            extra = {**session.metadata, "kept_float_latency_ms": latency}
            stamped = stamp(quantized, _section(variant, names_float, extra, names_int16))
    outcome = Int8Outcome(stamped, report, variant, _names(layer_report, kept.float),
                          list(kept.float), attempts, layer_report, latency,
                          kept_int16=_names(layer_report, kept.int16),
                          kept_int16_nodes=list(kept.int16), candidates=candidates)
    if not confident(report):
        outcome.shortfall = _shortfall(report, target, _mode(session), repair, integer_only,
                                       len(candidates), len(kept))
    if not report.passed:
        error = verify.VerificationError(
            f"No {_mode(session)} file met agreement_iou >= {agreement_floor:g}: the best of "
            f"{len(attempts)} attempt(s) reached {report.agreement_iou:.4f} ({variant} "
            f"calibration, {len(kept)} op(s) kept at a higher precision). Nothing was written. "
            f"{report.summary()}. The per-layer report (--report) shows where the error "
            "arises; calibrate on more representative images, or lower --agreement-floor if "
            "this loss is acceptable.", report, outcome)
        raise error
    return outcome


def _mode(session: Any) -> str:
    """The session's quantization mode: `"int8"` or `"int16x8"`."""
    return getattr(session.options, "quantize", None) or "int8"


def _not_integer_only(converter: Any, model_bytes: bytes) -> Optional[str]:
    """Why a file cannot be written as integer-only (the ops it computes in float), or None.

    An op kept at int16 may leave a neighbour the runtime's quantizer does not cover at 16
    bits in float (onnxruntime left a ReLU6 `Clip` between int16 nodes in float): such a
    file is passed over like one the runtime refuses, so repair never chooses it."""
    floats = float_ops_phrase(converter, model_bytes, shown=3)
    return f"{NOT_INTEGER_ONLY}: {floats}" if floats else None


def _shortfall(report: Any, target: float, mode: str, repair: bool, integer_only: bool,
               measured: int, kept: int) -> str:
    """Why the written file falls short of the target, and what keeps more (the
    `Int8Outcome.shortfall` sentence)."""
    where = (f"agreement {report.agreement_iou:.4f} (standard error {report.agreement_se:.4f}) "
             f"does not clear the repair target {target:g} by {CONFIDENCE_Z:g} standard errors")
    if not repair:
        tried = "repair is off (--no-repair)"
    elif measured == 0:
        tried = "no op could be kept at a higher precision" + (
            " (integer-only: int16 activations only)" if integer_only else "")
    elif kept:
        tried = (f"repair measured {measured} candidate(s) end to end and kept {kept} op(s) "
                 f"above {mode} without clearing it")
    else:
        tried = (f"repair measured {measured} candidate(s) end to end, no set of them within "
                 f"its op limit cleared it, so the fastest file, every op in {mode}, was kept")
    if mode == "int16x8":
        remedy = ("with 16-bit activations the int8 weights set this limit; --quantize fp16 "
                  "keeps the float model's masks")
    else:
        remedy = ("16-bit activations (--quantize int16x8) or quantization-aware training "
                  "(keras-unet train --qat --init MODEL.keras, then export with --quantize "
                  "int8) keep more")
    return f"{where}: {tried}; {remedy}."


def _weight_treatments(session: Any, best: Any, confident: Any) -> list:
    """The weight treatments (variant suffixes) to try on the best calibration.

    Bias correction only when the best falls short of the target (it hurt one model; a
    file that meets the target is not worth the extra quantization and verification).
    Weights rounded against the data also whenever the best agrees below `ROUNDING_BELOW`:
    it did better than bias correction on every model measured, and with 16-bit
    activations the int8 weights set the ceiling
    (docs/notes/2026-12-07-gptq-weight-rounding.md).
    """
    treatments = []
    short = not confident(best.report)
    if session.can_correct_biases and short:
        treatments.append(BIAS_SUFFIX)
    if session.can_round_weights and (short or best.agreement < ROUNDING_BELOW):
        treatments.append(GPTQ_SUFFIX)
    return treatments


def _precisions(session: Any, integer_only: bool) -> tuple:
    """The precision repair keeps an op at: float, or for an integer-only int8 file int16
    activations (where the session can keep single ops at int16).

    int16 is the step for the accelerators integer-only files are for, which run 16-bit
    activations on the accelerator and hand float ops back to the CPU. On the CPU runtimes
    a kept int16 op is the slower choice by far (XNNPack and onnxruntime's CPU provider
    have no int16 convolution: one full-resolution op at int16 cost 50 ms against 4 ms
    for the whole int8 file), so measuring it there would only lengthen the export.
    Why: see docs/notes/2026-12-06-tflite-int16x8.md and docs/notes/2026-12-06-onnx-int16x8.md.
    """
    if integer_only:
        return ("int16",) if session.can_keep_int16 and _mode(session) == "int8" else ()
    return ("float",) if session.can_keep_float else ()


def _choose(session, best_int8, tried, target, confident):
    """The attempt to write (see step 3 of the module docstring); `tried` is in the order
    tried; `best_int8` is None when no all-int8 file loaded (every entry of `tried` then
    keeps ops, and the steps about it are passed over)."""
    if best_int8 is not None and confident(best_int8.report):
        return best_int8
    cleared = [entry for entry in tried if len(entry.kept) and confident(entry.report)]
    if cleared:
        return _fastest(session, cleared)
    if best_int8 is not None and best_int8.agreement >= target:
        return best_int8
    reached = [entry for entry in tried if len(entry.kept) and entry.agreement >= target]
    if reached:
        return min(reached, key=lambda entry: len(entry.kept))
    best = max(tried, key=lambda entry: entry.agreement)
    if best_int8 is not None and best_int8.report.passed:
        noise = CONFIDENCE_Z * best.report.agreement_se
        if best.agreement - best_int8.agreement <= noise:
            return best_int8  # what repair kept gained no more than the images' noise
        # Short of the target, the best agreement found (less its noise) is the target: the
        # fastest file that reaches it.
        return _fastest(session, [entry for entry in tried if entry.agreement >= best.agreement - noise])
    return best


def _fastest(session: Any, entries: list) -> Any:
    """The fastest of `entries`, timed in turn here (`LATENCY_ROUNDS`): of those within
    `MIN_COST_SHARE` of the fastest time (timing noise), the one with the fewest ops kept
    (fewer ops above int8 fall back from an accelerator), then the faster. Without timings
    the one with the fewest ops kept (the first of those)."""
    from keras_unet.export.repair import MIN_COST_SHARE

    if len(entries) > 1:
        timings = median_in_turn({str(i): functools.partial(session.time_ms, entry.quantized)
                                  for i, entry in enumerate(entries)}, LATENCY_ROUNDS)
        if timings:
            fastest = min(timings.values())
            near = [i for i in range(len(entries))
                    if timings[str(i)] <= fastest * (1.0 + MIN_COST_SHARE)]
            return entries[min(near, key=lambda i: (len(entries[i].kept), timings[str(i)]))]
    return min(entries, key=lambda entry: len(entry.kept))


def _section(calibration: str, kept_float: list, extra: dict, kept_int16: tuple = ()) -> dict:
    """The file's `"int8"` metadata section (`keras_unet.runtime.metadata_schema.INT8_FIELDS`)."""
    section = {"calibration": calibration, "kept_float": list(kept_float)}
    if kept_int16:
        section["kept_int16"] = list(kept_int16)
    return {**section, **extra}


def _latency_cost(session: Any, all_int8: bytes, chosen: bytes) -> dict:
    """`{"all_int8": ms, "this_file": ms}`, medians of `LATENCY_ROUNDS` timings taken in
    turn, or {} when the session does not time (speed checks off)."""
    return median_in_turn({"all_int8": lambda: session.time_ms(all_int8),
                           "this_file": lambda: session.time_ms(chosen)}, LATENCY_ROUNDS)
