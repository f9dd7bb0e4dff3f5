"""Keras -> TFLite / ONNX export with quantization, verified against the Keras model.

`import keras_unet.export` imports no TensorFlow: the converters are loaded on first use, and
`keras_unet.runtime` (the edge side) never imports it.

Example:
```python
from keras_unet.export import export_tflite, export_onnx, load_runner

export_tflite("unet.keras", "unet_int8.tflite", quantize="int8", calibration_data="data/train")
runner = load_runner("unet_int8.tflite")
```
"""

import importlib

_LAZY = {
    "export_tflite": "keras_unet.export.tflite",
    "export_onnx": "keras_unet.export.onnx",
    "export_ort": "keras_unet.export.ort",
    "export_openvino": "keras_unet.export.openvino",
    "ExportOptions": "keras_unet.export.options",
    "run_export": "keras_unet.export.pipeline",
    "verify_export": "keras_unet.export.verify",
    "ExportResult": "keras_unet.export.result",
    "VerificationError": "keras_unet.export.verify",
    "load_runner": "keras_unet.runtime",
    "read_metadata": "keras_unet.runtime.metadata",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_unet.export' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
