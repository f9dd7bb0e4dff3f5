"""The `--report` JSON of an int8 or int16x8 export (`keras-unet export --report`):
`quantization_report`, whose docstring has the example."""

from __future__ import annotations

from typing import Any, Optional


def quantization_report(*, file: Any, written: bool, agreement_floor: float, verification: Any,
                        calibration_method: Optional[str], kept_float: list, attempts: list,
                        layers: Optional[list], iou: Optional[dict] = None,
                        kept_float_latency_ms: Optional[dict] = None,
                        kept_int16: Optional[list] = None,
                        candidates: Optional[list] = None) -> dict:
    """The `--report` JSON of an int8 export, written or refused: model-level figures, what
    the repair tried, the candidates it measured end to end (gain and cost, which it kept),
    what its kept layers cost in speed (`Int8Outcome.latency_ms`), and one row per quantized
    tensor (worst first: the isolated diagnosis).

    Example:
    ```python
    report = quantization_report(file="m.tflite", written=True, agreement_floor=0.98,
                                 verification=result.verification, calibration_method="minmax",
                                 kept_float=[], attempts=[], layers=result.layer_report)
    ```
    """
    verified = verification.to_dict() if verification is not None else {}
    return {
        "file": str(file),
        "written": bool(written),
        "agreement_floor": agreement_floor,
        "agreement_iou": verified.get("agreement_iou"),
        "pixel_agreement": verified.get("pixel_agreement"),
        "agreement_mean_iou": verified.get("agreement_mean_iou"),
        **(iou or {}),
        "verification": verified,
        "calibration_method": calibration_method,
        "kept_float": list(kept_float),
        "kept_int16": list(kept_int16 or []),
        "kept_float_latency_ms": dict(kept_float_latency_ms or {}),
        "candidates": [c if isinstance(c, dict) else c.to_dict() for c in candidates or []],
        "attempts": [a if isinstance(a, dict) else a.to_dict() for a in attempts],
        "layers": list(layers or []),
    }
