"""Quantize-aware layers: an activation quantizer and convolutions with int8 weights.

- `ActivationQuantizer`: fake-quantizes a tensor per tensor over a range that it tracks
  while training (batch min/max, exponential moving average) and keeps frozen at
  inference, or over a fixed range (the image input: [0, 255]; a sigmoid/softmax:
  the [0, 255/256] grid that TFLite's int8 LOGISTIC/SOFTMAX kernels are fixed to).
- `QuantizeAwareConv2D`, `QuantizeAwareDepthwiseConv2D`, `QuantizeAwareConv2DTranspose`:
  the Keras layers with their kernel fake-quantized per output channel (symmetric int8)
  on every call. Batch norm is already folded into them by `quantize_aware`, so the
  kernel they round is the kernel the int8 file will hold.

Each keeps the configuration of the Keras layer it extends, so `get_config` and `.keras`
files work as for any Keras layer.

Example:
```python
import keras
from keras_unet.quantization.layers import ActivationQuantizer, QuantizeAwareConv2D

inputs = keras.Input((32, 32, 3))
x = ActivationQuantizer(fixed_range=(0.0, 255.0), name="image_quant")(inputs)
x = QuantizeAwareConv2D(8, 3, padding="same", activation="relu")(x)
x = ActivationQuantizer(name="conv_quant")(x)
model = keras.Model(inputs, x)
```
"""

import keras
from keras import ops

from keras_unet.quantization.fake_quant import fake_quant_activation, fake_quant_weights

# A fresh quantizer starts at tensorflow-model-optimization's initial range; the first
# training batch replaces it (see ActivationQuantizer).
INITIAL_RANGE = (-6.0, 6.0)


def _check_decay(ema_decay):
    if isinstance(ema_decay, bool) or not isinstance(ema_decay, (int, float)) or not 0 <= ema_decay < 1:
        raise ValueError(f"`ema_decay` must be a float in [0, 1). Received: ema_decay={ema_decay!r}")
    return float(ema_decay)


def _check_range(fixed_range):
    if fixed_range is None:
        return None
    try:
        low, high = (float(v) for v in fixed_range)
    except (TypeError, ValueError):
        low, high = None, None
    if low is None or not low <= 0.0 <= high or low == high:
        raise ValueError(
            "`fixed_range` must be None or (low, high) with low <= 0 <= high and low < high. "
            f"Received: fixed_range={fixed_range!r}")
    return (low, high)


@keras.saving.register_keras_serializable(package="keras_unet")
class ActivationQuantizer(keras.layers.Layer):
    """Per-tensor asymmetric 8-bit fake quantization with a moving-average range.

    While training, each batch's min and max (widened to include 0) update the range:
    the first batch sets it, later ones move it by `1 - ema_decay`. At inference the range
    is frozen, and it is what the exporters turn into each tensor's scale and zero point.

    Args:
        ema_decay: weight of the old range in the moving average. The default 0.99 follows
            a fine-tuning run of a few hundred steps; tensorflow-model-optimization's 0.999
            suits training from scratch.
        fixed_range: `(low, high)` to use instead of a learned range (the model input,
            sigmoid and softmax outputs).
        **kwargs: standard layer arguments.

    Attributes:
        range_min, range_max: the tracked range (non-trainable variables).
        range_updates: how many training batches updated it; 0 means never calibrated.

    Example:
    ```python
    import numpy as np
    from keras_unet.quantization.layers import ActivationQuantizer

    quantizer = ActivationQuantizer()
    y = quantizer(np.linspace(-1, 3, 9, dtype="float32")[None], training=True)
    float(quantizer.range_min), float(quantizer.range_max)   # (-1.0, 3.0)
    ```
    """

    def __init__(self, ema_decay=0.99, fixed_range=None, **kwargs):
        super().__init__(**kwargs)
        self.ema_decay = _check_decay(ema_decay)
        self.fixed_range = _check_range(fixed_range)

    def build(self, input_shape):
        if self.fixed_range is not None:
            return
        constant = keras.initializers.Constant
        self.range_min = self.add_weight(name="range_min", shape=(), trainable=False,
                                         initializer=constant(INITIAL_RANGE[0]))
        self.range_max = self.add_weight(name="range_max", shape=(), trainable=False,
                                         initializer=constant(INITIAL_RANGE[1]))
        self.range_updates = self.add_weight(name="range_updates", shape=(), trainable=False,
                                             initializer="zeros")

    def call(self, inputs, training=None):
        if self.fixed_range is not None:
            return fake_quant_activation(inputs, *self.fixed_range)
        if training:
            values = ops.stop_gradient(ops.cast(inputs, "float32"))
            low = ops.minimum(ops.min(values), 0.0)
            high = ops.maximum(ops.max(values), 0.0)
            # The first batch sets the range; a moving average from tfmot's [-6, 6] start
            # would take hundreds of steps to forget it.
            decay = ops.where(self.range_updates > 0, self.ema_decay, 0.0)
            self.range_min.assign(decay * self.range_min + (1.0 - decay) * low)
            self.range_max.assign(decay * self.range_max + (1.0 - decay) * high)
            self.range_updates.assign(self.range_updates + 1.0)
        return fake_quant_activation(inputs, self.range_min, self.range_max)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def quantization_range(self):
        """`(low, high)` as Python floats: the fixed range or the tracked one."""
        if self.fixed_range is not None:
            return self.fixed_range
        return float(ops.convert_to_numpy(self.range_min)), float(ops.convert_to_numpy(self.range_max))

    def is_calibrated(self):
        """Whether the range is fixed or was set by at least one training batch."""
        return self.fixed_range is not None or float(ops.convert_to_numpy(self.range_updates)) > 0

    def get_config(self):
        config = super().get_config()
        config.update({"ema_decay": self.ema_decay,
                       "fixed_range": None if self.fixed_range is None else list(self.fixed_range)})
        return config


def _bias_and_activation(layer, outputs):
    """The tail every Keras convolution's `call` ends with (bias, then activation)."""
    if layer.use_bias:
        outputs = ops.add(outputs, ops.reshape(layer.bias, (1,) * (len(outputs.shape) - 1) + (-1,)))
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


def _check_channels_last(layer):
    if layer.data_format != "channels_last":
        raise ValueError(
            f"{type(layer).__name__} supports channels_last only. "
            f"Received: data_format={layer.data_format!r}")


@keras.saving.register_keras_serializable(package="keras_unet")
class QuantizeAwareConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose kernel is fake-quantized per output channel (int8).

    Same arguments as `keras.layers.Conv2D` (channels_last).

    Example:
    ```python
    import numpy as np
    from keras_unet.quantization.layers import QuantizeAwareConv2D

    y = QuantizeAwareConv2D(4, 3, padding="same")(np.ones((1, 8, 8, 3), "float32"))
    ```
    """

    def build(self, input_shape):
        _check_channels_last(self)
        super().build(input_shape)

    def quantized_kernel(self):
        """The kernel rounded to its int8 grid (float), what `call` convolves with."""
        return fake_quant_weights(self.kernel, axis=-1)

    def call(self, inputs):
        return _bias_and_activation(self, self.convolution_op(inputs, self.quantized_kernel()))


@keras.saving.register_keras_serializable(package="keras_unet")
class QuantizeAwareDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with its kernel fake-quantized per output channel.

    The kernel `(h, w, in, multiplier)` has `in * multiplier` output channels, each with its
    own scale, as in TFLite's `(1, h, w, in * multiplier)` int8 filter.

    Example:
    ```python
    import numpy as np
    from keras_unet.quantization.layers import QuantizeAwareDepthwiseConv2D

    y = QuantizeAwareDepthwiseConv2D(3, padding="same")(np.ones((1, 8, 8, 4), "float32"))
    ```
    """

    def build(self, input_shape):
        _check_channels_last(self)
        super().build(input_shape)

    def quantized_kernel(self):
        """The kernel rounded to its int8 grid (float), what `call` convolves with."""
        height, width, channels, multiplier = self.kernel.shape
        flat = ops.reshape(self.kernel, (height, width, 1, channels * multiplier))
        return ops.reshape(fake_quant_weights(flat, axis=-1), (height, width, channels, multiplier))

    def call(self, inputs):
        outputs = ops.depthwise_conv(inputs, self.quantized_kernel(), strides=self.strides,
                                     padding=self.padding, dilation_rate=self.dilation_rate,
                                     data_format=self.data_format)
        return _bias_and_activation(self, outputs)


@keras.saving.register_keras_serializable(package="keras_unet")
class QuantizeAwareConv2DTranspose(keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose` with its kernel fake-quantized per output channel.

    Its kernel is `(h, w, out, in)`: the scales run along axis 2.

    Example:
    ```python
    import numpy as np
    from keras_unet.quantization.layers import QuantizeAwareConv2DTranspose

    y = QuantizeAwareConv2DTranspose(4, 2, strides=2)(np.ones((1, 8, 8, 3), "float32"))
    ```
    """

    def build(self, input_shape):
        _check_channels_last(self)
        super().build(input_shape)

    def quantized_kernel(self):
        """The kernel rounded to its int8 grid (float), what `call` convolves with."""
        return fake_quant_weights(self.kernel, axis=2)

    def call(self, inputs):
        outputs = ops.conv_transpose(inputs, self.quantized_kernel(), strides=list(self.strides),
                                     padding=self.padding, output_padding=self.output_padding,
                                     dilation_rate=self.dilation_rate, data_format=self.data_format)
        return _bias_and_activation(self, outputs)


QUANTIZE_AWARE_LAYERS = {
    "Conv2D": QuantizeAwareConv2D,
    "DepthwiseConv2D": QuantizeAwareDepthwiseConv2D,
    "Conv2DTranspose": QuantizeAwareConv2DTranspose,
}
