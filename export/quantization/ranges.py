"""Activation ranges clipped at a percentile of the calibration values, for both formats.

Min/max calibration gives each int8 activation tensor the full range its calibration
values reached. A handful of outliers (one channel of a decoder convolution without batch
norm, a hard-swish after a squeeze-excite in MobileNetV3) can stretch that range two or
three times beyond where 99.99% of the values lie, and every other value then gets a
step two or three times coarser. Clipping each range at the 99.99th percentile on each
side trades those few saturated values for a finer step everywhere else.

onnxruntime's own Percentile calibrator builds its histograms on |x| and so gives
one-sided tensors (ReLU outputs) a range that does not start at 0 and signed tensors a
lower bound above 0: meant for symmetric int8 ranges, not for the asymmetric uint8
activations we export. These ranges are two-sided, always contain 0 (so 0 stays exactly representable, as both runtimes
need) and are never wider than min/max.

`RangeSampler` keeps, per tensor, the exact min and max and the largest and smallest values
(a tail of ~0.01% of them, not all: a ResNet50 U-Net's activations are ~60 MB an image),
enough to give the percentiles exactly. A random sample would not do: the int8 model is
sensitive to the exact clip of a few tensors, and its agreement would move with the sample
drawn.

Why: see docs/notes/2026-11-27-percentile-ranges.md.

Example:
```python
sampler = RangeSampler(expected_images=len(images))
for outputs in per_image_tensors:          # {tensor name: array} for one image
    sampler.add(outputs)
ranges = sampler.ranges(percentile=99.99)  # {tensor name: (low, high)}
```
"""

import math

import numpy as np

DEFAULT_PERCENTILE = 99.99
LOWEST_PERCENTILE = 99.9


class RangeSampler:
    """Running min, max and the extreme tails of each tensor's values over images.

    Args:
        expected_images: how many images will be added; the tails kept are sized for
            them (more images still work, the percentile then reads a shorter tail,
            exactly while the tail lasts).
        lowest_percentile: the lowest percentile `ranges` will be asked for (a lower one
            needs longer tails).
        channel_axis: also keep each 4-D tensor's mean per channel along this axis (-1 for
            TFLite's NHWC, 1 for ONNX's NCHW), for `channel_means`; None keeps none.

    Example:
    ```python
    sampler = RangeSampler(expected_images=1)
    sampler.add({"conv1": np.random.randn(1, 8, 8, 4).astype("float32")})
    sampler.ranges(99.99)["conv1"]  # (-3.1, 3.4)
    ```
    """

    def __init__(self, expected_images=100, lowest_percentile=LOWEST_PERCENTILE,
                 channel_axis=None):
        if not 50.0 < lowest_percentile <= 100.0:
            raise ValueError("`lowest_percentile` must be in (50, 100]. "
                             f"Received: lowest_percentile={lowest_percentile!r}")
        self.expected_images = max(1, int(expected_images))
        self.lowest_percentile = float(lowest_percentile)
        self._low, self._high, self._count = {}, {}, {}
        self._top, self._bottom = {}, {}
        self.channel_axis = channel_axis
        self._channel_sums, self._channel_counts = {}, {}
        self.images = 0
        # {softmax input tensor: softmax_range.SoftmaxLogits}, set by the format's sampler
        # (tflite_ranges.sample_tensors, onnx_ranges.sample_activations); `add` feeds them.
        self.softmax_logits = {}

    def _tail_size(self, size):
        share = (100.0 - self.lowest_percentile) / 100.0
        return math.ceil(share * size * self.expected_images) + 2

    def add(self, tensors):
        """Record one image's `{tensor name: float array}`; empty arrays are skipped. The
        softmax inputs among them also go to their `softmax_logits` entry."""
        for name, logits in self.softmax_logits.items():
            if name in tensors:
                logits.add(tensors[name])
        for name, value in tensors.items():
            value = np.asarray(value)
            if value.size == 0 or not np.issubdtype(value.dtype, np.floating):
                continue
            if self.channel_axis is not None and value.ndim == 4:
                self._add_channel_sums(name, value)
            value = value.ravel().astype(np.float32, copy=False)
            self._low[name] = min(self._low.get(name, np.inf), float(value.min()))
            self._high[name] = max(self._high.get(name, -np.inf), float(value.max()))
            self._count[name] = self._count.get(name, 0) + value.size
            keep = self._tail_size(value.size)
            self._top[name] = _merge_largest(self._top.get(name), value, keep)
            self._bottom[name] = _merge_smallest(self._bottom.get(name), value, keep)
        self.images += 1

    def _add_channel_sums(self, name, value):
        axes = tuple(axis for axis in range(4) if axis != self.channel_axis % 4)
        sums = value.sum(axis=axes, dtype=np.float64)
        self._channel_sums[name] = self._channel_sums.get(name, 0.0) + sums
        self._channel_counts[name] = self._channel_counts.get(name, 0) + value.size // sums.size

    def channel_means(self):
        """`{tensor name: mean of each channel}` of the 4-D tensors (see `channel_axis`)."""
        return {name: sums / self._channel_counts[name]
                for name, sums in self._channel_sums.items()}

    def min_max(self):
        """`{tensor name: (min, max)}` over every value seen."""
        return {name: (self._low[name], self._high[name]) for name in self._low}

    def values_per_image(self):
        """`{tensor name: values of one image}` (the mean over the images added)."""
        return {name: count / max(self.images, 1) for name, count in self._count.items()}

    def ranges(self, percentile=DEFAULT_PERCENTILE):
        """`{tensor name: (low, high)}` clipped at `percentile` on each side.

        The percentiles are `np.percentile`'s (linear interpolation) of all values seen.
        Each range contains 0 and lies within the tensor's min and max.
        """
        if not self.images:
            raise ValueError("No images were recorded: call `add` with each calibration "
                             "image's tensors first. Received: 0 images")
        return {name: (min(0.0, low), max(0.0, high))
                for name, (low, high) in self.tails(percentile).items()}

    def tails(self, percentile=DEFAULT_PERCENTILE):
        """`{tensor name: (low, high)}`: the values at `percentile` from each end (100: the
        min and max), within the min and max, not made to hold 0 as `ranges` are."""
        if not self.lowest_percentile <= percentile <= 100.0:
            raise ValueError(f"`percentile` must be in [{self.lowest_percentile:g}, 100]. "
                             f"Received: percentile={percentile!r}")
        tails = {}
        for name, count in self._count.items():
            high = _from_top(np.sort(self._top[name])[::-1], count, percentile)
            low = -_from_top(np.sort(-self._bottom[name])[::-1], count, percentile)
            tails[name] = (max(low, self._low[name]), min(high, self._high[name]))
        return tails


def _largest(values, k):
    """The `k` largest of `values` (all of them when there are fewer), unordered."""
    if values.size <= k:
        return values
    return np.partition(values, values.size - k)[values.size - k:]


def _smallest(values, k):
    """The `k` smallest of `values` (all of them when there are fewer), unordered."""
    if values.size <= k:
        return values
    return np.partition(values, k - 1)[:k]


# Why the filters below: the tail is a tenth of an image's values at the default sizes, so
# partitioning each new image whole cost a third of a small model's int8 export. Once `kept`
# holds `k` values, a new value not beyond the least extreme of them cannot enter the tail
# (an equal one would only swap in an equal float), so one comparison pass leaves the few
# that can, and the tail kept is exactly the same multiset of values.

def _merge_largest(kept, values, k):
    """The `k` largest of `kept` (a previous result, or None) and `values` together."""
    if kept is None:
        return _largest(values, k)
    if kept.size >= k:
        values = values[values > kept.min()]
    return _largest(np.concatenate([kept, _largest(values, k)]), k)


def _merge_smallest(kept, values, k):
    """The `k` smallest of `kept` (a previous result, or None) and `values` together."""
    if kept is None:
        return _smallest(values, k)
    if kept.size >= k:
        values = values[values < kept.max()]
    return _smallest(np.concatenate([kept, _smallest(values, k)]), k)


def _from_top(descending, count, percentile):
    """`np.percentile(all_values, percentile)` from the largest values, `descending`.

    Linear interpolation between ranks, counted from the top: the value at fractional
    rank `(count - 1) * (1 - percentile / 100)`. A tail too short for it (more images
    than expected) gives its last value, the closest it holds.
    """
    position = (count - 1) * (1.0 - percentile / 100.0)
    below = int(math.floor(position))
    if below + 1 >= descending.size:
        return float(descending[-1])
    fraction = position - below
    return float(descending[below] * (1.0 - fraction) + descending[below + 1] * fraction)
