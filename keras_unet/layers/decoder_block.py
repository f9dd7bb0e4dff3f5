"""One step up the U-Net decoder: upsample, join the skip connection, ConvBlock."""

import keras
from keras import ops

from keras_unet.layers._validation import check_choice, check_positive_int
from keras_unet.layers.attention_gate import AttentionGate
from keras_unet.layers.conv_block import ConvBlock

UPSAMPLE_MODES = ("transpose", "bilinear", "nearest")


@keras.saving.register_keras_serializable(package="keras_unet")
class DecoderBlock(keras.layers.Layer):
    """Doubles the resolution, concatenates the skip feature map, then a `ConvBlock`.

    Args:
        filters: output channels; also the channels of the transposed convolution.
        upsample: `"transpose"` (2x2 stride-2 `Conv2DTranspose`, the original U-Net),
            `"bilinear"` or `"nearest"` (`UpSampling2D`, no weights). Which is fastest
            after export depends on the runtime: measure with `keras-unet bench`.
        use_attention: gate the skip with an `AttentionGate` before concatenating.
        **kwargs: `ConvBlock` arguments (`use_batchnorm`, `dropout`, `residual`, ...)
            and standard layer arguments.

    Call arguments:
        inputs: the tensor from below, or a list `[below, skip]`. `skip` must have
            exactly twice the height and width of `below`.

    Example:
    ```python
    import numpy as np
    from keras_unet.layers import DecoderBlock

    block = DecoderBlock(64, upsample="bilinear", use_attention=True)
    below = np.zeros((1, 16, 16, 128), "float32")
    skip = np.zeros((1, 32, 32, 64), "float32")
    y = block([below, skip])  # (1, 32, 32, 64)
    ```
    """

    def __init__(self, filters, upsample="transpose", use_attention=False, **kwargs):
        block_keys = ConvBlock.BLOCK_ARGUMENTS
        block_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in block_keys}
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.upsample = check_choice("upsample", upsample, UPSAMPLE_MODES)
        self.use_attention = bool(use_attention)
        self.block_kwargs = block_kwargs
        if upsample == "transpose":
            self.up = keras.layers.Conv2DTranspose(
                filters,
                2,
                strides=2,
                padding="same",
                kernel_initializer=block_kwargs.get("kernel_initializer", "he_normal"),
                dtype=self.dtype_policy,
                name="up",
            )
        else:
            self.up = keras.layers.UpSampling2D(
                2, interpolation=upsample, dtype=self.dtype_policy, name="up"
            )
        self.gate = (
            AttentionGate(max(filters // 2, 1), dtype=self.dtype_policy, name="attention")
            if self.use_attention
            else None
        )
        self.block = ConvBlock(filters, dtype=self.dtype_policy, name="block", **block_kwargs)

    @staticmethod
    def _split(inputs):
        """`(below, skip)` from a tensor, a `[below, skip]` list, or their shapes."""
        # Shapes come back from a saved config as lists, so a list of ints is one shape.
        is_shape = isinstance(inputs, (list, tuple)) and all(
            d is None or isinstance(d, int) for d in inputs
        )
        if isinstance(inputs, (list, tuple)) and not is_shape:
            if len(inputs) == 1:
                return inputs[0], None
            below, skip = inputs
            return below, skip
        return inputs, None

    def build(self, input_shape):
        below_shape, skip_shape = self._split(input_shape)
        self.up.build(below_shape)
        up_shape = self.up.compute_output_shape(below_shape)
        joined_channels = up_shape[-1]
        if skip_shape is not None:
            if self.gate is not None:
                self.gate.build([skip_shape, up_shape])
            joined_channels += skip_shape[-1]
        self.block.build(tuple(up_shape[:-1]) + (joined_channels,))

    def call(self, inputs, training=None):
        below, skip = self._split(inputs)
        x = self._upsample(below)
        if skip is not None:
            if self.gate is not None:
                skip = self.gate([skip, x])
            x = self._join(x, skip)
        return self.block(x, training=training)

    # `_upsample` and `_join` are methods so that an export can compute the same numbers in
    # the form its runtime quantizes best (`keras_unet.export.decoder_form`) without copying
    # the rest of `call`.
    def _upsample(self, below):
        return self.up(below)

    def _join(self, upsampled, skip):
        return ops.concatenate([upsampled, skip], axis=-1)

    def compute_output_shape(self, input_shape):
        below_shape, _ = self._split(input_shape)
        up_shape = self.up.compute_output_shape(below_shape)
        return tuple(up_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "upsample": self.upsample,
                "use_attention": self.use_attention,
                **self.block_kwargs,
            }
        )
        return config
