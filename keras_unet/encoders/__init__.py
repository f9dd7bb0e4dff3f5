"""Encoder registry: `get_encoder(name)`, `list_encoders()`.

Example:
```python
from keras_unet.encoders import get_encoder, list_encoders

list_encoders()  # ['mobilenet_v2', 'mobilenet_v3_large', 'mobilenet_v3_small', 'resnet50', 'vanilla']
get_encoder("mobilenet_v2").max_depth  # 5
```
"""

from keras_unet.encoders.applications import make_application_builder
from keras_unet.encoders.base import Encoder, EncoderFeatures
from keras_unet.encoders.vanilla import build_vanilla

ENCODERS = {
    "vanilla": Encoder(
        "vanilla", "plain U-Net contracting path (Ronneberger et al. 2015)", None, False, build_vanilla
    ),
    "mobilenet_v2": Encoder(
        "mobilenet_v2",
        "keras.applications.MobileNetV2 (Sandler et al. 2018)",
        5,
        True,
        make_application_builder("mobilenet_v2"),
    ),
    "mobilenet_v3_small": Encoder(
        "mobilenet_v3_small",
        "keras.applications.MobileNetV3Small (Howard et al. 2019)",
        5,
        True,
        make_application_builder("mobilenet_v3_small"),
    ),
    "mobilenet_v3_large": Encoder(
        "mobilenet_v3_large",
        "keras.applications.MobileNetV3Large (Howard et al. 2019)",
        5,
        True,
        make_application_builder("mobilenet_v3_large"),
    ),
    "resnet50": Encoder(
        "resnet50",
        "keras.applications.ResNet50 (He et al. 2016)",
        5,
        True,
        make_application_builder("resnet50"),
    ),
}


def list_encoders() -> list:
    """Names accepted by `UNet(encoder=...)`, sorted.

    Example:
    ```python
    from keras_unet.encoders import list_encoders

    assert "mobilenet_v2" in list_encoders()
    ```
    """
    return sorted(ENCODERS)


def get_encoder(name: str) -> "Encoder":
    """The registered `Encoder` called `name`; a `ValueError` lists the valid names.

    Example:
    ```python
    from keras_unet.encoders import get_encoder

    encoder = get_encoder("resnet50")
    encoder.max_depth, encoder.pretrained      # (5, True)
    ```
    """
    try:
        return ENCODERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown encoder. Expected one of {list_encoders()}. Received: encoder={name!r}"
        ) from None


__all__ = ["ENCODERS", "Encoder", "EncoderFeatures", "get_encoder", "list_encoders"]
