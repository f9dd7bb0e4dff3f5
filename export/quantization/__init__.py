"""Per-layer int8 quantization reports (TFLite and ONNX) and the building blocks of repair.

`import keras_unet.export.quantization` imports no TensorFlow or onnxruntime: the names
below load their module on first use.

- `report`: the row format shared by both reports, ordering and the printed table
  (`format_worst_layers`, `worst_nodes`, `leading_nodes`, `trailing_nodes`).
- `tflite_debug`: `tflite_layer_report`, `TFLiteQuantizer` (calibrate once, fix the
  ranges TFLite's calibrator widens, report, re-quantize with ops kept in float),
  `tflite_convert_keeping_float`.
- `tflite_int16`: 16x8 files (every op at 16-bit activations) from a calibrated model;
  `tflite_depth_to_space`: DEPTH_TO_SPACE as RESHAPE/TRANSPOSE/RESHAPE, which the 16-bit
  quantizers and kernels lack; `tflite_mixed`: int8 files with chosen ops at 16-bit
  activations, by the LiteRT quantizer.
- `tflite_graph`: which op writes and which ops read each tensor of a `.tflite` file
  (`tensor_ops`, `tensor_consumers`).
- `tflite_ranges`: measure a calibrated model's activation ranges again and write them
  back (`measure_ranges`, `widened_ranges`, `set_ranges`).
- `onnx_debug`: `onnx_layer_report`, `onnx_nodes_to_exclude` (what `quantize_static`'s
  `nodes_to_exclude` needs to really leave a layer in float).
- `logit_range`: a binary file's logit range clipped to [-8, 8]
  (`tflite_clip_logit_range`, `onnx_clip_logit_range`), applied to every int8 file.
- `requantize`: `precise_requantize`, int8 -> int8 requantizations in a `.tflite` file
  that TFLite's built-in kernels round twice, written as 1x1 depthwise convolutions.
- `bias_correction`: each convolution's float bias corrected for the mean shift its int8
  weights cause (`tflite_correct_biases`, `onnx_correct_biases`), the `"+bias"` variants.
- `weight_rounding`: each convolution's int8 weights rounded against its input over the
  calibration images, GPTQ (`tflite_round_weights`, `onnx_round_weights`), the `"+gptq"` variants.
- `variants`: a variant's calibration and weight treatment (`parse_variant`).

Example:
```python
from keras_unet.export.quantization import format_worst_layers, tflite_layer_report

rows = tflite_layer_report(converter, images, model=model)
print(format_worst_layers(rows, n=10))
```
"""

import importlib

_LAZY = {
    "COLUMNS": "keras_unet.export.quantization.report",
    "format_worst_layers": "keras_unet.export.quantization.report",
    "keras_layer_name": "keras_unet.export.quantization.report",
    "leading_nodes": "keras_unet.export.quantization.report",
    "trailing_nodes": "keras_unet.export.quantization.report",
    "sort_rows": "keras_unet.export.quantization.report",
    "worst_nodes": "keras_unet.export.quantization.report",
    "TFLiteQuantizer": "keras_unet.export.quantization.tflite_debug",
    "tflite_layer_report": "keras_unet.export.quantization.tflite_debug",
    "tflite_convert_keeping_float": "keras_unet.export.quantization.tflite_debug",
    "onnx_layer_report": "keras_unet.export.quantization.onnx_debug",
    "onnx_nodes_to_exclude": "keras_unet.export.quantization.onnx_debug",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_unet.export.quantization' has no attribute '{name}'")
