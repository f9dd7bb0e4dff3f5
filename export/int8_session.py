"""`Int8Session`: what a format gives the int8 step (`keras_unet.export.int8`).

In the manner of onnxruntime's `CalibraterBase`: the abstract methods are what every format
must do (quantize a file from a calibration variant with some ops kept in float); the
others have defaults for what a format may lack (no per-layer report, no stem, nothing that
must stay float with a kept op, no timing, no metadata of its own). A format subclasses it
once after training (`tflite_int8.TFLiteSession`, `onnx_int8.ONNXSession`) and once for a
quantize-aware model (`QATSession`: the learned ranges, nothing kept in float, no report).

Example:
```python
class Scripted(Int8Session):
    variants = ("minmax",)

    def convert(self, keep_float, variant, keep_int16=()):
        return b"..."
```
"""

from __future__ import annotations

import abc
from typing import Any, Optional

from keras_unet.export.converter import apply_rewrites


class Int8Session(abc.ABC):
    """The int8 quantizer of one export job.

    Args:
        job: the pipeline's `ExportJob`.
        options: the format's conversion options (`TFLiteOptions`, `ONNXOptions`).
        rewrites: the format's `Rewrite`s, applied to every file `quantize` returns.

    Attributes:
        variants: the calibrations to try, in order (the first is what `repair=False` uses).
        metadata: recorded under the file's `"int8"` metadata (ONNX: the activation type
            chosen); empty by default.
        can_keep_float: whether ops can be kept in float (False: a QAT file is all int8).
        can_keep_int16: whether ops can be kept at 16-bit activations with 8-bit weights
            (`keep_int16`), the middle step between int8 and float that integer-only
            accelerators still run.
        can_correct_biases: whether each variant has a `"+bias"` form, its convolutions'
            biases corrected for their int8 weights (`quantization.bias_correction`).
        can_round_weights: whether each variant has a `"+gptq"` form, its convolutions'
            weights rounded against the calibration images (`quantization.weight_rounding`).
    """

    variants: tuple = ()
    can_keep_float: bool = True
    can_keep_int16: bool = False
    can_correct_biases: bool = False
    can_round_weights: bool = False

    def __init__(self, job: Any, options: Any, rewrites: tuple = ()) -> None:
        self.job = job
        self.options = options
        self.rewrites = rewrites
        self.metadata: dict = {}

    @abc.abstractmethod
    def convert(self, keep_float: list, variant: str, keep_int16: tuple = ()) -> bytes:
        """The int8 file as the converter writes it, `keep_float` ops left in float and
        `keep_int16` ops at 16-bit activations (only when `can_keep_int16`)."""

    def quantize(self, keep_float: list, variant: str, keep_int16: tuple = ()) -> bytes:
        """The int8 file with the format's rewrites applied: what is verified and written."""
        mode = getattr(self.options, "quantize", None) or "int8"  # int16x8 runs none of int8's
        return apply_rewrites(self.rewrites, self.convert(keep_float, variant, tuple(keep_int16)),
                              mode)

    def report(self, images: Any, keep_float: list, variant: str) -> Optional[list]:
        """Per-layer rows (`keras_unet.export.quantization.report`), or None when there is
        nothing quantized to measure."""
        return None

    def leading_nodes(self) -> list:
        """The stem's nodes (a repair candidate of the first round); none by default."""
        return []

    def trailing_nodes(self) -> list:
        """The head's nodes (a repair candidate of the first round); none by default."""
        return []

    def expand(self, nodes: list) -> list:
        """`nodes` and what must stay float with them; by default `nodes` alone."""
        return list(nodes)

    def layer_order(self) -> list:
        """The Keras layer names of the job's model in topological order, nested models
        flattened: the order repair cuts the model's contiguous segments in
        (`keras_unet.export.repair`); empty when the job has no Keras model."""
        model = getattr(self.job, "static", None)
        return list(_flat_layer_names(model)) if model is not None else []

    def time_ms(self, model_bytes: bytes) -> Optional[float]:
        """Latency of a file here, or None when the session does not time files."""
        return None

    def refusal(self, model_bytes: bytes) -> Optional[str]:
        """Why the runtime would not load the file, found out without risking this process
        (a runtime may abort on some files), or None: it loads, or the session cannot tell
        (then a refusal surfaces as the runtime's error when the file is verified)."""
        return None


class QATSession(Int8Session):
    """The int8 session of a quantize-aware model: its learned ranges, one variant `"qat"`.

    Nothing is kept in float and there is no per-layer report (`report` returns None), so
    the file is verified, and written or refused, as it comes out of training. A format
    implements `convert_qat`.
    """

    variants = ("qat",)
    can_keep_float = False

    def convert(self, keep_float: list, variant: str, keep_int16: tuple = ()) -> bytes:
        if keep_float or keep_int16:
            raise ValueError("A quantize-aware model is written all int8, from its learned "
                             f"ranges; no layer is kept at another precision. Received: keep_float={list(keep_float)}, "
                             f"keep_int16={list(keep_int16)}")
        return self.job.cached(("qat_int8", type(self).__name__), self.convert_qat)

    @abc.abstractmethod
    def convert_qat(self) -> bytes:
        """The file from the model's learned ranges, as the converter writes it."""


def _flat_layer_names(model: Any):
    """The layer names of a Keras model in its (topological) order, each nested model's
    layers in its place."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _flat_layer_names(layer)
        else:
            yield layer.name
