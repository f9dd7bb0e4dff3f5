"""Find image files and pair each image with its mask, by file stem (numpy-free, pillow-free).

Layout on disk: `DIR/images/<stem>.<png|jpg|jpeg|bmp|tif|tiff>` and `DIR/masks/<stem>.png`
(a mask may also be `.bmp`, `.tif` or `.tiff`; never JPEG, whose compression invents new
values). Hidden files are skipped; two files with one stem in a folder are an error.

Example:
```python
from keras_unet.runtime.listing import list_images, list_pairs

pairs = list_pairs("data/nuclei")                 # [(image_path, mask_path), ...]
paths = list_images("data/nuclei/images")         # [Path, ...], sorted by name
```
"""

from pathlib import Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")


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


def list_images(folder) -> list:
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


def list_pairs(data_dir, images_subdir="images", masks_subdir="masks") -> list:
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

