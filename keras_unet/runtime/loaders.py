"""Open the two runtimes: the TFLite interpreter class and an onnxruntime session.

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

import os
from typing import Any


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
