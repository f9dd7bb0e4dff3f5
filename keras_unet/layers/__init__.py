"""Serializable U-Net building blocks, usable in any functional or subclassed Keras model."""

from keras_unet.layers.attention_gate import AttentionGate
from keras_unet.layers.conv_block import ConvBlock
from keras_unet.layers.decoder_block import UPSAMPLE_MODES, DecoderBlock
from keras_unet.layers.encoder_stage import EncoderStage
from keras_unet.layers.input_normalization import InputNormalization

__all__ = [
    "AttentionGate",
    "ConvBlock",
    "DecoderBlock",
    "EncoderStage",
    "InputNormalization",
    "UPSAMPLE_MODES",
]
