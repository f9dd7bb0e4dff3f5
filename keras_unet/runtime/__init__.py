"""The edge side: run exported files with numpy, pillow and a runtime only.

Nothing here imports TensorFlow or Keras, except `KerasRunner`, which imports Keras
when a `.keras` file is loaded; the runtimes themselves (ai-edge-litert or tflite-runtime,
onnxruntime) are imported when a file of their format is opened. A device needs only
`numpy`, `pillow` and `ai-edge-litert` (or `tflite-runtime`) and/or `onnxruntime`.

Modules, each one job (nothing here imports a module above the runtime):

- data on disk: `listing` (find and pair files), `images` (the one pillow image reader),
  `masks` (mask encodings), `resizing`, `arrays` (pairs and data sets as arrays), and
  `imageio`, which gathers their public names;
- running files: `loaders` (the TFLite interpreter class, onnxruntime sessions),
  `metadata` (read, derive from tensors, merge), `describe` (what a Keras model says about
  itself), `tensors` (images <-> tensors), `base.Runner`, and the runners `tflite`, `onnx`
  and `keras`; `notices` (warnings said once); `tiling` (large images in overlapping tiles,
  `predict(images, tile=True)`);
- results: `scores` (masks from probabilities, IoU, agreement), `files` (atomic writes).

Example:
```python
from keras_unet.runtime import load_runner

runner = load_runner("unet_int8.tflite", threads=2)
probabilities = runner.predict(images)    # (N, H, W, K) at each image's own size
masks = runner.predict_masks(images)      # (N, H, W) class indices / 0-1
runner.close()                            # or: with load_runner(...) as runner:
```
"""

import os
from typing import TYPE_CHECKING

from keras_unet.runtime.metadata import read_metadata

if TYPE_CHECKING:
    from keras_unet.runtime.base import Runner

# `.ort` is ONNX Runtime's own format (ONNX Runtime Mobile); the same runner runs it. `.xml` is
# OpenVINO IR (with its `.bin`). The value is the runner a file gets when no runtime is named.
RUNNERS = {".tflite": "tflite", ".onnx": "onnx", ".ort": "onnx", ".keras": "keras", ".xml": "openvino"}
# runtime name -> the suffixes it runs. OpenVINO reads .onnx and .tflite files as they are.
RUNTIMES = {
    "tflite": (".tflite",),
    "onnxruntime": (".onnx", ".ort"),
    "openvino": (".onnx", ".tflite", ".xml"),
    "keras": (".keras",),
}


def runtimes_for(path) -> list[str]:
    """The runtimes of `RUNTIMES` that run `path`'s suffix and are installed, in `RUNTIMES` order.

    Example:
    ```python
    from keras_unet.runtime import runtimes_for

    runtimes_for("unet_int8.onnx")  # ["onnxruntime", "openvino"] with both installed
    ```
    """
    from keras_unet.runtime.loaders import runtime_installed

    suffix = os.path.splitext(os.fspath(path))[1].lower()
    return [name for name, suffixes in RUNTIMES.items()
            if suffix in suffixes and runtime_installed(name)]


def load_runner(path, threads=None, providers=None, runtime=None) -> "Runner":
    """A runner for a `.tflite`, `.onnx`, `.ort`, `.keras` or OpenVINO `.xml` file
    (see `keras_unet.runtime.base.Runner`).

    Args:
        path: the model file.
        threads: runtime threads (TFLite `num_threads`, ONNX Runtime intra-op threads,
            OpenVINO `INFERENCE_NUM_THREADS`); None leaves the runtime's default.
        providers: ONNX Runtime execution providers (default CPU).
        runtime: a key of `RUNTIMES` to run the file with, e.g. `"openvino"` for a `.onnx`
            or `.tflite` file; None (default) picks by suffix: `.tflite` TFLite, `.onnx`/`.ort`
            onnxruntime, `.keras` Keras, `.xml` OpenVINO.

    Returns:
        a `keras_unet.runtime.base.Runner` (`TFLiteRunner`, `ONNXRunner`, `OpenVINORunner` or
        `KerasRunner`), usable as a context manager.

    Raises:
        FileNotFoundError: no file at `path` (or an `.xml` without its `.bin`).
        ValueError: an unknown suffix or runtime, a runtime that does not run this suffix, or
            a file the runtime cannot load.
        ImportError: the runtime for this format is not installed (names the package).

    Example:
    ```python
    import numpy as np
    import keras_unet
    from keras_unet.runtime import load_runner

    keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2).save("unet.keras")
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    with load_runner("unet.keras", threads=2) as runner:   # or a .tflite / .onnx file
        masks = runner.predict_masks(images)               # (2, 32, 32) uint8
    # runtime="openvino" runs a .onnx, .tflite or OpenVINO .xml file with OpenVINO instead.
    ```
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"`runtime` must be one of {', '.join(RUNTIMES)} or None. Received: runtime={runtime!r}")
    if suffix not in RUNNERS:
        raise ValueError(
            f"Expected a model file ending in {', '.join(RUNNERS)}. Received: path={path!r}"
        )
    if runtime is not None and suffix not in RUNTIMES[runtime]:
        raise ValueError(f"The {runtime} runtime runs {', '.join(RUNTIMES[runtime])} files. "
                         f"Received: {path!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model file at {path!r}.")
    if runtime == "openvino" or (runtime is None and suffix == ".xml"):
        from keras_unet.runtime.openvino import OpenVINORunner

        return OpenVINORunner(path, threads=threads)
    if suffix == ".tflite":
        from keras_unet.runtime.tflite import TFLiteRunner

        return TFLiteRunner(path, threads=threads)
    if suffix in (".onnx", ".ort"):
        from keras_unet.runtime.onnx import ONNXRunner

        return ONNXRunner(path, threads=threads, providers=providers)
    from keras_unet.runtime.keras import KerasRunner

    return KerasRunner(path, threads=threads)


__all__ = ["RUNTIMES", "load_runner", "read_metadata", "runtimes_for"]
