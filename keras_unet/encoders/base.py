"""What an encoder is: a function from the image tensor to skip features keyed by stride."""

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class EncoderFeatures:
    """The result of building an encoder inside a model.

    Attributes:
        features: `{stride: tensor}`; stride 1 is full resolution. The decoder reads
            channel counts from these tensors, so nothing is hard-coded per backbone.
        layers: the encoder's own layers (frozen when `encoder_trainable=False`).

    Example:
    ```python
    import keras
    from keras_unet.encoders import get_encoder

    inputs = keras.Input((64, 64, 3))
    built = get_encoder("vanilla").build(inputs, 2, 8, None, {})
    sorted(built.features)        # strides of the skip features, e.g. [1, 2, 4]
    ```
    """

    features: dict
    layers: list


@dataclass(frozen=True)
class Encoder:
    """A registered encoder.

    Attributes:
        name: registry key, e.g. `"mobilenet_v2"`.
        description: one line for `list_encoders()` and the README table.
        max_depth: deepest stride exponent it provides (5 -> stride 32), or None
            for the vanilla encoder, which can go as deep as the input allows.
        pretrained: whether `encoder_weights="imagenet"` is available.
        build: `build(inputs, depth, filters, weights, block_kwargs) -> EncoderFeatures`.

    Example:
    ```python
    from keras_unet.encoders import ENCODERS

    for name, encoder in ENCODERS.items():
        print(name, encoder.max_depth, encoder.pretrained, encoder.description)
    ```
    """

    name: str
    description: str
    max_depth: Optional[int]
    pretrained: bool
    build: Callable
