"""Measure one model file: load it, score its masks, watch its memory, time `runner.run`.

`measure_model` is the work `run_benchmark` does for every file, in this order:

1. load with `keras_unet.runtime.load_runner(path, threads=threads)` (timed: `load_time_s`);
2. quality: every labelled image segmented and scored against its mask
   (`keras_unet.benchmarks.quality.score_quality`);
3. one batch of `batch_size` images is prepared once (`runner.prepare`) and run once;
   steps 1-3 are inside `PeakRSS`, giving `peak_rss_mb` and `model_rss_delta_mb`;
4. latency: `warmup` untimed calls, then `runner.run(batch)` timed call by call. For `.tflite`
   files a bare `interpreter.invoke()` loop on the same batch is timed in alternating blocks
   with the harness (`harness_overhead` = harness p50 / bare p50). The cores other processes
   kept busy meanwhile are `other_load_cores` (`keras_unet.benchmarks.machine_load`).

The settings shared by every model of a run are one `MeasureOptions`.

Example:
```python
from keras_unet.benchmarks.measure import MeasureOptions, measure_model
from keras_unet.benchmarks.quality import LabelledData

row, masks = measure_model("unet.tflite", LabelledData("data/val"), MeasureOptions(threads=2, runs=20))
row.latency_p50_ms, row.iou
```
"""

import dataclasses
import os
import time

import numpy as np

from keras_unet.benchmarks import timing
from keras_unet.benchmarks.environment import runtime_info
from keras_unet.benchmarks.machine_load import OtherLoad
from keras_unet.benchmarks.memory import PeakRSS
from keras_unet.runtime.files import MB
from keras_unet.benchmarks.quality import metadata_value, score_quality
from keras_unet.benchmarks.report import BenchmarkRow
from keras_unet.runtime import RUNNERS

DEFAULT_SYNTHETIC_SIZE = (128, 128)
MASK_ENCODINGS = ("auto", "binary", "index", "trimap")


@dataclasses.dataclass
class MeasureOptions:
    """How every model of one benchmark run is measured.

    Args:
        threads: threads for every runtime, or None for its default (pinning them is the main
            noise control on a CPU).
        warmup: untimed calls per model before timing.
        runs: timed calls per model, or None with `seconds` (default 50 when both are None).
        seconds: timing budget per model instead of `runs`.
        batch_size: images per call.
        compare_bare: for `.tflite`, also time a bare `interpreter.invoke()` loop.
        rounds: alternating timing blocks of harness and bare loop.
        mask_encoding: override the metadata's mask encoding ("auto", "binary", "index",
            "trimap"); files without metadata use "auto".
        ignore_index: override the metadata's ignore index.
        runtime: the runtime each file runs on (`keras_unet.runtime.load_runner`'s `runtime`,
            e.g. "openvino"), None for the file's own; `run_benchmark` also takes "all".

    Example:
    ```python
    from keras_unet.benchmarks import MeasureOptions

    options = MeasureOptions(threads=2, runs=100)
    options.warmup, options.batch_size   # (5, 1)
    ```
    """

    threads: int = None
    warmup: int = 5
    runs: int = None
    seconds: float = None
    batch_size: int = 1
    compare_bare: bool = True
    rounds: int = 5
    mask_encoding: str = None
    ignore_index: int = None
    runtime: str = None

    def __post_init__(self):
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"`batch_size` must be an integer >= 1. Received: batch_size={self.batch_size!r}")
        if self.warmup < 0:
            raise ValueError(f"`warmup` must be >= 0. Received: warmup={self.warmup!r}")
        if self.runs is not None and self.seconds is not None:
            raise ValueError(
                f"Give `runs` or `seconds`, not both. Received: runs={self.runs!r}, seconds={self.seconds!r}"
            )
        if self.mask_encoding is not None and self.mask_encoding not in MASK_ENCODINGS:
            raise ValueError(
                f"`mask_encoding` must be one of {MASK_ENCODINGS} or None. "
                f"Received: mask_encoding={self.mask_encoding!r}"
            )

    @classmethod
    def names(cls):
        """The option names, in order (`threads`, `warmup`, ...)."""
        return [field.name for field in dataclasses.fields(cls)]

    @classmethod
    def from_kwargs(cls, **kwargs):
        """Build from keyword arguments; an unknown name raises `TypeError` listing the valid ones.

        Example:
        ```python
        MeasureOptions.from_kwargs(threads=2, runs=20)
        ```
        """
        unknown = sorted(set(kwargs) - set(cls.names()))
        if unknown:
            raise TypeError(f"Unknown benchmark option(s) {unknown}. Valid options: {cls.names()}")
        return cls(**kwargs)

    def to_dict(self):
        return dataclasses.asdict(self)


def format_of(path):
    """`"keras"`, `"tflite"` or `"onnx"` from the file's suffix, or None."""
    return RUNNERS.get(os.path.splitext(str(path))[1].lower())


def _size_mb(path):
    try:
        return os.path.getsize(path) / MB
    except OSError:
        return None


def new_row(path, options, **fields) -> BenchmarkRow:
    """A row with what is known of `path` before it runs (size, format) and the run's settings."""
    return BenchmarkRow(
        model=os.fspath(path),
        format=format_of(path),
        model_size_mb=_size_mb(path),
        batch_size=options.batch_size,
        threads=options.threads,
        **fields,
    )


def error_row(path, error, options):
    """The row of a model that failed: what is known without running it, and `error`.

    Args:
        path: the model file.
        error: the exception, or a message.
        options: the `MeasureOptions` of the run.

    Example:
    ```python
    error_row("broken.tflite", ValueError("not a flatbuffer"), MeasureOptions()).error
    # "ValueError: not a flatbuffer"
    ```
    """
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    last_line = message.strip().splitlines()[-1][:500] if message.strip() else repr(error)
    return new_row(path, options, error=last_line)


def _resize(image, size):
    from keras_unet.runtime import imageio

    if image.shape[:2] == tuple(size):
        return image
    return imageio.resize_image(image, tuple(size))


def latency_images(runner, data, channels, batch_size, seed=0):
    """The `batch_size` images that are timed: from `data` (cycled) or random.

    A model that takes any size is timed at the first image's size, or at
    `DEFAULT_SYNTHETIC_SIZE` without data.

    Example:
    ```python
    latency_images(runner, LabelledData(None), channels=3, batch_size=2).shape  # (2, H, W, 3)
    ```
    """
    size = tuple(runner.input_size or (None, None))
    if len(data):
        images = data.images(channels)
        picked = [images[i % len(images)] for i in range(batch_size)]
        if None in size:
            size = picked[0].shape[:2]
        return np.stack([_resize(np.asarray(image, np.uint8), size) for image in picked])
    if None in size:
        size = DEFAULT_SYNTHETIC_SIZE
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (batch_size, size[0], size[1], channels), dtype=np.uint8)


def _time_latency(row, runner, batch, options, sync):
    """Time `runner.run(batch)` (and a bare invoke loop for .tflite) into `row`."""
    harness = lambda: runner.run(batch)  # noqa: E731 - the thin call is the thing timed
    budget = dict(warmup=options.warmup, runs=options.runs, seconds=options.seconds)
    with OtherLoad() as load:
        if options.compare_bare and row.format == "tflite":
            invoke = timing.make_bare_invoke(row.model, threads=options.threads, batch=batch)
            times = timing.time_interleaved(
                {"harness": harness, "bare": invoke}, rounds=options.rounds, sync={"harness": sync}, **budget
            )
            harness_times = times["harness"]
            row.bare_latency_p50_ms = timing.summarize(times["bare"], options.batch_size)["latency_p50_ms"]
        else:
            harness_times = timing.time_callable(harness, sync=sync, **budget)
    row.other_load_cores = load.cores
    for key, value in timing.summarize(harness_times, options.batch_size).items():
        setattr(row, key, value)
    if row.bare_latency_p50_ms:
        row.harness_overhead = row.latency_p50_ms / row.bare_latency_p50_ms
    row.latency_runs_ms = [t * 1000.0 for t in harness_times]


def measure_model(path, data, options=None):
    """Measure one model file. Raises on failure (`run_benchmark` turns that into an error row).

    Args:
        path: `.keras`, `.tflite` or `.onnx` file.
        data: a `keras_unet.benchmarks.quality.LabelledData` (may be empty: no quality numbers).
        options: a `MeasureOptions`, or None for the defaults.

    Returns:
        `(row, masks)`: a `BenchmarkRow` and the predicted masks (list, for the agreement with
        the reference), or None for masks without data.

    Example:
    ```python
    import keras_unet
    from keras_unet.benchmarks import MeasureOptions, measure_model
    from keras_unet.benchmarks.quality import LabelledData
    from keras_unet.datasets import nuclei_path

    keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2).save("unet.keras")
    row, masks = measure_model("unet.keras", LabelledData(nuclei_path(), max_images=8),
                               MeasureOptions(threads=2, runs=5))
    row.latency_p50_ms, row.iou
    ```
    """
    from keras_unet.runtime import load_runner

    options = options or MeasureOptions()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model file not found. Received: model={path!r}")
    row = new_row(path, options, warmup=options.warmup)
    masks = None
    with PeakRSS() as memory:
        start = time.perf_counter()
        runner = load_runner(path, threads=options.threads, runtime=options.runtime)
        row.load_time_s = time.perf_counter() - start
        row.format = runner.format
        row.quantization = runner.quantization
        row.num_classes = int(runner.num_classes)
        for key, value in runtime_info(runner).items():
            setattr(row, key, value)
        if len(data):
            masks = score_quality(row, runner, data, options)
        channels = int(metadata_value(runner, "channels", 3))
        batch = runner.prepare(latency_images(runner, data, channels, options.batch_size))
        row.input_size = "x".join(str(d) for d in np.shape(batch)[1:3])
        sync = timing.synchronize_fn(runner)
        (sync or (lambda out: out))(runner.run(batch))
    row.rss_before_mb, row.peak_rss_mb = memory.before_mb, memory.peak_mb
    row.model_rss_delta_mb, row.memory_method = memory.delta_mb, memory.method
    _time_latency(row, runner, batch, options, sync)
    return row, masks
