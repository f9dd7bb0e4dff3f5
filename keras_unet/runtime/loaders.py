"""Open the runtimes: the TFLite interpreter class, an onnxruntime session, an OpenVINO Core.

The one place that imports a runtime: the runners, metadata reading and the exporter's
verification load through these functions, and the `ImportError` names the package to
install. Neither runtime is imported before a function here is called.

Example:
```python
from keras_unet.runtime.loaders import create_session, interpreter_class

interpreter = interpreter_class()(model_path="unet_int8.tflite", num_threads=2)
session = create_session("unet.onnx", threads=2)
```
"""

import importlib.util
import os
from typing import Any

# The modules each runtime of `keras_unet.runtime.RUNTIMES` imports (any one of them will do).
RUNTIME_MODULES = {"tflite": ("ai_edge_litert", "tflite_runtime"), "onnxruntime": ("onnxruntime",),
                   "openvino": ("openvino",), "keras": ("keras",)}


def interpreter_class() -> Any:
    """The TFLite `Interpreter` class: ai-edge-litert first, tflite-runtime as fallback.

    tflite-runtime is the interpreter's old name; it exists for numpy<2 only.

    Raises:
        ImportError: neither is installed (names both packages).

    Example:
    ```python
    Interpreter = interpreter_class()
    ```
    """
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


def create_session(path, threads=None, providers=None, optimize=True) -> Any:
    """An `onnxruntime.InferenceSession` for `path`, with a clear error for a bad file.

    Args:
        path: the `.onnx` file.
        threads: intra-op threads (None: onnxruntime's default, one per core).
        providers: execution providers (default `["CPUExecutionProvider"]`).
        optimize: False skips graph optimizations (enough for reading metadata).

    Raises:
        ImportError: onnxruntime is not installed.
        ValueError: the file is not a model onnxruntime can load (names it).

    Example:
    ```python
    session = create_session("unet.onnx", threads=2)
    ```
    """
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise ImportError("Running .onnx files needs `pip install onnxruntime`.") from error
    path = os.fspath(path)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(path, sess_options=options,
                                    providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as error:  # onnxruntime raises its own exception types
        raise ValueError(f"{path!r} is not a valid ONNX model: {error}") from error


def openvino_core() -> Any:  # openvino.Core (imported here, lazily)
    """A new `openvino.Core`, with an error naming the extra when OpenVINO is not installed.

    Raises:
        ImportError: openvino is not installed.

    Example:
    ```python
    compiled = openvino_core().compile_model("unet.onnx", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ```
    """
    try:
        import openvino
    except ImportError as error:
        raise ImportError(
            'Running files with OpenVINO needs `pip install "keras-unet-edge[openvino]"` '
            "(or `pip install openvino`)."
        ) from error
    return openvino.Core()


def runtime_installed(runtime) -> bool:
    """Whether the package of `runtime` (a key of `RUNTIME_MODULES`) can be imported; imports nothing.

    Example:
    ```python
    runtime_installed("openvino")  # True after `pip install "keras-unet-edge[openvino]"`
    ```
    """
    return any(importlib.util.find_spec(module) is not None for module in RUNTIME_MODULES[runtime])
