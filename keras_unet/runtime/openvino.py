"""Run a .onnx, .tflite or OpenVINO IR (.xml + .bin) file with OpenVINO on the CPU.

OpenVINO reads our `.onnx` and `.tflite` files as they are, so the same file can be timed
on onnxruntime, TFLite and OpenVINO. Rules this runner keeps:

- Precision: float parts of the graph compute in float32 (`INFERENCE_PRECISION_HINT` =
  `"f32"`) unless `precision` says otherwise: OpenVINO's CPU plugin otherwise picks bf16 on
  a CPU with AVX512-BF16 or AMX, whose 8-bit significand takes a float32 file far outside the
  1e-4 bound every float32 export is held to. Integer (QDQ / quantized TFLite) parts run on
  OpenVINO's int8 kernels either way.
- Threads: `threads` sets `INFERENCE_NUM_THREADS` (None: OpenVINO's default, all cores);
  it compiles with the `LATENCY` performance hint (one stream), what a single caller gets.
- Metadata: a `.onnx` file's `keras_unet` entry (its `metadata_props`, which OpenVINO keeps
  in the model's rt_info under `framework`); a `.tflite` file's, read with the same reader
  as `TFLiteRunner` (ai-edge-litert's schema module); an IR file's from its rt_info, key
  `keras_unet` (a JSON string, as `ov.Model.set_rt_info(text, "keras_unet")` writes it), or
  `framework/keras_unet`, which an IR converted from one of our `.onnx` files keeps. The
  tensors are checked against it as for the other runners (`merge_metadata`).
- Quantized `.tflite` files keep their integer input and output in OpenVINO; their scale
  and zero point are read from the file's own tensors (TFLite schema), as the interpreter
  reports them, so `prepare`/`postprocess` quantize and dequantize the same way.
- Batches: a model with a fixed batch runs another batch length through a copy of the model
  reshaped to that batch, compiled once per new shape (as `TFLiteRunner` resizes its input);
  a graph that cannot be reshaped (the ONNX exports bake their batch into a Reshape) runs in
  slices of its own batch, the last one padded, as `ONNXRunner` runs it.

`openvino` is imported when a runner is made (`keras_unet.runtime.loaders.openvino_core`);
without it the `ImportError` names the extra: `pip install "keras-unet-edge[openvino]"`.

Example:
```python
from keras_unet.runtime.openvino import OpenVINORunner

with OpenVINORunner("unet_int8.onnx", threads=2) as runner:
    masks = runner.predict_masks(images)
```
"""

import os

import numpy as np

from keras_unet.runtime.base import Runner
from keras_unet.runtime.loaders import openvino_core
from keras_unet.runtime.metadata import (merge_metadata, read_tflite_metadata, rt_info_metadata,
                                         tensor_metadata, tflite_schema)
from keras_unet.runtime.notices import warn_once

__all__ = ["OpenVINORunner", "PRECISIONS", "ir_weights_path"]

#: `precision` values: OpenVINO's `INFERENCE_PRECISION_HINT`, or None for its own choice.
PRECISIONS = ("f32", "bf16", "f16", None)
#: The suffixes OpenVINO runs here, and the `format` the metadata gives each file.
FILE_FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".xml": "openvino"}
SUFFIXES = tuple(FILE_FORMATS)


def ir_weights_path(path) -> str:
    """The `.bin` weights file of an OpenVINO IR `.xml` file: same folder, same stem.

    Example:
    ```python
    ir_weights_path("models/unet.xml")  # "models/unet.bin"
    ```
    """
    return os.path.splitext(os.fspath(path))[0] + ".bin"


def _dim(dimension):
    return dimension.get_length() if dimension.is_static else None


def _tflite_io_quantization(model_bytes):
    """`(input, output)` `{"scale", "zero_point"}` of a TFLite file's integer I/O tensors."""
    schema = tflite_schema()
    graph = schema.Model.GetRootAs(model_bytes, 0).Subgraphs(0)
    integer_types = {schema.TensorType.UINT8, schema.TensorType.INT8, schema.TensorType.INT16}

    def quantization(index):
        tensor = graph.Tensors(index)
        parameters = tensor.Quantization()
        if tensor.Type() not in integer_types or parameters is None or not parameters.ScaleLength():
            return None
        zero_point = int(parameters.ZeroPoint(0)) if parameters.ZeroPointLength() else 0
        return {"scale": float(parameters.Scale(0)), "zero_point": zero_point}

    return quantization(graph.Inputs(0)), quantization(graph.Outputs(0))


class OpenVINORunner(Runner):
    """A `.onnx`, `.tflite` or IR `.xml` model compiled by OpenVINO for the CPU.

    Args:
        path: the model file; an `.xml` needs its `.bin` beside it (`ir_weights_path`).
        threads: `INFERENCE_NUM_THREADS` (None: OpenVINO's default, all cores).
        precision: `INFERENCE_PRECISION_HINT` for the float parts: `"f32"` (default, what
            the export's float32 bound assumes), `"bf16"`, `"f16"`, or None for OpenVINO's
            own choice (bf16 on CPUs that have it).
        device: the OpenVINO device (default `"CPU"`).

    Raises:
        FileNotFoundError: an `.xml` file without its `.bin`.
        ValueError: a suffix OpenVINO is not used for here, a bad `precision`, or a file
            OpenVINO cannot read or compile (names it).
        ImportError: openvino is not installed (names the extra).

    Example:
    ```python
    runner = OpenVINORunner("unet.tflite", threads=2)
    probabilities = runner.predict(images)
    ```
    """

    format = "openvino"

    def __init__(self, path, threads=None, precision="f32", device="CPU"):
        path = os.fspath(path)
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in SUFFIXES:
            raise ValueError(f"OpenVINO runs {', '.join(SUFFIXES)} files here. Received: path={path!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"`precision` must be one of {PRECISIONS}. Received: precision={precision!r}")
        if suffix == ".xml" and not os.path.isfile(ir_weights_path(path)):
            raise FileNotFoundError(
                f"{path!r} is OpenVINO IR, whose weights file {ir_weights_path(path)!r} is missing: "
                "keep the .xml and .bin of one model together."
            )
        self._core = openvino_core()
        self.threads, self.precision, self.device = threads, precision, device
        # One stream for one caller: what a device app gets, and what the benchmark times.
        self._config = {"PERFORMANCE_HINT": "LATENCY"}
        if precision is not None:
            self._config["INFERENCE_PRECISION_HINT"] = precision
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self._model = self._core.read_model(path)
        except Exception as error:  # OpenVINO raises RuntimeError / its own types per frontend
            raise ValueError(f"{path!r} is not a model OpenVINO can read: {error}") from error
        if len(self._model.inputs) != 1:
            raise ValueError(f"{path!r}: expected one image input. Received: {len(self._model.inputs)} inputs")
        node, output = self._model.inputs[0], self._model.outputs[0]
        shape = list(node.get_partial_shape())
        if len(shape) != 4 or not shape[3].is_static:
            raise ValueError(f"{path!r}: expected an image input (N, H, W, C) with fixed channels. "
                             f"Received: input shape {node.get_partial_shape()}")
        self.input_size = (_dim(shape[1]), _dim(shape[2]))
        self._batch = _dim(shape[0])
        self.input_dtype = np.dtype(node.get_element_type().to_dtype())
        output_dtype = np.dtype(output.get_element_type().to_dtype())
        self._compiled = {}  # input shape -> (compiled model, infer request)
        self._looped = False
        self._default = self._compile(self._model, path)
        stored, self.input_quantization, self.output_quantization = self._stored(path, suffix)
        output_shape = output.get_partial_shape()
        classes = _dim(output_shape[-1]) if output_shape.rank.is_static and len(output_shape) else None
        classes = classes or (stored or {}).get("num_classes") or 1
        derived = tensor_metadata(FILE_FORMATS[suffix], self.input_size, shape[3].get_length(), classes,
                                  self.input_dtype, output_dtype, self.input_quantization,
                                  self.output_quantization)
        if stored is not None:
            # QDQ quantization happens inside the graph; the tensors cannot tell it.
            derived["quantization"] = stored.get("quantization", derived["quantization"])
        super().__init__(path, merge_metadata(stored, derived, path))

    def _stored(self, path, suffix):
        """`(metadata or None, input quantization, output quantization)` of the file."""
        if suffix != ".tflite":
            return rt_info_metadata(self._model, repr(path)), None, None
        with open(path, "rb") as handle:
            model_bytes = handle.read()
        try:
            stored = read_tflite_metadata(model_bytes, repr(path))
            quantization = _tflite_io_quantization(model_bytes)
        except ImportError as error:  # openvino without ai-edge-litert's schema module
            if np.issubdtype(self.input_dtype, np.integer):
                raise ImportError(f"{path}: an integer .tflite file needs its quantization parameters, "
                                  f"read with ai-edge-litert's schema ({error}).") from error
            warn_once(("no-schema", path), f"{path}: its keras_unet metadata cannot be read here "
                      f"({error}); using what the model's tensors tell.")
            return None, None, None
        except ValueError as error:
            warn_once(("bad-metadata", path), f"{path}: ignoring unreadable metadata ({error}).")
            stored, quantization = None, _tflite_io_quantization(model_bytes)
        return (stored, *quantization)

    def _compile(self, model, path):
        try:
            compiled = self._core.compile_model(model, self.device, self._config)
        except Exception as error:
            raise ValueError(f"{path!r}: OpenVINO cannot compile this model for {self.device}: "
                             f"{error}") from error
        return compiled, compiled.create_infer_request()

    def _request(self, shape):
        """The infer request for a batch of `shape`; compiles a reshaped copy once per shape."""
        if self._batch is None or shape[0] == self._batch:
            return self._default[1]
        if shape not in self._compiled:
            try:
                model = self._model.clone()
                model.reshape({model.inputs[0]: list(shape)})
                self._compiled[shape] = self._compile(model, self.path)
            except Exception:  # noqa: BLE001 - a graph with its batch baked into a Reshape
                # The ONNX exports are such graphs; slicing is what ONNXRunner does with them.
                self._looped = True
                return None
        return self._compiled[shape][1]

    def run(self, batch) -> np.ndarray:
        """Raw output for a prepared batch: one synchronous `InferRequest.infer` (a copy)."""
        request = None if self._looped else self._request(tuple(batch.shape))
        if request is None:
            return self._run_sliced(batch)
        # share_inputs: the synchronous call reads the prepared array in place (no copy), as
        # onnxruntime does; the output is copied, so it outlives the next call.
        return request.infer({0: batch}, share_inputs=True)[0]

    def _run_sliced(self, batch):
        step, count = self._batch, len(batch)
        if count % step:
            # Pad the last slice with copies of the last image; their outputs are dropped.
            batch = np.concatenate([batch, np.repeat(batch[-1:], step - count % step, axis=0)])
        request = self._default[1]
        return np.concatenate([request.infer({0: batch[i : i + step]}, share_inputs=True)[0]
                               for i in range(0, len(batch), step)])[:count]

    def close(self) -> None:
        self._default, self._compiled, self._model = None, {}, None
