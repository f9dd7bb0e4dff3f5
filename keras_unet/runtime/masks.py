"""Read mask files and map their raw values to class indices (numpy and pillow only).

Mask encodings (`decode_mask`), each mapping a raw mask to int32 class indices:

- `"binary"`: the values apart from `ignore_index` must be a subset of {0, 255} or of
  {0, 1}; 255 (or 1) becomes 1. Anything else (7 in a 0/255 set) is an error naming the
  file and the bad values. Note: with `ignore_index=255`, 255 means "ignore", so a 0/255
  mask would become all background plus ignored pixels; use another ignore value.
- `"index"`: each pixel is a class index. Values must be `< num_classes` unless they equal
  `ignore_index`.
- `"trimap"` (Oxford-IIIT Pet): 1 pet, 2 background, 3 border. Mapped to pet = 1,
  background = 0, border = `ignore_index` if one is given, else 1 (the border belongs to
  the pet outline).
- `"auto"`: decided per mask from its values: if the values apart from `ignore_index`
  are {0, 255} or {255} it is `"binary"` (255 -> 1); otherwise, with `num_classes == 1` it
  is `"binary"` (so values must be 0/1) and with any other `num_classes` it is `"index"`.
  A 0/1 mask reads the same under both, so the choice never changes a value except
  255 -> 1.

Orientation: a mask is matched to its image as the image is seen, upright (`read_image`
applies the image's EXIF orientation), so a mask must be drawn on the upright image and
have its upright size. A mask PNG normally carries no EXIF; one that does is read upright
the same way (`read_mask` goes through the same `open_image`). `check_mask_size` refuses a
mask of another size, and says so when the mask matches the image's stored, unrotated
pixels instead.

Example:
```python
from keras_unet.runtime.masks import decode_mask, read_mask

mask = decode_mask(read_mask("data/nuclei/masks/a.png"), "binary")   # int32 0/1 (H, W)
```
"""

import numpy as np

from keras_unet.runtime.images import SWAPPING_ORIENTATIONS, exif_orientation, open_image

MASK_ENCODINGS = ("auto", "binary", "index", "trimap")


def read_mask(path) -> np.ndarray:
    """Read a mask file's raw values as an integer array `(H, W)`.

    Palette PNGs give their palette indices (the usual way class-index masks are stored);
    1-bit images give 0/1; an RGB file whose three channels are equal is read as
    grayscale. A colour-coded RGB mask is an error: convert it to class indices first.
    A mask file with an EXIF orientation tag is read upright, like an image. Unreadable
    files are refused as by `keras_unet.runtime.images.open_image`.

    Args:
        path: the mask file.

    Returns:
        uint8 array, or int32 for 16/32-bit masks.

    Example:
    ```python
    raw = read_mask("data/nuclei/masks/a.png")   # values 0 and 255
    ```
    """
    image = open_image(path, "mask")
    if image.mode == "1":
        return np.asarray(image).astype(np.uint8)
    if image.mode in ("LA", "PA"):
        image = image.getchannel(0)
    array = np.asarray(image)
    if array.ndim == 3:
        if array.shape[-1] == 4:
            array = array[..., :3]
        if not (np.array_equal(array[..., 0], array[..., 1])
                and np.array_equal(array[..., 0], array[..., -1])):
            raise ValueError(
                f"The mask '{path}' is a colour image (mode {image.mode}): masks must hold one "
                f"class index (or 0/255) per pixel. Convert colour-coded masks to a "
                f"single-channel PNG of class indices."
            )
        array = array[..., 0]
    if np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_:
        array = array.astype(np.int32)
    if array.dtype != np.uint8:
        array = array.astype(np.int32)
    return array


def check_mask_size(mask_shape, image_shape, mask_path=None, image_path=None) -> None:
    """Refuse a mask whose `(H, W)` differs from its (upright) image's, naming both files.

    When the mask has the image's size with width and height swapped and the image
    carries an EXIF orientation of 5-8, the message says that the mask matches the stored,
    unrotated pixels while keras-unet reads the image upright.

    Args:
        mask_shape: shape of the mask, `(H, W)` or `(H, W, ...)`.
        image_shape: shape of the image as `read_image` returns it, `(H, W)` or `(H, W, C)`.
        mask_path: the mask file, for the message.
        image_path: the image file, for the message (and its EXIF orientation).

    Example:
    ```python
    check_mask_size(raw.shape, image.shape, "d/masks/a.png", "d/images/a.jpg")
    ```
    """
    mask_hw, image_hw = tuple(mask_shape[:2]), tuple(image_shape[:2])
    if mask_hw == image_hw:
        return
    message = (
        f"The mask '{mask_path}' is {mask_hw[1]}x{mask_hw[0]} (WxH) but its image "
        f"'{image_path}' is {image_hw[1]}x{image_hw[0]}: a mask must have its image's size."
    )
    if image_path is not None and mask_hw == image_hw[::-1]:
        try:
            orientation = exif_orientation(image_path)
        except (OSError, ValueError):
            orientation = 1
        if orientation in SWAPPING_ORIENTATIONS:
            message += (
                f" The image has EXIF orientation {orientation}: it is stored "
                f"{image_hw[0]}x{image_hw[1]} and shown (and read) rotated to "
                f"{image_hw[1]}x{image_hw[0]}, and this mask matches the stored pixels. Rotate "
                f"the mask to the upright image, or save the image upright without the tag."
            )
    raise ValueError(message)


def mask_values(raw) -> np.ndarray:
    """Sorted distinct values of a raw mask (fast path for uint8).

    Example:
    ```python
    mask_values(np.array([[0, 255]], np.uint8))   # array([0, 255])
    ```
    """
    raw = np.asarray(raw)
    if raw.dtype == np.uint8:
        return np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
    return np.unique(raw)


def _show(values, limit=12):
    values = sorted(int(v) for v in values)
    text = ", ".join(str(v) for v in values[:limit])
    return f"[{text}{', ...' if len(values) > limit else ''}]"


def _where(path):
    return f"The mask '{path}'" if path else "The mask"


def resolve_encoding(values, encoding="auto", num_classes=None, ignore_index=None) -> str:
    """The concrete encoding (`"binary"`, `"index"` or `"trimap"`) of a mask's values.

    See the module docstring for how `"auto"` decides.

    Args:
        values: the distinct raw values of one mask (see `mask_values`).
        encoding: one of `MASK_ENCODINGS`.
        num_classes: the model's number of classes (1 = binary), or None.
        ignore_index: the value to skip in loss and metrics, or None.

    Example:
    ```python
    resolve_encoding([0, 255])                  # "binary"
    resolve_encoding([0, 3], num_classes=5)     # "index"
    ```
    """
    if encoding not in MASK_ENCODINGS:
        raise ValueError(
            f"`mask_encoding` must be one of {MASK_ENCODINGS}. Received: mask_encoding={encoding!r}"
        )
    if encoding != "auto":
        return encoding
    values = {int(v) for v in values} - ({ignore_index} if ignore_index is not None else set())
    if 255 in values and values <= {0, 255}:
        return "binary"
    return "binary" if num_classes == 1 else "index"


def decode_mask(raw, encoding="auto", num_classes=None, ignore_index=None, path=None) -> np.ndarray:
    """Map raw mask values to int32 class indices, checking they fit the encoding.

    Args:
        raw: the raw mask `(H, W)` from `read_mask`.
        encoding: `"auto"`, `"binary"`, `"index"` or `"trimap"` (module docstring).
        num_classes: number of classes of the model (1 = binary); `"index"` values must be
            below it. None skips that check.
        ignore_index: a value left as is and skipped by losses and metrics (e.g. 11 for
            CamVid's void class, 255 for VOC borders), or None.
        path: the file name for error messages.

    Returns:
        int32 array `(H, W)`: 0/1 for binary masks, class indices otherwise, with
        `ignore_index` where pixels are to be ignored.

    Example:
    ```python
    decode_mask(np.array([[0, 255]], np.uint8), "binary")        # [[0, 1]]
    decode_mask(np.array([[1, 2, 3]], np.uint8), "trimap", ignore_index=255)  # [[1, 0, 255]]
    ```
    """
    raw = np.asarray(raw)
    if raw.ndim == 3 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    if raw.ndim != 2:
        raise ValueError(f"{_where(path)} must be 2-D (H, W). Received: shape={raw.shape}")
    if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) < 1):
        raise ValueError(f"`num_classes` must be a positive integer. Received: num_classes={num_classes!r}")
    values = mask_values(raw)
    encoding = resolve_encoding(values, encoding, num_classes, ignore_index)
    ignored = {ignore_index} if ignore_index is not None else set()
    present = {int(v) for v in values} - ignored
    mask = raw.astype(np.int32)
    if encoding == "binary":
        if present <= {0, 1}:
            return mask
        if present <= {0, 255}:
            mask[raw == 255] = 1
            return mask
        bad = sorted(present - {0, 1, 255})
        problem = f"bad: {_show(bad)}" if bad else "1 and 255 mixed"
        raise ValueError(
            f"{_where(path)} does not fit the 'binary' encoding: it holds the values "
            f"{_show(present)} ({problem}), but a binary mask holds 0 and 255, or "
            f"0 and 1{f', plus ignore_index={ignore_index}' if ignored else ''}. Use "
            f"mask_encoding='index' with num_classes >= {max(present) + 1} for class-index masks."
        )
    if encoding == "trimap":
        bad = sorted(present - {1, 2, 3})
        if bad:
            raise ValueError(
                f"{_where(path)} does not fit the 'trimap' encoding (1 pet, 2 background, "
                f"3 border): it holds the values {_show(bad)}."
            )
        out = np.zeros_like(mask)
        out[raw == 1] = 1
        out[raw == 3] = 1 if ignore_index is None else ignore_index
        if ignored:
            out[raw == ignore_index] = ignore_index
        return out
    # index
    if present and min(present) < 0:
        raise ValueError(f"{_where(path)} holds negative class indices: {_show(v for v in present if v < 0)}.")
    if num_classes is not None and present and max(present) >= num_classes:
        bad = sorted(v for v in present if v >= num_classes)
        raise ValueError(
            f"{_where(path)} holds class index {max(present)} but num_classes={num_classes} "
            f"allows 0..{num_classes - 1} (values too large: {_show(bad)}). Use "
            f"num_classes >= {max(present) + 1}, or ignore_index={bad[0]} if that value marks "
            f"pixels to ignore (like CamVid's void class 11)."
        )
    return mask

