"""What the int8 matrix trains and measures on, and which of its steps are already done.

- `Labels`: the classes of the data (binary, or K classes with an ignored value) and the
  `keras-unet train` arguments they need.
- `matrix_folders`: the training folder (also the calibration folder) and the held-out folder
  the benchmark measures on: a given pair (CamVid's train/ and val/), or a seeded split of
  one folder (nuclei).
- `training_done`, `is_current`: the matrix redoes a step only when its output is missing or
  older than its input, so a rerun after an export change reuses the trained models and
  re-benchmarks only the models whose files changed.

Example:
```python
from keras_unet.benchmarks.int8_matrix_data import Labels, matrix_folders

labels = Labels(num_classes=11, ignore_index=11)
folders = matrix_folders("camvid/train", "runs/int8_camvid", test_data="camvid/val")
```
"""

import dataclasses
import json
import os
import random
from pathlib import Path

# `keras-unet train`'s early-stopping patience, which the matrix leaves at its default.
TRAIN_PATIENCE = 10


@dataclasses.dataclass(frozen=True)
class Labels:
    """The classes the matrix's models segment.

    Args:
        num_classes: 1 for binary masks, else the number of classes (softmax models).
        ignore_index: mask value left out of training, calibration checks and scores
            (CamVid's void, 11), or None.
        class_names: names stored in the models and their exports, or empty for indices.

    Example:
    ```python
    Labels(num_classes=11, ignore_index=11).train_arguments()[:4]
    # ['--num-classes', '11', '--ignore-index', '11']
    ```
    """

    num_classes: int = 1
    ignore_index: int = None
    class_names: tuple = ()

    def __post_init__(self):
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"`num_classes` must be an integer >= 1. Received: num_classes={self.num_classes!r}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"`class_names` must name each of the {self.num_classes} classes. "
                             f"Received: {len(self.class_names)} names")

    @property
    def multi_class(self) -> bool:
        return self.num_classes > 1

    def train_arguments(self) -> list:
        """The `keras-unet train` options for these classes; none for binary (its defaults)."""
        arguments = []
        if self.multi_class:
            arguments += ["--num-classes", str(self.num_classes)]
        if self.ignore_index is not None:
            arguments += ["--ignore-index", str(self.ignore_index)]
        if self.multi_class:
            # Index masks are what a K-class folder holds; "auto" would guess the same per
            # mask but a mask with only values 0 and 255 would read as binary.
            arguments += ["--mask-encoding", "index"]
        if self.class_names:
            arguments += ["--class-names", *self.class_names]
        return arguments

    def bench_arguments(self) -> list:
        """The `keras-unet bench` options for these classes; none for binary.

        Given explicitly, because a trained model's metadata may not carry the ignored value,
        and a void pixel scored as a class is refused.
        """
        arguments = []
        if self.ignore_index is not None:
            arguments += ["--ignore-index", str(self.ignore_index)]
        if self.multi_class:
            arguments += ["--mask-encoding", "index"]
        return arguments


def split_folder(data, work, held_out=0.25, seed=0) -> dict:
    """Seeded split of DATA into WORK/split/{train,test}/{images,masks} (symlinks).

    A split that exists is kept as it is (the same seed writes the same one).
    """
    from keras_unet.runtime import imageio

    pairs = imageio.list_pairs(data)
    random.Random(seed).shuffle(pairs)
    cut = int(round(len(pairs) * (1 - held_out)))
    folders = {}
    for part, chunk in (("train", pairs[:cut]), ("test", pairs[cut:])):
        folder = Path(work) / "split" / part
        folders[part] = folder
        if folder.exists():
            continue
        for sub in ("images", "masks"):
            (folder / sub).mkdir(parents=True)
        for image, mask in chunk:
            os.symlink(os.path.abspath(image), folder / "images" / os.path.basename(image))
            os.symlink(os.path.abspath(mask), folder / "masks" / os.path.basename(mask))
    return folders


def matrix_folders(data, work, test_data=None) -> dict:
    """`{"train": folder, "test": folder}`: where models train and calibrate, and where they
    are measured.

    Args:
        data: labelled folder (images/, masks/) to train and calibrate on.
        work: the matrix's work folder (holds the split when there is one).
        test_data: held-out labelled folder to measure on, or None to hold out a seeded
            quarter of `data` (`split_folder`).

    Raises:
        ValueError: `test_data` is `data` itself, or a folder without images/ and masks/.

    Example:
    ```python
    matrix_folders("camvid/train", "runs/int8_camvid", test_data="camvid/val")["test"]
    # PosixPath('camvid/val')
    ```
    """
    if test_data is None:
        return split_folder(data, work)
    if os.path.realpath(data) == os.path.realpath(test_data):
        raise ValueError(f"--test-data must be held out from --data, not the same folder. Received: {test_data!r}")
    for option, folder in (("--data", data), ("--test-data", test_data)):
        if not (os.path.isdir(os.path.join(folder, "images")) and os.path.isdir(os.path.join(folder, "masks"))):
            raise ValueError(f"{option} must be a folder with images/ and masks/. Received: {folder!r}")
    return {"train": Path(data), "test": Path(test_data)}


def training_done(run, epochs) -> bool:
    """True when the run folder `run` holds a finished `keras-unet train` run that `epochs`
    would not continue: at least `epochs` epochs, or stopped early.

    A run of fewer epochs is continued by training again with the same folder (the CLI
    resumes it), so the matrix's `--epochs` can be raised without starting over.

    Example:
    ```python
    training_done("runs/int8_camvid/resnet50/run", epochs=20)
    ```
    """
    run = Path(run)
    if not (run / "metrics.json").exists() or not (run / "config.json").exists():
        return False
    state = json.loads((run / "config.json").read_text())
    if not state.get("finished"):
        return False
    return (state.get("epochs_completed", 0) >= epochs
            or state.get("epochs_since_best", 0) >= TRAIN_PATIENCE)


def is_current(output, inputs) -> bool:
    """True when `output` exists and is no older than any of `inputs` that exist.

    Example:
    ```python
    is_current("int8.tflite", ["run/model.keras"])  # False once the model is retrained
    ```
    """
    output = Path(output)
    if not output.exists():
        return False
    built = output.stat().st_mtime
    return all(Path(path).stat().st_mtime <= built for path in inputs if Path(path).exists())
