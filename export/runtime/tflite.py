"""Run a .tflite file with ai-edge-litert (or tflite-runtime on older devices)."""

import os

import numpy as np

from export.runtime.base import Runner, derived_metadata
from export.runtime.metadata import read_tflite_metadata


def interpreter_class():
    """The TFLite `Interpreter` class: ai-edge-litert first, tflite-runtime as fallback."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as error:
            raise ImportError(
                "Running .tflite files needs a TFLite interpreter: `pip install ai-edge-litert` "
                "(or, on devices with numpy<2 only, `pip install tflite-runtime`)."
            ) from error
    return Interpreter


def _quantization(detail):
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if not scale:
        return None
    return {"scale": float(scale), "zero_point": int(zero_point)}


class TFLiteRunner(Runner):
    """A `.tflite` model in a TFLite interpreter (XNNPACK delegate on by default).

    Example:
    ```python
    from export.runtime.tflite import TFLiteRunner

    runner = TFLiteRunner("unet_int8.tflite", threads=2)
    masks = runner.predict_masks(images)
    ```
    """

    format = "tflite"

    def __init__(self, path, threads=None):
        with open(path, "rb") as f:
            model_bytes = f.read()
        try:
            self.interpreter = interpreter_class()(model_content=model_bytes, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"{os.fspath(path)!r} is not a valid TFLite model: {error}") from error
        self.threads = threads
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        signature = self._input.get("shape_signature", self._input["shape"])
        # Any free dimension (batch or size) means the input tensor is resized per batch.
        self._dynamic = bool(np.any(np.asarray(signature) < 0))
        free_size = bool(np.any(np.asarray(signature[1:3]) < 0))
        self._shape = tuple(int(s) for s in self._input["shape"])
        metadata = None
        try:
            metadata = read_tflite_metadata(model_bytes)
        except Exception:  # a file we cannot parse still runs; metadata is then derived
            metadata = None
        if metadata is None:
            metadata = derived_metadata(
                "tflite", [int(s) if s > 0 else None for s in signature[1:3]], signature[3],
                int(self._output["shape"][-1]), self._input["dtype"], self._output["dtype"],
                _quantization(self._input), _quantization(self._output), path,
            )
        super().__init__(path, metadata)
        self.input_dtype = self._input["dtype"]
        # The interpreter's own tensor parameters are authoritative; metadata only mirrors them.
        self.input_quantization = _quantization(self._input) if np.issubdtype(self.input_dtype, np.integer) else None
        out_dtype = self._output["dtype"]
        self.output_quantization = _quantization(self._output) if np.issubdtype(out_dtype, np.integer) else None
        self.input_size = (None, None) if free_size else self._shape[1:3]
        self.batch_size = None if signature[0] < 0 else self._shape[0]

    def run(self, batch):
        interpreter = self.interpreter
        if self._dynamic and tuple(batch.shape) != self._shape:
            interpreter.resize_tensor_input(self._input["index"], batch.shape)
            interpreter.allocate_tensors()
            self._shape = tuple(batch.shape)
        interpreter.set_tensor(self._input["index"], batch)
        interpreter.invoke()
        return interpreter.get_tensor(self._output["index"]).copy()

    def close(self):
        self.interpreter = None
