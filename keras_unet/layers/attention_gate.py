"""Additive attention gate on a skip connection (Oktay et al., "Attention U-Net", 2018)."""

import keras
from keras import ops

from keras_unet.layers._validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_unet")
class AttentionGate(keras.layers.Layer):
    """Scales a skip feature map by a learned [0, 1] mask computed with a gating signal.

    `alpha = sigmoid(psi(relu(theta(skip) + phi(gate))))`, output `skip * alpha`, where
    theta, phi and psi are 1x1 convolutions. Unlike the paper, the gating signal is taken
    *after* the decoder's upsampling, so both inputs have the same resolution and no
    strided convolution or resampling of alpha is needed; this is the form
    keras-unet-collection uses and it exports to TFLite and ONNX as plain convolutions.

    Args:
        filters: channels of the intermediate (theta/phi) projection.
        **kwargs: standard layer arguments.

    Call arguments:
        inputs: list `[skip, gate]` of tensors with equal height and width.

    Example:
    ```python
    import numpy as np
    from keras_unet.layers import AttentionGate

    gate = AttentionGate(16)
    skip = np.ones((1, 32, 32, 64), "float32")
    g = np.ones((1, 32, 32, 128), "float32")
    y = gate([skip, g])  # (1, 32, 32, 64)
    ```

    Reference: Oktay et al., "Attention U-Net: Learning Where to Look for the
    Pancreas", MIDL 2018. https://arxiv.org/abs/1804.03999
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        conv = lambda n, name: keras.layers.Conv2D(  # noqa: E731
            n, 1, dtype=self.dtype_policy, name=name
        )
        self.theta = conv(filters, "theta")
        self.phi = conv(filters, "phi")
        self.psi = conv(1, "psi")

    def build(self, input_shape):
        skip_shape, gate_shape = input_shape
        self.theta.build(skip_shape)
        self.phi.build(gate_shape)
        self.psi.build(tuple(skip_shape[:-1]) + (self.filters,))

    def call(self, inputs):
        skip, gate = inputs
        joint = ops.relu(self.theta(skip) + self.phi(gate))
        alpha = ops.sigmoid(self.psi(joint))
        return skip * alpha

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters})
        return config
