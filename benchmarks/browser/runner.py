"""Model files run in headless Chromium: latency measured in the page, masks scored in Python.

`run_in_browser` serves `bench.html` on 127.0.0.1 (cross-origin isolated, so onnxruntime-web
may use threads), opens it in headless Chromium once, and runs each file in a fresh page:

- `.onnx` (and `.ort`, ONNX Runtime's own format): onnxruntime-web's wasm backend. The inputs are made by the Python runner's
  `prepare` (resize, cast/quantize) and the raw outputs go back through its `postprocess`,
  so the only difference from a native row is the runtime (this needs `onnxruntime` in
  Python for the tensor shapes: the `[edge]` extra).
- `.tflite`: MediaPipe Tasks' `ImageSegmenter` (what a web app runs), on the images as
  they are: MediaPipe resizes and normalizes from the file's TFLite Metadata. Its
  confidence masks are the probabilities; its category mask gives the masks (binary
  files: category 0 is the foreground).

Latency is `performance.now()` around one call, `warmup` calls excluded: `session.run` for
ONNX, `segment` for MediaPipe (which includes its own resize and normalization).
"""

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from keras_unet.benchmarks.browser.assets import check_assets
from keras_unet.benchmarks.browser.chromium import launch_chromium
from keras_unet.benchmarks.browser.server import STATIC_DIR, LocalServer
from keras_unet.runtime.scores import probabilities_to_masks
from keras_unet.runtime.tensors import as_image_list, fit_channels
from keras_unet.runtime.timing import summarize

__all__ = ["BrowserResult", "run_in_browser", "explain_page_error"]

SUFFIXES = {".onnx": "onnx", ".ort": "onnx", ".tflite": "mediapipe"}
DTYPES = {"float32": np.float32, "uint8": np.uint8, "int8": np.int8}


@dataclass
class BrowserResult:
    """One file's run in the browser.

    Attributes:
        path: the model file.
        backend: `"onnxruntime-web/wasm"` or `"mediapipe-tasks-vision/wasm"`.
        threads: wasm threads the runtime used.
        latencies_ms: one latency per timed call, in the page.
        probabilities: float32 `(H, W, K)` per image, at each image's size.
        masks: `(H, W)` class index per image (uint8).
        environment: browser name and version, user agent, cross-origin isolation.
        labels: MediaPipe's labels (`.tflite` only).
        error: one line when the browser could not run the file (then nothing else is set).
    """

    path: str
    backend: str = ""
    threads: int = 0
    latencies_ms: list = field(default_factory=list)
    probabilities: Optional[list] = None
    masks: Optional[list] = None
    environment: dict = field(default_factory=dict)
    labels: Optional[list] = None
    error: Optional[str] = None

    def latency(self) -> dict:
        """`latency_p50_ms`, `latency_p90_ms`, `latency_p99_ms` ... (see `runtime.timing.summarize`)."""
        return summarize(np.asarray(self.latencies_ms) / 1000.0)

    def summary(self) -> dict:
        """The fields a benchmark row takes from this run: where it ran and its latency.

        Returns:
            `runtime` ("browser"), `backend`, `threads`, `browser`, `browser_version`,
            `cross_origin_isolated`, and the `latency()` fields (none after an error, which
            is `error` instead).
        """
        fields = {"runtime": "browser", "backend": self.backend, "threads": self.threads,
                  "browser": self.environment.get("browser"),
                  "browser_version": self.environment.get("browser_version"),
                  "cross_origin_isolated": self.environment.get("cross_origin_isolated")}
        if self.error:
            return {**fields, "error": self.error}
        return {**fields, **self.latency()}


def explain_page_error(path, backend: str, message: str) -> str:
    """One line for a file the browser runtime refused, naming the op when there is one."""
    patterns = (r"implementation for (\w+)\(\d+\)",              # onnxruntime-web: no kernel
                r"[Uu]nsupported (?:op|operator)[^\w]*(\w+)",
                r"unresolved custom op:? ?'?(\w+)",                # TFLite inside MediaPipe
                r"find op for builtin opcode '?(\w+)")
    for pattern in patterns:
        for line in str(message).splitlines():
            found = re.search(pattern, line)
            if found:
                return f"{path}: {backend} cannot run op {found.group(1)} ({line.strip()[:300]})"
    if "NormalizationOptions" in message or "normalization" in message.lower():
        return (f"{path}: MediaPipe's ImageSegmenter needs the TFLite Metadata's normalization "
                "options for a float input; export the file with keras-unet export (it writes "
                f"them) ({_first_line(message)})")
    return f"{path}: {backend} cannot run it: {_first_line(message)}"


def _first_line(message):
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return lines[0][:300] if lines else "no message"


def _b64(array) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _onnx_job(path, images):
    from keras_unet.runtime import load_runner

    with load_runner(path) as runner:
        inputs = []
        for image in images:
            batch = runner.prepare([image])
            dtype = {np.dtype(v): k for k, v in DTYPES.items()}[batch.dtype]
            inputs.append({"data": _b64(batch), "dims": list(batch.shape), "dtype": dtype})

        def finish(answer):
            probabilities = []
            for image, out in zip(images, answer["outputs"]):
                raw = np.frombuffer(base64.b64decode(out["data"]), DTYPES[out["dtype"]])
                raw = raw.reshape(out["dims"])
                probabilities += runner.postprocess(raw, [image.shape[:2]])
            # The runner's own rule (`p >= threshold` of its metadata, argmax for K > 1).
            masks = [probabilities_to_masks(p[None], runner.threshold)[0].astype(np.uint8)
                     for p in probabilities]
            return probabilities, masks

        # postprocess needs the runner's metadata only; it outlives the session's close.
        return {"kind": "onnx", "inputs": inputs}, finish


def _mediapipe_job(path, images):
    rgba = []
    for image in images:
        rgb = fit_channels(np.clip(np.rint(image), 0, 255).astype(np.uint8), 3, str(path))
        alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
        rgba.append({"data": _b64(np.concatenate([rgb, alpha], -1)), "width": rgb.shape[1],
                     "height": rgb.shape[0]})

    def finish(answer):
        probabilities = []
        for out in answer["outputs"]:
            shape = (out["height"], out["width"])
            maps = [np.frombuffer(base64.b64decode(c), np.float32).reshape(shape)
                    for c in out["confidence"]]
            probabilities.append(np.stack(maps, -1))
        categories = [np.frombuffer(base64.b64decode(out["category"]), np.uint8).reshape(
            out["height"], out["width"]) for out in answer["outputs"]]
        if probabilities[0].shape[-1] == 1:  # binary: MediaPipe's category 0 is the one output
            return probabilities, [(c == 0).astype(np.uint8) for c in categories]
        return probabilities, [c.astype(np.uint8) for c in categories]

    return {"kind": "mediapipe", "images": rgba}, finish


def run_in_browser(paths, images, runs: int = 20, warmup: int = 3, threads: Optional[int] = None,
                   executable: Optional[str] = None, timeout_s: float = 120.0,
                   assets=None) -> list:
    """Runs `.onnx`/`.tflite` files in headless Chromium and measures them there.

    A file the browser cannot run gets a `BrowserResult` whose `error` is one line (the
    op it lacks, when the runtime names one); the others still run. Missing Chromium,
    Playwright or assets raise at once, before any file.

    Args:
        paths: model files (`.onnx`/`.ort` through onnxruntime-web, `.tflite` through MediaPipe).
        images: array `(N, H, W, C)` or a list of images, values in [0, 255].
        runs: timed calls per file (after `warmup` untimed ones) on the first image.
        warmup: untimed calls first.
        threads: wasm threads for onnxruntime-web (default: its own, half the cores and at
            most 4).
        executable: the Chromium executable (default: `find_chromium()`).
        timeout_s: limit for one file's load and runs in the page.
        assets: the assets folder (default: `assets_dir()`).

    Returns:
        One `BrowserResult` per path, in order.

    Raises:
        AssetsMissing, BrowserMissing: set-up is missing; the message says what to run.
        ValueError: a suffix other than `.onnx`/`.tflite`.

    Example:
    ```python
    from keras_unet.benchmarks.browser import run_in_browser

    result, = run_in_browser(["unet_int8.onnx"], images, runs=50)
    print(result.latency()["latency_p50_ms"], result.environment["browser"])
    ```
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        if path.suffix.lower() not in SUFFIXES:
            raise ValueError(f"{path}: the browser runtime runs .onnx/.ort (onnxruntime-web) and .tflite "
                             f"(MediaPipe) files. Received suffix {path.suffix!r}")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
    images = as_image_list(images)
    folders = {f"/assets/{route}/": folder for route, folder in check_assets(assets).items()}
    folders["/"] = STATIC_DIR
    files = {f"/models/{i}{p.suffix.lower()}": p for i, p in enumerate(paths)}
    results = []
    with LocalServer(folders, files) as server, launch_chromium(executable) as (browser, version):
        for index, path in enumerate(paths):
            results.append(_run_one(browser, version, server, index, path, images, runs, warmup,
                                    threads, timeout_s))
    return results


def _run_one(browser, version, server, index, path, images, runs, warmup, threads, timeout_s):
    kind = SUFFIXES[path.suffix.lower()]
    backend = "onnxruntime-web/wasm" if kind == "onnx" else "mediapipe-tasks-vision/wasm"
    try:
        job, finish = (_onnx_job if kind == "onnx" else _mediapipe_job)(path, images)
    except ValueError as error:
        # onnxruntime in Python refused the file (its kernels are the ones compiled to wasm).
        return BrowserResult(str(path), backend=backend, error=explain_page_error(path, backend, str(error)))
    page = browser.new_page()
    console = []
    page.on("console", lambda message: console.append(message.text) if message.type == "error" else None)
    page.set_default_timeout(timeout_s * 1000)
    try:
        page.goto(server.url("/bench.html"))
        page.wait_for_function("window.kerasUnetBench !== undefined")
        environment: dict[str, Any] = page.evaluate("window.kerasUnetBench.environment()")
        job.update(model=f"/models/{index}{path.suffix.lower()}", runs=runs, warmup=warmup,
                   threads=threads or 0)
        answer = page.evaluate("job => window.kerasUnetBench.run(job)", job)
    finally:
        page.close()
    environment.update(browser="chromium", browser_version=version)
    if "error" in answer:
        message = "\n".join([answer["error"], *console])
        return BrowserResult(str(path), backend=backend, environment=environment,
                             error=explain_page_error(path, backend, message))
    probabilities, masks = finish(answer)
    return BrowserResult(str(path), backend=answer["backend"], threads=answer["threads"],
                         latencies_ms=list(answer["latencies_ms"]), probabilities=probabilities,
                         masks=masks, environment=environment,
                         labels=answer.get("labels"))
