"""Keras -> TFLite / ONNX export with quantization, verified against the Keras model.

`import export` imports no TensorFlow: the converters are loaded on first use, and
`export.runtime` (the edge side) never imports it.

Example:
```python
from export import export_tflite, export_onnx, load_runner

export_tflite("unet.keras", "unet_int8.tflite", quantize="int8", calibration_data="data/train")
runner = load_runner("unet_int8.tflite")
```
"""

import importlib

_LAZY = {
    "export_tflite": "export.tflite",
    "export_onnx": "export.onnx",
    "verify_export": "export.verify",
    "ExportResult": "export.result",
    "VerificationError": "export.verify",
    "load_runner": "export.runtime",
    "read_metadata": "export.runtime.metadata",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
