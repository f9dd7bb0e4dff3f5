"""Honest int8 verification: the images an export is verified on are not the images it was
calibrated on.

Calibration fits every activation range to its images, so agreement measured on those same
images flatters the file. Without `verification_data`, an int8 export therefore holds out
part of the calibration set, seeded, and calibrates on the rest:

- at least `MIN_HELD_OUT` (32) images are held out where the set has twice that many;
- so are the images calibration would not read anyway (beyond `calibration_size`), up to
  half the set: a larger verification sample costs calibration nothing, and 32 images
  alone can read a file above the target that other images put below it;
- a smaller set is halved; below `MIN_SPLIT` (8) images nothing is held out, and the
  verification says it reused the calibration images.

When the calibration folder holds masks (`DIR/images` + `DIR/masks`), the held-out masks come
along, so verification can also report the IoU each model scores against the truth.

Why: see docs/notes/2026-11-28-int8-matrix-history.md.

Example:
```python
from keras_unet.export.holdout import split_calibration

split = split_calibration("data/train", held_out=32)
split.calibration, split.verification, split.description
```
"""

import dataclasses
import os
import random

import numpy as np

MIN_HELD_OUT = 32
MIN_SPLIT = 8


@dataclasses.dataclass
class Split:
    """Calibration and verification sources after holding images out.

    Args:
        calibration: what `calibration.load_images` takes for calibration.
        verification: what it takes for verification, or None (reuse calibration).
        masks: mask paths of the verification images, in their order, or None.
        description: one line for reports: which images and how many.
    """

    calibration: object
    verification: object
    masks: object
    description: str


def _held_out_count(total, wanted, calibration_size=None):
    if total < MIN_SPLIT:
        return 0
    unread = 0 if calibration_size is None else total - calibration_size
    return max(1, min(max(wanted, MIN_HELD_OUT, unread), total // 2))


def _folder_items(folder):
    """Images of a folder, with their masks when the folder is a labelled set."""
    from keras_unet.runtime import imageio

    folder = os.fspath(folder)
    if os.path.isdir(os.path.join(folder, "images")) and os.path.isdir(os.path.join(folder, "masks")):
        try:
            pairs = imageio.list_pairs(folder)
            return [str(image) for image, _ in pairs], [str(mask) for _, mask in pairs]
        except (ValueError, FileNotFoundError):
            pass  # images without complete masks still calibrate and verify
    from keras_unet.export.calibration import list_image_files

    return [str(path) for path in list_image_files(folder)], None


def split_calibration(calibration_data, held_out=MIN_HELD_OUT, seed=0, calibration_size=None) -> Split:
    """Hold out verification images from `calibration_data`.

    Args:
        calibration_data: a folder, a list of image paths or an array `(N, H, W, C)`.
        held_out: how many to hold out (at least `MIN_HELD_OUT` where possible).
        seed: seed of the split.
        calibration_size: how many images calibration reads; the rest are held out too
            (up to half the set). None: only `held_out`.

    Returns:
        a `Split`.

    Example:
    ```python
    split_calibration(images_array).description  # '32 of 200 calibration images, held out ...'
    ```
    """
    if isinstance(calibration_data, np.ndarray):
        items: list
        items, masks, name = list(range(len(calibration_data))), None, "array"
    elif isinstance(calibration_data, (list, tuple)):
        items, masks, name = [str(p) for p in calibration_data], None, "list"
    else:
        (items, masks), name = _folder_items(calibration_data), str(calibration_data)
    total = len(items)
    count = _held_out_count(total, held_out, calibration_size)
    if count == 0:
        return Split(calibration_data, None, None,
                     f"the {total} calibration images themselves (too few to hold any out)")
    order = list(range(total))
    random.Random(seed).shuffle(order)
    verify_idx, calibrate_idx = sorted(order[:count]), sorted(order[count:])
    description = (f"{count} of {total} images of {name}, held out from calibration "
                   f"(calibrated on the other {total - count})")
    if isinstance(calibration_data, np.ndarray):
        return Split(calibration_data[calibrate_idx], calibration_data[verify_idx], None,
                     description)
    return Split([items[i] for i in calibrate_idx], [items[i] for i in verify_idx],
                 None if masks is None else [masks[i] for i in verify_idx], description)
