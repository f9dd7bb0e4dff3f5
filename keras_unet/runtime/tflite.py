"""Run a .tflite file with ai-edge-litert (or tflite-runtime on older devices).

Batches: `run` takes a batch of any length. When it differs from the input tensor's
shape, the input tensor is resized (`resize_tensor_input` + `allocate_tensors`, once per
new shape) and the batch runs in one `invoke`. Measured on this project's 2-core x86
machine with UNets exported at batch 1 (filters 8 / 16, depth 3, 64x64 / 128x128,
float32 and int8, TRANSPOSE_CONV included): the resized interpreter gave the same
outputs as a loop of batch-1 invokes (max difference 0.0) and was as fast or faster
(batch 4, 2 threads: 4.6 vs 5.8 ms, int8 1.8 vs 2.8 ms on 64x64; equal within noise on
128x128). It is also what the benchmark's bare-`invoke()` baseline does, so the two time
the same work. If a graph cannot be resized (a reshape with a baked-in batch), the
runner falls back to looping image by image, and says so once.

Integer inputs and outputs (uint8, int8, and int16 from a 16x8 file with 16-bit
activations) are quantized and dequantized with the tensor's own scale and zero point
(`keras_unet.runtime.tensors`); a 16x8 file runs on TFLite's built-in int16 kernels, since
XNNPACK has none.

Any-size models: an input with a `None` height/width converts to a `1x1` input tensor
with `shape_signature` -1; the same resizing gives it each batch's size.

The interpreter comes from `keras_unet.runtime.loaders.interpreter_class` (ai-edge-litert,
else tflite-runtime). Metadata is read by `keras_unet.runtime.metadata` with the TFLite
schema module of ai-edge-litert; without it (a tflite-runtime-only device) the runner warns
once and uses what the tensors tell.

Example:
```python
from keras_unet.runtime.tflite import TFLiteRunner

with TFLiteRunner("unet_int8.tflite", threads=2) as runner:
    masks = runner.predict_masks(images)
```
"""

import os
from typing import Any

import numpy as np

from keras_unet.runtime.base import Runner
from keras_unet.runtime.loaders import interpreter_class
from keras_unet.runtime.metadata import merge_metadata, read_tflite_metadata, tensor_metadata
from keras_unet.runtime.notices import warn_once

__all__ = ["TFLiteRunner", "interpreter_class"]


def _quantization(detail):
    if not np.issubdtype(np.dtype(detail["dtype"]), np.integer):
        return None
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if not scale:
        return None
    return {"scale": float(scale), "zero_point": int(zero_point)}


class TFLiteRunner(Runner):
    """A `.tflite` model in a TFLite interpreter (XNNPACK delegate on by default).

    Args:
        path: the `.tflite` file.
        threads: interpreter `num_threads` (None: the runtime's default).

    Example:
    ```python
    runner = TFLiteRunner("unet_int8.tflite", threads=2)
    masks = runner.predict_masks(images)
    ```
    """

    format = "tflite"

    def __init__(self, path, threads=None) -> None:
        path = os.fspath(path)
        with open(path, "rb") as f:
            model_bytes = f.read()
        from keras_unet.console.quiet import quiet_output

        try:
            with quiet_output():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" line
                self.interpreter = interpreter_class()(model_content=model_bytes, num_threads=threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"{path!r} is not a valid TFLite model: {error}") from error
        self.threads = threads
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        signature = np.asarray(self._input.get("shape_signature", self._input["shape"]))
        if signature.size != 4:
            raise ValueError(
                f"{path!r}: expected an image input (N, H, W, C). "
                f"Received: input shape {signature.tolist()}"
            )
        self._input_index = self._input["index"]
        self._output_index = self._output["index"]
        self._shape = tuple(int(s) for s in self._input["shape"])
        self._loop = False  # set when this graph cannot be resized to another batch
        free_size = bool(np.any(signature[1:3] < 0))
        self.input_size = (None, None) if free_size else self._shape[1:3]
        self.input_dtype = np.dtype(self._input["dtype"])
        # The interpreter's own tensor parameters are what it computes with.
        self.input_quantization = _quantization(self._input)
        self.output_quantization = _quantization(self._output)
        derived = tensor_metadata(
            "tflite", [None if s < 0 else int(s) for s in signature[1:3]], int(signature[3]),
            int(self._output["shape"][-1]), self.input_dtype, self._output["dtype"],
            self.input_quantization, self.output_quantization,
            # An int16 input means 16-bit activations (8-bit weights): TFLite's 16x8 mode.
            quantization="int16x8" if self.input_dtype == np.int16 else None,
        )
        try:
            metadata = merge_metadata(read_tflite_metadata(model_bytes, repr(path)), derived, path)
        except ValueError as error:
            warn_once(("bad-metadata", path), f"{path}: ignoring unreadable metadata ({error}).")
            metadata = merge_metadata(None, derived, path)
        except ImportError as error:  # tflite-runtime without ai-edge-litert's schema module
            warn_once(("no-schema", path), f"{path}: its keras_unet metadata cannot be read here "
                      f"({error}); using what the model's tensors tell.")
            metadata = dict(derived)
        super().__init__(path, metadata)

    def run(self, batch) -> Any:
        """Raw output for a prepared batch: set_tensor, invoke, get_tensor (a copy)."""
        interpreter = self.interpreter
        if batch.shape != self._shape:
            if not self._loop:
                self._resize(batch.shape)  # may switch to looping when the graph cannot batch
            if self._loop:
                return self._run_looped(batch)
        interpreter.set_tensor(self._input_index, batch)
        interpreter.invoke()
        return interpreter.get_tensor(self._output_index)

    def _resize(self, shape):
        try:
            self.interpreter.resize_tensor_input(self._input_index, shape)
            self.interpreter.allocate_tensors()
            out_shape = self.interpreter.get_output_details()[0]["shape"]
            if int(out_shape[0]) != shape[0]:
                raise ValueError(f"output batch {int(out_shape[0])} != input batch {shape[0]}")
        except (ValueError, RuntimeError) as error:
            if self.input_size == (None, None) or shape[0] == self._shape[0]:
                raise ValueError(
                    f"{self.path}: cannot run at input shape {tuple(shape)}: {error}"
                ) from error
            warn_once(("loop", self.path),
                      f"{self.path}: this graph cannot take a batch of {shape[0]} ({error}); "
                      "running the images one at a time instead.")
            self._loop = True
            original = (self._shape[0],) + tuple(shape[1:])
            self.interpreter.resize_tensor_input(self._input_index, original)
            self.interpreter.allocate_tensors()
            self._shape = original
            return
        self._shape = tuple(shape)

    def _run_looped(self, batch):
        step = self._shape[0]
        outputs = []
        for start in range(0, len(batch), step):
            self.interpreter.set_tensor(self._input_index, batch[start : start + step])
            self.interpreter.invoke()
            outputs.append(self.interpreter.get_tensor(self._output_index))
        return np.concatenate(outputs)

    def close(self) -> None:
        self.interpreter = None
