"""A multi-class model's 8-bit logit range, no wider than its softmax and arg-max can use.

A multi-class U-Net ends in a convolution (the logits) and a softmax over the classes, and
its mask is the arg-max. Calibration gives the logits the range the float model reaches
over every class of every pixel: [-44, 34] on a ResNet50 U-Net trained on CamVid, a step of
0.31 in int8. A pixel whose two likeliest classes lie closer than that rounds onto a tie or
the wrong class, and on CamVid's weak, undertrained models 1-2% of the pixels are such
near-ties: 8-bit logits alone, every other tensor in float, cost 0.025 of agreement.

Most of that range carries nothing the softmax can show:

- **Low end.** A logit more than `LOGIT_SPAN` (8) below its pixel's largest has a softmax
  weight under e^-8 = 3.4e-4 of the largest, below half a step of the uint8 probability
  (1/512). So the range need not reach below the smallest per-pixel top logit minus 8: a
  logit clipped there keeps a weight the output cannot show.
- **High end.** A top logit more than 8 above every other logit of its pixel gives that
  class a probability of 1 to within the same half step, wherever it lies above. So the
  range need not reach above the largest per-pixel *runner-up* logit plus 8: a top logit
  clipped there still wins its pixel, with the same probability code.
- The low end never rises above that largest runner-up: on a model whose every pixel is
  decided by more than 16, the two rules would cross, and a top clipped below a runner-up
  would lose its pixel.

Both statistics are taken over the calibration pixels as the variant takes its ranges (the
exact extreme for `minmax`, the 0.01% tail for `percentile`), and the result never widens
the tensor's own range and always holds 0 (both runtimes need 0 exactly representable).
On that ResNet50 model the range becomes [-7.6, 30.6], and 8-bit logits cost 0.013
instead of 0.025 (per-pixel tops and runners-up read on 184 training images, agreement on
the 101 val images).

Only 8-bit logits are clipped: at 16 bits the step is fine enough already, and a 16-bit
probability would show the weights the clip removes.

Why: see docs/notes/2026-12-07-softmax-logit-range.md.

Example:
```python
from keras_unet.export.quantization.softmax_range import SoftmaxLogits

logits = SoftmaxLogits(axis=-1, expected_images=len(images))
for value in per_image_logits:             # (1, H, W, classes) float arrays
    logits.add(value)
low, high = logits.range((-44.0, 34.3), percentile=99.99)   # (-7.6, 30.6)
```
"""

from __future__ import annotations

import numpy as np

from keras_unet.export.quantization.ranges import DEFAULT_PERCENTILE, RangeSampler

# Softmax weights more than this far below the largest logit (e^-8 = 3.4e-4) fall under half
# a step of a uint8 probability; the same span as a binary model's sigmoid (logit_range).
LOGIT_SPAN = 8.0


class SoftmaxLogits:
    """The per-pixel top and runner-up logit of a softmax's input over calibration images.

    Args:
        axis: the softmax's axis (the classes): -1 for TFLite's NHWC; an ONNX Softmax's
            own `axis` attribute.
        expected_images: how many images will be added (sizes the tails kept, as
            `RangeSampler`'s).

    Example:
    ```python
    logits = SoftmaxLogits(axis=-1, expected_images=1)
    logits.add(np.random.randn(1, 8, 8, 11).astype("float32") * 10)
    logits.range((-40.0, 40.0), percentile=100.0)   # (-8.0, 31.0), say
    ```
    """

    def __init__(self, axis: int = -1, expected_images: int = 100) -> None:
        self.axis = int(axis)
        self._sampler = RangeSampler(expected_images=expected_images)

    @property
    def images(self) -> int:
        return self._sampler.images

    def add(self, value) -> None:
        """Record one image's logits (a float array with the classes on `axis`)."""
        value = np.asarray(value, dtype=np.float32)
        if value.ndim == 0 or value.shape[self.axis] < 2:
            return  # one class: a softmax of it is 1 everywhere, no decision to keep
        ranked = np.sort(value, axis=self.axis)
        self._sampler.add({"top": np.take(ranked, -1, axis=self.axis),
                           "runner_up": np.take(ranked, -2, axis=self.axis)})

    def range(self, tensor_range: tuple, percentile: float = DEFAULT_PERCENTILE) -> tuple:
        """`(low, high)` for the logits: `tensor_range` (their calibrated range) narrowed to
        [top's low tail - `LOGIT_SPAN` (at most the runner-up's high tail), runner-up's high
        tail + `LOGIT_SPAN`], holding 0.

        `percentile` 100 takes the exact extremes (the `minmax` variant), 99.99 the tails.
        With nothing recorded, `tensor_range` comes back as it was.
        """
        low, high = float(tensor_range[0]), float(tensor_range[1])
        if not self._sampler.images:
            return low, high
        tails = self._sampler.tails(percentile)
        top_low, runner_up_high = tails["top"][0], tails["runner_up"][1]
        low = min(0.0, max(low, min(top_low - LOGIT_SPAN, runner_up_high)))
        high = max(0.0, min(high, runner_up_high + LOGIT_SPAN))
        return low, high


def softmax_ranges(logits: dict, ranges: dict, percentile: float) -> dict:
    """`{tensor: (low, high)}` for each softmax input in `logits` (`{tensor: SoftmaxLogits}`)
    that `ranges` (`{tensor: (low, high)}`, its calibrated ranges) holds, narrowed."""
    return {name: sampled.range(ranges[name], percentile)
            for name, sampled in logits.items() if name in ranges}
