"""Benchmarks for exported U-Nets: latency, size, memory, IoU/Dice and agreement with Keras.

Imports no TensorFlow or Keras, so it runs on an edge device next to `keras_unet.runtime`
(`pip install "keras-unet-edge[edge]"`). Modules, one job each:

- `suite`: `run_benchmark`, the list of files -> one report (reference first, errors recorded);
- `measure`: one model file (load, quality, memory, latency) and the `MeasureOptions`;
- `quality`: the labelled data, IoU/Dice against it, agreement with the reference;
- `isolation`: one model in a child process (`isolate=True`);
- `timing`, `memory`, `environment`: the measuring instruments;
- `report`, `plot`: the table, JSON, CSV and latency-vs-IoU plot;
- `cli`: `keras-unet bench` / `python -m keras_unet.benchmarks`.

`keras_unet.benchmarks.training` (training throughput, needs Keras) is separate and not imported here.

Example:
```python
from keras_unet.benchmarks import run_benchmark

report = run_benchmark(["unet.tflite", "unet.onnx"], data="data/val", reference="unet.keras", threads=2)
report.print_table()
report.to_json("bench.json")
```
"""

from keras_unet.benchmarks.measure import MeasureOptions, measure_model
from keras_unet.benchmarks.report import BenchmarkReport, BenchmarkRow
from keras_unet.benchmarks.suite import run_benchmark
from keras_unet.runtime.scores import agreement_iou, mask_agreement, segmentation_scores

__all__ = [
    "BenchmarkReport", "BenchmarkRow", "MeasureOptions", "agreement_iou", "mask_agreement", "measure_model",
    "run_benchmark", "segmentation_scores",
]  # fmt: skip
