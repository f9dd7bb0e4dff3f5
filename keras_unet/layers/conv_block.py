"""Two 3x3 convolutions: the unit every U-Net stage is made of."""

import keras

from keras_unet.layers._validation import check_positive_int, check_rate


@keras.saving.register_keras_serializable(package="keras_unet")
class ConvBlock(keras.layers.Layer):
    """Two `kernel_size` convolutions with optional batch norm, dropout and a residual path.

    conv -> [BN] -> activation -> [dropout] -> conv -> [BN] -> [+ shortcut] -> activation.
    With `residual=True` the input is added before the last activation (He et al. 2016);
    a 1x1 convolution matches the channels when they differ.

    Args:
        filters: number of output channels of both convolutions.
        kernel_size: size of the square kernels. Defaults to 3.
        activation: activation after each convolution. Defaults to `"relu"`.
        use_batchnorm: add `BatchNormalization` after each convolution (the
            convolutions then have no bias). Defaults to `False`.
        dropout: dropout rate between the two convolutions. Defaults to 0.
        residual: add a residual connection. Defaults to `False`.
        bn_momentum: momentum of the batch norm moving statistics. Defaults to 0.9,
            which converges within a few hundred steps of training from scratch.
        kernel_initializer: initializer of the convolution kernels.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Example:
    ```python
    import numpy as np
    from keras_unet.layers import ConvBlock

    block = ConvBlock(32, use_batchnorm=True, residual=True)
    y = block(np.zeros((2, 64, 64, 3), "float32"))  # (2, 64, 64, 32)
    ```
    """

    # Arguments that container layers (EncoderStage, DecoderBlock) pass through.
    BLOCK_ARGUMENTS = (
        "kernel_size",
        "activation",
        "use_batchnorm",
        "dropout",
        "residual",
        "bn_momentum",
        "kernel_initializer",
    )

    def __init__(
        self,
        filters,
        kernel_size=3,
        activation="relu",
        use_batchnorm=False,
        dropout=0.0,
        residual=False,
        bn_momentum=0.9,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.activation = activation
        self.use_batchnorm = bool(use_batchnorm)
        self.dropout = check_rate("dropout", dropout)
        self.residual = bool(residual)
        self.bn_momentum = float(bn_momentum)
        self.kernel_initializer = kernel_initializer

        self.conv1 = self._conv(self.kernel_size, "conv1")
        self.norm1 = self._norm("norm1")
        self.act1 = keras.layers.Activation(activation, dtype=self.dtype_policy, name="act1")
        self.drop = (
            keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name="dropout")
            if self.dropout
            else None
        )
        self.conv2 = self._conv(self.kernel_size, "conv2")
        self.norm2 = self._norm("norm2")
        self.act2 = keras.layers.Activation(activation, dtype=self.dtype_policy, name="act2")
        # The projection depends on the input channels, so it is made in build().
        self.shortcut = None

    def _conv(self, size, name):
        return keras.layers.Conv2D(
            self.filters,
            size,
            padding="same",
            use_bias=not self.use_batchnorm,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def _norm(self, name):
        if not self.use_batchnorm:
            return None
        return keras.layers.BatchNormalization(
            momentum=self.bn_momentum, dtype=self.dtype_policy, name=name
        )

    def build(self, input_shape):
        out_shape = tuple(input_shape[:-1]) + (self.filters,)
        self.conv1.build(input_shape)
        if self.norm1 is not None:
            self.norm1.build(out_shape)
            self.norm2.build(out_shape)
        self.conv2.build(out_shape)
        if self.residual and input_shape[-1] != self.filters:
            self.shortcut = self._conv(1, "shortcut")
            self.shortcut.build(input_shape)

    def call(self, inputs, training=None):
        x = self.conv1(inputs)
        if self.norm1 is not None:
            x = self.norm1(x, training=training)
        x = self.act1(x)
        if self.drop is not None:
            x = self.drop(x, training=training)
        x = self.conv2(x)
        if self.norm2 is not None:
            x = self.norm2(x, training=training)
        if self.residual:
            x = x + (self.shortcut(inputs) if self.shortcut is not None else inputs)
        return self.act2(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "activation": self.activation,
                "use_batchnorm": self.use_batchnorm,
                "dropout": self.dropout,
                "residual": self.residual,
                "bn_momentum": self.bn_momentum,
                "kernel_initializer": self.kernel_initializer,
            }
        )
        return config
