"""`ExportOptions`: every option of an export, declared once with its default.

Light on purpose (the CLI's `--help` reads the defaults from here). The CLI
(`keras_unet.export.cli`) and the Python API (`export_tflite`, `export_onnx`,
`export_ort`) build one `ExportOptions` and hand it to `keras_unet.export.pipeline.run_export`,
which passes it on; a format reads the fields it needs (`Converter.conversion_options`).

Example:
```python
from keras_unet.export.options import ExportOptions

options = ExportOptions(quantize="int8", calibration_data="data/train")
options.batch, options.repairs   # (1, True)
```
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

OUTPUTS = ("probabilities", "mask")
# Modes calibrated on real images, every activation quantized: int8, and int16x8 (8-bit
# weights, 16-bit activations: the middle step NPUs run where int8 loses too much).
STATIC_MODES = ("int8", "int16x8")
CALIBRATION_SIZE = 100
VERIFICATION_SIZE = 32
DEFAULT_OPSET = 17
DEFAULT_THREADS = 2
# The default refuses what plainly does not segment like the original; a floor at repair's
# target would refuse good files on the noise of 32 verification images. Ask for more with
# `agreement_floor` / --agreement-floor. Why: see docs/notes/2026-11-28-int8-matrix-history.md.
DEFAULT_AGREEMENT_FLOOR = 0.95


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What to export and how; every format reads the same object.

    Args:
        quantize: `"none"` (float32), `"fp16"`, `"dynamic"` (TFLite), `"int8"` or
            `"int16x8"` (8-bit weights, 16-bit activations, every op).
        calibration_data: real images for `"int8"` and `"int16x8"`: a folder, a list of image paths or an
            array `(N, H, W, C)` in [0, 255].
        calibration_size: at most this many calibration images.
        input_size: `(height, width)` to export at; needed for a model that accepts any
            size unless `dynamic_size`.
        dynamic_size: ONNX: the file keeps a free height and width.
        dynamic_batch: ONNX: the file keeps a free batch (else batch 1).
        verify: run the file against Keras; a mismatch raises `VerificationError`.
        agreement_floor: lowest `agreement_iou` accepted for a quantized file.
        verification_data: images to verify on (default for int8: held out from the
            calibration images; else the shipped nuclei sample).
        verification_size: at most this many verification images.
        progress: show progress bars.
        repair: int8 and int16x8: try every calibration, and keep the layers whose
            measured effect is largest at a higher precision toward the target
            (`keras_unet.export.repair`); None means on. `True` with another mode is an error.
        layer_report: int8: build the per-layer report even when the first file passes.
        verbose: show the libraries' own log lines.
        input_channels: TFLite: channels the file takes (3 makes a 1-channel model take
            RGB); None for the model's own.
        output: `"probabilities"` or `"mask"` (a uint8 class-id mask inside the file).
        threads: threads for the speed checks during export.
        io_dtype: TFLite: `"uint8"`, `"int8"` or `"float32"` input and output; None for
            uint8 with int8, float32 otherwise.
        check_speed: TFLite: time dynamic-range and int8 files against float32.
        opset: ONNX opset.
        activation_type: ONNX int8 activations: `"auto"`, `"uint8"` or `"int8"`.
        integer_only: for NPUs and integer-only accelerators: no float op in the file
            (integer input and output in TFLite), and repair keeps ops at 16-bit
            activations, never in float. Needs `"int8"` or `"int16x8"`.

    Example:
    ```python
    from keras_unet.export import ExportOptions

    options = ExportOptions(quantize="fp16", verify=False)
    options.quantize, options.opset   # ('fp16', 17)
    ```
    """

    quantize: str = "none"
    calibration_data: Any = None
    calibration_size: int = CALIBRATION_SIZE
    input_size: Optional[tuple] = None
    dynamic_size: bool = False
    dynamic_batch: bool = False
    verify: bool = True
    agreement_floor: float = DEFAULT_AGREEMENT_FLOOR
    verification_data: Any = None
    verification_size: int = VERIFICATION_SIZE
    progress: bool = True
    repair: Optional[bool] = None
    layer_report: bool = False
    verbose: bool = False
    input_channels: Optional[int] = None
    output: str = "probabilities"
    threads: int = DEFAULT_THREADS
    io_dtype: Optional[str] = None
    check_speed: bool = True
    opset: int = DEFAULT_OPSET
    activation_type: str = "auto"
    integer_only: bool = False

    @property
    def batch(self) -> Optional[int]:
        """The file's batch size: None for a free batch."""
        return None if self.dynamic_batch else 1

    @property
    def repairs(self) -> bool:
        """Whether the int8 step repairs (`repair`, on by default for int8 and int16x8)."""
        return self.quantize in STATIC_MODES if self.repair is None else bool(self.repair)

    def check(self) -> None:
        """Raise a `ValueError` naming the first option out of its range."""
        if self.output not in OUTPUTS:
            raise ValueError(f"`output` must be one of {OUTPUTS}. Received: output={self.output!r}")
        check_floor(self.agreement_floor)
        if self.repair and self.quantize not in STATIC_MODES:
            raise ValueError("Repair keeps layers of an int8 file at a higher precision; it does "
                             f"not apply to quantize={self.quantize!r}. Received: repair={self.repair!r}")
        if self.integer_only and self.quantize not in STATIC_MODES:
            raise ValueError("An integer-only file needs quantize='int8' or 'int16x8' (every "
                             f"activation quantized). Received: quantize={self.quantize!r}")


def check_floor(agreement_floor: Any) -> None:
    """Raise a `ValueError` unless `agreement_floor` is a number in [0, 1]."""
    if (isinstance(agreement_floor, bool) or not isinstance(agreement_floor, (int, float))
            or not 0.0 <= agreement_floor <= 1.0):
        raise ValueError("`agreement_floor` must be a number in [0, 1] (an IoU). "
                         f"Received: agreement_floor={agreement_floor!r}")
