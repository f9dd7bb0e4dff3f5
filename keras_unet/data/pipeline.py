"""Images and masks on disk -> a `tf.data.Dataset` of batches, read with the runtime's pillow reader.

Pipeline: check every pair in Python (`keras_unet.data.pairs`) -> read, decode and resize
each pair with `keras_unet.runtime.imageio` inside `tf.numpy_function` -> `cache` ->
`shuffle` -> `batch` -> `Augment` (training only) -> `prefetch(AUTOTUNE)`. After the first
epoch only augmentation runs per step.

There is one image decoder in keras-unet (pillow, in `keras_unet.runtime.images`): the
pipeline's pixels are exactly those of `imageio.load_dataset_arrays`, of export
calibration, of the runners and of the benchmark. `map` keeps the order of its elements
(tf.data's default), so with a seed the batches are the same on every run.

Example:
```python
from keras_unet.data import load_dataset
from keras_unet.datasets import nuclei_path

train, val = load_dataset(nuclei_path(), image_size=(128, 128), channels=1,
                          validation_split=0.2, seed=0)
```
"""

import hashlib
import os
from pathlib import Path

import numpy as np

from keras_unet.data.augment import resolve_augment
from keras_unet.data.pairs import as_pairs, check_common, check_image_size, check_pairs, split_pairs
from keras_unet.runtime import imageio


def _tf():
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            "`keras_unet.data.load_dataset` builds a tf.data pipeline and needs TensorFlow: "
            "`pip install tensorflow-cpu` (or use `iterate_batches`, which needs only numpy "
            "and pillow)."
        ) from error
    return tf


def mask_dtype(num_classes):
    """The dtype of mask batches: float32 0/1 for binary models (`num_classes=1`), else int32.

    Example:
    ```python
    mask_dtype(1), mask_dtype(11)   # ("float32", "int32")
    ```
    """
    return "float32" if num_classes == 1 else "int32"


def _cache_file(cache, pairs, *settings):
    """The `tf.data` cache argument: "" (memory), or a file name tied to data and settings.

    tf.data reuses an existing cache file without checking what made it, so a file cache
    made with other files or another image size must never be picked up again.
    """
    if cache is True:
        return ""
    key = repr(([(str(i), str(m)) for i, m in pairs], settings)).encode()
    digest = hashlib.sha256(key).hexdigest()[:16]
    return str(Path(cache) / f"keras_unet_{digest}")


def _build(pairs, image_size, channels, num_classes, mask_encoding, ignore_index, batch_size,
           augment, shuffle, seed, cache, resize_mode, drop_remainder, sample_weights):
    tf = _tf()
    height, width = image_size
    pad_value = ignore_index if ignore_index is not None else 0

    def read_pair(image_path, mask_path):
        image, mask = imageio.read_pair(image_path.decode(), mask_path.decode(), channels,
                                        mask_encoding, num_classes, ignore_index)
        image = imageio.resize_image(image, image_size, resize_mode).astype(np.float32)
        mask = imageio.resize_mask(mask, image_size, resize_mode, pad_value).astype(np.int32)
        return image, mask

    def load(image_path, mask_path):
        # Reading a file is a pure function of its path (the files were checked and are
        # not expected to change), hence stateful=False.
        image, mask = tf.numpy_function(read_pair, [image_path, mask_path], (tf.float32, tf.int32),
                                        stateful=False)
        image = tf.ensure_shape(image, (height, width, channels))
        mask = tf.ensure_shape(mask, (height, width))[..., None]
        return image, mask

    paths = tf.data.Dataset.from_tensor_slices(
        ([str(p[0]) for p in pairs], [str(p[1]) for p in pairs])
    )
    dataset = paths.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        # Names the reader: a file cache of the tf.io decoder, or of the Pillow reader from before
        # images were turned upright by their EXIF orientation, is not reused.
        dataset = dataset.cache(_cache_file(cache, pairs, image_size, channels, num_classes,
                                            mask_encoding, ignore_index, resize_mode, "pillow-exif"))
    if shuffle:
        dataset = dataset.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if augment is not None:
        def run_augment(images, masks):
            images, masks = augment(images, tf.cast(masks, tf.float32))
            # Nearest-neighbour resampling only moves label values; round off float noise.
            return images, tf.cast(tf.round(masks), tf.int32)

        seeded = seed is not None or getattr(augment, "seed", None) is not None
        dataset = dataset.map(run_augment, num_parallel_calls=None if seeded else tf.data.AUTOTUNE)
    dtype = mask_dtype(num_classes)

    def finish(images, masks):
        if not sample_weights:
            return images, tf.cast(masks, dtype)
        if ignore_index is None:
            weights = tf.ones(tf.shape(masks)[:-1], tf.float32)
        else:
            keep = tf.not_equal(masks, ignore_index)
            weights = tf.cast(keep[..., 0], tf.float32)
            masks = tf.where(keep, masks, tf.zeros_like(masks))
        return images, tf.cast(masks, dtype), weights

    dataset = dataset.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def load_dataset(data, image_size=(128, 128), channels=3, num_classes=1, mask_encoding="auto",
                 ignore_index=None, batch_size=8, augment=False, shuffle=True, seed=None,
                 validation_split=None, validation_data=None, cache=True, resize_mode="resize",
                 drop_remainder=False, sample_weights=False, check_images=True):
    """Build a `tf.data.Dataset` of `(images, masks)` batches from images and masks on disk.

    Args:
        data: a folder holding `images/<stem>.<png|jpg|jpeg|bmp|tif|tiff>` and
            `masks/<stem>.png`, or a list of `(image_path, mask_path)`.
        image_size: `(height, width)` every image and mask is brought to.
        channels: 1 (grayscale) or 3 (RGB) (or 4); images are converted.
        num_classes: the model's classes; 1 = binary (sigmoid).
        mask_encoding: `"auto"`, `"binary"`, `"index"` or `"trimap"` (see
            `keras_unet.runtime.imageio`).
        ignore_index: mask value skipped by loss and metrics (e.g. 11 for CamVid's void),
            also given to pixels added by `resize_mode="pad"`.
        batch_size: batch size.
        augment: False, True (a default `Augment(seed=seed)`), or an `Augment` (or any
            callable `(images, masks) -> (images, masks)` on batches). Training set only.
        shuffle: shuffle the training set each epoch (validation is never shuffled).
        seed: seed for the split, the shuffle and the default augmentation. With a seed
            the augmentation step runs one batch at a time, because parallel calls would
            draw the layers' random seeds in a racing order; each batched op still uses
            all cores, and the cost measured in `benchmarks/training.py` is small.
        validation_split: fraction of `data` held out for validation; the function then
            returns `(train, val)`.
        validation_data: a second folder (or list of pairs) for validation; the function
            then returns `(train, val)`. Exclusive with `validation_split`.
        cache: True caches decoded, resized pairs in memory; a folder path caches them in
            files there (named by a hash of the file list and settings, so a cache made for
            other data is never reused); False decodes every epoch.
        resize_mode: `"resize"` (bilinear for images, nearest for masks) or `"pad"` (centre
            pad or crop, padding masks with `ignore_index` or 0).
        drop_remainder: drop the last incomplete batch of the training set.
        sample_weights: yield `(images, masks, weights)` with weight 0 on `ignore_index`
            pixels, for Keras' built-in losses and metrics.
        check_images: decode every image while checking (catches truncated files before
            training); False reads only headers.

    Returns:
        A `tf.data.Dataset`, or `(train, val)` when `validation_split` or
        `validation_data` is given.

    Raises:
        ValueError: (or FileNotFoundError) naming the file or folder: a mask without image
            or the other way round, an unreadable or truncated image, a mask of another size
            than its image, mask values that fit no encoding or exceed `num_classes`, an
            empty folder.

    Example:
    ```python
    from keras_unet.data import load_dataset
    from keras_unet.datasets import nuclei_path

    train, val = load_dataset(nuclei_path(), image_size=(32, 32), channels=1, batch_size=8,
                              validation_split=0.2, augment=True, seed=0)
    images, masks = next(iter(train))   # (8, 32, 32, 1) float32 in [0, 255], (8, 32, 32, 1)
    ```
    """
    image_size = check_image_size(image_size)
    check_common(channels, num_classes, mask_encoding, batch_size, resize_mode)
    if validation_split is not None and validation_data is not None:
        raise ValueError(
            "Pass either `validation_split` or `validation_data`, not both. "
            f"Received: validation_split={validation_split!r}, validation_data={validation_data!r}"
        )
    augment = resolve_augment(augment, seed)
    checks = dict(num_classes=num_classes, mask_encoding=mask_encoding, ignore_index=ignore_index,
                  check_images=check_images)
    train_pairs = check_pairs(as_pairs(data), **checks)
    val_pairs = None
    if validation_split is not None:
        train_pairs, val_pairs = split_pairs(train_pairs, validation_split, seed)
    elif validation_data is not None:
        val_pairs = check_pairs(as_pairs(validation_data, "validation_data"), **checks)
    common = dict(image_size=image_size, channels=channels, num_classes=num_classes,
                  mask_encoding=mask_encoding, ignore_index=ignore_index, batch_size=batch_size,
                  resize_mode=resize_mode, sample_weights=sample_weights)
    if isinstance(cache, (str, os.PathLike)):
        os.makedirs(cache, exist_ok=True)
    elif cache not in (True, False, None):
        raise ValueError(f"`cache` must be True, False or a folder path. Received: cache={cache!r}")
    train = _build(train_pairs, augment=augment, shuffle=shuffle, seed=seed, cache=cache,
                   drop_remainder=drop_remainder, **common)
    if val_pairs is None:
        return train
    val = _build(val_pairs, augment=None, shuffle=False, seed=seed, cache=cache,
                 drop_remainder=False, **common)
    return train, val

