"""The contracting path of the original U-Net (Ronneberger et al., 2015)."""

from keras_unet.encoders.base import EncoderFeatures
from keras_unet.layers import ConvBlock, EncoderStage, InputNormalization


def build_vanilla(inputs, depth, filters, weights, block_kwargs):
    """ConvBlock at full resolution, then `depth` EncoderStages doubling the filters."""
    if weights is not None:
        raise ValueError(
            "The 'vanilla' encoder has no pretrained weights; pass encoder_weights=None "
            "or pick a keras.applications encoder (see keras_unet.encoders.list_encoders()). "
            f"Received: encoder_weights={weights!r}"
        )
    layers = [
        InputNormalization("unit", name="normalization"),
        ConvBlock(filters, name="encoder_block_0", **block_kwargs),
    ]
    x = layers[1](layers[0](inputs))
    features = {1: x}
    for level in range(1, depth + 1):
        stage = EncoderStage(filters * 2**level, name=f"encoder_stage_{level}", **block_kwargs)
        layers.append(stage)
        x = stage(x)
        features[2**level] = x
    return EncoderFeatures(features=features, layers=layers)
