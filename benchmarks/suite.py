"""Benchmark a list of model files: latency, size, memory, quality, agreement; one row each.

`run_benchmark` is what `keras-unet bench`, `python -m keras_unet.benchmarks` and `keras-unet demo`
call. It puts the reference first, measures each file (`keras_unet.benchmarks.measure`, or in
a child process with `isolate=True`: `keras_unet.benchmarks.isolation`), compares every row
with the reference (`keras_unet.benchmarks.quality.compare_with_reference`: speed-up, IoU drop,
mask agreement) and writes the report files. A model that fails anywhere gets a row with
`error` and the others go on.

`runtime="all"` puts each file on every installed runtime that runs it
(`keras_unet.runtime.runtimes_for`: TFLite for `.tflite`, onnxruntime for `.onnx`/`.ort`,
OpenVINO for `.onnx`, `.tflite` and `.xml`; headless Chromium for `.onnx`/`.ort` and uint8-input
`.tflite` files where Chromium, Playwright and the browser assets are installed:
`keras_unet.benchmarks.browser.bench_row`), one row each, and marks per file the fastest row
whose agreement with the reference keeps `AGREEMENT_TARGET`
(`keras_unet.benchmarks.report.mark_fastest_runtimes`). A named runtime runs the MODELs; the
reference always runs on its own runtime.

Nothing here imports TensorFlow or Keras; a `.keras` file imports Keras inside `load_runner`.

Example:
```python
from keras_unet.benchmarks import run_benchmark

report = run_benchmark(["unet.tflite", "unet_int8.tflite"], data="data/val", reference="unet.keras", threads=2)
report.print_table()
```
"""

import dataclasses
import os
import sys

from keras_unet.benchmarks.environment import collect_environment
from keras_unet.benchmarks.targets import AGREEMENT_TARGET
from keras_unet.benchmarks.measure import MeasureOptions, error_row, format_of, measure_model
from keras_unet.benchmarks.quality import LabelledData, compare_with_reference
from keras_unet.benchmarks.report import BenchmarkReport, mark_fastest_runtimes
from keras_unet.runtime import RUNTIMES, runtimes_for

#: `runtime` value that puts every file on every installed runtime that runs it.
ALL_RUNTIMES = "all"
#: `runtime` value that measures the files in headless Chromium (onnxruntime-web, MediaPipe).
BROWSER_RUNTIME = "browser"
#: The agreement (IoU with the reference's masks) a runtime must keep to be marked fastest
#: is `AGREEMENT_TARGET` (`keras_unet.benchmarks.targets`).
# Runner `format` -> the runtime name that runs it (`keras_unet.runtime.RUNTIMES`).
_RUNTIME_OF_FORMAT = {"tflite": "tflite", "onnx": "onnxruntime", "keras": "keras", "openvino": "openvino"}


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
        label = item[0] if isinstance(item, tuple) else item  # a run's model path
        print(f"bench [{index + 1}/{len(items)}] {label}", file=sys.stderr)
        yield item


def _same_file(a, b):
    return os.path.abspath(a) == os.path.abspath(b)


def _own_runtime(path):
    return _RUNTIME_OF_FORMAT.get(format_of(path))


def _runs(ordered, reference, options):
    """`(path, options, is_reference)` of every row to measure, in table order.

    The reference runs on its own runtime; with `ALL_RUNTIMES` each file runs on every
    installed runtime that takes it (the reference's file on the others too), otherwise on
    `options.runtime` (None: its own).
    """
    runs = []
    in_browser = None  # whether Chromium and its assets are there: asked once, when needed
    for path in ordered:
        is_reference = reference is not None and _same_file(path, reference)
        if options.runtime != ALL_RUNTIMES:
            runtimes = [None] if is_reference else [options.runtime]
        else:
            runtimes = runtimes_for(path) or [None]  # None: the error row says what is missing
            if is_reference:
                own = _own_runtime(path)
                runtimes = [None] + [r for r in runtimes if r != own]
            from keras_unet.benchmarks.browser.bench_row import browser_ready, browser_takes

            if browser_takes(path):
                in_browser = browser_ready() if in_browser is None else in_browser
                if in_browser:
                    runtimes.append(BROWSER_RUNTIME)
        runs.extend((path, dataclasses.replace(options, runtime=r), is_reference and i == 0)
                    for i, r in enumerate(runtimes))
    return runs


def run_benchmark(
    models,
    data=None,
    reference=None,
    *,
    isolate=False,
    max_images=None,
    progress=True,
    json_path=None,
    csv_path=None,
    plot_path=None,
    **options,
) -> BenchmarkReport:
    """Benchmark model files and compare them with a reference; one `BenchmarkRow` per file.

    Args:
        models: list of `.keras`/`.tflite`/`.onnx` paths (a single path is accepted too).
        data: folder of labelled images (`images/`, `masks/`) for IoU/Dice/agreement, or None
            for latency only (random images).
        reference: the full-precision model (usually `.keras`) the others are compared with.
            If None, the first `.keras` file in `models` is the reference.
        isolate: run each model in its own subprocess (clean memory numbers, crash-proof).
        max_images: use at most this many labelled images.
        progress: show a progress bar on stderr.
        json_path, csv_path, plot_path: also write these files (their folders are created).
            Without matplotlib the plot is skipped with a printed note.
        **options: how each model is measured, the fields of
            `keras_unet.benchmarks.measure.MeasureOptions`: `threads` (None), `warmup` (5),
            `runs` (None: 50), `seconds` (None), `batch_size` (1), `compare_bare` (True),
            `rounds` (5), `mask_encoding` (None: from metadata), `ignore_index` (None: from
            metadata), `runtime` (None: each file's own; a key of
            `keras_unet.runtime.RUNTIMES`, e.g. "openvino"; or "all", see the module). An
            unknown name raises `TypeError`.

    Returns:
        a `BenchmarkReport`. Failed models are rows with `error` set (`report.failed`).

    Example:
    ```python
    import keras_unet
    from keras_unet.benchmarks import run_benchmark
    from keras_unet.datasets import nuclei_path
    from keras_unet.export import export_tflite

    model = keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2)
    model.save("unet.keras")
    export_tflite(model, "unet_fp16.tflite", quantize="fp16", progress=False)
    report = run_benchmark(["unet_fp16.tflite"], data=nuclei_path(), reference="unet.keras",
                           max_images=8, threads=2, runs=5, progress=False)
    report.print_table()
    ```
    """
    options = MeasureOptions.from_kwargs(**options)
    if options.runtime not in (None, ALL_RUNTIMES, BROWSER_RUNTIME, *RUNTIMES):
        raise ValueError(f"`runtime` must be one of {', '.join(RUNTIMES)}, {BROWSER_RUNTIME!r}, "
                         f"{ALL_RUNTIMES!r} or None. "
                         f"Received: runtime={options.runtime!r}")
    if isinstance(models, (str, os.PathLike)):
        models = [models]
    models = [os.fspath(m) for m in models]
    if not models and reference is None:
        raise ValueError("`models` is empty: give at least one .keras, .tflite or .onnx file.")
    if reference is None:
        reference = next((m for m in models if format_of(m) == "keras"), None)
    ordered = list(models)
    if reference is not None:
        reference = os.fspath(reference)
        # The reference runs first so its row tops the table.
        ordered = [reference] + [m for m in models if not _same_file(m, reference)]
    labelled = LabelledData(data, max_images)
    if isolate:
        # Imported here, not at the top: the child runs `python -m keras_unet.benchmarks.isolation`,
        # which must not already be imported by the package it belongs to.
        from keras_unet.benchmarks.isolation import measure_isolated

    rows, masks = [], {}
    for path, run_options, is_reference in _progress(_runs(ordered, reference, options), progress):
        try:
            if run_options.runtime == BROWSER_RUNTIME:  # in the page, whatever `isolate` says
                from keras_unet.benchmarks.browser.bench_row import measure_in_browser

                row, row_masks = measure_in_browser(path, labelled, run_options)
            elif isolate:
                row, row_masks = measure_isolated(path, run_options, labelled.data_dir, max_images)
            else:
                row, row_masks = measure_model(path, labelled, run_options)
        except Exception as error:  # recorded, not fatal: the other models still run
            row, row_masks = error_row(path, error, run_options), None
            row.runtime = run_options.runtime or _own_runtime(path)
        row.is_reference = is_reference
        rows.append(row)
        if row_masks is not None:
            masks[id(row)] = row_masks
    compare_with_reference(rows, masks)
    if options.runtime == ALL_RUNTIMES:
        mark_fastest_runtimes(rows, AGREEMENT_TARGET)

    settings = dict(
        options.to_dict(),
        data=labelled.data_dir,
        quality_images=len(labelled),
        max_images=max_images,
        reference=reference,
        isolate=isolate,
        timer="time.perf_counter",
    )
    if options.runtime == ALL_RUNTIMES:
        settings["agreement_target"] = AGREEMENT_TARGET
    report = BenchmarkReport(environment=collect_environment(options.threads), rows=rows, settings=settings)
    if json_path:
        report.to_json(json_path)
    if csv_path:
        report.to_csv(csv_path)
    if plot_path:
        from keras_unet.benchmarks.plot import plot_latency_vs_iou

        plot_latency_vs_iou(report, plot_path)
    return report
