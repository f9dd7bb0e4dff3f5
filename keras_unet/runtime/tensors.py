"""Between images and a model's tensors: image lists in, quantized batches, probabilities out.

Pure numpy (and pillow through `keras_unet.runtime.images`) helpers that every runner
shares; `keras_unet.runtime.base.Runner` strings them together.

- `as_image_list`: a batch array, one image or a list of images of any sizes -> a list.
- `fit_channels`: an image with another channel count is converted the way
  `read_image` converts files (gray -> RGB repeats, RGB -> gray is ITU-R 601-2 luma,
  alpha dropped), for models taking 1, 3 or 4 channels; other mismatches raise.
- `quantize` / `dequantize`: float [0, 255] images to an integer input tensor with its
  `{"scale", "zero_point"}`, and an integer output back to floats.
- `activate`: sigmoid (one channel) or softmax (several) for models that output logits.

Example:
```python
from keras_unet.runtime.tensors import as_image_list, quantize

batch = quantize(np.stack(as_image_list(images)).astype("float32"), np.uint8,
                 {"scale": 1.0, "zero_point": 0})
```
"""

import numpy as np

from keras_unet.runtime.images import convert_channels


def as_image_list(images) -> list:
    """A list of `(H, W[, C])` arrays from a batch array, one image, or a list of images.

    Args:
        images: `(N, H, W, C)` / `(N, H, W)` array, one `(H, W)` or `(H, W, C)` image
            (C in 1..4), or a sequence of images.

    Raises:
        ValueError: another shape, or no image at all.

    Example:
    ```python
    len(as_image_list(np.zeros((4, 8, 8, 3))))   # 4
    len(as_image_list(np.zeros((8, 8, 3))))      # 1
    ```
    """
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            images = list(images)
        elif images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 2, 3, 4)):
            images = [images]  # one image
        elif images.ndim == 3:
            images = list(images)  # (N, H, W) grayscale
        else:
            raise ValueError(
                f"Expected images of shape (N, H, W, C), (N, H, W), (H, W, C) or (H, W). "
                f"Received: images.shape={images.shape}"
            )
    else:
        images = [np.asarray(image) for image in images]
    if not images:
        raise ValueError("`images` is empty: expected at least one image.")
    return images


def fit_channels(image, channels, path="the model") -> np.ndarray:
    """`image` as `(H, W, channels)`, converted as `read_image` converts files.

    Args:
        image: `(H, W)` or `(H, W, C)` array.
        channels: the model's input channels.
        path: the model file, for messages.

    Example:
    ```python
    fit_channels(np.zeros((8, 8)), 3).shape   # (8, 8, 3)
    ```
    """
    if image.ndim not in (2, 3):
        raise ValueError(
            f"Expected each image as (H, W) or (H, W, C). Received: shape={image.shape}"
        )
    have = image.shape[-1] if image.ndim == 3 else 1
    if have == channels:
        return image if image.ndim == 3 else image[..., None]
    if channels in (1, 3, 4) and have in (1, 2, 3, 4):
        return convert_channels(image, channels)
    raise ValueError(
        f"{path} takes images with {channels} channel(s). Received: an image of shape {image.shape}"
    )


def looks_like_unit_range(images) -> bool:
    """True when the float images have values in (0, 1] only: [0, 1] instead of [0, 255].

    All-black images are fine; integer images are never flagged.

    Example:
    ```python
    looks_like_unit_range([np.full((2, 2), 0.5)])   # True
    ```
    """
    floats = [image for image in images if np.issubdtype(image.dtype, np.floating)]
    top = max((float(np.max(image)) for image in floats), default=0.0)
    return 0.0 < top <= 1.0


def quantize(batch, dtype, quantization=None) -> np.ndarray:
    """A float batch in the input tensor's dtype: scaled, shifted, rounded and clipped for
    integer tensors, cast for float ones.

    Args:
        batch: float array.
        dtype: the input tensor's dtype.
        quantization: `{"scale", "zero_point"}` of an integer input, or None (values kept).

    Example:
    ```python
    quantize(np.array([0.0, 127.6, 300.0]), np.uint8)   # [0, 128, 255]
    ```
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if quantization:
            batch = batch / float(quantization["scale"]) + float(quantization["zero_point"])
        return np.clip(np.round(batch), info.min, info.max).astype(dtype)
    return batch.astype(dtype, copy=False)


def dequantize(raw, quantization=None) -> np.ndarray:
    """float32 values of an output tensor (`(q - zero_point) * scale` for integer ones).

    Example:
    ```python
    dequantize(np.array([0, 128], np.uint8), {"scale": 1 / 256, "zero_point": 0})  # [0, 0.5]
    ```
    """
    raw = np.asarray(raw)
    if quantization and np.issubdtype(raw.dtype, np.integer):
        return (raw.astype(np.float32) - float(quantization["zero_point"])) * float(quantization["scale"])
    return raw.astype(np.float32)


def activate(logits) -> np.ndarray:
    """Probabilities from logits `(..., K)`: sigmoid for K = 1, softmax over K otherwise.

    Example:
    ```python
    activate(np.zeros((2, 2, 1)))   # all 0.5
    ```
    """
    if logits.shape[-1] == 1:
        return 1.0 / (1.0 + np.exp(-logits))
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
