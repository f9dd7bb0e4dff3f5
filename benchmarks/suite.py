"""Benchmark a list of model files: latency, size, memory, quality, agreement; one row each.

`run_benchmark` is what `keras-unet bench`, `python -m keras_unet.benchmarks` and `keras-unet demo`
call. It puts the reference first, measures each file (`keras_unet.benchmarks.measure`, or in
a child process with `isolate=True`: `keras_unet.benchmarks.isolation`), compares every row
with the reference (`keras_unet.benchmarks.quality.compare_with_reference`: speed-up, IoU drop,
mask agreement) and writes the report files. A model that fails anywhere gets a row with
`error` and the others go on.

Nothing here imports TensorFlow or Keras; a `.keras` file imports Keras inside `load_runner`.

Example:
```python
from keras_unet.benchmarks import run_benchmark

report = run_benchmark(["unet.tflite", "unet_int8.tflite"], data="data/val", reference="unet.keras", threads=2)
report.print_table()
```
"""

import os
import sys

from keras_unet.benchmarks.environment import collect_environment
from keras_unet.benchmarks.measure import MeasureOptions, error_row, format_of, measure_model
from keras_unet.benchmarks.quality import LabelledData, compare_with_reference
from keras_unet.benchmarks.report import BenchmarkReport


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


def _same_file(a, b):
    return os.path.abspath(a) == os.path.abspath(b)


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
):
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
            metadata). An unknown name raises `TypeError`.

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
    for path in _progress(ordered, progress):
        try:
            if isolate:
                row, row_masks = measure_isolated(path, options, labelled.data_dir, max_images)
            else:
                row, row_masks = measure_model(path, labelled, options)
        except Exception as error:  # recorded, not fatal: the other models still run
            row, row_masks = error_row(path, error, options), None
        row.is_reference = reference is not None and _same_file(path, reference)
        rows.append(row)
        if row_masks is not None:
            masks[id(row)] = row_masks
    compare_with_reference(rows, masks)

    settings = dict(
        options.to_dict(),
        data=labelled.data_dir,
        quality_images=len(labelled),
        max_images=max_images,
        reference=reference,
        isolate=isolate,
        timer="time.perf_counter",
    )
    report = BenchmarkReport(environment=collect_environment(options.threads), rows=rows, settings=settings)
    if json_path:
        report.to_json(json_path)
    if csv_path:
        report.to_csv(csv_path)
    if plot_path:
        from keras_unet.benchmarks.plot import plot_latency_vs_iou

        plot_latency_vs_iou(report, plot_path)
    return report
