"""Run a .onnx file with onnxruntime."""

import os

import numpy as np

from export.runtime.base import Runner, derived_metadata
from export.runtime.metadata import read_onnx_metadata

_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
               "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def create_session(path, threads=None, providers=None):
    """An `onnxruntime.InferenceSession` for `path`, with a clear error for a bad file."""
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise ImportError("Running .onnx files needs `pip install onnxruntime`.") from error
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(os.fspath(path), sess_options=options,
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise ValueError(f"{os.fspath(path)!r} is not a valid ONNX model: {error}") from error


def _dim(value):
    return value if isinstance(value, int) and value > 0 else None


class ONNXRunner(Runner):
    """A `.onnx` model in an onnxruntime session (CPU provider unless told otherwise).

    Example:
    ```python
    from export.runtime.onnx import ONNXRunner

    runner = ONNXRunner("unet_int8.onnx", threads=2)
    probabilities = runner.predict(images)
    ```
    """

    format = "onnx"

    def __init__(self, path, threads=None, providers=None):
        self.session = create_session(path, threads, providers)
        self.threads = threads
        self.providers = self.session.get_providers()
        node = self.session.get_inputs()[0]
        output = self.session.get_outputs()[0]
        self._input_name, self._output_name = node.name, output.name
        shape = list(node.shape)
        metadata = read_onnx_metadata(self.session)
        if metadata is None:
            metadata = derived_metadata(
                "onnx", [_dim(shape[1]), _dim(shape[2])], shape[3], output.shape[-1],
                _ONNX_TYPES.get(node.type, np.float32), _ONNX_TYPES.get(output.type, np.float32),
                path=path,
            )
        super().__init__(path, metadata)
        self.input_dtype = _ONNX_TYPES.get(node.type, np.float32)
        # QDQ models keep float I/O; quantization lives inside the graph.
        self.input_quantization = None
        self.output_quantization = None
        self.input_size = (_dim(shape[1]), _dim(shape[2]))
        self.batch_size = _dim(shape[0])

    def run(self, batch):
        return self.session.run([self._output_name], {self._input_name: batch})[0]

    def close(self):
        self.session = None
