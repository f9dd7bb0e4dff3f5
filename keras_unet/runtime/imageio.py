"""Read segmentation images and masks with numpy and pillow only (no TensorFlow).

This module is the one definition of "what an image file and a mask file mean" in
keras-unet: the `tf.data` pipeline in `keras_unet.data`, the evaluation code and the
benchmark on an edge device all go through it.

Layout on disk: `DIR/images/<stem>.<png|jpg|jpeg|bmp|tif|tiff>` and
`DIR/masks/<stem>.png` (a mask may also be `.bmp`, `.tif` or `.tiff`; never JPEG, whose
compression invents new values).

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

Example:
```python
from keras_unet.runtime import imageio

pairs = imageio.list_pairs("data/nuclei")            # [(image_path, mask_path), ...]
image = imageio.read_image(pairs[0][0], channels=3)   # uint8 (H, W, 3)
mask = imageio.decode_mask(imageio.read_mask(pairs[0][1]), "binary", path=pairs[0][1])
images, masks = imageio.load_dataset_arrays("data/nuclei", size=(128, 128), channels=3)
```
"""

import os
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")
MASK_ENCODINGS = ("auto", "binary", "index", "trimap")
RESIZE_MODES = ("resize", "pad")


def _pil():
    try:
        from PIL import Image
    except ImportError as error:  # pragma: no cover - pillow is a core dependency
        raise ImportError(
            "Reading images needs pillow: `pip install pillow`."
        ) from error
    return Image


def _files(folder, extensions):
    return sorted(
        p for p in Path(folder).iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
    )


def _by_stem(files, kind, folder):
    stems = {}
    for path in files:
        if path.stem in stems:
            raise ValueError(
                f"Two {kind} files share the stem '{path.stem}' in '{folder}': "
                f"'{stems[path.stem].name}' and '{path.name}'. Keep one of them."
            )
        stems[path.stem] = path
    return stems


def list_images(folder):
    """List the image files of a folder, sorted by name.

    Args:
        folder: a folder holding `.png`, `.jpg`, `.jpeg`, `.bmp`, `.tif` or `.tiff` files.

    Returns:
        A list of `Path`.

    Example:
    ```python
    paths = list_images("data/nuclei/images")
    ```
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"The image folder does not exist. Received: folder='{folder}'")
    files = _files(folder, IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(
            f"The folder '{folder}' holds no image ({', '.join(IMAGE_EXTENSIONS)}). "
            f"Received: folder='{folder}'"
        )
    return files


def list_pairs(data_dir, images_subdir="images", masks_subdir="masks"):
    """Pair `DIR/images/<stem>.*` with `DIR/masks/<stem>.*`.

    Every image needs a mask and every mask an image: a file without its partner is an
    error naming it, so a half-copied data set is noticed before training.

    Args:
        data_dir: the folder holding `images/` and `masks/`.
        images_subdir: name of the image folder inside `data_dir`.
        masks_subdir: name of the mask folder inside `data_dir`.

    Returns:
        A list of `(image_path, mask_path)` tuples of `Path`, sorted by stem.

    Example:
    ```python
    pairs = list_pairs("data/nuclei")
    ```
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"The data folder does not exist. Received: data_dir='{data_dir}'")
    image_dir, mask_dir = data_dir / images_subdir, data_dir / masks_subdir
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"Expected the folders '{image_dir}' and '{mask_dir}' "
                f"(DIR/images/<stem>.png|jpg|... and DIR/masks/<stem>.png); '{folder}' is "
                f"missing. Received: data_dir='{data_dir}'"
            )
    images = _by_stem(_files(image_dir, IMAGE_EXTENSIONS), "image", image_dir)
    masks = _by_stem(_files(mask_dir, MASK_EXTENSIONS), "mask", mask_dir)
    if not images and not masks:
        raise ValueError(
            f"The data folder '{data_dir}' is empty: no image in '{image_dir}' "
            f"({', '.join(IMAGE_EXTENSIONS)}) and no mask in '{mask_dir}' "
            f"({', '.join(MASK_EXTENSIONS)}). Received: data_dir='{data_dir}'"
        )
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_masks:
        raise ValueError(
            f"{len(lonely_masks)} mask(s) have no matching image in '{image_dir}', e.g. "
            f"'{masks[lonely_masks[0]]}'. Add the image or remove the mask."
        )
    lonely_images = sorted(set(images) - set(masks))
    if lonely_images:
        raise ValueError(
            f"{len(lonely_images)} image(s) have no matching mask in '{mask_dir}', e.g. "
            f"'{images[lonely_images[0]]}' (expected '{mask_dir / lonely_images[0]}.png')."
        )
    return [(images[stem], masks[stem]) for stem in sorted(images)]


def _open(path, kind):
    Image = _pil()
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
    Image = _pil()
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
    image = _open(path, "image")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "CMYK" or image.mode.startswith("YCbCr") or image.mode == "LAB":
        image = image.convert("RGB")
    elif image.mode == "1":
        image = image.convert("L")
    array = _to_uint8(np.asarray(image))
    return convert_channels(array, channels, path=path)


def read_mask(path):
    """Read a mask file's raw values as an integer array `(H, W)`.

    Palette PNGs give their palette indices (the usual way class-index masks are stored);
    1-bit images give 0/1; an RGB file whose three channels are equal is read as
    grayscale. A colour-coded RGB mask is an error: convert it to class indices first.

    Args:
        path: the mask file.

    Returns:
        uint8 array, or int32 for 16/32-bit masks.

    Example:
    ```python
    raw = read_mask("data/nuclei/masks/a.png")   # values 0 and 255
    ```
    """
    image = _open(path, "mask")
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


def mask_values(raw):
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


def resolve_encoding(values, encoding="auto", num_classes=None, ignore_index=None):
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


def decode_mask(raw, encoding="auto", num_classes=None, ignore_index=None, path=None):
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


def _check_size(size):
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in size)):
        raise ValueError(f"`size` must be (height, width) of positive integers. Received: size={size!r}")
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


def resize_image(image, size, mode="resize"):
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
    size = _check_size(size)
    _check_mode(mode)
    image = np.asarray(image)
    if image.shape[:2] == size:
        return image
    if mode == "pad":
        return _pad_or_crop(image, size, 0)
    Image = _pil()
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


def resize_mask(mask, size, mode="resize", pad_value=0):
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
    size = _check_size(size)
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


def read_pair(image_path, mask_path, channels=3, mask_encoding="auto", num_classes=None,
              ignore_index=None):
    """Read one image and its decoded mask at their own size, checking the sizes agree.

    Args:
        image_path: the image file.
        mask_path: the mask file.
        channels: channels of the returned image (1, 3, 4 or None).
        mask_encoding: see `decode_mask`.
        num_classes: see `decode_mask`.
        ignore_index: see `decode_mask`.

    Returns:
        `(image uint8 (H, W, C), mask int32 (H, W))`.

    Example:
    ```python
    image, mask = read_pair("d/images/a.png", "d/masks/a.png", channels=1)
    ```
    """
    image = read_image(image_path, channels)
    raw = read_mask(mask_path)
    if raw.shape[:2] != image.shape[:2]:
        raise ValueError(
            f"The mask '{mask_path}' is {raw.shape[1]}x{raw.shape[0]} (WxH) but its image "
            f"'{image_path}' is {image.shape[1]}x{image.shape[0]}: a mask must have its "
            f"image's size."
        )
    mask = decode_mask(raw, mask_encoding, num_classes, ignore_index, path=mask_path)
    return image, mask


def load_dataset_arrays(data_dir_or_pairs, size=None, channels=3, num_classes=None,
                        mask_encoding="auto", ignore_index=None, mode="resize"):
    """Load a whole data set into memory as arrays.

    Args:
        data_dir_or_pairs: a folder with `images/` and `masks/`, or a list of
            `(image_path, mask_path)`.
        size: `(height, width)` every pair is resized (or padded) to; None keeps the native
            size, which then must be the same for all images.
        channels: image channels (1, 3, 4 or None).
        num_classes: see `decode_mask`.
        mask_encoding: see `decode_mask`.
        ignore_index: see `decode_mask`; also the value of padded mask pixels.
        mode: `"resize"` or `"pad"`.

    Returns:
        `(images uint8 (N, H, W, C), masks int32 (N, H, W))`.

    Example:
    ```python
    images, masks = load_dataset_arrays("data/nuclei", size=(128, 128), channels=3)
    ```
    """
    pairs = (list_pairs(data_dir_or_pairs) if isinstance(data_dir_or_pairs, (str, os.PathLike))
             else [(Path(i), Path(m)) for i, m in data_dir_or_pairs])
    if not pairs:
        raise ValueError(f"No (image, mask) pairs given. Received: data_dir_or_pairs={data_dir_or_pairs!r}")
    if size is not None:
        size = _check_size(size)
    pad_value = ignore_index if ignore_index is not None else 0
    images, masks = [], []
    for image_path, mask_path in pairs:
        image, mask = read_pair(image_path, mask_path, channels, mask_encoding, num_classes,
                                ignore_index)
        if size is None and images and image.shape[:2] != images[0].shape[:2]:
            raise ValueError(
                f"The image '{image_path}' is {image.shape[1]}x{image.shape[0]} (WxH) but the "
                f"first one is {images[0].shape[1]}x{images[0].shape[0]}: pass `size` to "
                f"resize (or pad) all images to one size."
            )
        target = size or image.shape[:2]
        images.append(resize_image(image, target, mode))
        masks.append(resize_mask(mask, target, mode, pad_value))
    return np.stack(images), np.stack(masks)
