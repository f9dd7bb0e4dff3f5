"""The page `keras-unet web MODEL` serves: one exported file, segmenting what is dropped on it.

`page_server(path)` builds the page's `/config.json` from the file (its tensors and
keras_unet metadata for `.onnx`, which the page preprocesses itself; nothing for `.tflite`,
which MediaPipe reads from the file's TFLite Metadata) and a `LocalServer` for `app.html`,
the model file and the assets.
"""

import json
from pathlib import Path
from typing import Optional

import numpy as np

from keras_unet.benchmarks.browser.assets import check_assets
from keras_unet.benchmarks.browser.server import STATIC_DIR, LocalServer

__all__ = ["page_config", "page_server"]


def _quantization(value):
    if not value:
        return None
    return {"scale": float(np.asarray(value["scale"]).ravel()[0]),
            "zero_point": int(np.asarray(value["zero_point"]).ravel()[0])}


def page_config(path, threads: Optional[int] = None) -> dict:
    """What the page needs to know about the model file (served as `/config.json`).

    Args:
        path: a `.onnx`, `.ort` or `.tflite` file.
        threads: onnxruntime-web threads (default: its own, half the cores and at most 4).

    Returns:
        A JSON-ready dict: `kind` (`"onnx"`/`"mediapipe"`), `model` (its URL), `name`, and
        for `.onnx` the input size, channels, dtypes, quantization, classes and threshold.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".ort", ".tflite"):
        raise ValueError(f"{path}: `keras-unet web` serves .onnx/.ort (onnxruntime-web) and .tflite "
                         f"(MediaPipe) files. Received suffix {suffix!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    config = {"name": path.name, "model": f"/models/model{suffix}", "threads": threads or 0}
    if suffix == ".tflite":
        return {**config, "kind": "mediapipe",
                "description": "MediaPipe ImageSegmenter (reads the file's TFLite Metadata)"}
    from keras_unet.runtime import load_runner

    with load_runner(path) as runner:
        height, width = runner.input_size
        if height is None or width is None:
            height, width = runner.metadata.get("input_size") or (256, 256)
        return {**config, "kind": "onnx",
                "input_size": [int(height), int(width)], "channels": runner.channels,
                "input_dtype": np.dtype(runner.input_dtype).name,
                "input_quantization": _quantization(runner.input_quantization),
                "output_quantization": _quantization(runner.output_quantization),
                "num_classes": runner.num_classes, "threshold": runner.threshold,
                "output_activation": runner.output_activation,
                "description": (f"{'float' if runner.quantization == 'none' else runner.quantization} "
                                f"{height}x{width}x{runner.channels}, "
                                f"{runner.num_classes} output channel(s)")}


def page_server(path, port: int = 0, threads: Optional[int] = None, assets=None) -> LocalServer:
    """A `LocalServer` (not yet started) for the page of one model file.

    Args:
        path: a `.onnx`, `.ort` or `.tflite` file.
        port: the port on 127.0.0.1 (0: a free one).
        threads: onnxruntime-web threads (default: its own, half the cores and at most 4).
        assets: the assets folder (default `assets_dir()`).

    Returns:
        The server; `server.url("/")` is the page.

    Raises:
        AssetsMissing: the JS/Wasm files are not installed (names the command).
        PortInUse: `port` is taken.

    Example:
    ```python
    with page_server("unet_int8.onnx") as server:
        print("open", server.url("/"))
    ```
    """
    folders = {f"/assets/{route}/": folder for route, folder in check_assets(assets).items()}
    config = page_config(path, threads)
    folders["/"] = STATIC_DIR
    files = {"/": STATIC_DIR / "app.html", "/config.json": json.dumps(config).encode(),
             config["model"]: Path(path)}
    return LocalServer(folders, files, port=port)
