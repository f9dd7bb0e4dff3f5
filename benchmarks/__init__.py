"""Benchmarks for exported U-Nets: latency, size, memory, IoU/Dice and agreement with Keras.

Imports no TensorFlow or Keras, so it runs on an edge device next to `export.runtime`.
`benchmarks.training` (training throughput) is a separate module and is not imported here.

Example:
```python
from benchmarks import run_benchmark

report = run_benchmark(["unet.tflite", "unet.onnx"], data="data/val", reference="unet.keras", threads=2)
report.print_table()
report.to_json("bench.json")
```
"""

from benchmarks.accuracy import agreement_iou, segmentation_scores
from benchmarks.report import BenchmarkReport, BenchmarkRow
from benchmarks.suite import run_benchmark

__all__ = ["BenchmarkReport", "BenchmarkRow", "agreement_iou", "run_benchmark", "segmentation_scores"]
