"""The targets the benchmarks hold results to, in one light module (no TensorFlow, no
matrix code), so `suite` and the matrices read the same figures.

- `AGREEMENT_TARGET`: the agreement a quantized file must keep to be marked fastest in a
  `keras-unet bench` run; the export's repair aims for the same figure
  (`keras_unet.export.int8.AGREEMENT_TARGET`, kept equal by a test).
- `TARGETS` / `MULTI_CLASS_TARGETS`: an int8 row of the fidelity matrix
  (`keras_unet.benchmarks.int8_matrix`) on binary and multi-class data: agreement with
  Keras (foreground IoU; frequency-weighted IoU for multi-class), IoU drop against the ground
  truth, p50 against Keras; multi-class also pixel agreement.
- `MODE_TARGETS` / `MULTI_CLASS_MODE_TARGETS`: the other modes' agreement (whole-model
  int16x8, integer-only int8), beside the int8 IoU drop.

Example:
```python
from keras_unet.benchmarks.targets import TARGETS

TARGETS["agreement_iou"]   # 0.985
```
"""

AGREEMENT_TARGET = 0.985
TARGETS = {"agreement_iou": 0.985, "iou_drop": 0.005, "p50_ratio": 0.30}
MULTI_CLASS_TARGETS = {"agreement_iou": 0.985, "pixel_agreement": 0.99, "iou_drop": 0.005,
                       "p50_ratio": 0.30}
MODE_TARGETS = {"int16x8": {"agreement_iou": 0.995},
                "integer_only": {"agreement_iou": 0.98}}
MULTI_CLASS_MODE_TARGETS = {"int16x8": {"agreement_iou": 0.995},
                            "integer_only": {"agreement_iou": 0.97}}
