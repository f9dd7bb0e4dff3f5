"""Small data sets shipped inside the package, for demos and tests.

Example:
```python
from keras_unet.datasets import nuclei_path

data_dir = nuclei_path()   # holds images/ and masks/
```
"""

import importlib.resources
from pathlib import Path


def nuclei_path():
    """Return the folder of the shipped nuclei demo set (`images/`, `masks/`).

    200 pairs of 128x128 grayscale fluorescence-microscopy images and 0/255 masks from
    the 2018 Data Science Bowl (BBBC038v1, CC0 1.0; Caicedo et al., Nature Methods 2019).
    See `LICENSE.txt` in that folder.

    Returns:
        A `pathlib.Path`.

    Example:
    ```python
    from keras_unet.data import load_dataset
    from keras_unet.datasets import nuclei_path

    dataset = load_dataset(nuclei_path(), image_size=(128, 128), channels=1)
    ```
    """
    folder = importlib.resources.files("keras_unet.datasets") / "nuclei"
    # A regular install extracts package data to disk; zipped installs are not supported
    # because tf.data reads files by path.
    path = Path(str(folder))
    if not (path / "images").is_dir():
        raise FileNotFoundError(
            f"The shipped nuclei data set is missing from '{path}'. Reinstall keras-unet-edge "
            f"(the wheel includes keras_unet/datasets/nuclei/)."
        )
    return path


__all__ = ["nuclei_path"]
