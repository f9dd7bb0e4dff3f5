"""Real images for post-training quantization and for verifying an export.

Static int8 quantization picks every activation's range from the images it is shown, so
those images must look like what the model will see: a range calibrated on random noise
clips or wastes the int8 grid on real images. This module therefore only reads real
images (a folder, a list of files, or an array the caller loaded), listed and decoded by
`keras_unet.runtime` (`listing.list_images`, `images.read_image`), the same code the data
pipeline and the benchmark use, and rejects arrays that look like noise.

Example:
```python
from keras_unet.export.calibration import load_images

images = load_images("data/val", size=(128, 128), channels=3, limit=100)
images.shape  # (100, 128, 128, 3), float32 in [0, 255]
```
"""

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from keras_unet.runtime.images import read_image
from keras_unet.runtime.listing import IMAGE_EXTENSIONS, list_images
from keras_unet.runtime.resizing import resize_image

# Neighbouring pixels of natural or microscopy images correlate strongly (> 0.5);
# uniform or Gaussian noise gives ~0.
NOISE_CORRELATION = 0.2


def shipped_sample_dir() -> Optional[Path]:
    """The folder of the CC0 nuclei subset shipped inside `keras_unet`, or None.

    Example:
    ```python
    shipped_sample_dir()  # Path('.../keras_unet/datasets/nuclei')
    ```
    """
    from keras_unet.datasets import nuclei_path

    try:
        return nuclei_path()
    except FileNotFoundError:
        return None


def list_image_files(folder, name="calibration_data") -> list:
    """Image files of a dataset folder (`DIR/images/*`) or of a plain folder of images.

    The listing is `keras_unet.runtime.listing.list_images` (sorted, hidden files
    skipped); the errors here name the argument.

    Args:
        folder: a folder path.
        name: the argument name used in errors.

    Example:
    ```python
    list_image_files("data/val")  # [Path('data/val/images/a.png'), ...]
    ```
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(
            f"`{name}` folder not found. Received: {name}='{folder}'"
        )
    if not folder.is_dir():
        raise ValueError(
            f"`{name}` must be a folder of images (or DIR/images/...), a list of image "
            f"paths or an array. Received: {name}='{folder}'"
        )
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    try:
        return list_images(image_dir)
    except ValueError as error:  # list_images' only ValueError: no image in the folder
        raise ValueError(
            f"`{name}` holds no images ({', '.join(IMAGE_EXTENSIONS)}) in '{image_dir}'. "
            f"Point it at real images like those the model will segment. Received: {name}='{folder}'"
        ) from error


def _pick(count, limit, seed):
    if limit is None or count <= limit:
        return np.arange(count)
    # A seeded subset, in file order, spreads over the whole folder (not just the
    # first files, often one acquisition) and stays reproducible.
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def _fit(image, size):
    if size is None or tuple(image.shape[:2]) == tuple(size):
        return image
    return resize_image(image, size)


def _read_files(paths, size, channels, progress, desc):
    # read_image raises FileNotFoundError / ValueError naming a missing or broken file.
    return [_fit(read_image(path, channels), size)
            for path in _progress(paths, len(paths), desc, progress)]


def _from_array(array, size, channels, name):
    array = np.asarray(array)
    if array.ndim == 3 and channels == 1:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] != channels:
        raise ValueError(
            f"`{name}` as an array must have shape (N, H, W, {channels}). "
            f"Received: {name}.shape={array.shape}"
        )
    if len(array) == 0:
        raise ValueError(f"`{name}` is an empty array. Received: {name}.shape={array.shape}")
    if size is not None and tuple(array.shape[1:3]) != tuple(size):
        array = np.stack([_fit(image, size) for image in array])
    return array


def looks_like_noise(images) -> bool:
    """True when neighbouring pixels barely correlate, as in random noise.

    Args:
        images: `(N, H, W, C)` array.

    Example:
    ```python
    looks_like_noise(np.random.uniform(0, 255, (4, 32, 32, 3)))  # True
    ```
    """
    x = np.asarray(images, dtype="float64")
    if x.shape[2] < 2:
        return False
    left, right = x[:, :, :-1].ravel(), x[:, :, 1:].ravel()
    if left.std() == 0 or right.std() == 0:
        return False
    return float(np.corrcoef(left, right)[0, 1]) < NOISE_CORRELATION


def load_images(source, size=None, channels=3, limit=None, seed=0, name="calibration_data",
                progress=True) -> np.ndarray:
    """Load real images as a float32 `(N, H, W, C)` array in [0, 255].

    Args:
        source: a folder (`DIR/images/*` or images directly in `DIR`), a list of image
            paths, or an array `(N, H, W, C)` of images in [0, 255].
        size: `(height, width)` to resize to, or None to keep the size (all images must
            then share one size).
        channels: channels the model takes (1 or 3); files are converted on reading.
        limit: at most this many images (a seeded random subset of a larger set).
        seed: seed of that subset.
        name: the argument name used in error messages.
        progress: show a progress bar while reading files.

    Example:
    ```python
    images = load_images(["a.png", "b.png"], size=(64, 64))
    ```
    """
    if source is None:
        raise ValueError(f"`{name}` is required here. Received: {name}=None")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ValueError(f"The number of images must be a positive integer. Received: {limit!r}")
    if isinstance(source, (str, os.PathLike)):
        files = list_image_files(source, name)
        files = [files[i] for i in _pick(len(files), limit, seed)]
        images = _read_files(files, size, channels, progress, f"reading {name}")
    elif isinstance(source, np.ndarray):
        array = _from_array(source, size, channels, name)
        images = list(array[_pick(len(array), limit, seed)])
    elif isinstance(source, (list, tuple)):
        if not source:
            raise ValueError(f"`{name}` is an empty list. Received: {name}=[]")
        paths = [source[i] for i in _pick(len(source), limit, seed)]
        images = _read_files(paths, size, channels, progress, f"reading {name}")
    else:
        raise ValueError(
            f"`{name}` must be a folder, a list of image paths or an array of images. "
            f"Received: {name} of type {type(source).__name__}"
        )
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise ValueError(
            f"`{name}` images differ in size {sorted(shapes)[:3]}; pass a size to resize "
            f"them to. Received: size=None"
        )
    batch = np.stack(images).astype("float32")
    if batch.ndim == 3:
        batch = batch[..., None]
    if batch.min() < 0 or batch.max() > 255:
        raise ValueError(
            f"`{name}` images must be in [0, 255] (the model normalises them itself). "
            f"Received: values in [{batch.min():.3g}, {batch.max():.3g}]"
        )
    if batch.max() <= 1.0:
        raise ValueError(
            f"`{name}` images look scaled to [0, 1]; the model takes [0, 255]. "
            f"Received: values in [{batch.min():.3g}, {batch.max():.3g}]"
        )
    if looks_like_noise(batch):
        raise ValueError(
            f"`{name}` looks like random noise (neighbouring pixels do not correlate). "
            "Quantization ranges calibrated on noise do not fit real images: pass real "
            f"images like those the model will segment. Received: {name} of shape {batch.shape}"
        )
    return batch


def require_calibration(calibration_data, quantize, fmt) -> None:
    """Raise a `ValueError` explaining why static int8 needs real calibration images."""
    if calibration_data is None:
        option = "--calibration-data DIR" if fmt == "cli" else "calibration_data"
        raise ValueError(
            f"quantize='{quantize}' needs real calibration images: full-integer "
            "quantization fixes every activation's range from the images it sees, and "
            "ranges taken from random noise clip real images. Pass "
            f"{option} (a folder of images like those the model will segment, a list of "
            "paths or an array). Received: calibration_data=None"
        )


def pin_input_range(images) -> np.ndarray:
    """Copy of `images` whose first image spans exactly [0, 255].

    The converter sets the int8/uint8 input scale from the smallest and largest pixel it
    sees during calibration. Images that never reach 0 or 255 (dark microscopy, for
    instance) would give a scale != 1 and clip brighter images later. Setting one pixel
    of the first image to 0 and one to 255 fixes the input range to the model's
    documented [0, 255] (uint8 I/O then passes raw pixels through: scale 1, zero point 0)
    and barely moves any other range.
    """
    pinned = np.array(images, dtype="float32", copy=True)
    pinned[0, 0, 0, :] = 0.0
    pinned[0, -1, -1, :] = 255.0
    return pinned


def tflite_representative_dataset(images, progress=True) -> Any:
    """A `representative_dataset` callable for `tf.lite.TFLiteConverter`, one image a step.

    Example:
    ```python
    converter.representative_dataset = tflite_representative_dataset(images)
    ```
    """

    def generator():
        for image in _progress(images, len(images), "calibrating", progress):
            yield [image[None].astype("float32")]

    return generator


def onnx_calibration_reader(images, input_name, batch_size=1, progress=True) -> Any:
    """An `onnxruntime.quantization.CalibrationDataReader` over `images`.

    Example:
    ```python
    reader = onnx_calibration_reader(images, "image")
    ```
    """
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self):
            starts = range(0, len(images), batch_size)
            self._batches = iter(
                _progress(starts, len(starts), "calibrating", progress)
            )

        def get_next(self):
            start = next(self._batches, None)
            if start is None:
                return None
            return {input_name: images[start:start + batch_size].astype("float32")}

    return _Reader()
