"""Check a data set before anything is built: arguments, every file, and the validation split.

Errors name the file: a mask without its image, a truncated image, a mask of another size
than its image, or mask values that fit no encoding are reported before the first epoch.
Numpy and pillow only (through `keras_unet.runtime.imageio`).

Example:
```python
from keras_unet.data.pairs import check_pairs, split_pairs
from keras_unet.runtime import imageio

pairs = check_pairs(imageio.list_pairs("data/nuclei"), num_classes=1)
train_pairs, val_pairs = split_pairs(pairs, 0.2, seed=0)
```
"""

import os
import random
from pathlib import Path

from keras_unet.runtime import imageio


def check_image_size(image_size):
    """`image_size` as a `(height, width)` tuple of positive ints, else a `ValueError`.

    Example:
    ```python
    check_image_size([128, 96])   # (128, 96)
    ```
    """
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
            or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in image_size)):
        raise ValueError(
            f"`image_size` must be (height, width) of positive integers. Received: image_size={image_size!r}"
        )
    return tuple(image_size)


def check_common(channels, num_classes, mask_encoding, batch_size, resize_mode):
    """The arguments `load_dataset` and `iterate_batches` share; a `ValueError` names the bad one.

    Example:
    ```python
    check_common(channels=3, num_classes=1, mask_encoding="auto", batch_size=8, resize_mode="resize")
    ```
    """
    if channels not in (1, 3, 4):
        raise ValueError(f"`channels` must be 1, 3 or 4. Received: channels={channels!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive integer (1 = binary). Received: num_classes={num_classes!r}")
    if mask_encoding not in imageio.MASK_ENCODINGS:
        raise ValueError(
            f"`mask_encoding` must be one of {imageio.MASK_ENCODINGS}. Received: mask_encoding={mask_encoding!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
    if resize_mode not in imageio.RESIZE_MODES:
        raise ValueError(f"`resize_mode` must be one of {imageio.RESIZE_MODES}. Received: resize_mode={resize_mode!r}")


def as_pairs(data, argument="data"):
    """A folder or a list of (image, mask) paths -> list of `(Path, Path)`.

    Example:
    ```python
    as_pairs("data/nuclei")[0]   # (Path('.../images/a.png'), Path('.../masks/a.png'))
    ```
    """
    if isinstance(data, (str, os.PathLike)):
        return imageio.list_pairs(data)
    try:
        pairs = [(Path(image), Path(mask)) for image, mask in data]
    except (TypeError, ValueError):
        raise ValueError(
            f"`{argument}` must be a folder holding images/ and masks/, or a list of "
            f"(image_path, mask_path). Received: {argument}={data!r}"
        ) from None
    if not pairs:
        raise ValueError(f"`{argument}` is an empty list of pairs. Received: {argument}={data!r}")
    return pairs


def check_pairs(pairs, num_classes=1, mask_encoding="auto", ignore_index=None,
                check_images=True):
    """Check every pair before a pipeline is built; errors name the file.

    Checks that files exist and decode (a truncated image fails here, not in the middle
    of an epoch), that each mask has its image's size, and that mask values fit
    `mask_encoding`, `num_classes` and `ignore_index`.

    Args:
        pairs: list of `(image_path, mask_path)`.
        num_classes: the model's classes (1 = binary).
        mask_encoding: see `keras_unet.runtime.imageio`.
        ignore_index: value of pixels to skip, or None.
        check_images: decode every image fully (slower; catches truncated files). False
            reads only the image headers.

    Returns:
        The pairs as `(Path, Path)`.

    Example:
    ```python
    from keras_unet.data import check_pairs
    from keras_unet.datasets import nuclei_path
    from keras_unet.runtime import imageio

    pairs = imageio.list_pairs(nuclei_path())[:8]
    check_pairs(pairs, num_classes=1)   # raises ValueError naming the first bad file
    ```
    """
    checked = []
    for image_path, mask_path in pairs:
        image_path, mask_path = Path(image_path), Path(mask_path)
        if not image_path.is_file():
            raise FileNotFoundError(f"The image file does not exist. Received: path='{image_path}'")
        if check_images:
            height, width = imageio.read_image(image_path, channels=None).shape[:2]
        else:
            height, width = imageio.image_size(image_path)
        raw = imageio.read_mask(mask_path)
        imageio.check_mask_size(raw.shape, (height, width), mask_path, image_path)
        imageio.decode_mask(raw, mask_encoding, num_classes, ignore_index, path=mask_path)
        checked.append((image_path, mask_path))
    return checked


def split_pairs(pairs, validation_split, seed=None):
    """Split pairs into training and validation lists, reproducibly.

    The pairs are sorted by image path and shuffled with `seed` (0 when None, so that the
    same folder always gives the same validation set and a rerun never trains on it).

    Args:
        pairs: list of `(image_path, mask_path)`.
        validation_split: fraction in (0, 1) that goes to validation.
        seed: shuffling seed.

    Returns:
        `(train_pairs, val_pairs)`, both non-empty.

    Example:
    ```python
    from keras_unet.data import split_pairs
    from keras_unet.datasets import nuclei_path
    from keras_unet.runtime import imageio

    pairs = imageio.list_pairs(nuclei_path())
    train_pairs, val_pairs = split_pairs(pairs, 0.2, seed=0)
    len(val_pairs) / len(pairs)   # 0.2
    ```
    """
    if not isinstance(validation_split, (int, float)) or not 0.0 < validation_split < 1.0:
        raise ValueError(
            f"`validation_split` must be a fraction in (0, 1). Received: validation_split={validation_split!r}"
        )
    pairs = sorted(pairs, key=lambda pair: str(pair[0]))
    if len(pairs) < 2:
        raise ValueError(f"Splitting needs at least 2 pairs. Received: {len(pairs)} pair(s)")
    random.Random(0 if seed is None else seed).shuffle(pairs)
    count = min(max(1, round(len(pairs) * validation_split)), len(pairs) - 1)
    return pairs[count:], pairs[:count]

