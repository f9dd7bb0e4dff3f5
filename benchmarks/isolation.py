"""Measure a model in a fresh Python process (`run_benchmark(..., isolate=True)`, `bench --isolate`).

Two reasons: memory numbers not inflated by libraries an earlier model imported, and a crash of
a runtime (a corrupted file can segfault an interpreter) ending as an error row instead of
ending the benchmark.

Both sides of the exchange live here. The parent (`measure_isolated`) writes `config.json` into a
temporary folder and starts `python -m keras_unet.benchmarks.isolation config.json` with the same
interpreter and environment; the child (`worker_main`) runs `measure_model` and writes
`row.json` (and `masks.npz` when it scored masks) into the same folder.

Example:
```python
from keras_unet.benchmarks.isolation import measure_isolated
from keras_unet.benchmarks.measure import MeasureOptions

row, masks = measure_isolated("unet_int8.tflite", MeasureOptions(threads=2), data_dir="data/val")
```
"""

import json
import os
import subprocess
import sys
import tempfile
import traceback

import numpy as np

from keras_unet.benchmarks.measure import MeasureOptions, error_row, measure_model
from keras_unet.benchmarks.quality import LabelledData
from keras_unet.benchmarks.report import BenchmarkRow

WORKER_MODULE = "keras_unet.benchmarks.isolation"


def measure_isolated(path, options, data_dir=None, max_images=None):
    """Run `measure_model` on `path` in a child process; return `(row, masks)`.

    Args:
        path: the model file.
        options: a `MeasureOptions`.
        data_dir: labelled data folder, or None.
        max_images: use at most this many labelled images.

    Returns:
        `(row, masks)` as `measure_model` returns them. A model that fails inside the child
        comes back as an error row.

    Raises:
        RuntimeError: the child died without writing a row (a crash); the message holds its exit
            code and last line of output.

    Example:
    ```python
    row, masks = measure_isolated("m.onnx", MeasureOptions(runs=20))
    ```
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        config = os.path.join(folder, "config.json")
        with open(config, "w") as handle:
            json.dump(
                {"path": os.fspath(path), "options": options.to_dict(), "data": data_dir,
                 "max_images": max_images, "out": folder},
                handle,
            )
        done = subprocess.run([sys.executable, "-m", WORKER_MODULE, config], capture_output=True, text=True)
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


def worker_main(config_path):
    """The child's side: measure the model `config.json` names, write `row.json` (+ `masks.npz`).

    Example:
    ```
    python -m keras_unet.benchmarks.isolation /tmp/bench-x/config.json
    ```
    """
    with open(config_path) as handle:
        config = json.load(handle)
    options = MeasureOptions(**config["options"])
    try:
        row, masks = measure_model(config["path"], LabelledData(config["data"], config["max_images"]), options)
    except Exception as error:
        traceback.print_exc()
        row, masks = error_row(config["path"], error, options), None
    if masks is not None:
        np.savez(os.path.join(config["out"], "masks.npz"), **{f"m{i}": m for i, m in enumerate(masks)})
    with open(os.path.join(config["out"], "row.json"), "w") as handle:
        json.dump(row.to_dict(), handle)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
