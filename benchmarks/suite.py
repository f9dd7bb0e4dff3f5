"""Benchmark a list of model files: latency, size, memory, quality, agreement; one row each.

`run_benchmark` is what `keras-unet bench`, `python -m keras_unet.benchmarks` and `keras-unet demo` call.
Per model, in this order:

1. load with `keras_unet.runtime.load_runner(path, threads=threads)` (timed: `load_time_s`);
2. quality: `runner.predict_masks` on every labelled image in `data` at its own size, scored
   against the ground truth (`keras_unet.runtime.scores`, `ignore_index` honoured);
3. one batch of `batch_size` images is prepared once (`runner.prepare`) and run once;
   steps 1-3 are inside `PeakRSS`, giving `peak_rss_mb` and `model_rss_delta_mb`;
4. latency: `warmup` untimed calls, then `runner.run(batch)` timed call by call. For `.tflite`
   files a bare `interpreter.invoke()` loop on the same batch is timed in alternating blocks
   with the harness (`harness_overhead` = harness p50 / bare p50).

Afterwards every row is compared with the reference row (`speedup_vs_reference`, `iou_drop`,
`agreement_iou`). A model that fails anywhere gets a row with `error` and the others go on;
with `isolate=True` each model runs in its own Python process, so even a crash of a runtime
(a corrupted file can segfault an interpreter) ends as an error row.

Nothing here imports TensorFlow or Keras; a `.keras` file imports Keras inside `load_runner`.

Example:
```python
from keras_unet.benchmarks import run_benchmark

report = run_benchmark(["unet.tflite", "unet_int8.tflite"], data="data/val", reference="unet.keras", threads=2)
report.print_table()
```
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

from keras_unet.benchmarks import timing
from keras_unet.runtime import scores as accuracy
from keras_unet.benchmarks.environment import collect_environment, runtime_info
from keras_unet.benchmarks.memory import PeakRSS
from keras_unet.benchmarks.report import BenchmarkReport, BenchmarkRow

SUFFIXES = {".keras": "keras", ".tflite": "tflite", ".onnx": "onnx"}
DEFAULT_SYNTHETIC_SIZE = (128, 128)


def _format_of(path):
    return SUFFIXES.get(os.path.splitext(str(path))[1].lower())


def _size_mb(path):
    try:
        return os.path.getsize(path) / 2**20
    except OSError:
        return None


class LabelledData:
    """The labelled images of a data folder, read once and decoded per model's mask encoding.

    Args:
        data_dir: folder with `images/` and `masks/` (see `keras_unet.runtime.imageio`), or None for
            no quality numbers (latency on random images).
        max_images: read at most this many pairs (sorted by name), or None for all.

    Example:
    ```python
    data = LabelledData("data/val")
    images = data.images(channels=3); masks = data.masks("binary", 1, None)
    ```
    """

    def __init__(self, data_dir=None, max_images=None):
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        self.pairs = []
        if self.data_dir is not None:
            if not os.path.isdir(self.data_dir):
                raise FileNotFoundError(
                    f"`data` must be a folder with images/ and masks/. Received: data={self.data_dir!r}"
                )
            from keras_unet.runtime import imageio

            self.pairs = list(imageio.list_pairs(self.data_dir))
            if max_images is not None:
                self.pairs = self.pairs[: int(max_images)]
            if not self.pairs:
                raise ValueError(f"No image/mask pairs found in data={self.data_dir!r} (expected images/ and masks/).")
        self._images = {}
        self._raw_masks = None
        self._masks = {}

    def __len__(self):
        return len(self.pairs)

    def images(self, channels):
        if channels not in self._images:
            from keras_unet.runtime import imageio

            self._images[channels] = [imageio.read_image(pair[0], channels) for pair in self.pairs]
        return self._images[channels]

    def masks(self, encoding, num_classes, ignore_index):
        key = (encoding, num_classes, ignore_index)
        if key not in self._masks:
            from keras_unet.runtime import imageio

            if self._raw_masks is None:
                self._raw_masks = [imageio.read_mask(pair[1]) for pair in self.pairs]
            self._masks[key] = [
                np.asarray(imageio.decode_mask(raw, encoding, num_classes, ignore_index, path=pair[1]))
                for raw, pair in zip(self._raw_masks, self.pairs)
            ]
        return self._masks[key]


def _resize(image, size):
    from keras_unet.runtime import imageio

    if image.shape[:2] == tuple(size):
        return image
    return imageio.resize_image(image, tuple(size))


def _latency_images(runner, data, channels, batch_size, seed=0):
    size = tuple(runner.input_size or (None, None))
    if len(data):
        images = data.images(channels)
        picked = [images[i % len(images)] for i in range(batch_size)]
        if None in size:
            # A model that takes any size is timed at the first image's size.
            size = picked[0].shape[:2]
        return np.stack([_resize(np.asarray(image, np.uint8), size) for image in picked])
    if None in size:
        size = DEFAULT_SYNTHETIC_SIZE
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (batch_size, size[0], size[1], channels), dtype=np.uint8)


def _predict_all(runner, images, batch_size):
    masks = []
    for start in range(0, len(images), batch_size):
        masks.extend(np.asarray(m) for m in runner.predict_masks(images[start : start + batch_size]))
    return masks


def _metadata_value(runner, key, default=None):
    metadata = getattr(runner, "metadata", None) or {}
    value = metadata.get(key)
    return default if value is None else value


def measure_model(
    path,
    data,
    threads=None,
    warmup=5,
    runs=None,
    seconds=None,
    batch_size=1,
    compare_bare=True,
    rounds=5,
    mask_encoding=None,
    ignore_index=None,
):
    """Measure one model file. Raises on failure (`run_benchmark` turns that into an error row).

    Args:
        path: `.keras`, `.tflite` or `.onnx` file.
        data: a `LabelledData` (may be empty: no quality numbers).
        threads: threads for the runtime, or None for its default.
        warmup: untimed calls before timing.
        runs: timed calls, or None with `seconds` (default 50 when both are None).
        seconds: timing budget instead of `runs`.
        batch_size: images per call.
        compare_bare: for `.tflite`, also time a bare `interpreter.invoke()` loop.
        rounds: alternating blocks of harness and bare timing.
        mask_encoding: override the metadata's mask encoding ("binary", "index", "trimap",
            "auto"; files without metadata default to "auto").
        ignore_index: override the metadata's ignore index.

    Returns:
        `(row, masks)`: a `BenchmarkRow` and the predicted masks (list, for agreement).

    Example:
    ```python
    row, masks = measure_model("m.tflite", LabelledData("data/"), threads=2, runs=20)
    ```
    """
    from keras_unet.runtime import load_runner

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model file not found. Received: model={path!r}")
    row = BenchmarkRow(
        model=path,
        format=_format_of(path),
        model_size_mb=_size_mb(path),
        batch_size=batch_size,
        threads=threads,
        warmup=warmup,
    )
    masks = None
    with PeakRSS() as memory:
        start = time.perf_counter()
        runner = load_runner(path, threads=threads)
        row.load_time_s = time.perf_counter() - start
        row.format = runner.format
        row.quantization = runner.quantization
        row.num_classes = int(runner.num_classes)
        for key, value in runtime_info(runner).items():
            setattr(row, key, value)
        channels = int(_metadata_value(runner, "channels", 3))
        if len(data):
            encoding = mask_encoding or _metadata_value(runner, "mask_encoding", "auto")
            ignore = ignore_index if ignore_index is not None else _metadata_value(runner, "ignore_index")
            truth = data.masks(encoding, row.num_classes, ignore)
            masks = _predict_all(runner, data.images(channels), batch_size)
            scores = accuracy.segmentation_scores(truth, masks, row.num_classes, ignore)
            row.quality_images = len(data)
            for key in ("iou", "dice", "mean_iou", "pixel_accuracy", "iou_per_class", "dice_per_class"):
                setattr(row, key, scores[key])
        batch = runner.prepare(_latency_images(runner, data, channels, batch_size))
        row.input_size = "x".join(str(d) for d in np.shape(batch)[1:3])
        sync = timing.synchronize_fn(runner)
        settle = sync or (lambda out: out)
        settle(runner.run(batch))
    row.rss_before_mb, row.peak_rss_mb = memory.before_mb, memory.peak_mb
    row.model_rss_delta_mb, row.memory_method = memory.delta_mb, memory.method

    harness = lambda: runner.run(batch)  # noqa: E731 - the thin call is the thing timed
    if compare_bare and row.format == "tflite":
        invoke = timing.make_bare_invoke(path, threads=threads, batch=batch)
        times = timing.time_interleaved(
            {"harness": harness, "bare": invoke},
            warmup=warmup,
            runs=runs,
            seconds=seconds,
            rounds=rounds,
            sync={"harness": sync},
        )
        stats = timing.summarize(times["harness"], batch_size)
        row.bare_latency_p50_ms = timing.summarize(times["bare"], batch_size)["latency_p50_ms"]
        row.harness_overhead = stats["latency_p50_ms"] / row.bare_latency_p50_ms
        harness_times = times["harness"]
    else:
        harness_times = timing.time_callable(harness, warmup=warmup, runs=runs, seconds=seconds, sync=sync)
        stats = timing.summarize(harness_times, batch_size)
    for key, value in stats.items():
        setattr(row, key, value)
    row.latency_runs_ms = [t * 1000.0 for t in harness_times]
    return row, masks


def _error_row(path, error, batch_size, threads):
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return BenchmarkRow(
        model=os.fspath(path),
        format=_format_of(path),
        model_size_mb=_size_mb(path),
        batch_size=batch_size,
        threads=threads,
        error=message.strip().splitlines()[-1][:500] if message.strip() else repr(error),
    )


def _measure_isolated(path, options):
    """Run `measure_model` in a fresh Python process; return `(row, masks)`."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        config = os.path.join(folder, "config.json")
        with open(config, "w") as handle:
            json.dump({"path": os.fspath(path), "options": options, "out": folder}, handle)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        done = subprocess.run(
            [sys.executable, "-m", "keras_unet.benchmarks.suite", config], env=env, capture_output=True, text=True
        )
        row_path = os.path.join(folder, "row.json")
        if done.returncode != 0 or not os.path.exists(row_path):
            tail = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"isolated run exited with code {done.returncode}: {tail[0]}")
        with open(row_path) as handle:
            row = BenchmarkRow(**json.load(handle))
        masks = None
        masks_path = os.path.join(folder, "masks.npz")
        if os.path.exists(masks_path):
            with np.load(masks_path) as stored:
                masks = [stored[f"m{i}"] for i in range(len(stored.files))]
        return row, masks


def _worker_main(config_path):
    with open(config_path) as handle:
        config = json.load(handle)
    options = dict(config["options"])
    data = LabelledData(options.pop("data"), options.pop("max_images"))
    try:
        row, masks = measure_model(config["path"], data, **options)
    except Exception as error:
        traceback.print_exc()
        row, masks = _error_row(config["path"], error, options.get("batch_size"), options.get("threads")), None
    if masks is not None:
        np.savez(os.path.join(config["out"], "masks.npz"), **{f"m{i}": m for i, m in enumerate(masks)})
    with open(os.path.join(config["out"], "row.json"), "w") as handle:
        json.dump(row.to_dict(), handle)
    return 0


def _compare_with_reference(rows, masks):
    reference = next((row for row in rows if row.is_reference and row.error is None), None)
    if reference is None:
        return
    reference_masks = masks.get(id(reference))
    for row in rows:
        if row.error is not None:
            continue
        if reference.latency_p50_ms and row.latency_p50_ms and reference.batch_size == row.batch_size:
            row.speedup_vs_reference = reference.latency_p50_ms / row.latency_p50_ms
        if reference.iou is not None and row.iou is not None:
            row.iou_drop = reference.iou - row.iou
        row_masks = masks.get(id(row))
        if reference_masks is not None and row_masks is not None and row.num_classes == reference.num_classes:
            row.agreement_iou = accuracy.agreement_iou(row_masks, reference_masks, row.num_classes)


def _progress(items, enabled):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # an edge device may lack tqdm: plain lines instead
        return _plain_progress(items)
    return tqdm(items, desc="bench", unit="model", file=sys.stderr)


def _plain_progress(items):
    for index, item in enumerate(items):
        print(f"bench [{index + 1}/{len(items)}] {item}", file=sys.stderr)
        yield item


def run_benchmark(
    models,
    data=None,
    reference=None,
    threads=None,
    warmup=5,
    runs=None,
    seconds=None,
    batch_size=1,
    compare_bare=True,
    rounds=5,
    isolate=False,
    mask_encoding=None,
    ignore_index=None,
    max_images=None,
    progress=True,
    json_path=None,
    csv_path=None,
    plot_path=None,
):
    """Benchmark model files and compare them with a reference; one `BenchmarkRow` per file.

    Args:
        models: list of `.keras`/`.tflite`/`.onnx` paths (a single path is accepted too).
        data: folder of labelled images (`images/`, `masks/`) for IoU/Dice/agreement, or None
            for latency only (random images).
        reference: the full-precision model (usually `.keras`) the others are compared with.
            If None, the first `.keras` file in `models` is the reference.
        threads: threads for every runtime (pinning them is the main noise control on a CPU).
        warmup: untimed calls per model.
        runs: timed calls per model (default 50 when `seconds` is None too).
        seconds: timing budget per model instead of `runs`.
        batch_size: images per call.
        compare_bare: time a bare `interpreter.invoke()` loop next to each `.tflite` model.
        rounds: alternating timing blocks of harness and bare loop.
        isolate: run each model in its own subprocess (clean memory numbers, crash-proof).
        mask_encoding: override the models' metadata ("binary", "index", "trimap").
        ignore_index: override the models' metadata ignore index.
        max_images: use at most this many labelled images.
        progress: show a progress bar on stderr.
        json_path, csv_path, plot_path: also write these files.

    Returns:
        a `BenchmarkReport`.

    Example:
    ```python
    report = run_benchmark(["unet_fp16.tflite", "unet.onnx"], data="data/", reference="unet.keras", threads=2)
    report.print_table()
    ```
    """
    if isinstance(models, (str, os.PathLike)):
        models = [models]
    models = [os.fspath(m) for m in models]
    if not models and reference is None:
        raise ValueError("`models` is empty: give at least one .keras, .tflite or .onnx file.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size!r}")
    if reference is None:
        reference = next((m for m in models if _format_of(m) == "keras"), None)
    ordered = list(models)
    if reference is not None:
        reference = os.fspath(reference)
        # The reference runs first so its row tops the table.
        ordered = [reference] + [m for m in models if os.path.abspath(m) != os.path.abspath(reference)]

    labelled = LabelledData(data, max_images)
    options = dict(
        threads=threads,
        warmup=warmup,
        runs=runs,
        seconds=seconds,
        batch_size=batch_size,
        compare_bare=compare_bare,
        rounds=rounds,
        mask_encoding=mask_encoding,
        ignore_index=ignore_index,
    )
    rows, masks = [], {}
    for path in _progress(ordered, progress):
        try:
            if isolate:
                worker_options = dict(options, data=labelled.data_dir, max_images=max_images)
                row, row_masks = _measure_isolated(path, worker_options)
            else:
                row, row_masks = measure_model(path, labelled, **options)
        except Exception as error:  # recorded, not fatal: the other models still run
            row, row_masks = _error_row(path, error, batch_size, threads), None
        row.is_reference = reference is not None and os.path.abspath(path) == os.path.abspath(reference)
        rows.append(row)
        if row_masks is not None:
            masks[id(row)] = row_masks
    _compare_with_reference(rows, masks)

    settings = dict(
        options,
        data=labelled.data_dir,
        quality_images=len(labelled),
        reference=reference,
        isolate=isolate,
        timer="time.perf_counter",
    )
    report = BenchmarkReport(environment=collect_environment(threads), rows=rows, settings=settings)
    if json_path:
        report.to_json(json_path)
    if csv_path:
        report.to_csv(csv_path)
    if plot_path:
        from keras_unet.benchmarks.plot import plot_latency_vs_iou

        plot_latency_vs_iou(report, plot_path)
    return report


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1]))
