"""`keras-unet bench --runtime browser`: a benchmark row measured in headless Chromium.

The row is made like every other (`keras_unet.benchmarks.measure`): the same file size and
settings, the masks scored against the data's ground truth (`quality.score_masks`) and, by the
suite, against the reference's masks. Only the latency differs in where it is measured: inside
the page (`performance.now()`, warm-up excluded), on the first image, as `run_in_browser` does.
The runtime columns name the browser: `runtime` "browser", `runtime_version` "chromium N",
`execution_provider` the page's backend (onnxruntime-web or MediaPipe, wasm) and its threads.
"""

import os

import numpy as np

from keras_unet.benchmarks.browser.runner import SUFFIXES, run_in_browser

BROWSER_RUNTIME = "browser"
DEFAULT_RUNS = 50  # as `MeasureOptions`' harness when neither runs nor seconds is given


def browser_runs(path) -> bool:
    """Whether the browser runtime takes `path`'s suffix (`.onnx`, `.ort`, `.tflite`)."""
    return os.path.splitext(os.fspath(path))[1].lower() in SUFFIXES


def measure_in_browser(path, data, options) -> tuple:
    """Measure one model file in the browser. Raises on failure (the suite records an error row).

    Args:
        path: `.onnx`, `.ort` or `.tflite` file (a `.tflite` needs the metadata MediaPipe reads:
            a full-int8 uint8-I/O export carries it).
        data: a `keras_unet.benchmarks.quality.LabelledData` (may be empty: latency only, on a
            random image of the model's size).
        options: the run's `keras_unet.benchmarks.measure.MeasureOptions` (`runs`, `warmup`,
            `threads`, `mask_encoding`, `ignore_index`).

    Returns:
        `(row, masks)` as `measure.measure_model` returns them.

    Example:
    ```python
    from keras_unet.benchmarks import MeasureOptions
    from keras_unet.benchmarks.quality import LabelledData

    row, masks = measure_in_browser("unet_int8.onnx", LabelledData("data/val"), MeasureOptions(runs=20))
    row.latency_p50_ms, row.runtime_version, row.agreement_iou
    ```
    """
    from keras_unet.benchmarks.measure import new_row
    from keras_unet.benchmarks.quality import score_masks
    from keras_unet.runtime import read_metadata

    path = os.fspath(path)
    if not browser_runs(path):
        raise ValueError(f"{path}: the browser runtime runs .onnx, .ort and .tflite files.")
    metadata = read_metadata(path) or {}
    channels = int(metadata.get("channels") or 3)
    if len(data):
        images = data.images(channels)
    else:
        height, width = (metadata.get("input_size") or (128, 128))[:2]
        images = np.random.default_rng(0).integers(0, 256, (1, height or 128, width or 128, channels),
                                                   dtype=np.uint8)
    result, = run_in_browser([path], images, runs=options.runs or DEFAULT_RUNS, warmup=options.warmup,
                             threads=options.threads)
    if result.error:
        raise RuntimeError(result.error)
    row = new_row(path, options, warmup=options.warmup)
    row.quantization = metadata.get("quantization")
    row.num_classes = int(metadata.get("num_classes") or 1)
    summary = result.summary()
    row.runtime = BROWSER_RUNTIME
    row.runtime_version = f"{summary['browser']} {summary['browser_version']}"
    isolation = "cross-origin isolated" if summary["cross_origin_isolated"] else "not isolated"
    row.execution_provider = f"{summary['backend']}, {summary['threads']} threads, {isolation}"
    row.threads = summary["threads"]
    for key, value in result.latency().items():
        setattr(row, key, value)
    row.latency_runs_ms = list(result.latencies_ms)
    row.runs = len(row.latency_runs_ms)
    row.input_size = "x".join(str(d) for d in np.shape(images[0])[:2])
    masks = None
    if len(data):
        masks = [np.asarray(mask) for mask in result.masks]
        score_masks(row, masks, data, metadata, options)
    return row, masks


def require_browser() -> None:
    """Raises `BrowserMissing` or `AssetsMissing` (one line saying what to install) unless this
    machine can run browser rows: Chromium found, Playwright installed, the JS/Wasm assets in
    place (`keras-unet web --install-assets`). Starts nothing."""
    import importlib.util

    from keras_unet.benchmarks.browser.assets import check_assets
    from keras_unet.benchmarks.browser.chromium import BrowserMissing, find_chromium

    find_chromium()
    if importlib.util.find_spec("playwright") is None:
        raise BrowserMissing('The browser runtime drives Chromium with Playwright: '
                             'pip install "keras-unet-edge[browser]"')
    check_assets()


def browser_ready() -> bool:
    """Whether `require_browser` passes."""
    from keras_unet.benchmarks.browser.assets import AssetsMissing
    from keras_unet.benchmarks.browser.chromium import BrowserMissing

    try:
        require_browser()
    except (AssetsMissing, BrowserMissing):
        return False
    return True


def browser_takes(path) -> bool:
    """Whether `--runtime all` puts `path` in the browser: an `.onnx`/`.ort` file, or a `.tflite`
    that MediaPipe's ImageSegmenter takes: uint8 input (a float input needs normalization
    metadata, which our float files do not carry) of 3 or 4 channels."""
    from keras_unet.runtime import read_metadata

    if not browser_runs(path):
        return False
    if os.path.splitext(os.fspath(path))[1].lower() != ".tflite":
        return True
    try:
        metadata = read_metadata(path) or {}
    except (OSError, ValueError):
        return False
    return metadata.get("input_dtype") == "uint8" and metadata.get("channels") in (3, 4)
