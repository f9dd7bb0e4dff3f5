"""The int8 sessions of a TFLite export (`keras_unet.export.int8_session`).

`TFLiteSession` calibrates once (`keras_unet.export.quantization.TFLiteQuantizer`) and
quantizes from either calibration variant with any ops kept in float; `TFLiteQATSession`
writes a quantize-aware model from its learned ranges.

Example:
```python
from keras_unet.export.tflite import CONVERTER, TFLiteOptions

session = CONVERTER.session(job, TFLiteOptions(quantize="int8", io_dtype="uint8"))
model_bytes = session.quantize([], session.variants[0])
```
"""

from __future__ import annotations

from typing import Any, Optional

from keras_unet.export.int8_session import Int8Session, QATSession
from keras_unet.export.tflite_convert import (TFLiteOptions, custom_ops, make_converter,
                                              raise_unsupported, time_ms)


class TFLiteSession(Int8Session):
    """The int8 session of one job after training (`keras_unet.export.int8_session`).

    Calibrates once (`TFLiteQuantizer`: the calibrator's ranges measured again where
    TFLite widened them), then quantizes from either calibration variant (`"percentile"`:
    ranges clipped at the 99.99th percentile, see `keras_unet.export.quantization.ranges`;
    `"minmax"`) with any set of ops kept in float
    (`denylisted_nodes`, uint8/int8 I/O kept) and reports per layer.

    With `TFLiteOptions(quantize="int16x8")` the same calibration and variants give 16x8
    files (every op at 16-bit activations, `tflite_int16.quantize_16x8`): no op can be kept
    in float (`can_keep_float` is False), `keep_int16` means nothing and is ignored, the
    rewrites run as for `"int16x8"` (none of the int8 ones), and there is no per-layer
    report (TFLite's debugger measures int8 only).

    In an int8 file, ops named in `keep_int16` get 16-bit activations and 8-bit weights
    (`can_keep_int16`): the LiteRT quantizer writes such a file from the same calibrated
    model (`keras_unet.export.quantization.tflite_mixed`), with QUANTIZE ops between int8
    and int16; a file without such ops is written as before, by TF's MLIR quantizer.
    With `integer_only`, no op may be kept in float.

    Example:
    ```python
    session = TFLiteSession(job, TFLiteOptions(quantize="int8", io_dtype="uint8"), TFLITE_REWRITES)
    model_bytes = session.quantize([], "minmax")
    ```
    """

    # Percentile first: it agreed better on every model of the int8 matrix (first is what
    # repair=False uses).
    variants = ("percentile", "minmax")
    can_correct_biases = True
    can_round_weights = True
    can_keep_int16 = True

    def __init__(self, job: Any, options: TFLiteOptions, rewrites: tuple = ()) -> None:
        from keras_unet.export.quantization import TFLiteQuantizer

        super().__init__(job, options, rewrites)
        self.quantizer = TFLiteQuantizer(make_converter(job, options))
        if options.quantize == "int16x8":
            self.can_keep_float = self.can_keep_int16 = False
            # 16-bit steps are fine enough that clipping the tails costs more than it saves
            # (tiny nuclei UNet: max |p - Keras| 0.09 minmax, 0.44 percentile).
            self.variants = ("minmax", "percentile")

    def convert(self, keep_float: list, variant: str, keep_int16: tuple = ()) -> bytes:
        if keep_float and self.options.integer_only:
            raise ValueError("An integer-only file keeps no op in float; keep it at 16-bit "
                             "activations (keep_int16) instead. "
                             f"Received: keep_float={list(keep_float)[:3]}")
        if self.options.quantize == "int16x8":
            keep_int16 = ()  # every op is at 16 bits already
        model_bytes = self.quantizer.quantize(keep_float=keep_float, variant=variant,
                                              keep_int16=keep_int16)
        custom = custom_ops(model_bytes)
        if custom:
            raise_unsupported(custom, self.job.source)
        return model_bytes

    def expand(self, nodes: list) -> list:
        return self.quantizer.with_consumers(nodes)

    def time_ms(self, model_bytes: bytes) -> Optional[float]:
        """Latency of `model_bytes` here, or None when speed checks are off."""
        if not self.options.check_speed:
            return None
        return time_ms(model_bytes, threads=self.options.threads)

    def leading_nodes(self) -> list:
        return self.quantizer.leading_ops()

    def trailing_nodes(self) -> list:
        return self.quantizer.trailing_ops()

    def refusal(self, model_bytes: bytes) -> Optional[str]:
        """Asked in a child process (`keras_unet.export.load_probe`): XNNPack aborts the process
        on some files it cannot prepare."""
        from keras_unet.export.load_probe import tflite_refusal

        return tflite_refusal(model_bytes, threads=self.options.threads)

    def report(self, images: Any, keep_float: list, variant: str) -> Optional[list]:
        if self.options.quantize == "int16x8":
            return None  # the debugger's rows would measure int8, not this file
        try:
            return self.quantizer.report(images, keep_float=keep_float, model=self.job.model,
                                         variant=variant)
        except ValueError:
            # The debugger refuses a model with nothing quantized left to measure (every
            # op kept in float); the int8 step reads None as "nothing to measure".
            return None


class TFLiteQATSession(QATSession):
    """The int8 session of a quantize-aware model: `keras_unet.export.qat.converted_qat_tflite`.

    Example:
    ```python
    TFLiteQATSession(job, TFLiteOptions("int8", "uint8"), TFLITE_REWRITES).quantize([], "qat")
    ```
    """

    def convert_qat(self) -> bytes:
        from keras_unet.export.qat import converted_qat_tflite

        return converted_qat_tflite(self.job.model, io_dtype=self.options.io_dtype,
                                    input_size=self.job.size)


