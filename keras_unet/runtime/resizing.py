"""Bring images and masks to a size: bilinear resize or centre pad/crop (numpy and pillow).

- Images (`resize_image`): pillow's bilinear filter, antialiased when shrinking, on uint8
  planes directly and on float32 planes otherwise; `"pad"` centre-pads with 0 or
  centre-crops.
- Masks (`resize_mask`): nearest neighbour with pixel-centre sampling (as
  `tf.image.resize(method="nearest")`), so no new class value appears; `"pad"` fills with
  `pad_value` (pass `ignore_index` so padding counts nowhere).

Pad and crop split the difference as `tf.image.resize_with_crop_or_pad` does.

Example:
```python
from keras_unet.runtime.resizing import resize_image, resize_mask

small = resize_image(image, (128, 128))                       # same dtype and channels
padded = resize_mask(mask, (128, 128), mode="pad", pad_value=255)
```
"""

import numpy as np

from keras_unet.runtime.images import pil_image

RESIZE_MODES = ("resize", "pad")


def check_size(size, name="size") -> tuple:
    """`(height, width)` as two ints; a `ValueError` naming the argument `name` otherwise.

    Example:
    ```python
    check_size([64, 48])               # (64, 48)
    check_size([0, 48], "tile_size")   # ValueError: `tile_size` must be ...
    ```
    """
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in size)):
        raise ValueError(f"`{name}` must be (height, width) of positive integers. Received: {name}={size!r}")
    return int(size[0]), int(size[1])


def _check_mode(mode):
    if mode not in RESIZE_MODES:
        raise ValueError(f"`mode` must be one of {RESIZE_MODES}. Received: mode={mode!r}")


def _pad_or_crop(array, size, value):
    """Centre-pad (with `value`) or centre-crop the first two axes to `size`."""
    height, width = size
    out = np.full((height, width) + array.shape[2:], value, dtype=array.dtype)
    h, w = array.shape[:2]
    # Same split as tf.image.resize_with_crop_or_pad, so both pipelines agree.
    src_y, dst_y = max((h - height) // 2, 0), max((height - h) // 2, 0)
    src_x, dst_x = max((w - width) // 2, 0), max((width - w) // 2, 0)
    ch, cw = min(h, height), min(w, width)
    out[dst_y:dst_y + ch, dst_x:dst_x + cw] = array[src_y:src_y + ch, src_x:src_x + cw]
    return out


def resize_image(image, size, mode="resize") -> np.ndarray:
    """Resize (bilinear, antialiased when shrinking) or centre pad/crop an image.

    Args:
        image: array `(H, W)` or `(H, W, C)`, uint8 or float.
        size: `(height, width)`.
        mode: `"resize"` (bilinear) or `"pad"` (centre pad with 0, or centre crop).

    Returns:
        An array of the same dtype and channels, `(height, width, ...)`.

    Example:
    ```python
    small = resize_image(np.zeros((256, 256, 3), np.uint8), (128, 128))
    ```
    """
    size = check_size(size)
    _check_mode(mode)
    image = np.asarray(image)
    if image.shape[:2] == size:
        return image
    if mode == "pad":
        return _pad_or_crop(image, size, 0)
    Image = pil_image()
    height, width = size
    if image.dtype == np.uint8 and (image.ndim == 2 or image.shape[-1] in (3, 4)):
        squeeze = False
        planes = [image]
    else:
        squeeze = image.ndim == 2
        planes = [image] if image.ndim == 2 else [image[..., c] for c in range(image.shape[-1])]
        planes = [p.astype(np.float32) for p in planes]
    out = [np.asarray(Image.fromarray(p).resize((width, height), Image.BILINEAR)) for p in planes]
    if len(out) == 1 and (image.ndim == 2 or out[0].ndim == 3):
        result = out[0]
    else:
        result = np.stack(out, axis=-1)
    if squeeze and result.ndim == 3:
        result = result[..., 0]
    if image.dtype != np.uint8 or result.dtype != image.dtype:
        if np.issubdtype(image.dtype, np.integer):
            info = np.iinfo(image.dtype)
            result = np.clip(np.round(result), info.min, info.max)
        result = result.astype(image.dtype)
    return result


def resize_mask(mask, size, mode="resize", pad_value=0) -> np.ndarray:
    """Resize a mask with nearest neighbour (no new class values), or centre pad/crop it.

    Args:
        mask: array `(H, W)` (or `(H, W, 1)`) of class indices.
        size: `(height, width)`.
        mode: `"resize"` (nearest neighbour) or `"pad"`.
        pad_value: the class given to padded pixels; pass `ignore_index` so that padding
            counts in neither loss nor metrics.

    Example:
    ```python
    small = resize_mask(np.zeros((256, 256), np.int32), (128, 128))
    ```
    """
    size = check_size(size)
    _check_mode(mode)
    mask = np.asarray(mask)
    if mask.shape[:2] == size:
        return mask
    if mode == "pad":
        return _pad_or_crop(mask, size, pad_value)
    height, width = size
    h, w = mask.shape[:2]
    # Pixel-centre sampling, as tf.image.resize(method="nearest") with half-pixel centres.
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return mask[rows[:, None], cols[None, :]]

