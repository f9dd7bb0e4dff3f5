"""Keras -> OpenVINO IR (`.xml` + `.bin`): float32, float16 or int8, verified against Keras.

The ONNX export (verified against Keras as usual; int8 is its QDQ file, calibrated and
repaired) converted by `openvino.convert_model`, then verified itself against Keras through
the OpenVINO runner before both files are written (`keras_unet.export.openvino_convert`).
The metadata inside is the ONNX file's (its `format` says `"onnx"`, the graph it came from,
as in an `.ort` file); the result says `"openvino"`. Needs the `openvino` package:
`pip install "keras-unet-edge[openvino]"`.

Example:
```python
from keras_unet.export.openvino import export_openvino

result = export_openvino("model.keras", "model_int8.xml", quantize="int8",
                         calibration_data="data/train")
```
"""

from __future__ import annotations

import dataclasses
from typing import Any

from keras_unet.export.onnx import CONVERTER as ONNX_CONVERTER
from keras_unet.export.openvino_convert import (IR_SUFFIX, conversion_options, package,
                                                write_ir_atomic)
from keras_unet.export.options import ExportOptions
from keras_unet.export.pipeline import run_export
from keras_unet.export.result import ExportResult

# The ONNX pipeline with the IR package pass and its two-file write. No diagnosis: the ONNX
# one reports what onnxruntime's CPU provider runs in float and how fast, not OpenVINO's run.
CONVERTER = dataclasses.replace(ONNX_CONVERTER, out_suffix=IR_SUFFIX, package=package,
                                name="openvino", conversion_options=conversion_options,
                                diagnose=None, mask_head=None, write=write_ir_atomic)


def export_openvino(model_or_path: Any, out: Any, quantize: str = "none",
                    **options: Any) -> ExportResult:
    """Convert a Keras segmentation model to verified OpenVINO IR (`out` and its `.bin`).

    Args:
        model_or_path: a `keras.Model` or the path of a `.keras` file.
        out: the `.xml` file to write; its weights go to the `.bin` beside it. Both are
            replaced only once the new IR verified.
        quantize: `"none"` (float32), `"fp16"` or `"int8"` (the ONNX export's QDQ file,
            converted; needs `calibration_data`).
        **options: the other fields of `keras_unet.export.options.ExportOptions` the ONNX
            export takes (`calibration_data`, `verification_data`, `agreement_floor`,
            `repair`, `input_size`, `dynamic_batch` ...).

    Returns:
        the export's `ExportResult`: `path` of the `.xml`, `format="openvino"`,
        `size_bytes` of both files, `verification` of the IR itself.

    Raises:
        ValueError: `out` does not end in `.xml`, or an option IR cannot honour.
        ImportError: openvino is not installed (names the extra).
        VerificationError: the ONNX file or its IR does not match Keras (nothing written).

    Example:
    ```python
    export_openvino("model.keras", "model.xml")
    ```
    """
    return run_export(CONVERTER, ExportOptions(quantize=quantize, **options), model_or_path, out)
