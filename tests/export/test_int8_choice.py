"""Which int8 file `keras_unet.export.int8.quantize_verified` writes (issue 10): every
calibration is tried, repair aims for `AGREEMENT_TARGET` cleared by `CONFIDENCE_Z` standard
errors, float layers are kept only when they reach it, and a refusal only below the floor. A scripted session stands in for a
format, so each rule is checked without converting anything."""

import types

import numpy as np
import pytest

from keras_unet.export import int8
from keras_unet.export.int8_session import Int8Session
from keras_unet.export.quantization.report import make_row
from keras_unet.export.verify import VerificationError

LAYERS = [f"layer{i}" for i in range(30)]


class ScriptedSession(Int8Session):
    """Calibrations `a` and `b`; each quantized file's agreement comes from `scores`:
    `(variant, number of layers kept float) -> agreement`."""

    variants = ("a", "b")

    def __init__(self, scores):
        super().__init__(job=None, options=None)
        self.scores = scores
        self.reports = 0

    def convert(self, keep_float, variant, keep_int16=()):
        return f"{variant}:{','.join(keep_float)}".encode()

    def report(self, images, keep_float, variant):
        self.reports += 1
        return [make_row(name, "CONV_2D", name, sqnr_db=10.0 + i, kept_float=name in keep_float)
                for i, name in enumerate(LAYERS)]


class StemSession(ScriptedSession):
    """A format that names its stem (`leading_nodes`)."""

    def leading_nodes(self):
        return ["stem_conv", "stem_act"]


def _by_count(scores):
    def score(variant, kept):
        return scores[(variant, len(kept))]
    return score


class TimedSession(ScriptedSession):
    """A format that times files: 1 ms per file plus 0.1 ms per op kept in float."""

    def __init__(self, scores):
        super().__init__(scores)
        self.metadata = {"activation_type": "uint8"}
        self.timed = []

    def time_ms(self, model_bytes):
        kept = model_bytes.decode().split(":")[1]
        self.timed.append(kept)
        return 1.0 + 0.1 * len(kept.split(",") if kept else [])


def _choose(monkeypatch, scores, floor=0.95, repair=True, session_class=ScriptedSession, se=0.0,
            finished=None):
    session = session_class(scores)
    score_of = scores if callable(scores) else _by_count(scores)

    def verify_bytes(job, converter, model_bytes, quantization, agreement_floor, threshold,
                     raise_on_failure):
        variant, kept = model_bytes.decode().split(":")
        score = score_of(variant, kept.split(",") if kept else [])
        return types.SimpleNamespace(agreement_iou=score, pixel_agreement=score, agreement_se=se,
                                     passed=score >= agreement_floor, summary=lambda: "scripted")

    monkeypatch.setattr("keras_unet.export.verify.verify_bytes", verify_bytes)
    job = types.SimpleNamespace(threshold=0.5,
                                verification_images=lambda: (np.zeros((2, 4, 4, 3)), "test"))

    class Stamp:
        """Records each file's int8 metadata section; the bytes stay as they are."""

        converter = types.SimpleNamespace(suffix=".scripted")

        def __call__(self, model_bytes, int8_section):
            if finished is not None:
                finished.append(int8_section)
            return types.SimpleNamespace(model_bytes=model_bytes)

    outcome = int8.quantize_verified(job, session, Stamp(), floor, repair=repair)
    return outcome, session


def test_the_best_calibration_wins_when_it_meets_the_target(monkeypatch):
    outcome, session = _choose(monkeypatch, {("a", 0): 0.985, ("b", 0): 0.991})
    assert outcome.calibration == "b" and outcome.kept_float == []
    assert [a.calibration for a in outcome.attempts] == ["a", "b"]  # both tried
    assert session.reports == 0  # nothing kept float, no report asked for


def test_below_the_target_repair_continues_from_the_best_calibration(monkeypatch):
    scores = {("a", 0): 0.90, ("b", 0): 0.97, ("b", 2): 0.975, ("b", 4): 0.982}
    outcome, _ = _choose(monkeypatch, scores)
    assert outcome.calibration == "b" and outcome.kept_float == ["layer0", "layer1", "layer2", "layer3"]
    assert outcome.verification.agreement_iou == 0.982


def test_float_layers_that_miss_the_target_are_not_worth_their_speed(monkeypatch):
    scores = {("a", 0): 0.96, ("b", 0): 0.95}
    scores.update({("a", n): 0.965 + n / 1000 for n in range(2, 13, 2)})  # never 0.98
    outcome, _ = _choose(monkeypatch, scores)
    assert outcome.calibration == "a" and outcome.kept_float == [] and outcome.verification.agreement_iou == 0.96
    # From a file at the floor, repair keeps at most a third of the ops float: 10 of 30.
    kept = [len(a.kept_float) for a in outcome.attempts[2:]]
    assert kept == [2, 4, 6, 8, 10] and int(int8.TARGET_SHARE * len(LAYERS)) == 10


def test_below_the_floor_the_best_repair_is_kept_when_it_meets_the_floor(monkeypatch):
    scores = {("a", 0): 0.90, ("b", 0): 0.93}
    scores.update({("b", n): 0.94 + n / 1000 for n in range(2, 13, 2)})  # 0.952 at 12 kept
    outcome, _ = _choose(monkeypatch, scores)
    assert outcome.calibration == "b" and len(outcome.kept_float) == 12
    assert outcome.verification.agreement_iou == pytest.approx(0.952)


def test_nothing_at_the_floor_is_refused_with_the_best_found(monkeypatch):
    scores = {("a", 0): 0.80, ("b", 0): 0.85}
    scores.update({("b", n): 0.85 + n / 1000 for n in range(2, 13, 2)})
    with pytest.raises(VerificationError, match=r"reached 0\.8620 \(b calibration, 12 op\(s\)"):
        _choose(monkeypatch, scores)


def test_a_floor_above_the_target_becomes_the_target(monkeypatch):
    scores = {("a", 0): 0.985, ("b", 0): 0.984, ("a", 2): 0.992}
    outcome, _ = _choose(monkeypatch, scores, floor=0.99)
    assert outcome.kept_float == ["layer0", "layer1"] and outcome.verification.agreement_iou == 0.992


def test_without_repair_only_the_first_calibration_is_tried(monkeypatch):
    outcome, session = _choose(monkeypatch, {("a", 0): 0.96, ("b", 0): 0.99}, repair=False)
    assert [a.calibration for a in outcome.attempts] == ["a"] and outcome.kept_float == []


def _stem_scores(base, stem_gain, per_layer=0.0):
    """Agreement: `base` for calibration b (a lower), `stem_gain` more with the stem kept
    float, `per_layer` more per other layer kept float."""
    def score(variant, kept):
        stem = "stem_conv" in kept
        others = len([k for k in kept if not k.startswith("stem")])
        return (base if variant == "b" else base - 0.05) + stem_gain * stem + per_layer * others
    return score


def test_the_stem_is_tried_first_and_kept_alone_when_it_reaches_the_target(monkeypatch):
    outcome, _ = _choose(monkeypatch, _stem_scores(0.967, 0.017), session_class=StemSession)
    assert outcome.kept_float == ["stem_conv", "stem_act"] and outcome.calibration == "b"
    assert [a.kept_float for a in outcome.attempts] == [[], [], ["stem_conv", "stem_act"]]


def test_a_stem_that_helps_stays_float_while_repair_goes_on(monkeypatch):
    outcome, _ = _choose(monkeypatch, _stem_scores(0.96, 0.01, per_layer=0.003),
                         session_class=StemSession)
    assert outcome.kept_float == ["stem_conv", "stem_act", "layer0", "layer1", "layer2", "layer3"]
    assert outcome.verification.agreement_iou == pytest.approx(0.982)


def test_a_stem_that_does_not_help_is_not_kept(monkeypatch):
    outcome, _ = _choose(monkeypatch, _stem_scores(0.96, -0.01, per_layer=0.011),
                         session_class=StemSession)
    assert outcome.kept_float == ["layer0", "layer1"]
    assert [a.kept_float for a in outcome.attempts][2:] == [["stem_conv", "stem_act"],
                                                           ["layer0", "layer1"]]


def test_a_file_at_the_target_within_its_noise_gets_one_more_step(monkeypatch):
    # 0.9817 +- 0.001 (MobileNetV3-large TFLite's stem file) is 0.9797 two errors down.
    scores = {("a", 0): 0.9817, ("b", 0): 0.95, ("a", 2): 0.9868}
    outcome, _ = _choose(monkeypatch, scores, se=0.001)
    assert outcome.kept_float == ["layer0", "layer1"]
    without_noise, _ = _choose(monkeypatch, scores, se=0.0)
    assert without_noise.kept_float == []


def test_when_no_step_clears_the_noise_the_fewest_float_ops_at_the_target_are_kept(monkeypatch):
    # MobileNetV3-large ONNX: the stem reached 0.9818, every later step the same.
    scores = {("a", 0): 0.9658, ("b", 0): 0.952}
    scores.update({("a", n): 0.9818 for n in range(2, 13, 2)})
    outcome, _ = _choose(monkeypatch, scores, se=0.001)
    assert outcome.kept_float == ["layer0", "layer1"]
    assert outcome.verification.agreement_iou == 0.9818


def test_an_all_int8_file_at_the_target_stays_when_repair_does_not_clear_the_noise(monkeypatch):
    scores = {("a", 0): 0.981, ("b", 0): 0.95}
    scores.update({("a", n): 0.9815 for n in range(2, 13, 2)})
    outcome, _ = _choose(monkeypatch, scores, se=0.001)
    assert outcome.kept_float == [] and len(outcome.attempts) > 2


def test_what_the_float_layers_cost_is_timed_in_turn_and_recorded(monkeypatch):
    finished = []
    scores = {("a", 0): 0.97, ("b", 0): 0.95, ("a", 2): 0.975, ("a", 4): 0.99}
    outcome, session = _choose(monkeypatch, scores, session_class=TimedSession, finished=finished)
    assert len(outcome.kept_float) == 4
    assert outcome.latency_ms == {"all_int8": 1.0, "this_file": pytest.approx(1.4)}
    kept = "layer0,layer1,layer2,layer3"
    assert session.timed == ["", kept] * int8.LATENCY_ROUNDS  # alternating
    # The written file's metadata carries the cost beside the session's own entries.
    assert finished[-1] == {"calibration": "a", "kept_float": outcome.kept_float,
                            "activation_type": "uint8", "kept_float_latency_ms": outcome.latency_ms}


def test_nothing_kept_float_nothing_timed(monkeypatch):
    outcome, session = _choose(monkeypatch, {("a", 0): 0.99, ("b", 0): 0.95},
                               session_class=TimedSession)
    assert outcome.latency_ms == {} and session.timed == []


def test_the_summary_counts_ops_of_one_layer_kept_float():
    from keras_unet.export.result import _counted

    assert _counted(["rescaling", "rescaling", "conv_bn", "activation", "activation"]) == (
        "rescaling x2, conv_bn, activation x2")


class LearnedRangesSession(StemSession):
    """A QAT model's session: nothing to report on (None), so nothing to repair."""

    def report(self, images, keep_float, variant):
        return None


def test_a_session_without_a_report_writes_its_file_unrepaired(monkeypatch):
    outcome, _ = _choose(monkeypatch, {("a", 0): 0.96, ("b", 0): 0.97},
                         session_class=LearnedRangesSession)
    assert outcome.kept_float == [] and outcome.calibration == "b"
    assert [a.kept_float for a in outcome.attempts] == [[], []]
