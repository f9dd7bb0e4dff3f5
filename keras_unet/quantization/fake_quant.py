"""The two fake-quantization functions every quantize-aware layer uses.

- `fake_quant_activation(x, low, high)`: per-tensor, asymmetric 8-bit over `[low, high]`
  (uint8 codes 0..255; the range is nudged so that 0.0 is exactly representable).
- `fake_quant_weights(kernel, axis)`: per-channel, symmetric, narrow-range 8-bit (int8
  codes -127..127, zero point 0, scale `max|w| / 127` per channel along `axis`), the
  scheme of TFLite's int8 kernels and of onnxruntime's `QInt8` per-channel weights.

On the TensorFlow backend they are the ops `tf.quantization.fake_quant_with_min_max_vars`
and `..._per_channel` themselves: the TFLite converter turns exactly those ops into the
quantization parameters of real int8 kernels, so they must appear in the traced graph
unchanged. (`keras.quantizers.fake_quant_with_min_max_vars` also lowers to them on
TensorFlow, but wraps a per-channel call in two `swapaxes`; calling the ops directly keeps
the graph free of anything the converter would have to see through.) On the other
backends the same arithmetic runs through `keras.quantizers.fake_quant_with_min_max_vars`.

Example:
```python
import numpy as np
from keras_unet.quantization.fake_quant import fake_quant_activation, fake_quant_weights

x = fake_quant_activation(np.linspace(-1, 3, 9, dtype="float32"), -1.0, 3.0)
w = fake_quant_weights(np.random.normal(size=(3, 3, 8, 16)).astype("float32"), axis=-1)
```
"""

import keras
from keras import ops

# A channel whose weights are all zero would give a zero-width range (scale 0, a division
# by zero inside the op); this floor keeps it finite and still quantizes it to 0.
MIN_RANGE = 1e-8


def _on_tensorflow():
    return keras.backend.backend() == "tensorflow"


def fake_quant_activation(x, low, high):
    """`x` rounded to the 256-level grid over `[low, high]` (per tensor), as float.

    Args:
        x: float tensor.
        low, high: scalars (tensors or floats), `low <= 0 <= high` after nudging.

    Example:
    ```python
    fake_quant_activation(x, 0.0, 6.0)
    ```
    """
    x = ops.cast(x, "float32")
    low = ops.cast(low, "float32")
    high = ops.cast(high, "float32")
    if _on_tensorflow():
        import tensorflow as tf

        return tf.quantization.fake_quant_with_min_max_vars(x, low, high, num_bits=8)
    return keras.quantizers.fake_quant_with_min_max_vars(x, low, high, num_bits=8)


def weight_range(kernel, axis=-1):
    """`max|w|` per channel along `axis` (floored at `MIN_RANGE`), without a gradient.

    Example:
    ```python
    weight_range(kernel)   # (out_channels,)
    ```
    """
    axis = axis % len(kernel.shape)
    reduce = tuple(i for i in range(len(kernel.shape)) if i != axis)
    return ops.stop_gradient(ops.maximum(ops.max(ops.abs(kernel), axis=reduce), MIN_RANGE))


def fake_quant_weights(kernel, axis=-1):
    """`kernel` rounded per channel to symmetric int8 (-127..127), as float.

    Args:
        kernel: float weight tensor.
        axis: the output-channel axis (one scale per index along it).

    Example:
    ```python
    fake_quant_weights(conv.kernel, axis=-1)            # Conv2D (h, w, in, out)
    fake_quant_weights(transpose.kernel, axis=2)        # Conv2DTranspose (h, w, out, in)
    ```
    """
    kernel = ops.cast(kernel, "float32")
    rank = len(kernel.shape)
    axis = axis % rank
    last = rank - 1
    if axis != last:  # the per-channel op quantizes along the last axis only
        kernel = ops.swapaxes(kernel, axis, last)
    bound = weight_range(kernel, -1)
    if _on_tensorflow():
        import tensorflow as tf

        quantized = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            kernel, -bound, bound, num_bits=8, narrow_range=True)
    else:
        quantized = keras.quantizers.fake_quant_with_min_max_vars(
            kernel, -bound, bound, num_bits=8, narrow_range=True, axis=-1)
    if axis != last:
        quantized = ops.swapaxes(quantized, axis, last)
    return quantized
