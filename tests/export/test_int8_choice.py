"""Which file `keras_unet.export.int8.quantize_verified` writes: every calibration is tried;
repair (`keras_unet.export.repair`) measures candidates on the whole file and adds them by gain
per latency cost until a file clears `AGREEMENT_TARGET` by `CONFIDENCE_Z` standard errors; the
fastest file that clears is written; integer-only files keep ops at int16, never in float; a
refusal only below the floor. A scripted session stands in for a format, so each rule is checked
without converting anything."""

import types

import numpy as np
import pytest

from keras_unet.export import int8, repair
from keras_unet.export.int8_session import Int8Session
from keras_unet.export.quantization.report import make_row
from keras_unet.export.verify import VerificationError

LAYERS = [f"layer{i}" for i in range(30)]


def _decode(model_bytes):
    variant, floats, int16s = model_bytes.decode().split(":")
    return variant, floats.split(",") if floats else [], int16s.split(",") if int16s else []


class ScriptedSession(Int8Session):
    """Calibrations `a` and `b`; each file's agreement is `score(variant, floats, int16s)`.
    The per-layer report ranks layer0 worst, then layer1, ... (isolated SQNR)."""

    variants = ("a", "b")

    def __init__(self, score, int16=False):
        super().__init__(job=None, options=None)
        self.score = score
        self.can_keep_int16 = int16
        self.reports = 0

    def convert(self, keep_float, variant, keep_int16=()):
        return f"{variant}:{','.join(keep_float)}:{','.join(keep_int16)}".encode()

    def report(self, images, keep_float, variant):
        self.reports += 1
        return [make_row(name, "CONV_2D", name, sqnr_db=10.0 + i, kept_float=name in keep_float)
                for i, name in enumerate(LAYERS)]


class StemSession(ScriptedSession):
    """A format that names its stem (`leading_nodes`)."""

    def leading_nodes(self):
        return ["stem_conv", "stem_act"]


class HeadSession(StemSession):
    """A format that names its stem and its head (`trailing_nodes`)."""

    def trailing_nodes(self):
        return ["last_conv", "head", "softmax"]


class TimedSession(ScriptedSession):
    """A format that times files: 1 ms, plus `cost[layer]` (default 0.1 ms) per layer kept in
    float and half that per layer at int16."""

    cost: dict = {}

    def __init__(self, score, int16=False):
        super().__init__(score, int16)
        self.metadata = {"activation_type": "uint8"}
        self.timed = []

    def time_ms(self, model_bytes):
        _, floats, int16s = _decode(model_bytes)
        self.timed.append(",".join(floats))
        return (1.0 + sum(self.cost.get(n, 0.1) for n in floats)
                + sum(self.cost.get(n, 0.1) / 2 for n in int16s))


def effects(base, gains, int16_share=1.0):
    """Agreement: `base[variant]` plus each kept layer's gain (at int16: `int16_share` of it)."""
    def score(variant, floats, int16s):
        return (base[variant] + sum(gains.get(n, 0.0) for n in floats)
                + int16_share * sum(gains.get(n, 0.0) for n in int16s))
    return score


def _choose(monkeypatch, score, floor=0.95, repair_on=True, session_class=ScriptedSession,
            se=0.0, finished=None, int16=False, integer_only=False, float_ops=None):
    # The scripted agreements are written around a target of 0.98; the rules are the same
    # at any target.
    monkeypatch.setattr(int8, "AGREEMENT_TARGET", 0.98)
    session = session_class(score, int16=int16)

    def verify_bytes(job, converter, model_bytes, quantization, agreement_floor, threshold,
                     raise_on_failure):
        value = session.score(*_decode(model_bytes))
        return types.SimpleNamespace(agreement_iou=value, pixel_agreement=value, agreement_se=se,
                                     passed=value >= agreement_floor, summary=lambda: "scripted")

    monkeypatch.setattr("keras_unet.export.verify.verify_bytes", verify_bytes)
    job = types.SimpleNamespace(threshold=0.5,
                                verification_images=lambda: (np.zeros((2, 4, 4, 3)), "test"))

    class Stamp:
        """Records each file's int8 metadata section; the bytes stay as they are."""

        converter = types.SimpleNamespace(suffix=".scripted", float_ops=float_ops)

        def __call__(self, model_bytes, int8_section):
            if finished is not None:
                finished.append(int8_section)
            return types.SimpleNamespace(model_bytes=model_bytes)

    outcome = int8.quantize_verified(job, session, Stamp(), floor, repair=repair_on,
                                     integer_only=integer_only)
    return outcome, session


def test_the_best_calibration_wins_when_it_meets_the_target(monkeypatch):
    outcome, session = _choose(monkeypatch, effects({"a": 0.985, "b": 0.991}, {}))
    assert outcome.calibration == "b" and outcome.kept_float == []
    assert [a.calibration for a in outcome.attempts] == ["a", "b"]  # both tried
    assert session.reports == 0 and outcome.candidates == []  # nothing to repair


class BiasSession(ScriptedSession):
    """A format whose calibrations also have a `+bias` form (biases corrected for the weights)."""

    can_correct_biases = True


def test_short_of_the_target_the_best_calibration_is_tried_again_with_corrected_biases(monkeypatch):
    score = effects({"a": 0.95, "b": 0.975, "b+bias": 0.984}, {})
    outcome, session = _choose(monkeypatch, score, session_class=BiasSession)
    assert [a.calibration for a in outcome.attempts] == ["a", "b", "b+bias"]
    assert outcome.calibration == "b+bias" and outcome.kept_float == []
    assert session.reports == 0  # the corrected file met the target: nothing to repair
    # Worse once corrected: the uncorrected file is kept, and repair starts from it.
    score = effects({"a": 0.95, "b": 0.975, "b+bias": 0.97}, {"layer2": 0.01})
    outcome, _ = _choose(monkeypatch, score, session_class=BiasSession)
    assert outcome.calibration == "b" and outcome.kept_float == ["layer2"]


class RoundingSession(BiasSession):
    """A format whose calibrations also have a `+gptq` form (weights rounded against the data)."""

    can_round_weights = True


def test_short_of_the_target_both_weight_treatments_are_tried_and_the_best_kept(monkeypatch):
    score = effects({"a": 0.95, "b": 0.975, "b+bias": 0.978, "b+gptq": 0.986}, {})
    outcome, session = _choose(monkeypatch, score, session_class=RoundingSession)
    assert [a.calibration for a in outcome.attempts] == ["a", "b", "b+bias", "b+gptq"]
    assert outcome.calibration == "b+gptq" and outcome.kept_float == []
    assert session.reports == 0  # the rounded file met the target: nothing to repair


def test_a_file_that_meets_the_target_still_tries_rounded_weights_below_0_995(monkeypatch):
    # They cost no speed; bias correction, which can hurt, is left for files short of the target.
    score = effects({"a": 0.991, "b": 0.99, "a+gptq": 0.996}, {})
    outcome, _ = _choose(monkeypatch, score, session_class=RoundingSession)
    assert [a.calibration for a in outcome.attempts] == ["a", "b", "a+gptq"]
    assert outcome.calibration == "a+gptq"
    # Worse once rounded: the calibration as it was is written.
    score = effects({"a": 0.991, "b": 0.99, "a+gptq": 0.989}, {})
    outcome, _ = _choose(monkeypatch, score, session_class=RoundingSession)
    assert outcome.calibration == "a"
    # At 0.995 and above there is little left to gain: nothing more is tried.
    outcome, _ = _choose(monkeypatch, effects({"a": 0.996, "b": 0.99}, {}), session_class=RoundingSession)
    assert [a.calibration for a in outcome.attempts] == ["a", "b"]


def test_a_calibration_that_meets_the_target_is_not_corrected(monkeypatch):
    outcome, _ = _choose(monkeypatch, effects({"a": 0.95, "b": 0.991}, {}),
                         session_class=BiasSession)
    assert [a.calibration for a in outcome.attempts] == ["a", "b"]
    assert outcome.calibration == "b"
    # Nor without repair, which tries the first calibration only.
    outcome, _ = _choose(monkeypatch, effects({"a": 0.95, "b": 0.991}, {}),
                         session_class=BiasSession, repair_on=False)
    assert [a.calibration for a in outcome.attempts] == ["a"]


def test_the_measured_effect_ranks_candidates_not_the_isolated_error(monkeypatch):
    # layer0 is the worst row on its own, but keeping it changes nothing; layer4 matters.
    score = effects({"a": 0.95, "b": 0.97}, {"layer0": 0.0, "layer4": 0.02})
    outcome, _ = _choose(monkeypatch, score)
    assert outcome.calibration == "b" and outcome.kept_float == ["layer4"]
    measured = {tuple(c.names): c for c in outcome.candidates}
    assert set(measured) == {(f"layer{i}",) for i in range(repair.SHORTLIST)}  # the shortlist
    assert measured[("layer0",)].gain == 0 and not measured[("layer0",)].added
    assert measured[("layer4",)].gain == pytest.approx(0.02) and measured[("layer4",)].added


def test_candidates_are_added_by_gain_per_cost_until_the_target_clears(monkeypatch):
    # layer1 gains a little more than layer2, but costs five times as much.
    TimedSession.cost = {"layer1": 0.5, "layer2": 0.1}
    score = effects({"a": 0.95, "b": 0.97}, {"layer1": 0.012, "layer2": 0.011})
    outcome, _ = _choose(monkeypatch, score, session_class=TimedSession)
    assert outcome.kept_float == ["layer2"]
    cost = {c.names[0]: c for c in outcome.candidates}
    assert cost["layer1"].cost == pytest.approx(0.5) and cost["layer2"].cost == pytest.approx(0.1)
    assert cost["layer1"].cost_unit == "ms"


def test_of_the_files_that_clear_the_fastest_is_written(monkeypatch):
    # Both layer1 and layer3 clear on their own; layer1 gains more per ms, layer3's file is faster.
    TimedSession.cost = {"layer1": 0.06, "layer3": 0.04}
    score = effects({"a": 0.95, "b": 0.97}, {"layer1": 0.03, "layer3": 0.012})
    outcome, session = _choose(monkeypatch, score, session_class=TimedSession)
    # Greedy added layer1 first (0.03 / 0.06 > 0.012 / 0.04); both single files clear,
    # and the layer3 one is faster, so it is written.
    added = [c.names for c in outcome.candidates if c.added]
    assert added == [["layer1"]]
    assert outcome.kept_float == ["layer3"]


def test_the_greedy_step_undoes_an_addition_that_does_not_help_on_top(monkeypatch):
    # layer0 and layer1 each gain alone, but not together (they fix the same error).
    def score(variant, floats, int16s):
        base = {"a": 0.95, "b": 0.97}[variant]
        kept = set(floats)
        gain = 0.006 if kept & {"layer0", "layer1"} else 0.0
        return base + gain + 0.006 * ("layer2" in kept)
    outcome, _ = _choose(monkeypatch, score)
    assert sorted(outcome.kept_float) in (["layer0", "layer2"], ["layer1", "layer2"])
    assert outcome.verification.agreement_iou == pytest.approx(0.982)


def test_an_integer_only_file_keeps_ops_at_int16_and_records_them(monkeypatch):
    TimedSession.cost = {}
    score = effects({"a": 0.95, "b": 0.97}, {"layer2": 0.02})  # int16 recovers it all
    finished = []
    outcome, _ = _choose(monkeypatch, score, session_class=TimedSession, int16=True,
                         finished=finished, integer_only=True)
    assert outcome.kept_int16 == ["layer2"] and outcome.kept_float == []
    assert finished[-1]["kept_int16"] == ["layer2"]  # recorded in the metadata


def test_off_an_integer_only_target_int16_is_not_measured(monkeypatch):
    # On the CPU runtimes an op kept at int16 is slower than one kept in float.
    score = effects({"a": 0.95, "b": 0.97}, {"layer2": 0.02})
    outcome, _ = _choose(monkeypatch, score, int16=True)
    assert {c.precision for c in outcome.candidates} == {"float"}
    assert outcome.kept_float == ["layer2"] and outcome.kept_int16 == []


def test_integer_only_never_keeps_an_op_in_float(monkeypatch):
    score = effects({"a": 0.95, "b": 0.97}, {"layer2": 0.02}, int16_share=0.6)
    outcome, _ = _choose(monkeypatch, score, int16=True, integer_only=True)
    assert all(not a.kept_float for a in outcome.attempts)
    assert {c.precision for c in outcome.candidates} == {"int16"}
    assert "layer2" in outcome.kept_int16


def test_integer_only_without_int16_writes_the_best_calibration_unrepaired(monkeypatch):
    score = effects({"a": 0.95, "b": 0.97}, {"layer2": 0.02})
    outcome, session = _choose(monkeypatch, score, integer_only=True)
    assert outcome.kept_float == [] and outcome.calibration == "b" and outcome.candidates == []
    assert len(outcome.attempts) == 2


def test_layers_that_gain_within_the_noise_are_not_worth_their_speed(monkeypatch):
    # Never 0.98; at most 10 layers kept gain 0.010, less than two standard errors (0.012).
    score = effects({"a": 0.96, "b": 0.95}, {name: 0.001 for name in LAYERS})
    outcome, _ = _choose(monkeypatch, score, se=0.006)
    assert outcome.calibration == "a" and outcome.kept_float == []
    assert outcome.verification.agreement_iou == 0.96
    # From a file at the floor, repair keeps at most a third of the ops: 10 of 30.
    assert max(len(a.kept_float) for a in outcome.attempts) <= int(int8.TARGET_SHARE * len(LAYERS))


def test_short_of_the_target_the_fastest_file_within_the_noise_of_the_best_is_written(monkeypatch):
    # Never 0.98: layer1 and layer2 gain 0.019 together, layer3 0.0005 more for 0.3 ms.
    TimedSession.cost = {"layer1": 0.1, "layer2": 0.1, "layer3": 0.3}
    score = effects({"a": 0.95, "b": 0.955}, {"layer1": 0.01, "layer2": 0.009, "layer3": 0.0005})
    outcome, _ = _choose(monkeypatch, score, session_class=TimedSession, se=0.001)
    best = max(a.agreement_iou for a in outcome.attempts)
    assert best == pytest.approx(0.9745) and outcome.verification.agreement_iou == pytest.approx(0.974)
    assert sorted(outcome.kept_float) == ["layer1", "layer2"]  # within 0.002 of the best, faster
    assert "kept 2 op(s) above int8 without clearing it" in outcome.shortfall


def test_below_the_floor_the_best_repair_is_kept_when_it_meets_the_floor(monkeypatch):
    score = effects({"a": 0.90, "b": 0.93}, {name: 0.002 for name in LAYERS})
    outcome, _ = _choose(monkeypatch, score)
    assert outcome.calibration == "b" and outcome.verification.agreement_iou >= 0.95
    assert outcome.verification.agreement_iou == max(a.agreement_iou for a in outcome.attempts)


def test_nothing_at_the_floor_is_refused_with_the_best_found(monkeypatch):
    score = effects({"a": 0.80, "b": 0.85}, {name: 0.001 for name in LAYERS})
    with pytest.raises(VerificationError, match=r"reached 0\.8[56]\d\d \(b calibration, \d+ op"):
        _choose(monkeypatch, score)


def test_a_floor_above_the_target_becomes_the_target(monkeypatch):
    score = effects({"a": 0.985, "b": 0.984}, {"layer1": 0.007})
    outcome, _ = _choose(monkeypatch, score, floor=0.99)
    assert outcome.kept_float == ["layer1"] and outcome.verification.agreement_iou == 0.992


def test_without_repair_only_the_first_calibration_is_tried(monkeypatch):
    outcome, session = _choose(monkeypatch, effects({"a": 0.96, "b": 0.99}, {}), repair_on=False)
    assert [a.calibration for a in outcome.attempts] == ["a"] and outcome.kept_float == []


def test_the_stem_is_a_candidate_measured_like_the_rest(monkeypatch):
    score = effects({"a": 0.92, "b": 0.967}, {"stem_conv": 0.017})
    outcome, _ = _choose(monkeypatch, score, session_class=StemSession)
    assert outcome.kept_float == ["stem_conv", "stem_act"] and outcome.calibration == "b"
    assert outcome.candidates[0].names == ["stem_conv", "stem_act"]


def test_a_stem_that_does_not_help_is_not_kept(monkeypatch):
    score = effects({"a": 0.92, "b": 0.96}, {"stem_conv": -0.01, "layer3": 0.011, "layer5": 0.011})
    outcome, _ = _choose(monkeypatch, score, session_class=StemSession)
    assert "stem_conv" not in outcome.kept_float and sorted(outcome.kept_float) == ["layer3", "layer5"]


def test_the_head_is_a_candidate_of_the_first_round_beside_the_stem(monkeypatch):
    # No row of the report stands out, the head alone clears the target.
    score = effects({"a": 0.92, "b": 0.975}, {"head": 0.008, "stem_conv": 0.001})
    outcome, _ = _choose(monkeypatch, score, session_class=HeadSession)
    assert outcome.kept_float == ["last_conv", "head", "softmax"]
    assert [c.names for c in outcome.candidates[:2]] == [["stem_conv", "stem_act"],
                                                         ["last_conv", "head", "softmax"]]


def test_a_file_at_the_target_within_its_noise_gets_one_more_step(monkeypatch):
    # 0.9817 +- 0.001 is 0.9797 two errors down.
    score = effects({"a": 0.9817, "b": 0.95}, {"layer0": 0.005})
    outcome, _ = _choose(monkeypatch, score, se=0.001)
    assert outcome.kept_float == ["layer0"]
    without_noise, _ = _choose(monkeypatch, score, se=0.0)
    assert without_noise.kept_float == []


def test_when_no_step_clears_the_noise_the_fewest_ops_at_the_target_are_kept(monkeypatch):
    def score(variant, floats, int16s):  # any float layer reaches 0.9818, never more
        return {"a": 0.9658, "b": 0.952}[variant] if not floats else 0.9818
    outcome, _ = _choose(monkeypatch, score, se=0.001)
    assert len(outcome.kept_float) == 1 and outcome.verification.agreement_iou == 0.9818


def test_an_all_int8_file_at_the_target_stays_when_repair_does_not_clear_the_noise(monkeypatch):
    score = effects({"a": 0.981, "b": 0.95}, {name: 0.00005 for name in LAYERS})
    outcome, _ = _choose(monkeypatch, score, se=0.001)
    assert outcome.kept_float == [] and len(outcome.attempts) > 2


def test_what_the_kept_layers_cost_is_timed_in_turn_and_recorded(monkeypatch):
    TimedSession.cost = {}
    finished = []
    score = effects({"a": 0.97, "b": 0.95}, {"layer0": 0.005, "layer1": 0.006})
    outcome, session = _choose(monkeypatch, score, session_class=TimedSession, finished=finished)
    assert sorted(outcome.kept_float) == ["layer0", "layer1"]
    assert outcome.latency_ms == {"all_int8": 1.0, "this_file": pytest.approx(1.2)}
    kept = ",".join(outcome.kept_float)
    assert session.timed[-2 * int8.LATENCY_ROUNDS:] == ["", kept] * int8.LATENCY_ROUNDS
    # The written file's metadata carries the cost beside the session's own entries.
    assert finished[-1] == {"calibration": "a", "kept_float": outcome.kept_float,
                            "activation_type": "uint8", "kept_float_latency_ms": outcome.latency_ms}


def test_nothing_kept_nothing_timed(monkeypatch):
    outcome, session = _choose(monkeypatch, effects({"a": 0.99, "b": 0.95}, {}),
                               session_class=TimedSession)
    assert outcome.latency_ms == {} and session.timed == []


def test_without_timings_the_cost_model_counts_ops():
    kept = repair.Kept(("x",), ())
    trial = kept.plus(["y", "z"], "int16")
    cost, unit = repair._cost(types.SimpleNamespace(), None, kept, trial, current_ms=None)
    assert (cost, unit) == (2 * repair.INT16_UNITS, "units")
    assert kept.plus(["y"], "float").plus(["y"], "int16") == repair.Kept(("x", "y"), ())


def test_the_summary_counts_ops_of_one_layer_kept():
    from keras_unet.export.result import _counted, _kept_line

    assert _counted(["rescaling", "rescaling", "conv_bn", "activation", "activation"]) == (
        "rescaling x2, conv_bn, activation x2")
    assert _kept_line(["a"], ["b", "b"], 5, "int8") == (
        "1 op(s) kept in float (a) and 2 op(s) at int16 activations (b x2) after 5 attempt(s)")


class LearnedRangesSession(StemSession):
    """A QAT model's session: nothing to report on (None), so nothing to repair but the stem."""

    can_keep_float = False

    def report(self, images, keep_float, variant):
        return None


def test_a_session_that_keeps_nothing_writes_its_file_unrepaired(monkeypatch):
    outcome, _ = _choose(monkeypatch, effects({"a": 0.96, "b": 0.97}, {}),
                         session_class=LearnedRangesSession)
    assert outcome.kept_float == [] and outcome.calibration == "b"
    assert [a.kept_float for a in outcome.attempts] == [[], []]


def test_the_search_times_each_file_once():
    """The greedy step adds a candidate whose file `_cost` has timed already: not again."""
    calls = []
    session = types.SimpleNamespace(time_ms=lambda model_bytes: calls.append(model_bytes) or 2.0)
    time_ms = repair._timed_once(session)
    assert [time_ms(b"a:layer1:"), time_ms(b"a:layer1:"), time_ms(b"a:layer2:")] == [2.0] * 3
    assert calls == [b"a:layer1:", b"a:layer2:"]


def test_groups_that_only_gain_together_are_kept_as_one_step(monkeypatch):
    # Each alone costs a little (a file the runtime runs worse with one of them in float);
    # together they recover the target. The summary reports the step's gain, not the negative
    # solo gains.
    def score(variant, floats, int16s):
        base = {"a": 0.95, "b": 0.97}[variant]
        pair = {"layer0", "layer1"} & set(floats)
        return base + (0.02 if len(pair) == 2 else -0.001 * len(pair))
    outcome, _ = _choose(monkeypatch, score)
    assert sorted(outcome.kept_float) == ["layer0", "layer1"]
    added = [c for c in outcome.candidates if c.added]
    assert [c.names for c in added] == [["layer0"], ["layer1"]]
    assert {c.step for c in added} == {1} and all(c.gain < 0 for c in added)
    assert all(c.step_gain == pytest.approx(0.02) for c in added)
    from keras_unet.export.result import _kept_steps

    (phrase,) = _kept_steps([c.to_dict() for c in added])
    assert phrase == "layer0, layer1 at float, kept together: agreement +0.0200"


def test_each_step_reports_the_gain_it_added_on_top_of_the_file_before():
    from keras_unet.export.result import _kept_steps

    steps = _kept_steps([
        {"names": ["conv"], "precision": "float", "gain": 0.012, "step": 1, "step_gain": 0.01,
         "cost": 0.2, "cost_unit": "ms"},
        {"names": ["head"], "precision": "int16", "gain": 0.004, "step": 2, "step_gain": 0.003,
         "cost": 1.0, "cost_unit": "units"}])
    assert steps == ["conv at float: agreement +0.0100 for 0.2 ms",
                     "head at int16: agreement +0.0030 for 1 units"]


def test_a_file_short_of_the_target_says_by_how_much_and_what_keeps_more(monkeypatch):
    score = effects({"a": 0.96, "b": 0.95}, {name: 0.001 for name in LAYERS})  # never the target
    outcome, _ = _choose(monkeypatch, score, se=0.006)  # and no gain beyond the noise
    assert outcome.kept_float == [] and outcome.shortfall.startswith(
        "agreement 0.9600 (standard error 0.0060) does not clear the repair target 0.98 by "
        "2 standard errors: repair measured")
    assert "every op in int8, was kept" in outcome.shortfall
    assert "--quantize int16x8" in outcome.shortfall and "--qat" in outcome.shortfall
    outcome, _ = _choose(monkeypatch, score, repair_on=False)
    assert "repair is off (--no-repair)" in outcome.shortfall


def test_a_file_that_clears_the_target_has_no_shortfall(monkeypatch):
    outcome, _ = _choose(monkeypatch, effects({"a": 0.999, "b": 0.95}, {}), se=0.001)
    assert outcome.shortfall is None


def test_the_shortfall_is_one_of_the_exports_warnings():
    from keras_unet.export.pipeline import diagnose

    outcome = types.SimpleNamespace(shortfall="agreement 0.9600 ... keep more.", attempts=[])
    converter = types.SimpleNamespace(diagnose=None, npu_fallbacks=None)
    diagnosis = diagnose(None, converter, types.SimpleNamespace(quantize="int8"),
                         types.SimpleNamespace(outcome=outcome))
    assert diagnosis.warnings == ["agreement 0.9600 ... keep more."]


class OrderedSession(ScriptedSession):
    """A format whose model's layers run layer0, layer1, ... (`layer_order`)."""

    def layer_order(self):
        return ["input"] + LAYERS


def test_loss_spread_over_a_stretch_of_layers_is_found_by_the_stretch_not_the_rows(monkeypatch):
    # Keeping any one of layer10..layer14 gains nothing; keeping all five recovers the file.
    # The report ranks layer0.. worst, so only the contiguous segment finds it.
    stretch = {f"layer{i}" for i in range(10, 15)}

    def score(variant, floats, int16s):
        return {"a": 0.95, "b": 0.97}[variant] + 0.025 * stretch.issubset(floats)

    outcome, _ = _choose(monkeypatch, score, session_class=OrderedSession)
    assert sorted(outcome.kept_float) == sorted(stretch)
    # Repair may keep 10 of the 30 ops (a third), so each segment holds 5: six of them.
    segments = [c for c in outcome.candidates if len(c.nodes) == 5]
    assert len(segments) == 6 and [c.added for c in segments].count(True) == 1
    # Without a layer order (or with a model too small to cut) there are no segments.
    outcome, _ = _choose(monkeypatch, score)
    assert outcome.kept_float == [] and all(len(c.nodes) < 5 for c in outcome.candidates)


def test_an_integer_only_export_passes_over_files_with_a_float_op(monkeypatch):
    # Keeping layer2 at int16 gains the most, but leaves a neighbour in float (onnxruntime
    # left a ReLU6 Clip between int16 nodes in float): repair must keep layer3 instead.
    score = effects({"a": 0.95, "b": 0.97}, {"layer2": 0.03, "layer3": 0.02})

    def float_ops(model_bytes):
        return ["Clip relu6"] if "layer2" in _decode(model_bytes)[2] else []

    outcome, _ = _choose(monkeypatch, score, int16=True, integer_only=True, float_ops=float_ops)
    assert outcome.kept_int16 == ["layer3"]
    passed_over = [a for a in outcome.attempts if a.error]
    assert passed_over and all(a.error.startswith(int8.NOT_INTEGER_ONLY) for a in passed_over)
    assert all("layer2" in a.kept_int16 for a in passed_over)
    # Off integer-only the same files are fine: nothing is passed over.
    outcome, _ = _choose(monkeypatch, score, int16=True, float_ops=float_ops)
    assert not [a for a in outcome.attempts if a.error]


def test_files_passed_over_as_not_integer_only_are_named_apart_from_runtime_refusals():
    from keras_unet.export.pipeline import diagnose

    attempts = [int8.Attempt("a", [], None, None, False, error="XNNPACK refused it"),
                int8.Attempt("a", [], None, None, False, kept_int16=["x", "y"],
                             error=f"{int8.NOT_INTEGER_ONLY}: 1 op(s) compute in float (Clip c)")]
    outcome = types.SimpleNamespace(shortfall=None, attempts=attempts)
    diagnosis = diagnose(None, types.SimpleNamespace(diagnose=None, npu_fallbacks=None),
                         types.SimpleNamespace(quantize="int8"), types.SimpleNamespace(outcome=outcome))
    assert diagnosis.warnings == [
        "1 int8 file(s) tried did not load in the runtime, e.g. with 0 op(s) in float: XNNPACK refused it",
        "1 file(s) tried were passed over, e.g. with 2 op(s) at int16: not integer-only: 1 op(s) "
        "compute in float (Clip c)"]


def _pair_in_a_stretch(variant, floats, int16s):
    """layer10 and layer11 together recover the file (neither alone); the stretch that holds
    them (layer10..layer14) is what finds them."""
    return {"a": 0.95, "b": 0.97}[variant] + 0.025 * {"layer10", "layer11"}.issubset(floats)


class OrderedTimedSession(TimedSession):
    def layer_order(self):
        return ["input"] + LAYERS


def test_a_stretch_that_cleared_is_trimmed_back_to_the_ops_that_matter(monkeypatch):
    outcome, _ = _choose(monkeypatch, _pair_in_a_stretch, session_class=OrderedSession)
    assert sorted(outcome.kept_float) == ["layer10", "layer11"]
    trims = [c for c in outcome.candidates if c.trimmed]
    # layer12..14 went back at once; then neither layer10 nor layer11 could.
    assert [(c.names, c.added) for c in trims] == [
        (["layer12", "layer13", "layer14"], True), (["layer11"], False), (["layer10"], False)]
    assert trims[1].gain == pytest.approx(-0.025)
    from keras_unet.export.result import _trimmed_phrase

    phrase = _trimmed_phrase([c.to_dict() for c in outcome.candidates])
    assert phrase == "; then 3 of those op(s) went back to int8 with the target still cleared (3 trial(s))"


def test_a_trimmed_file_slower_than_timing_noise_is_not_chosen(monkeypatch):
    # Kept in float, layer12..layer14 make the file faster (XNNPack ran some float stretches
    # faster than int8): the trimmed file clears with fewer ops but is slower, so the
    # stretch is written; within the timing noise the trimmed one would be.
    monkeypatch.setattr(TimedSession, "cost", {"layer12": -0.1, "layer13": -0.1, "layer14": -0.1})
    outcome, _ = _choose(monkeypatch, _pair_in_a_stretch, session_class=OrderedTimedSession)
    assert sorted(outcome.kept_float) == [f"layer{i}" for i in range(10, 15)]
    assert any(c.trimmed and c.added for c in outcome.candidates)
    monkeypatch.setattr(TimedSession, "cost", {f"layer{i}": -0.001 for i in (12, 13, 14)})
    outcome, _ = _choose(monkeypatch, _pair_in_a_stretch, session_class=OrderedTimedSession)
    assert sorted(outcome.kept_float) == ["layer10", "layer11"]


def test_small_groups_and_files_short_of_the_target_are_not_trimmed(monkeypatch):
    score = effects({"a": 0.95, "b": 0.97}, {"layer2": 0.03})
    outcome, _ = _choose(monkeypatch, score, session_class=OrderedSession)
    assert outcome.kept_float == ["layer2"] and not any(c.trimmed for c in outcome.candidates)
    short = effects({"a": 0.95, "b": 0.96}, {f"layer{i}": 0.002 for i in range(10, 15)})
    outcome, _ = _choose(monkeypatch, short, session_class=OrderedSession)
    assert outcome.verification.agreement_iou < 0.98
    assert not any(c.trimmed for c in outcome.candidates)


class ConsumerSession(OrderedSession):
    """A format where an op's reader stays kept with it (TFLite's `expand`): layerN+1 reads
    layerN."""

    def expand(self, nodes):
        readers = [f"layer{int(n[5:]) + 1}" for n in nodes if n.startswith("layer")]
        return list(dict.fromkeys(list(nodes) + [r for r in readers if r in LAYERS]))


def test_a_trim_records_only_the_ops_that_went_back(monkeypatch):
    # The stretch layer10..14 is kept with its reader layer15. Putting its second half
    # (layer13..15) back keeps layer13, which reads layer12: only layer14 and layer15 go back.
    outcome, _ = _choose(monkeypatch, _pair_in_a_stretch, session_class=ConsumerSession)
    first = next(c for c in outcome.candidates if c.trimmed)
    assert first.names == ["layer14", "layer15"] and first.added
    assert {"layer10", "layer11"} <= set(outcome.kept_float)


def test_a_trim_at_int16_is_costed_by_the_searchs_cost_model(monkeypatch):
    # Integer-only: the stretch is kept at int16, and a trim takes INT16_UNITS off per op.
    def score(variant, floats, int16s):
        return {"a": 0.95, "b": 0.97}[variant] + 0.025 * {"layer10", "layer11"}.issubset(int16s)

    outcome, _ = _choose(monkeypatch, score, session_class=OrderedSession, int16=True,
                         integer_only=True)
    assert sorted(outcome.kept_int16) == ["layer10", "layer11"]
    first = next(c for c in outcome.candidates if c.trimmed)
    assert first.cost_unit == "units"
    assert first.cost == pytest.approx(-repair.INT16_UNITS * len(first.names))
