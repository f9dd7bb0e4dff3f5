"""Small image files for the image-reading tests (tests/runtime)."""

import numpy as np
from PIL import Image


def save_image(path, array):
    """Writes `array` with Pillow (format from the suffix), creating the folder; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def asymmetric_pattern(height=4, width=6):
    """An RGB pattern that no flip or rotation maps onto itself."""
    return (np.arange(height * width * 3).reshape(height, width, 3) * 3 % 256).astype(np.uint8)
