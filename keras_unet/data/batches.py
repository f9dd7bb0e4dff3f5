"""Numpy batches from images and masks on disk, for any Keras backend (no TensorFlow).

Same files, checks and element convention as `load_dataset`, read with
`keras_unet.runtime.imageio`; pairs are loaded into memory once. Keras is imported only
when an `Augment` runs.

Example:
```python
from keras_unet.data import iterate_batches
from keras_unet.datasets import nuclei_path

for images, masks in iterate_batches(nuclei_path(), channels=1, batch_size=16):
    loss = train_step(images, masks)
```
"""

import math

import numpy as np

from keras_unet.data.pairs import as_pairs, check_common, check_image_size, check_pairs
from keras_unet.data.pipeline import mask_dtype
from keras_unet.runtime import imageio


def iterate_batches(data, image_size=(128, 128), channels=3, num_classes=1,
                    mask_encoding="auto", ignore_index=None, batch_size=8, shuffle=True,
                    seed=None, epochs=1, augment=None, resize_mode="resize", check=True):
    """Yield `(images, masks)` numpy batches; numpy and pillow only (JAX/PyTorch backends).

    Same files, checks and element convention as `load_dataset`, read with
    `keras_unet.runtime.imageio`; pairs are loaded into memory once.

    Args:
        data: a folder with `images/` and `masks/`, or a list of `(image_path, mask_path)`.
        image_size: `(height, width)`.
        channels: 1, 3 or 4.
        num_classes: the model's classes (1 = binary).
        mask_encoding: see `keras_unet.runtime.imageio`.
        ignore_index: mask value to skip.
        batch_size: batch size (the last batch may be smaller).
        shuffle: reshuffle every epoch.
        seed: shuffling seed.
        epochs: number of passes; None repeats forever.
        augment: None, or an `Augment` (run eagerly on the current Keras backend) or any
            callable `(images, masks) -> (images, masks)`.
        resize_mode: `"resize"` or `"pad"`.
        check: run `check_pairs` first (masks decoded twice, but errors come before the
            first batch).

    Yields:
        `(images float32 (B, H, W, C) in [0, 255], masks (B, H, W, 1))`.

    Example:
    ```python
    from keras_unet.data import iterate_batches
    from keras_unet.datasets import nuclei_path

    for images, masks in iterate_batches(nuclei_path(), image_size=(32, 32), channels=1,
                                         batch_size=16):
        images.shape, masks.shape   # (16, 32, 32, 1), (16, 32, 32, 1)
        break
    ```
    """
    image_size = check_image_size(image_size)
    check_common(channels, num_classes, mask_encoding, batch_size, resize_mode)
    pairs = as_pairs(data)
    if check:
        pairs = check_pairs(pairs, num_classes, mask_encoding, ignore_index, check_images=False)
    images, masks = imageio.load_dataset_arrays(
        pairs, image_size, channels, num_classes, mask_encoding, ignore_index, resize_mode
    )
    images = images.astype(np.float32)
    masks = masks[..., None].astype(mask_dtype(num_classes))
    if augment is not None:
        import keras  # the augmentation's tensors come back on the Keras backend
    rng = np.random.default_rng(seed)
    epoch = 0
    while epochs is None or epoch < epochs:
        order = rng.permutation(len(images)) if shuffle else np.arange(len(images))
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            batch_images, batch_masks = images[index], masks[index]
            if augment is not None:
                batch_images, batch_masks = augment(batch_images, batch_masks.astype(np.float32))
                batch_images = np.asarray(keras.ops.convert_to_numpy(batch_images), np.float32)
                batch_masks = np.round(keras.ops.convert_to_numpy(batch_masks))
                batch_masks = batch_masks.astype(mask_dtype(num_classes))
            yield batch_images, batch_masks
        epoch += 1


def steps_per_epoch(num_pairs, batch_size, drop_remainder=False):
    """Number of batches an epoch of `num_pairs` gives.

    Example:
    ```python
    from keras_unet.data import steps_per_epoch

    steps_per_epoch(160, 8)                       # 20
    steps_per_epoch(161, 8)                       # 21
    steps_per_epoch(161, 8, drop_remainder=True)  # 20
    ```
    """
    return num_pairs // batch_size if drop_remainder else math.ceil(num_pairs / batch_size)
