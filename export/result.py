"""`ExportResult`: what an export wrote and how well it matched the Keras model.

Example:
```python
from keras_unet.export import export_tflite

result = export_tflite("model.keras", "model.tflite")
print(result.summary())
result.to_dict()["verification"]["max_abs_diff"]
```
"""

import dataclasses
from typing import Any, Optional

from keras_unet.runtime.files import MB


@dataclasses.dataclass
class ExportResult:
    """The outcome of `export_tflite` / `export_onnx`.

    Args:
        path: the written file.
        format: `"tflite"` or `"onnx"`.
        quantization: `"none"`, `"fp16"`, `"dynamic"`, `"int8"` or `"int16x8"`.
        size_bytes: size of the file.
        input_shape: `(batch, height, width, channels)`; None marks a dynamic dimension.
        input_dtype: dtype of the file's input tensor.
        output_dtype: dtype of the file's output tensor.
        verification: the `VerificationReport`, or None with `verify=False`.
        warnings: known traps met on the way (also issued as `UserWarning`).
        float_ops_left: compute ops a quantized file still runs in float, by op type.
        metadata: the metadata embedded in the file.
        timings_ms: latencies measured during export (speed checks), if any.
        kept_float: int8: Keras layers (else ops) the repair left in float.
        calibration_method: int8: the calibration the written file used.
        repair_attempts: int8: every file tried (calibration, kept_float, agreement).
        layer_report: int8: per-layer rows of the written file (worst first), when built.
        kept_float_latency_ms: int8 with layers kept in float: `{"all_int8": ms,
            "this_file": ms}`, what those float layers cost in speed on the export machine.
        iou_keras, iou_export, iou_drop: against the masks of the verification images,
            when they have masks (held out from a labelled calibration folder).
        kept_int16: int8: Keras layers (else ops) the repair kept at 16-bit activations.
        repair_candidates: int8: every candidate the repair measured end to end (its
            precision, agreement, gain and cost; `keras_unet.export.repair.Candidate`).
        integer_only: the file has no float op (checked before writing).
        npu_fallbacks: ops a typical NPU delegate would not run, as far as the format's
            tools tell without a device (empty: none found).
        shortfall: int8/int16x8: why the file falls short of the repair target and what
            keeps more (`keras_unet.export.int8.Int8Outcome.shortfall`; also among
            `warnings`), or None when it meets the target.

    Example:
    ```python
    import keras_unet
    from keras_unet.export import export_tflite

    model = keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2)
    result = export_tflite(model, "unet.tflite", progress=False)
    print(result.summary())
    result.to_dict()["verification"]["max_abs_diff"]   # below 1e-4
    ```
    """

    path: str
    format: str
    quantization: str
    size_bytes: int
    input_shape: tuple
    input_dtype: str
    output_dtype: str
    verification: Any = None
    warnings: list = dataclasses.field(default_factory=list)
    float_ops_left: dict = dataclasses.field(default_factory=dict)
    metadata: dict = dataclasses.field(default_factory=dict)
    timings_ms: dict = dataclasses.field(default_factory=dict)
    kept_float: list = dataclasses.field(default_factory=list)
    calibration_method: Optional[str] = None
    repair_attempts: list = dataclasses.field(default_factory=list)
    layer_report: Optional[list] = None
    kept_float_latency_ms: dict = dataclasses.field(default_factory=dict)
    iou_keras: Optional[float] = None
    iou_export: Optional[float] = None
    iou_drop: Optional[float] = None
    kept_int16: list = dataclasses.field(default_factory=list)
    repair_candidates: list = dataclasses.field(default_factory=list)
    integer_only: bool = False
    npu_fallbacks: list = dataclasses.field(default_factory=list)
    shortfall: Optional[str] = None

    def summary(self, worst_layers=0) -> str:
        """A few lines for a terminal; `worst_layers` > 0 adds that many report rows."""
        lines = [
            f"wrote {self.path} ({self.format}, quantize={self.quantization}, "
            f"{self.size_bytes / MB:.2f} MB, input {self.input_shape} {self.input_dtype}, "
            f"output {self.output_dtype})"
        ]
        if self.verification is not None:
            lines.append(self.verification.summary())
        else:
            lines.append("verification skipped")
        if self.iou_drop is not None:
            lines.append(f"IoU on the verification masks: keras {self.iou_keras:.4f}, this file "
                         f"{self.iou_export:.4f} (drop {self.iou_drop:+.4f})")
        if self.calibration_method is not None:
            tries = len(self.repair_attempts)
            lines.append(
                ("int8: the ranges learned in quantization-aware training (the calibration "
                 "images only verify), " if self.calibration_method == "qat"
                 else f"int8: {_calibration_words(self.calibration_method)}, ")
                + _kept_line(self.kept_float, self.kept_int16, tries, self.quantization))
            if self.repair_candidates:
                added = [c for c in self.repair_candidates
                         if c.get("added") and not c.get("trimmed")]
                lines.append(f"repair measured {len(self.repair_candidates)} candidate(s) end to "
                             f"end; the search added {len(added)}"
                             + "".join(f"; {step}" for step in _kept_steps(added))
                             + _trimmed_phrase(self.repair_candidates))
            cost = self.kept_float_latency_ms
            if (self.kept_float or self.kept_int16) and cost.get("all_int8"):
                change = cost["this_file"] / cost["all_int8"] - 1.0
                lines.append(
                    f"latency with those ops kept: {cost['this_file']:.2f} ms per image here, "
                    f"{change:+.0%} against {cost['all_int8']:.2f} ms with every layer in "
                    f"{self.quantization}")
        if self.integer_only:
            lines.append("integer-only: no float op in the file")
        if self.npu_fallbacks:
            lines.append(f"{len(self.npu_fallbacks)} op(s) a typical NPU delegate would not "
                         f"run: {', '.join(self.npu_fallbacks[:8])}"
                         + (" ..." if len(self.npu_fallbacks) > 8 else ""))
        if self.float_ops_left:
            lines.append(f"ops left in float: {self.float_ops_left}")
        if self.timings_ms:
            lines.append("latency during export: " + ", ".join(
                f"{k}={v:.1f} ms" for k, v in self.timings_ms.items()))
        lines.extend(f"warning: {w}" for w in self.warnings)
        if worst_layers and self.layer_report:
            from keras_unet.export.quantization.report import format_worst_layers

            lines.append(format_worst_layers(self.layer_report, n=worst_layers))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if self.verification is not None:
            data["verification"] = self.verification.to_dict()
        return data


def _calibration_words(variant: str) -> str:
    """`"minmax+bias"` -> `"minmax calibration, biases corrected for the int8 weights"`."""
    from keras_unet.export.quantization.variants import variant_words

    return variant_words(variant)


def _kept_line(kept_float: list, kept_int16: list, tries: int, mode: str) -> str:
    """What the repair kept above the mode's precision, for the summary."""
    parts = []
    if kept_float:
        parts.append(f"{len(kept_float)} op(s) kept in float ({_counted(kept_float)})")
    if kept_int16:
        parts.append(f"{len(kept_int16)} op(s) at int16 activations ({_counted(kept_int16)})")
    if not parts:
        return f"every layer in {mode}"
    return " and ".join(parts) + f" after {tries} attempt(s)"


def _counted(names):
    """`a, a, b` -> `a x2, b`: a Keras layer can become several ops (a hard-swish four)."""
    from collections import Counter

    return ", ".join(name if n == 1 else f"{name} x{n}" for name, n in Counter(names).items())


def _trimmed_phrase(candidates: list) -> str:
    """`"; then 8 of those op(s) went back to int8 with the target still cleared (2
    trial(s))"`, or ""
    when repair trimmed nothing (`Candidate.trimmed`)."""
    trials = [c for c in candidates if c.get("trimmed")]
    if not trials:
        return ""
    back = sum(len(c["names"]) for c in trials if c.get("added"))
    return (f"; then {back} of those op(s) went back to int8 with the target still cleared "
            f"({len(trials)} trial(s))")


def _kept_steps(added: list) -> list:
    """One phrase per step of the repair search: what it kept and the agreement it added.

    Candidates kept together (`Candidate.step`) are one phrase with the step's gain; a lone
    candidate also gives its cost."""
    steps: dict = {}
    for candidate in added:
        steps.setdefault(candidate["step"], []).append(candidate)
    phrases = []
    for together in steps.values():
        first = together[0]
        names = [name for c in together for name in c["names"]]
        precisions = sorted({c["precision"] for c in together})
        what = f"{_counted(names)} at {'/'.join(precisions)}"
        if len(together) == 1:
            phrases.append(f"{what}: agreement {first['step_gain']:+.4f} for {first['cost']:g} "
                           f"{first['cost_unit']}")
        else:
            phrases.append(f"{what}, kept together: agreement {first['step_gain']:+.4f}")
    return phrases
