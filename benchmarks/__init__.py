"""Benchmarks for exported U-Nets: latency, size, memory, IoU/Dice and agreement with Keras.

Imports no TensorFlow or Keras, so it runs on an edge device next to `keras_unet.runtime`.
`keras_unet.benchmarks.training` (training throughput) is a separate module and is not imported here.

Example:
```python
from keras_unet.benchmarks import run_benchmark

report = run_benchmark(["unet.tflite", "unet.onnx"], data="data/val", reference="unet.keras", threads=2)
report.print_table()
report.to_json("bench.json")
```
"""

from keras_unet.runtime.scores import agreement_iou, mask_agreement, segmentation_scores
from keras_unet.benchmarks.report import BenchmarkReport, BenchmarkRow
from keras_unet.benchmarks.suite import run_benchmark

__all__ = ["BenchmarkReport", "BenchmarkRow", "agreement_iou", "mask_agreement", "run_benchmark", "segmentation_scores"]
