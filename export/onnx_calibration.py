"""Activation ranges of an ONNX int8 export, taken one calibration image at a time.

onnxruntime's calibrators keep every calibration image's tensors in memory at once (100
images of the seed-size U-Net: the export was killed at 15.5 GB), and the MinMax
calibrator's `CalibMaxIntermediateOutputs` drops each chunk without computing its ranges
(onnxruntime 1.32). So the `"percentile"` and `"minmax"` calibrations hand `quantize_static`
every tensor's range as `TensorQuantOverrides` from our own sampler
(`keras_unet.export.quantization.onnx_ranges`, one image at a time), and onnxruntime reads
only `READER_IMAGES` images. The files are the same bytes as from onnxruntime's own pass.
Entropy cannot be bounded that way: `entropy_fits` says whether it fits in memory.

Example:
```python
from keras_unet.export.onnx_calibration import range_overrides

overrides = range_overrides(job, prepared_path, 17, "percentile", "image")
```
"""

from __future__ import annotations

import os
from typing import Any

# Images onnxruntime's calibration reads when the overrides give every tensor's range (it
# still calibrates the graph input, which the first image pins to [0, 255]).
READER_IMAGES = 4


def activation_sampler(job: Any, prepared: Any, opset: int, input_name: str = "image") -> Any:
    """The `RangeSampler` of the job's prepared graph over its calibration images, once."""
    from keras_unet.export.calibration import pin_input_range
    from keras_unet.export.quantization.onnx_ranges import sample_activations

    return job.cached(("onnx_activation_sampler", opset), lambda: sample_activations(
        prepared, pin_input_range(job.calibration), input_name=input_name))


def range_overrides(job: Any, prepared: Any, opset: int, method: str,
                    input_name: str = "image", narrow_softmax: bool = True) -> dict:
    """`TensorQuantOverrides` of every tensor for `"percentile"` (intermediate tensors
    clipped, the graph's outputs at min/max) or `"minmax"`, from one pass over the images.

    With `narrow_softmax` (8-bit activations), a softmax's input (a multi-class model's
    logits) gets the range the softmax can show (`quantization.softmax_range`)."""
    from keras_unet.export.quantization.onnx_ranges import (min_max_overrides,
                                                            percentile_overrides,
                                                            softmax_overrides)
    from keras_unet.export.quantization.ranges import DEFAULT_PERCENTILE

    def build():
        sampler = activation_sampler(job, prepared, opset, input_name)
        overrides = min_max_overrides(sampler)
        if method == "percentile":
            overrides.update(percentile_overrides(prepared, None, input_name=input_name,
                                                  sampler=sampler))
        if narrow_softmax:
            overrides.update(softmax_overrides(
                sampler, DEFAULT_PERCENTILE if method == "percentile" else 100.0))
        return overrides

    return job.cached(("onnx_range_overrides", opset, method, narrow_softmax), build)


def entropy_fits(job: Any, prepared: Any, opset: int, input_name: str = "image") -> bool:
    """Whether onnxruntime's Entropy calibration, which holds every calibration image's
    tensors in memory at once, fits in a quarter of this machine's memory."""
    from keras_unet.export.quantization.onnx_ranges import bytes_per_image

    need = bytes_per_image(activation_sampler(job, prepared, opset, input_name)) * len(job.calibration)
    return need <= 0.25 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
