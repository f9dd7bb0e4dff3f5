"""Read an image file as uint8 `(H, W, C)` with pillow, and convert its channels.

The one image decoder of keras-unet: the `tf.data` pipeline (`keras_unet.data`), export
calibration, the runners and the benchmark all read pixels through `read_image`.

- Formats: PNG, JPEG, BMP, TIFF; grayscale, palette, RGB, RGBA, CMYK, 8 or 16 bit
  (16-bit values keep their top 8 bits).
- Channels (`convert_channels`): grayscale -> RGB repeats the channel; RGB -> grayscale
  uses ITU-R 601-2 luma (pillow's `"L"`), rounded; an alpha channel is dropped unless 4
  channels are asked for.
- A missing file is a `FileNotFoundError`; a truncated or non-image file a `ValueError`
  naming it (the file is decoded at once, so this happens when it is read).

Example:
```python
from keras_unet.runtime.images import read_image

image = read_image("data/nuclei/images/a.png", channels=3)   # uint8 (H, W, 3)
```
"""

from pathlib import Path

import numpy as np


def pil_image():
    """The `PIL.Image` module (imported on first use), with an error naming the package.

    Example:
    ```python
    Image = pil_image()
    ```
    """
    try:
        from PIL import Image
    except ImportError as error:  # pragma: no cover - pillow is a core dependency
        raise ImportError(
            "Reading images needs pillow: `pip install pillow`."
        ) from error
    return Image


def open_image(path, kind="image"):
    """A decoded `PIL.Image` of `path`; errors name the file and say what is wrong.

    Args:
        path: the file.
        kind: `"image"` or `"mask"`, for messages.

    Example:
    ```python
    open_image("data/nuclei/masks/a.png", "mask").mode   # "L"
    ```
    """
    Image = pil_image()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The {kind} file does not exist. Received: path='{path}'")
    try:
        image = Image.open(path)
        image.load()  # decodes now, so a truncated file fails here, named
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"Cannot read the {kind} file '{path}': {error}. The file is truncated, corrupt or "
            f"not an image."
        ) from error
    return image


def image_size(path):
    """Return `(height, width)` of an image file from its header (no decoding).

    Args:
        path: an image or mask file.

    Example:
    ```python
    height, width = image_size("data/nuclei/images/a.png")
    ```
    """
    Image = pil_image()
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"Cannot read the file '{path}': {error}.") from error
    return height, width


def _to_uint8(array):
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(array, 0, 255).astype(np.uint8)
    # 16-bit (and 32-bit) integer images: keep the top 8 bits of a 16-bit range.
    return np.clip(array.astype(np.int64) >> 8, 0, 255).astype(np.uint8)


def convert_channels(image, channels, path=None):
    """Convert a `(H, W)` or `(H, W, C)` image to `channels` channels.

    Grayscale -> RGB repeats the channel; RGB -> grayscale uses ITU-R 601-2 luma (as
    pillow's `"L"` mode); an alpha channel is dropped.

    Args:
        image: array `(H, W)` or `(H, W, C)` with C in 1..4.
        channels: 1, 3 or 4 (4 adds an opaque alpha channel), or None to keep the image's.
        path: file name used in error messages.

    Example:
    ```python
    rgb = convert_channels(np.zeros((8, 8), np.uint8), 3)   # (8, 8, 3)
    ```
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"Expected an image of shape (H, W) or (H, W, C) with C in 1..4"
            f"{f' in {path}' if path else ''}. Received: shape={image.shape}"
        )
    if channels is None:
        return image
    if channels not in (1, 3, 4):
        raise ValueError(f"`channels` must be 1, 3, 4 or None. Received: channels={channels!r}")
    have = image.shape[-1]
    if have == 2:  # gray + alpha
        image, have = image[..., :1], 1
    if have == 4 and channels != 4:
        image, have = image[..., :3], 3
    if have == channels:
        return image
    if channels == 1:
        luma = image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114
        if image.dtype == np.uint8:
            luma = np.round(luma)
        return luma.astype(image.dtype)[..., None]
    if have == 1:
        image = np.repeat(image, 3, axis=-1)
    if channels == 4:
        alpha = np.full(image.shape[:2] + (1,), 255, image.dtype)
        image = np.concatenate([image, alpha], axis=-1)
    return image


def read_image(path, channels=3):
    """Read an image file as uint8 `(H, W, channels)`.

    PNG, JPEG, BMP and TIFF, grayscale, RGB or RGBA, 8 or 16 bit (16-bit values keep
    their top 8 bits).

    Args:
        path: the image file.
        channels: 1 (grayscale), 3 (RGB), 4 (RGBA) or None to keep the file's channels.

    Returns:
        uint8 array `(H, W, channels)`.

    Example:
    ```python
    image = read_image("data/nuclei/images/a.png", channels=3)
    ```
    """
    image = open_image(path, "image")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "CMYK" or image.mode.startswith("YCbCr") or image.mode == "LAB":
        image = image.convert("RGB")
    elif image.mode == "1":
        image = image.convert("L")
    array = _to_uint8(np.asarray(image))
    return convert_channels(array, channels, path=path)

