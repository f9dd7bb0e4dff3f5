"""Images and masks on disk -> `tf.data.Dataset` (or a plain numpy iterator).

The meaning of files (pairing, channels, mask encodings, resizing) lives in
`keras_unet.runtime.imageio`; this module checks a data set up-front with it, so that a bad
file is reported by name before training starts, then builds a fast input pipeline.

Element convention (what `keras_unet.losses` and `keras_unet.metrics` expect):

- images: float32 `(B, H, W, channels)` in **[0, 255]** (the model normalises);
- masks: `(B, H, W, 1)` class indices, float32 0/1 for binary models
  (`num_classes=1`), int32 for multi-class; pixels to skip hold `ignore_index`. With
  `sample_weights=True` the elements are `(images, masks, weights)`, weights 0 on ignored
  pixels and 1 elsewhere, and ignored labels set to 0, for Keras' built-in losses.

Pipeline: validate in Python -> decode (`tf.io.decode_png/jpeg` for PNG and JPEG; pillow
through `tf.numpy_function` for BMP, TIFF and all masks) -> resize or pad -> `cache` ->
`shuffle` -> `batch` -> `Augment` (training only) -> `prefetch(AUTOTUNE)`. After the
first epoch only augmentation runs per step.

Example:
```python
from keras_unet.data import Augment, load_dataset
from keras_unet.datasets import nuclei_path

train, val = load_dataset(nuclei_path(), image_size=(128, 128), channels=1,
                          validation_split=0.2, augment=Augment(seed=0), seed=0)
model.fit(train, validation_data=val, epochs=10)
```
"""

import hashlib
import math
import os
import random
from pathlib import Path

import keras
import numpy as np

from keras_unet.runtime import imageio

__all__ = ["Augment", "check_pairs", "iterate_batches", "load_dataset", "split_pairs"]

_TF_DECODED = (".png", ".jpg", ".jpeg")


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


def _check_image_size(image_size):
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
            or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in image_size)):
        raise ValueError(
            f"`image_size` must be (height, width) of positive integers. Received: image_size={image_size!r}"
        )
    return tuple(image_size)


def _check_common(channels, num_classes, mask_encoding, batch_size, resize_mode):
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


def _as_pairs(data, argument="data"):
    """A folder or a list of (image, mask) paths -> list of `(Path, Path)`."""
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
    check_pairs(imageio.list_pairs("data/nuclei"), num_classes=1)
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
        if raw.shape[:2] != (height, width):
            raise ValueError(
                f"The mask '{mask_path}' is {raw.shape[1]}x{raw.shape[0]} (WxH) but its image "
                f"'{image_path}' is {width}x{height}: a mask must have its image's size."
            )
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
    train_pairs, val_pairs = split_pairs(pairs, 0.2, seed=0)
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


class Augment:
    """Random flips, rotation, zoom, brightness and contrast applied alike to images and
    masks, built from Keras' preprocessing layers.

    Keras' image preprocessing layers take `{"images": ..., "segmentation_masks": ...}` and
    apply the same random transform to both, resampling masks with nearest neighbour
    (no new class values). Brightness and contrast change images only. Points moved in from
    outside the image are filled by reflection, in image and mask alike.

    Works inside `tf.data` (on any Keras backend: the layers switch to TensorFlow ops
    there) and eagerly on numpy batches. With a `seed` the sequence of transforms is
    reproducible.

    Args:
        flip: `"horizontal"`, `"vertical"`, `"horizontal_and_vertical"` or None.
        rotation: maximum rotation as a fraction of a full turn (0.05 = 18 degrees); 0 off.
        zoom: maximum zoom in or out as a fraction (0.1 = 10%); 0 off.
        brightness: maximum brightness change as a fraction of the [0, 255] range; 0 off.
        contrast: maximum contrast change factor; 0 off.
        seed: integer seed, or None.

    Call arguments:
        images: float32 `(B, H, W, C)` in [0, 255].
        masks: float32 `(B, H, W, 1)` class indices.

    Returns `(images, masks)`, both float32; masks still hold only the input's values.

    Example:
    ```python
    augment = Augment(flip="horizontal_and_vertical", rotation=0.05, seed=0)
    images, masks = augment(images, masks.astype("float32"))
    ```
    """

    def __init__(self, flip="horizontal_and_vertical", rotation=0.05, zoom=0.1,
                 brightness=0.1, contrast=0.1, seed=None):
        if flip not in (None, "horizontal", "vertical", "horizontal_and_vertical"):
            raise ValueError(
                "`flip` must be 'horizontal', 'vertical', 'horizontal_and_vertical' or None. "
                f"Received: flip={flip!r}"
            )
        for name, value in (("rotation", rotation), ("zoom", zoom),
                            ("brightness", brightness), ("contrast", contrast)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"`{name}` must be a number in [0, 1). Received: {name}={value!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an integer or None. Received: seed={seed!r}")
        self.flip = flip
        self.rotation = rotation
        self.zoom = zoom
        self.brightness = brightness
        self.contrast = contrast
        self.seed = seed

        def layer_seed(offset):
            # Each layer draws from its own stream, so changing one factor does not
            # change the transforms the others pick.
            return None if seed is None else seed * 10 + offset

        self.layers = []
        if flip:
            self.layers.append(keras.layers.RandomFlip(flip, seed=layer_seed(1)))
        if rotation:
            self.layers.append(keras.layers.RandomRotation(rotation, fill_mode="reflect",
                                                           seed=layer_seed(2)))
        if zoom:
            self.layers.append(keras.layers.RandomZoom(zoom, fill_mode="reflect",
                                                       seed=layer_seed(3)))
        if brightness:
            self.layers.append(keras.layers.RandomBrightness(brightness, value_range=(0, 255),
                                                             seed=layer_seed(4)))
        if contrast:
            self.layers.append(keras.layers.RandomContrast(contrast, value_range=(0, 255),
                                                           seed=layer_seed(5)))

    def __call__(self, images, masks):
        data = {"images": images, "segmentation_masks": masks}
        for layer in self.layers:
            data = layer(data, training=True)
        return data["images"], data["segmentation_masks"]

    def get_config(self):
        """The constructor arguments.

        Example:
        ```python
        Augment(**Augment(seed=1).get_config())
        ```
        """
        return {"flip": self.flip, "rotation": self.rotation, "zoom": self.zoom,
                "brightness": self.brightness, "contrast": self.contrast, "seed": self.seed}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"Augment({args})"


def _resolve_augment(augment, seed):
    if augment is True:
        return Augment(seed=seed)
    if augment in (False, None):
        return None
    if callable(augment):
        return augment
    raise ValueError(f"`augment` must be a bool or an `Augment` (or callable). Received: augment={augment!r}")


def _mask_dtype(num_classes):
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
    use_tf_decode = all(p[0].suffix.lower() in _TF_DECODED for p in pairs)

    def read_image_py(path):
        image = imageio.read_image(path.decode(), channels)
        return imageio.resize_image(image, image_size, resize_mode).astype(np.float32)

    def read_mask_py(path):
        raw = imageio.read_mask(path.decode())
        mask = imageio.decode_mask(raw, mask_encoding, num_classes, ignore_index,
                                   path=path.decode())
        return imageio.resize_mask(mask, image_size, resize_mode, pad_value).astype(np.int32)

    def load(image_path, mask_path):
        if use_tf_decode:
            # Decode to 3 (or 4) channels and take the luma ourselves, so grayscale
            # images read the same here as in imageio.read_image (ITU-R 601-2).
            image = tf.io.decode_image(tf.io.read_file(image_path), channels=4 if channels == 4 else 3,
                                       dtype=tf.uint8, expand_animations=False)
            image = tf.cast(image, tf.float32)
            if channels == 1:
                image = tf.round(tf.tensordot(image, tf.constant([0.299, 0.587, 0.114]), 1)[..., None])
            if resize_mode == "resize":
                image = tf.image.resize(image, image_size, method="bilinear", antialias=True)
            else:
                image = tf.image.resize_with_crop_or_pad(image, height, width)
        else:
            image = tf.numpy_function(read_image_py, [image_path], tf.float32)
        image = tf.ensure_shape(image, (height, width, channels))
        mask = tf.numpy_function(read_mask_py, [mask_path], tf.int32)
        mask = tf.ensure_shape(mask, (height, width))[..., None]
        return image, mask

    paths = tf.data.Dataset.from_tensor_slices(
        ([str(p[0]) for p in pairs], [str(p[1]) for p in pairs])
    )
    dataset = paths.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        dataset = dataset.cache(_cache_file(cache, pairs, image_size, channels, num_classes,
                                            mask_encoding, ignore_index, resize_mode))
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
    mask_dtype = _mask_dtype(num_classes)

    def finish(images, masks):
        if not sample_weights:
            return images, tf.cast(masks, mask_dtype)
        if ignore_index is None:
            weights = tf.ones(tf.shape(masks)[:-1], tf.float32)
        else:
            keep = tf.not_equal(masks, ignore_index)
            weights = tf.cast(keep[..., 0], tf.float32)
            masks = tf.where(keep, masks, tf.zeros_like(masks))
        return images, tf.cast(masks, mask_dtype), weights

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
        ValueError / FileNotFoundError naming the file: a mask without image or the other
        way round, an unreadable or truncated image, a mask of another size than its image,
        mask values that fit no encoding or exceed `num_classes`, an empty folder.

    Example:
    ```python
    train, val = load_dataset("data/camvid/train", image_size=(352, 480), num_classes=11,
                              mask_encoding="index", ignore_index=11,
                              validation_data="data/camvid/val", augment=True, seed=0)
    ```
    """
    image_size = _check_image_size(image_size)
    _check_common(channels, num_classes, mask_encoding, batch_size, resize_mode)
    if validation_split is not None and validation_data is not None:
        raise ValueError(
            "Pass either `validation_split` or `validation_data`, not both. "
            f"Received: validation_split={validation_split!r}, validation_data={validation_data!r}"
        )
    augment = _resolve_augment(augment, seed)
    checks = dict(num_classes=num_classes, mask_encoding=mask_encoding, ignore_index=ignore_index,
                  check_images=check_images)
    train_pairs = check_pairs(_as_pairs(data), **checks)
    val_pairs = None
    if validation_split is not None:
        train_pairs, val_pairs = split_pairs(train_pairs, validation_split, seed)
    elif validation_data is not None:
        val_pairs = check_pairs(_as_pairs(validation_data, "validation_data"), **checks)
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
    for images, masks in iterate_batches(nuclei_path(), channels=1, batch_size=16):
        loss = train_step(images, masks)
    ```
    """
    image_size = _check_image_size(image_size)
    _check_common(channels, num_classes, mask_encoding, batch_size, resize_mode)
    pairs = _as_pairs(data)
    if check:
        pairs = check_pairs(pairs, num_classes, mask_encoding, ignore_index, check_images=False)
    images, masks = imageio.load_dataset_arrays(
        pairs, image_size, channels, num_classes, mask_encoding, ignore_index, resize_mode
    )
    images = images.astype(np.float32)
    masks = masks[..., None].astype(_mask_dtype(num_classes))
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
                batch_masks = batch_masks.astype(_mask_dtype(num_classes))
            yield batch_images, batch_masks
        epoch += 1


def steps_per_epoch(num_pairs, batch_size, drop_remainder=False):
    """Number of batches an epoch of `num_pairs` gives.

    Example:
    ```python
    steps_per_epoch(160, 8)   # 20
    ```
    """
    return num_pairs // batch_size if drop_remainder else math.ceil(num_pairs / batch_size)
