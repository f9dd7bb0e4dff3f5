"""What one export format declares: `Converter` (its passes), `Rewrite`, `Diagnosis`.

A format is a frozen `Converter` whose fields are its passes, in the order the pipeline
(`keras_unet.export.pipeline`) runs them: `convert` (the one step a format writes itself),
`rewrites` (the declared rewrites of a converted file, `keras_unet.export.rewrites`),
`describe` and `embed_metadata`, the int8 sessions (`int8_session` after training,
`qat_session` for a quantize-aware model: both `keras_unet.export.int8_session.Int8Session`),
`diagnose`, `mask_head` and `package` (a last change of container, e.g. ONNX -> `.ort`).
A new mode is a new field value or a new `Converter`, not a branch in the pipeline.

Example:
```python
from keras_unet.export.tflite import CONVERTER

CONVERTER.suffix, [rewrite.name for rewrite in CONVERTER.rewrites]
```
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional


@dataclasses.dataclass
class Diagnosis:
    """What a converter found out about its file besides the bytes.

    Args:
        warnings: known traps met (issued as `UserWarning` and kept in the result).
        float_ops_left: compute ops a quantized file still runs in float, by op type.
        timings_ms: latencies measured while checking the file.
        npu_fallbacks: ops a typical NPU delegate would not run (`Converter.npu_fallbacks`).

    Example:
    ```python
    Diagnosis(float_ops_left={"ConvTranspose": 2}, warnings=["ConvTranspose runs in float"])
    ```
    """

    warnings: list = dataclasses.field(default_factory=list)
    float_ops_left: dict = dataclasses.field(default_factory=dict)
    timings_ms: dict = dataclasses.field(default_factory=dict)
    npu_fallbacks: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Rewrite:
    """One rewrite of a converted file: same numbers, a form the runtimes compute better.

    Args:
        name: what it does, for docs and messages.
        apply: `(model_bytes) -> bytes`; a file it does not apply to comes back unchanged.
        modes: the quantization modes it runs on.

    Example:
    ```python
    Rewrite("logit range", onnx_clip_logit_range, modes=("int8",))
    ```
    """

    name: str
    apply: Callable[[bytes], bytes]
    modes: tuple = ("none", "fp16", "dynamic", "int8")


def apply_rewrites(rewrites: tuple, model_bytes: bytes, quantize: str) -> bytes:
    """`model_bytes` after each rewrite of `rewrites` that runs on `quantize`, in order.

    Example:
    ```python
    apply_rewrites(CONVERTER.rewrites, raw_bytes, "int8")
    ```
    """
    for rewrite in rewrites:
        if quantize in rewrite.modes:
            model_bytes = rewrite.apply(model_bytes)
    return model_bytes


@dataclasses.dataclass(frozen=True)
class Converter:
    """One export format on top of the pipeline: the passes that differ between formats.

    Args:
        format: the format in the metadata and the runtime (`"tflite"`, `"onnx"`).
        suffix: the suffix of the format's files (what the runtimes load them as).
        quantize_modes: the `quantize` values the format supports.
        conversion_options: `(ExportOptions) -> options` of `convert` (`TFLiteOptions`,
            `ONNXOptions`); raises `ValueError` for an option the format refuses.
        convert: `(job, options) -> bytes`, the file as the converter writes it. Depends
            only on its arguments, so it may run several times on one job.
        describe: `(model_bytes) -> dict` with `input_shape`, `input_dtype`,
            `output_dtype`, `input_quantization` and `output_quantization`.
        embed_metadata: `(model_bytes, metadata) -> bytes`.
        int8_session: `(job, options, rewrites) -> Int8Session` after training.
        qat_session: `(job, options, rewrites) -> Int8Session` of a quantize-aware model.
        rewrites: `Rewrite`s of every converted file, in order.
        diagnose: `(job, options, model_bytes) -> Diagnosis`, or None.
        mask_head: `(model_bytes, num_classes, threshold) -> bytes` ending the graph with
            the mask step (`keras_unet.export.mask_head`), or None.
        package: `(job, export_options, model_bytes) -> bytes`: the checked file in another
            container (`.ort`), or None.
        name: the format the result reports; default `format`.
        out_suffix: the suffix the output file must have; default `suffix` (`.ort` for a
            packaged ONNX file).
        float_ops: `(model_bytes) -> [str]`, the ops of a file that compute in float
            (what makes a file not integer-only), or None when the format cannot tell.
        npu_fallbacks: `(model_bytes) -> [str]`, the ops a typical NPU delegate would not
            run, as far as a tool can tell without a device, or None.

    Example:
    ```python
    from keras_unet.export.tflite import CONVERTER

    CONVERTER.suffix  # ".tflite"
    ```
    """

    format: str
    suffix: str
    quantize_modes: tuple
    conversion_options: Callable
    convert: Callable
    describe: Callable
    embed_metadata: Callable
    int8_session: Callable
    qat_session: Callable
    rewrites: tuple = ()
    diagnose: Optional[Callable] = None
    mask_head: Optional[Callable] = None
    package: Optional[Callable] = None
    name: Optional[str] = None
    out_suffix: Optional[str] = None
    write: Optional[Callable] = None  # (out, data) -> None; None: one file, written atomically
    float_ops: Optional[Callable] = None
    npu_fallbacks: Optional[Callable] = None

    @property
    def result_format(self) -> str:
        """The format the `ExportResult` reports."""
        return self.name or self.format

    def rewrite(self, model_bytes: bytes, quantize: str) -> bytes:
        """`model_bytes` after the format's rewrites for `quantize`."""
        return apply_rewrites(self.rewrites, model_bytes, quantize)

    def session(self, job: Any, options: Any) -> Any:
        """The job's int8 session: from learned ranges for a quantize-aware model, else
        calibrated after training."""
        kind = self.qat_session if job.quantize_aware else self.int8_session
        return kind(job, options, self.rewrites)


def check_output(converter: Converter, out: Any, quantize: str) -> None:
    """Raise a `ValueError` unless `quantize` is a mode of the format and `out` has its suffix.

    Example:
    ```python
    check_output(CONVERTER, "model.tflite", "int8")
    ```
    """
    if quantize not in converter.quantize_modes:
        raise ValueError(
            f"`quantize` must be one of {list(converter.quantize_modes)} for format "
            f"'{converter.format}'. Received: quantize={quantize!r}"
        )
    suffix = converter.out_suffix or converter.suffix
    if Path(str(out)).suffix.lower() != suffix:
        raise ValueError(
            f"The output file of a {converter.result_format} export must end in "
            f"'{suffix}'. Received: out='{out}'"
        )


def float_ops_phrase(converter: Converter, model_bytes: bytes, shown: int = 6) -> Optional[str]:
    """`"N op(s) compute in float (a, b ...)"` for the ops of a file that compute in float
    (`Converter.float_ops`, the first `shown` named), or None when it has none or the format
    cannot tell: what makes a file not integer-only, for the export's refusal and repair's
    passing over.

    Example:
    ```python
    float_ops_phrase(CONVERTER, model_bytes)   # None: an integer-only file
    ```
    """
    floats = converter.float_ops(model_bytes) if converter.float_ops is not None else []
    if not floats:
        return None
    more = " ..." if len(floats) > shown else ""
    return f"{len(floats)} op(s) compute in float ({', '.join(floats[:shown])}{more})"
