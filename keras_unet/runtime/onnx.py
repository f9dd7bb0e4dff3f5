"""Run a .onnx file with onnxruntime (CPU provider unless told otherwise).

Quantized ONNX exports are QDQ graphs with float32 input and output, so there is nothing
to (de)quantize here; a user's file with integer input gets the [0, 255] values cast to
its dtype. A model with a fixed batch runs another batch length in slices of that size, the
last one padded (onnxruntime cannot resize a fixed dimension).

Example:
```python
from keras_unet.runtime.onnx import ONNXRunner

with ONNXRunner("unet_int8.onnx", threads=2) as runner:
    probabilities = runner.predict(images)
```
"""

import os
from typing import Any

import numpy as np

from keras_unet.runtime.base import Runner
from keras_unet.runtime.loaders import create_session
from keras_unet.runtime.metadata import merge_metadata, read_onnx_metadata, tensor_metadata
from keras_unet.runtime.notices import warn_once

__all__ = ["ONNXRunner", "create_session"]

_ONNX_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32,
}


def _dim(value):
    return value if isinstance(value, int) and value > 0 else None


def _dtype(node, path):
    if node.type not in _ONNX_TYPES:
        raise ValueError(f"{path!r}: unsupported tensor type {node.type} for {node.name!r}.")
    return np.dtype(_ONNX_TYPES[node.type])


class ONNXRunner(Runner):
    """A `.onnx` model in an onnxruntime session.

    Args:
        path: the `.onnx` file.
        threads: intra-op threads (None: onnxruntime's default).
        providers: execution providers (default CPU).

    Example:
    ```python
    runner = ONNXRunner("unet_int8.onnx", threads=2)
    probabilities = runner.predict(images)
    ```
    """

    format = "onnx"

    def __init__(self, path, threads=None, providers=None) -> None:
        path = os.fspath(path)
        self.session = create_session(path, threads, providers)
        self.threads = threads
        self.providers = self.session.get_providers()
        node = self.session.get_inputs()[0]
        output = self.session.get_outputs()[0]
        shape = list(node.shape)
        if len(shape) != 4:
            raise ValueError(f"{path!r}: expected an image input (N, H, W, C). Received: input shape {shape}")
        self._input_name, self._output_name = node.name, output.name
        self._output_names = [output.name]
        self.input_size = (_dim(shape[1]), _dim(shape[2]))
        self._batch = _dim(shape[0])
        self.input_dtype = _dtype(node, path)
        self.input_quantization = self.output_quantization = None
        classes = _dim(output.shape[-1]) if output.shape else None
        stored = read_onnx_metadata(self.session, repr(path))
        if classes is None:
            classes = (stored or {}).get("num_classes") or 1
            if stored is None:
                warn_once(("classes", path), f"{path}: the output's channel dimension is not fixed; assuming 1 class.")
        if not isinstance(shape[3], int):
            raise ValueError(f"{path!r}: the input's channel dimension must be fixed. Received: {shape}")
        derived = tensor_metadata("onnx", self.input_size, shape[3], classes, self.input_dtype,
                                  _dtype(output, path))
        if stored is not None:
            # ONNX quantization happens inside the graph; the tensors cannot tell it.
            derived["quantization"] = stored.get("quantization", "none")
        super().__init__(path, merge_metadata(stored, derived, path))

    def run(self, batch) -> Any:
        """Raw output for a prepared batch: one `session.run`."""
        if self._batch is not None and len(batch) != self._batch:
            return self._run_sliced(batch)
        return self.session.run(self._output_names, {self._input_name: batch})[0]

    def _run_sliced(self, batch):
        step, count = self._batch, len(batch)
        if count % step:
            # Pad the last slice with copies of the last image; their outputs are dropped.
            pad = np.repeat(batch[-1:], step - count % step, axis=0)
            batch = np.concatenate([batch, pad])
        return np.concatenate([
            self.session.run(self._output_names, {self._input_name: batch[i : i + step]})[0]
            for i in range(0, len(batch), step)
        ])[:count]

    def close(self) -> None:
        self.session = None
