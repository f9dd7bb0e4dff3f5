"""Read an image file as uint8 `(H, W, C)` with pillow, and convert its channels.

The one image decoder of keras-unet: the `tf.data` pipeline (`keras_unet.data`), export
calibration, the runners and the benchmark all read pixels through `read_image`.

- Formats: PNG, JPEG, BMP, TIFF; grayscale, palette, RGB, RGBA, CMYK, 8 or 16 bit
  (16-bit values keep their top 8 bits).
- Channels (`convert_channels`): grayscale -> RGB repeats the channel; RGB -> grayscale
  uses ITU-R 601-2 luma (pillow's `"L"`), rounded; an alpha channel is dropped unless 4
  channels are asked for.
- EXIF orientation: an image is read upright, as viewers show it. A file with an EXIF
  orientation tag (photos from phones and cameras store the pixels as shot and the
  rotation in the tag) is transposed with `PIL.ImageOps.exif_transpose`, and
  `image_size` reports the size after that transpose (width and height swapped for
  orientations 5-8). A broken EXIF block is ignored, as viewers ignore it. Masks are read
  through the same `open_image`, so a mask is upright too (see `keras_unet.runtime.masks`).
- Refusals are one line naming the file and why: a missing file is a
  `FileNotFoundError`; an unreadable one (permission denied) a `PermissionError`; a folder
  an `IsADirectoryError`; an empty (0-byte), truncated, corrupt or unknown-format file, or
  one over Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`), a
  `ValueError`. The file is decoded at once, so this happens when it is read.

Example:
```python
from keras_unet.runtime.images import read_image

image = read_image("data/nuclei/images/a.png", channels=3)   # uint8 (H, W, 3)
```
"""

import os
import re
import stat
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ORIENTATION_TAG = 0x0112  # EXIF "Orientation": 1 upright, 2-8 flipped and/or rotated
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # these rotate by 90 degrees: width and height swap

# What `open_image` turns into a `ValueError` naming the file: what pillow raises for a
# truncated, corrupt or undecodable file.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


def pil_image() -> Any:
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


def _name(path):
    """`'path'` for messages; `repr` when the name holds a newline or other control."""
    text = str(path)
    return f"'{text}'" if text.isprintable() else repr(text)


def _one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


def _check_file(path, kind):
    """Refuse, by name, a path that is missing, a folder, not a regular file, or empty."""
    name = _name(path)
    try:
        info = path.stat()
    except PermissionError:
        raise PermissionError(
            f"Cannot read the {kind} file {name}: permission denied (on the file or a folder "
            f"above it)."
        ) from None
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"The {kind} file does not exist. Received: path={name}") from None
    except OSError as error:  # a name too long, a symlink loop
        raise ValueError(f"Cannot read the {kind} file {name}: {_one_line(error)}.") from error
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(
            f"The {kind} path {name} is a folder, not a file: give the {kind} file itself."
        )
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(
            f"The {kind} path {name} is not a regular file (a device, pipe or socket): give "
            f"an {kind} file."
        )
    if info.st_size == 0:
        raise ValueError(
            f"The {kind} file {name} is empty (0 bytes), likely from a failed copy or "
            f"download: replace it."
        )


def _bomb_error(name, kind, error):
    """The `ValueError` for a file over pillow's decompression-bomb limit."""
    Image = pil_image()
    limit = Image.MAX_IMAGE_PIXELS
    match = re.search(r"\((\d+) pixels\)", str(error))
    pixels = match[1] if match else "too many"
    if isinstance(error, Image.DecompressionBombError):
        over = (f"more than twice PIL.Image.MAX_IMAGE_PIXELS ({limit}), so pillow refuses "
                f"to open it")
    else:  # the warning, turned into an error by the warning filters
        over = (f"more than PIL.Image.MAX_IMAGE_PIXELS ({limit}), and the warning filters turn "
                f"pillow's DecompressionBombWarning into an error")
    return ValueError(
        f"Cannot read the {kind} file {name}: it has {pixels} pixels, {over} (a guard against "
        f"decompression bombs). If you trust the file, raise the limit before reading it: "
        f"`PIL.Image.MAX_IMAGE_PIXELS = {pixels if match else 'None'}` (None turns the check off)."
    )


def _open(path, kind):
    """A `PIL.Image` of `path` with its header read (not decoded); refusals name the file."""
    Image = pil_image()
    path = Path(path)
    _check_file(path, kind)
    name = _name(path)
    try:
        image = Image.open(path)
    except PermissionError:
        raise PermissionError(f"Cannot read the {kind} file {name}: permission denied.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _bomb_error(name, kind, error) from error
    except Image.UnidentifiedImageError as error:
        raise ValueError(
            f"Cannot read the {kind} file {name}: unknown or unsupported format (pillow does "
            f"not recognise it as an image; keras-unet reads PNG, JPEG, BMP and TIFF)."
        ) from error
    except _DECODE_ERRORS as error:
        raise ValueError(
            f"Cannot read the {kind} file {name}: {_one_line(error)}. The file is truncated, "
            f"corrupt or not an image."
        ) from error
    limit = Image.MAX_IMAGE_PIXELS
    pixels = max(1, image.size[0]) * max(1, image.size[1])
    if limit and pixels > limit:
        # Pillow's own warning does not say which file; this one does.
        warnings.warn(
            f"The {kind} file {name} has {pixels} pixels, more than PIL.Image.MAX_IMAGE_PIXELS "
            f"({limit}): pillow reads it (it refuses files over twice that) but warns of a "
            f"possible decompression bomb. If you trust the file, raise the limit: "
            f"`PIL.Image.MAX_IMAGE_PIXELS = {pixels}`.",
            Image.DecompressionBombWarning,
            stacklevel=3,
        )
    return image


def _orientation(image, header_only=False):
    """The EXIF orientation (1-8) of an opened image; 1 when absent, invalid or unreadable."""
    try:
        if header_only and image.format == "PNG":
            # PngImageFile.getexif decodes the pixels to look for an eXIf chunk after them.
            exif = pil_image().Image.getexif(image)
        else:
            exif = image.getexif()
        value = exif.get(ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block: viewers ignore it and show the stored pixels
        return 1
    return value if value in range(1, 9) else 1


def _png_exif_after_pixels(path):
    """The eXIf chunk a PNG stores after its pixel data (pillow sees it only on decoding)."""
    with open(path, "rb") as file:
        file.seek(8)  # the PNG signature
        while True:
            head = file.read(8)
            if len(head) < 8:
                return None
            length, chunk = struct.unpack(">I4s", head)
            if chunk == b"eXIf":
                return file.read(length)
            if chunk == b"IEND":
                return None
            file.seek(length + 4, os.SEEK_CUR)  # the data and its CRC


def _header_orientation(image, path):
    """`_orientation` from the header alone, as `open_image` will see it after decoding."""
    if image.format == "PNG" and "exif" not in image.info:
        try:
            exif = _png_exif_after_pixels(path)
        except (OSError, struct.error):
            exif = None
        if exif:
            image.info["exif"] = exif
    return _orientation(image, header_only=True)


def open_image(path, kind="image") -> Any:
    """A decoded, upright `PIL.Image` of `path`; errors name the file and say what is wrong.

    The EXIF orientation, if any, is applied (`PIL.ImageOps.exif_transpose`), so the
    pixels are those a viewer shows; the result carries no orientation tag.

    Args:
        path: the file.
        kind: `"image"` or `"mask"`, for messages.

    Raises:
        FileNotFoundError: `path` does not exist.
        PermissionError: `path` cannot be read.
        IsADirectoryError: `path` is a folder.
        ValueError: an empty, truncated, corrupt or unknown-format file, or one over
            pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`).

    Example:
    ```python
    open_image("data/nuclei/masks/a.png", "mask").mode   # "L"
    ```
    """
    image = _open(path, kind)
    name = _name(path)
    Image = pil_image()
    try:
        image.load()  # decodes now, so a truncated file fails here, named
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        image.close()
        raise _bomb_error(name, kind, error) from error
    except _DECODE_ERRORS as error:
        image.close()
        raise ValueError(
            f"Cannot read the {kind} file {name}: {_one_line(error)}. The file is truncated, "
            f"corrupt or not an image."
        ) from error
    # Pillow itself applies a TIFF's orientation when decoding it (and drops the tag).
    if _orientation(image) == 1:
        return image
    from PIL import ImageOps

    try:
        upright = ImageOps.exif_transpose(image)
    except Exception as error:  # pillow's EXIF writer raises many types
        raise ValueError(
            f"Cannot read the {kind} file {name}: its EXIF orientation could not be applied "
            f"({_one_line(error)})."
        ) from error
    finally:
        image.close()
    return upright


def exif_orientation(path) -> int:
    """The EXIF orientation tag of an image file (1-8; 1 when absent), from its header.

    2-8 mean a viewer shows the stored pixels flipped and/or rotated; 5-8 rotate by 90
    degrees, so the image is shown with width and height swapped. `read_image` and
    `read_mask` apply it.

    Example:
    ```python
    exif_orientation("photo.jpg")   # 6: stored on its side, shown rotated 90 degrees clockwise
    ```
    """
    with _open(path, "image") as image:
        return _header_orientation(image, path)


def image_size(path, kind="image") -> tuple:
    """Return `(height, width)` of an image file, upright, from its header (no decoding).

    The size is the one `read_image` returns: for EXIF orientations 5-8 the stored width
    and height are swapped.

    Args:
        path: an image or mask file.
        kind: `"image"` or `"mask"`, for messages.

    Example:
    ```python
    height, width = image_size("data/nuclei/images/a.png")
    ```
    """
    with _open(path, kind) as image:
        width, height = image.size
        tags = getattr(image, "tag_v2", None)
        if tags is not None and isinstance(tags.get(256), int) and isinstance(tags.get(257), int):
            # TIFF: pillow may already report the upright size; start from the stored one.
            width, height = tags[256], tags[257]
        orientation = _header_orientation(image, path)
    if orientation in SWAPPING_ORIENTATIONS:
        width, height = height, width
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


def convert_channels(image, channels, path=None) -> np.ndarray:
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


def read_image(path, channels=3) -> np.ndarray:
    """Read an image file as uint8 `(H, W, channels)`, upright (EXIF orientation applied).

    PNG, JPEG, BMP and TIFF, grayscale, RGB or RGBA, 8 or 16 bit (16-bit values keep
    their top 8 bits). The errors are those of `open_image`.

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

