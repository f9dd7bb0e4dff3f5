"""Quality numbers of a benchmark: IoU/Dice against the ground truth, agreement with the reference.

The maths is `keras_unet.runtime.scores`, the one implementation training reports, export
verification and `keras-unet evaluate` use too; this module only feeds it:

- `score_quality`: every labelled image is segmented at its own size (`runner.predict_masks`)
  and scored against its mask with `segmentation_scores` (one confusion matrix over the
  folder, `ignore_index` honoured): `iou`, `dice`, `mean_iou`, `pixel_accuracy`, per class.
- `compare_with_reference`: each row's masks against the reference model's masks with
  `mask_agreement`, the definition export verification gates on: `pixel_agreement`,
  `agreement_iou` (binary: foreground IoU; multi-class: frequency-weighted IoU, the stable
  figure) and `agreement_mean_iou` (mean over classes, informational); plus
  `agreement_iou_per_class` (which classes a quantized file loses), `speedup_vs_reference`
  and `iou_drop` (multi-class: the drop of mean IoU).

Example:
```python
from keras_unet.benchmarks.quality import LabelledData, compare_with_reference, score_quality

masks = score_quality(row, runner, LabelledData("data/val"), MeasureOptions())  # row.iou, row.dice, ...
compare_with_reference(rows, {id(row): masks, id(reference_row): reference_masks})
```
"""

import os

import numpy as np

from keras_unet.runtime.scores import confusion_matrix, mask_agreement, scores_from_confusion, segmentation_scores

GROUND_TRUTH_KEYS = ("iou", "dice", "mean_iou", "pixel_accuracy", "iou_per_class", "dice_per_class")
AGREEMENT_KEYS = ("pixel_agreement", "agreement_iou", "agreement_mean_iou")


class LabelledData:
    """The labelled images of a data folder, read once and decoded per model's mask encoding.

    Args:
        data_dir: folder with `images/` and `masks/` (see `keras_unet.runtime.imageio`), or None for
            no quality numbers (latency on random images).
        max_images: read at most this many pairs (sorted by name), or None for all.

    Example:
    ```python
    data = LabelledData("data/val")
    images = data.images(channels=3); masks = data.masks("binary", 1, None)
    ```
    """

    def __init__(self, data_dir=None, max_images=None):
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        self.pairs = []
        if self.data_dir is not None:
            if not os.path.isdir(self.data_dir):
                raise FileNotFoundError(
                    f"`data` must be a folder with images/ and masks/. Received: data={self.data_dir!r}"
                )
            from keras_unet.runtime import imageio

            self.pairs = list(imageio.list_pairs(self.data_dir))
            if max_images is not None:
                self.pairs = self.pairs[: int(max_images)]
            if not self.pairs:
                raise ValueError(f"No image/mask pairs found in data={self.data_dir!r} (expected images/ and masks/).")
        self._images = {}
        self._raw_masks = None
        self._masks = {}

    def __len__(self):
        return len(self.pairs)

    def images(self, channels):
        if channels not in self._images:
            from keras_unet.runtime import imageio

            self._images[channels] = [imageio.read_image(pair[0], channels) for pair in self.pairs]
        return self._images[channels]

    def masks(self, encoding, num_classes, ignore_index):
        key = (encoding, num_classes, ignore_index)
        if key not in self._masks:
            from keras_unet.runtime import imageio

            if self._raw_masks is None:
                self._raw_masks = [imageio.read_mask(pair[1]) for pair in self.pairs]
            self._masks[key] = [
                np.asarray(imageio.decode_mask(raw, encoding, num_classes, ignore_index, path=pair[1]))
                for raw, pair in zip(self._raw_masks, self.pairs)
            ]
        return self._masks[key]


def metadata_value(runner, key, default=None):
    """`runner.metadata[key]`, or `default` when the runner has no such value."""
    metadata = getattr(runner, "metadata", None) or {}
    value = metadata.get(key)
    return default if value is None else value


def score_quality(row, runner, data, options):
    """Segment every image of `data` with `runner`, score it into `row`; return the masks.

    Masks are scored by `score_masks`.

    Args:
        row: the model's `BenchmarkRow` (`num_classes` set); `GROUND_TRUTH_KEYS` and
            `quality_images` are filled in.
        runner: the loaded `keras_unet.runtime` runner.
        data: a non-empty `LabelledData`.
        options: the run's `keras_unet.benchmarks.measure.MeasureOptions`.

    Returns:
        the predicted masks, a list of `(H, W)` arrays in the order of `data.pairs`.

    Example:
    ```python
    masks = score_quality(row, runner, LabelledData("data/val"), MeasureOptions())
    ```
    """
    images = data.images(int(metadata_value(runner, "channels", 3)))
    masks = []
    for start in range(0, len(images), options.batch_size):
        masks.extend(np.asarray(m) for m in runner.predict_masks(images[start : start + options.batch_size]))
    score_masks(row, masks, data, getattr(runner, "metadata", None) or {}, options)
    return masks


def score_masks(row, masks, data, metadata, options) -> None:
    """Score predicted `masks` (one per image of `data`, in order) into `row`'s
    `GROUND_TRUTH_KEYS`, whichever runtime made them.

    Masks are decoded with the model's `mask_encoding` metadata unless `options.mask_encoding`
    overrides it (files without metadata: "auto"); likewise `ignore_index`.

    Example:
    ```python
    score_masks(row, browser_result.masks, LabelledData("data/val"), read_metadata(path),
                MeasureOptions())
    ```
    """
    encoding = options.mask_encoding or metadata.get("mask_encoding") or "auto"
    ignore = options.ignore_index if options.ignore_index is not None else metadata.get("ignore_index")
    truth = data.masks(encoding, row.num_classes, ignore)
    scores = segmentation_scores(truth, masks, row.num_classes, ignore)
    row.quality_images = len(data)
    for key in GROUND_TRUTH_KEYS:
        setattr(row, key, scores[key])


def compare_with_reference(rows, masks):
    """Fill `speedup_vs_reference`, `iou_drop`, the `AGREEMENT_KEYS` and
    `agreement_iou_per_class` of every row.

    `agreement_iou_per_class[c]` is the IoU of class `c` between the row's masks and the
    reference's (NaN, reported as empty, for a class in neither).

    Nothing is filled when there is no reference row or it failed; agreement needs both
    models' masks (a data folder) and the same number of classes.

    Args:
        rows: the `BenchmarkRow`s of one run; the one with `is_reference` is the reference.
        masks: dict `id(row) -> list of masks` for the rows that have masks.

    Example:
    ```python
    compare_with_reference(rows, {id(row): row_masks for row, row_masks in measured})
    ```
    """
    reference = next((row for row in rows if row.is_reference and row.error is None), None)
    if reference is None:
        return
    reference_masks = masks.get(id(reference))
    for row in rows:
        if row.error is not None:
            continue
        if reference.latency_p50_ms and row.latency_p50_ms and reference.batch_size == row.batch_size:
            row.speedup_vs_reference = reference.latency_p50_ms / row.latency_p50_ms
        if reference.iou is not None and row.iou is not None:
            row.iou_drop = reference.iou - row.iou
        row_masks = masks.get(id(row))
        if reference_masks is not None and row_masks is not None and row.num_classes == reference.num_classes:
            agreement = mask_agreement(row_masks, reference_masks, row.num_classes)
            for key in AGREEMENT_KEYS:
                setattr(row, key, agreement[key])
            matrix = confusion_matrix(reference_masks, row_masks, row.num_classes)
            row.agreement_iou_per_class = scores_from_confusion(matrix)["iou_per_class"]
