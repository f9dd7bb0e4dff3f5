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

    Example:
    ```python
    session = TFLiteSession(job, TFLiteOptions(quantize="int8", io_dtype="uint8"), TFLITE_REWRITES)
    model_bytes = session.quantize([], "minmax")
    ```
    """

    # Percentile first: it agreed better on every model of the int8 matrix (first is what
    # repair=False uses).
    variants = ("percentile", "minmax")

    def __init__(self, job: Any, options: TFLiteOptions, rewrites: tuple = ()) -> None:
        from keras_unet.export.quantization import TFLiteQuantizer

        super().__init__(job, options, rewrites)
        self.quantizer = TFLiteQuantizer(make_converter(job, options))

    def convert(self, keep_float: list, variant: str, keep_int16: tuple = ()) -> bytes:
        model_bytes = self.quantizer.quantize(keep_float=keep_float, variant=variant)
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

    def refusal(self, model_bytes: bytes) -> Optional[str]:
        """Asked in a child process (`keras_unet.export.load_probe`): XNNPack aborts the process
        on some files it cannot prepare."""
        from keras_unet.export.load_probe import tflite_refusal

        return tflite_refusal(model_bytes, threads=self.options.threads)

    def report(self, images: Any, keep_float: list, variant: str) -> Optional[list]:
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


