"""Read (image, mask) pairs into arrays: one pair at its own size, or a whole data set.

Example:
```python
from keras_unet.runtime.arrays import load_dataset_arrays, read_pair

image, mask = read_pair("d/images/a.png", "d/masks/a.png", channels=1)
images, masks = load_dataset_arrays("data/nuclei", size=(128, 128), channels=3)
```
"""

import os
from pathlib import Path

import numpy as np

from keras_unet.runtime.images import read_image
from keras_unet.runtime.listing import list_pairs
from keras_unet.runtime.masks import check_mask_size, decode_mask, read_mask
from keras_unet.runtime.resizing import check_size, resize_image, resize_mask


def read_pair(image_path, mask_path, channels=3, mask_encoding="auto", num_classes=None,
              ignore_index=None) -> tuple:
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
    check_mask_size(raw.shape, image.shape, mask_path, image_path)
    mask = decode_mask(raw, mask_encoding, num_classes, ignore_index, path=mask_path)
    return image, mask


def load_dataset_arrays(data_dir_or_pairs, size=None, channels=3, num_classes=None,
                        mask_encoding="auto", ignore_index=None, mode="resize") -> tuple:
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
        size = check_size(size)
    pad_value = ignore_index if ignore_index is not None else 0
    images: list = []
    masks: list = []
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
