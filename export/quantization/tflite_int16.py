"""16x8 files (8-bit weights, 16-bit activations) from a calibrated TFLite model.

`TFLiteConverter` writes 16x8 files with TFLite's older quantizer
(`tensorflow.lite.python.optimize.calibrator`), not with the MLIR quantizer it uses for int8:
the MLIR one, asked for int16 (`mlir_quantize(inference_type=QUANTIZED_INT16)`), gives
activations a zero point (-1 seen on a DEPTHWISE_CONV_2D output) that TFLite's int16 kernels
refuse. The older quantizer, handed a calibrated model and no new samples, quantizes from
the ranges the model records; so the ranges `TFLiteQuantizer` measured again, and its
percentile variant, apply to 16x8 files as they do to int8 ones.

Its 16x8 op list has no DEPTH_TO_SPACE (and TFLite has no int16 DEPTH_TO_SPACE kernel), so
that op is first written as RESHAPE/TRANSPOSE/RESHAPE (`tflite_depth_to_space`).

Why: see docs/notes/2026-12-06-tflite-int16x8.md.

Example:
```python
from keras_unet.export.quantization.tflite_int16 import quantize_16x8

model_bytes = quantize_16x8(calibrated_model, "int16", "int16", allow_float=False)
```
"""

import numpy as np


def quantize_16x8(calibrated_model, input_type="float32", output_type="float32",
                  allow_float=True) -> bytes:
    """The 16x8 `.tflite` bytes of a calibrated model, from the ranges it records.

    Args:
        calibrated_model: a float model with recorded min/max (`TFLiteQuantizer.calibrated_for`).
        input_type, output_type: `"float32"` or `"int16"` (numpy names).
        allow_float: leave an op the 16x8 quantizer cannot quantize in float; False makes
            it an error (integer-only files).

    Example:
    ```python
    model_bytes = quantize_16x8(quantizer.calibrated_for("percentile"))
    ```
    """
    from tensorflow.lite.python.optimize import calibrator

    from keras_unet.export.quantization.tflite_depth_to_space import depth_to_space_as_transpose

    model = depth_to_space_as_transpose(calibrated_model)
    wrapper = calibrator.Calibrator(model)._calibrator  # noqa: SLF001 (no public entry)
    return bytes(wrapper.QuantizeModel(
        np.dtype(input_type).num, np.dtype(output_type).num, bool(allow_float),
        np.dtype("int16").num, np.dtype("int64").num,  # activations, bias (TF's 16x8 default)
        False, False))  # per-channel weights, dense layers included
