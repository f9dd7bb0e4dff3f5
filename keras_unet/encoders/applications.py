"""Encoders taken from `keras.applications`, with their skip layers in one table."""

import os
import warnings

import keras

from keras_unet.encoders.base import EncoderFeatures
from keras_unet.layers import InputNormalization

# Where each stride's skip feature is taken. ("output", name) is that layer's output;
# ("input", name) is the input of the named layer. MobileNetV3's activation layers get
# auto-generated names that change from build to build, so its skips are read as the
# input of the stably named zero-padding layer in front of each stride-2 depthwise
# convolution. Stride 32 is always the application's final feature map.
APPLICATION_SKIPS = {
    "mobilenet_v2": {
        2: ("output", "block_1_expand_relu"),
        4: ("output", "block_3_expand_relu"),
        8: ("output", "block_6_expand_relu"),
        16: ("output", "block_13_expand_relu"),
    },
    "mobilenet_v3_small": {
        2: ("input", "expanded_conv_depthwise_pad"),
        4: ("input", "expanded_conv_1_depthwise_pad"),
        8: ("input", "expanded_conv_3_depthwise_pad"),
        16: ("input", "expanded_conv_8_depthwise_pad"),
    },
    "mobilenet_v3_large": {
        2: ("input", "expanded_conv_1_depthwise_pad"),
        4: ("input", "expanded_conv_3_depthwise_pad"),
        8: ("input", "expanded_conv_6_depthwise_pad"),
        16: ("input", "expanded_conv_12_depthwise_pad"),
    },
    "resnet50": {
        2: ("output", "conv1_relu"),
        4: ("output", "conv2_block3_out"),
        8: ("output", "conv3_block4_out"),
        16: ("output", "conv4_block6_out"),
    },
}

# (keras.applications constructor, normalization the ImageNet weights expect,
#  extra constructor arguments). MobileNetV3 rescales inside the application.
APPLICATIONS = {
    "mobilenet_v2": ("MobileNetV2", "symmetric", {}),
    "mobilenet_v3_small": ("MobileNetV3Small", "none", {"include_preprocessing": True}),
    "mobilenet_v3_large": ("MobileNetV3Large", "none", {"include_preprocessing": True}),
    "resnet50": ("ResNet50", "caffe", {}),
}


def _normalization_for(name, channels):
    mode = APPLICATIONS[name][1]
    # Caffe preprocessing is defined for RGB only; a model trained from scratch on
    # other channel counts just needs a sane input range.
    if mode == "caffe" and channels != 3:
        return "symmetric"
    return mode


def _check_weights(name, weights, channels):
    if weights is None:
        return
    if weights == "imagenet":
        if channels != 3:
            raise ValueError(
                f"The ImageNet weights of encoder '{name}' take RGB images with 3 channels. "
                f"Received: input_shape with {channels} channel(s). Convert the images to "
                "RGB, or train from scratch with encoder_weights=None."
            )
        return
    if not isinstance(weights, (str, os.PathLike)) or not os.path.isfile(weights):
        raise ValueError(
            "`encoder_weights` must be None, 'imagenet' or the path of an existing weights "
            f"file for encoder '{name}'. Received: encoder_weights={weights!r}"
        )


def _construct(name, inputs, weights):
    constructor, _, extra = APPLICATIONS[name]
    factory = getattr(keras.applications, constructor)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = factory(input_tensor=inputs, include_top=False, weights=weights, **extra)
    except Exception as error:  # Keras raises several types for download and load failures.
        if weights == "imagenet":
            raise RuntimeError(
                f"Could not obtain the ImageNet weights of encoder '{name}' "
                f"(keras.applications.{constructor}): {error}. Without internet access, "
                "download the '_no_top' weights file on another machine and either put it "
                "in ~/.keras/models/ or pass its path as encoder_weights='/path/to/file.h5'."
            ) from error
        if weights is not None:
            raise ValueError(
                f"encoder_weights file {os.fspath(weights)!r} does not match encoder "
                f"'{name}' (keras.applications.{constructor}, include_top=False): {error}"
            ) from error
        raise
    # Keras loads what it can of a file saved from another model and warns once per layer
    # group it skipped, leaving those layers random: a weights file that does not fit is
    # refused here instead of training from half-loaded weights.
    skipped = [w for w in caught if "Skipping" in str(w.message)]
    if skipped and weights not in (None, "imagenet"):
        raise ValueError(
            f"encoder_weights file {os.fspath(weights)!r} does not match encoder '{name}' "
            f"(keras.applications.{constructor}, include_top=False): {len(skipped)} layer "
            f"group(s) were not found in it, e.g. {str(skipped[0].message)[:160]}"
        )
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return model


def make_application_builder(name):
    """Returns the `build` function of the `Encoder` registered under `name`."""

    def build(inputs, depth, filters, weights, block_kwargs):
        channels = inputs.shape[-1]
        _check_weights(name, weights, channels)
        normalization = InputNormalization(_normalization_for(name, channels), name="normalization")
        app = _construct(name, normalization(inputs), weights)
        features = {}
        for stride, (where, layer_name) in APPLICATION_SKIPS[name].items():
            layer = app.get_layer(layer_name)
            features[stride] = layer.output if where == "output" else layer.input
        features[32] = app.output
        features = {s: t for s, t in features.items() if s <= 2**depth}
        # keras.applications keep BatchNorm momentum 0.99-0.999, tuned for ImageNet-length
        # training; from a few hundred steps the moving statistics stay unconverged and
        # validation IoU collapses, so the encoder follows the U-Net's own momentum.
        momentum = block_kwargs.get("bn_momentum")
        if momentum is not None:
            for layer in app.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = momentum
        encoder_layers = [normalization] + [
            layer for layer in app.layers if not isinstance(layer, keras.layers.InputLayer)
        ]
        return EncoderFeatures(features=features, layers=encoder_layers)

    return build
