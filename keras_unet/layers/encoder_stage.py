"""One step down the U-Net encoder: halve the resolution, then a ConvBlock."""

import keras

from keras_unet.layers._validation import check_choice
from keras_unet.layers.conv_block import ConvBlock

POOLING_MODES = ("max", "average")


@keras.saving.register_keras_serializable(package="keras_unet")
class EncoderStage(keras.layers.Layer):
    """2x2 pooling followed by a `ConvBlock`: one stage of the contracting path.

    Args:
        filters: output channels of the stage.
        pooling: `"max"` (the original U-Net) or `"average"`. Defaults to `"max"`.
        **kwargs: `ConvBlock` arguments (`use_batchnorm`, `dropout`, `residual`,
            `activation`, `bn_momentum`, `kernel_initializer`) and standard layer
            arguments (`name`, `dtype`).

    Example:
    ```python
    import numpy as np
    from keras_unet.layers import EncoderStage

    stage = EncoderStage(128, use_batchnorm=True)
    y = stage(np.zeros((1, 64, 64, 64), "float32"))  # (1, 32, 32, 128)
    ```
    """

    def __init__(self, filters, pooling="max", **kwargs):
        block_keys = ConvBlock.BLOCK_ARGUMENTS
        block_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in block_keys}
        super().__init__(**kwargs)
        self.filters = filters
        self.pooling = check_choice("pooling", pooling, POOLING_MODES)
        self.block_kwargs = block_kwargs
        pool_cls = keras.layers.MaxPooling2D if pooling == "max" else keras.layers.AveragePooling2D
        self.pool = pool_cls(2, dtype=self.dtype_policy, name="pool")
        self.block = ConvBlock(filters, dtype=self.dtype_policy, name="block", **block_kwargs)

    def build(self, input_shape):
        pooled = self.pool.compute_output_shape(input_shape)
        self.block.build(pooled)

    def call(self, inputs, training=None):
        return self.block(self.pool(inputs), training=training)

    def compute_output_shape(self, input_shape):
        return self.block.compute_output_shape(self.pool.compute_output_shape(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "pooling": self.pooling, **self.block_kwargs})
        return config
