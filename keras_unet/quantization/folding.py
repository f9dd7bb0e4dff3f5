"""Batch norm folded into the convolution before it, as the int8 kernels compute it.

At inference a batch norm is `gamma * (y - mean) / sqrt(var + eps) + beta`, a per-channel
affine map of the convolution's output `y`; the converters fold it into the convolution
(kernel scaled per output channel, bias shifted) before they quantize the kernel. Folding
it here, with the moving statistics, makes the quantize-aware convolution round the same
kernel the int8 file will hold. The statistics are then fixed for fine-tuning, as the QAT
recipe of Jacob et al. (2018) and Krishnamoorthi (2018) does after the first epochs: a
trained model's statistics are already converged, and a fine-tuning batch of a few images
would be a worse estimate of them.

Example:
```python
from keras_unet.quantization.folding import fold_batch_norm

kernel, bias = fold_batch_norm(conv, batch_norm)   # numpy arrays, float32
```
"""

import numpy as np
from keras import ops

# Where the output channels are in each convolution's kernel.
OUTPUT_AXIS = {"Conv2D": 3, "Conv2DTranspose": 2}


def _array(variable):
    return np.asarray(ops.convert_to_numpy(variable), "float64")


def _values(variable, size, default):
    if variable is None:
        return np.full(size, default, "float64")
    return _array(variable)


def fold_batch_norm(convolution, batch_norm):
    """The kernel and bias of `convolution` followed by `batch_norm` (inference mode).

    Args:
        convolution: a built Conv2D, DepthwiseConv2D or Conv2DTranspose (no activation).
        batch_norm: the built BatchNormalization over its output channels (last axis).

    Returns:
        `(kernel, bias)` float32 arrays for a convolution with `use_bias=True`.

    Example:
    ```python
    kernel, bias = fold_batch_norm(model.get_layer("conv"), model.get_layer("conv_bn"))
    ```
    """
    kernel = _array(convolution.kernel)
    channels = int(batch_norm.moving_mean.shape[0])
    gamma = _values(batch_norm.gamma, channels, 1.0)
    beta = _values(batch_norm.beta, channels, 0.0)
    mean = _array(batch_norm.moving_mean)
    variance = _array(batch_norm.moving_variance)
    bias = _values(convolution.bias if convolution.use_bias else None, channels, 0.0)
    factor = gamma / np.sqrt(variance + batch_norm.epsilon)
    name = type(convolution).__name__
    if name == "DepthwiseConv2D":  # (h, w, in, multiplier): channel c = in * multiplier + m
        kernel = kernel * factor.reshape(kernel.shape[2], kernel.shape[3])
    else:
        shape = [1] * kernel.ndim
        shape[OUTPUT_AXIS[name]] = channels
        kernel = kernel * factor.reshape(shape)
    bias = (bias - mean) * factor + beta
    return kernel.astype("float32"), bias.astype("float32")
