"""Segmentation quality in numpy: masks from probabilities, IoU/Dice, and mask agreement.

The one implementation of these numbers: training reports (`keras_unet.metrics` is checked
against it), export verification, `keras-unet evaluate` and the benchmark all call it.

Runs on an edge device (numpy only). The numbers follow the Keras IoU metrics that training
uses (`keras.metrics.MeanIoU` / `BinaryIoU`, wrapped in `keras_unet.metrics`): one confusion
matrix accumulated over the whole data set (not a mean of per-image scores), IoU per class
`tp / (tp + fp + fn)`, and the mean taken over the classes whose denominator is not zero.
Pixels whose ground truth equals `ignore_index` count nowhere.

Binary models (`num_classes=1`) have two classes in the matrix, background 0 and foreground 1;
their headline `iou`/`dice` is the foreground class (background IoU of a nuclei image is close
to 1 whatever the model does, and would hide the differences a benchmark is looking for).
Multi-class models report the mean over classes. `tests/runtime/test_scores.py` checks
that these numbers equal `keras_unet.metrics.IoU`/`Dice` on the same masks. One deliberate
difference: when no pixel of the scored class(es) occurs in truth or prediction, the Keras metric
returns 0 and this module NaN (reported as empty), since nothing was there to get wrong.

Example:
```python
import numpy as np
from keras_unet.runtime.scores import segmentation_scores

truth = np.array([[[0, 1], [1, 1]]])
pred = np.array([[[0, 1], [0, 1]]])
segmentation_scores(truth, pred, num_classes=1)["iou"]  # 2 / 3
```
"""

import numpy as np


def _matrix_size(num_classes):
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(
            f"`num_classes` must be a positive integer (1 for binary). Received: num_classes={num_classes!r}"
        )
    return 2 if num_classes == 1 else int(num_classes)


def _as_list(masks):
    if isinstance(masks, np.ndarray):
        if masks.ndim == 2:
            return [masks]
        return list(masks)
    return list(masks)


def confusion_matrix(y_true, y_pred, num_classes, ignore_index=None) -> np.ndarray:
    """Accumulate a confusion matrix over mask pairs.

    Args:
        y_true: ground-truth masks, an int array `(N, H, W)` or `(H, W)`, or a list of `(H, W)`
            arrays of any sizes.
        y_pred: predicted masks, matching `y_true` pair by pair.
        num_classes: model classes; 1 means binary (matrix of background and foreground).
        ignore_index: ground-truth value to leave out, or None.

    Returns:
        int64 array `(C, C)`, rows are the truth, columns the prediction (`C = 2` for binary).

    Example:
    ```python
    confusion_matrix(np.zeros((1, 4, 4), int), np.zeros((1, 4, 4), int), num_classes=3)[0, 0]  # 16
    ```
    """
    size = _matrix_size(num_classes)
    truths, preds = _as_list(y_true), _as_list(y_pred)
    if len(truths) != len(preds):
        raise ValueError(
            f"`y_true` and `y_pred` must hold the same number of masks. "
            f"Received: len(y_true)={len(truths)}, len(y_pred)={len(preds)}"
        )
    matrix = np.zeros((size, size), np.int64)
    for index, (truth, pred) in enumerate(zip(truths, preds)):
        truth, pred = np.asarray(truth), np.asarray(pred)
        if truth.shape != pred.shape:
            raise ValueError(
                f"Mask {index}: ground truth and prediction must have the same shape. "
                f"Received: y_true.shape={truth.shape}, y_pred.shape={pred.shape}"
            )
        truth = truth.astype(np.int64).ravel()
        pred = pred.astype(np.int64).ravel()
        keep = np.ones(truth.shape, bool) if ignore_index is None else truth != ignore_index
        truth, pred = truth[keep], pred[keep]
        bad = (truth < 0) | (truth >= size) | (pred < 0) | (pred >= size)
        if bad.any():
            values = np.unique(np.concatenate([truth[bad], pred[bad]]))[:8]
            raise ValueError(
                f"Mask {index} holds class values outside [0, {size - 1}] for num_classes={num_classes} "
                f"(set `ignore_index` for void pixels). Received values: {values.tolist()}"
            )
        matrix += np.bincount(truth * size + pred, minlength=size * size).reshape(size, size)
    return matrix


def scores_from_confusion(matrix, binary=False) -> dict:
    """IoU and Dice per class and their means, from a confusion matrix.

    Args:
        matrix: `(C, C)` counts, rows truth, columns prediction.
        binary: if True, the headline `iou`/`dice` is class 1 (foreground), else the mean.

    Returns:
        dict with `iou`, `dice`, `mean_iou`, `mean_dice`, `iou_per_class`, `dice_per_class`
        (lists, NaN where a class is absent from both truth and prediction), `pixel_accuracy`
        and `pixels`.

    Example:
    ```python
    scores_from_confusion(np.array([[5, 0], [1, 2]]), binary=True)["iou"]  # 2 / 3
    ```
    """
    matrix = np.asarray(matrix, np.float64)
    tp = np.diag(matrix)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        dice = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    valid = ~np.isnan(iou)
    mean_iou = float(iou[valid].mean()) if valid.any() else float("nan")
    mean_dice = float(dice[valid].mean()) if valid.any() else float("nan")
    pixels = float(matrix.sum())
    result = {
        "mean_iou": mean_iou,
        "mean_dice": mean_dice,
        "iou_per_class": [float(x) for x in iou],
        "dice_per_class": [float(x) for x in dice],
        "pixel_accuracy": float(tp.sum() / pixels) if pixels else float("nan"),
        "pixels": int(pixels),
    }
    result["iou"] = float(iou[1]) if binary else mean_iou
    result["dice"] = float(dice[1]) if binary else mean_dice
    return result


def segmentation_scores(y_true, y_pred, num_classes, ignore_index=None) -> dict:
    """IoU and Dice of predicted masks against ground truth, per class and mean.

    Args:
        y_true: ground-truth masks (see `confusion_matrix`).
        y_pred: predicted masks.
        num_classes: model classes; 1 means binary.
        ignore_index: ground-truth value to leave out, or None.

    Returns:
        the dict of `scores_from_confusion`.

    Example:
    ```python
    import numpy as np
    from keras_unet.benchmarks import segmentation_scores

    segmentation_scores([np.eye(3, dtype=int)], [np.eye(3, dtype=int)], num_classes=1)["iou"]  # 1.0
    ```
    """
    matrix = confusion_matrix(y_true, y_pred, num_classes, ignore_index)
    return scores_from_confusion(matrix, binary=num_classes == 1)


def probabilities_to_masks(probabilities, threshold=0.5) -> np.ndarray:
    """Class-index masks `(N, H, W)` from probabilities `(N, H, W, K)` (or one `(H, W, K)`).

    Binary (`K = 1`): a pixel is 1 when `p >= threshold`, the rule `predict`, the runners,
    export verification and the benchmark share. Multi-class: the arg-max.

    Example:
    ```python
    probabilities_to_masks(np.full((1, 2, 2, 1), 0.5))  # all ones
    ```
    """
    probabilities = np.asarray(probabilities)
    if probabilities.shape[-1] == 1:
        return (probabilities[..., 0] >= threshold).astype(np.uint8)
    return np.argmax(probabilities, axis=-1).astype(np.int32)


def mask_agreement(masks, reference_masks, num_classes, ignore_index=None) -> dict:
    """How closely one model's masks match a reference model's masks (the reference as truth).

    Three figures, because one number misleads in either direction:

    - `pixel_agreement`: the share of pixels with the same class. Readable, but for a
      small foreground (nuclei) it stays near 1 whatever happens to the objects.
    - `agreement_iou` (the gate): binary, the foreground IoU of the two masks; multi-class,
      the frequency-weighted IoU (per-class IoU weighted by the reference's share of
      pixels), so a class that one model predicts on a handful of pixels and the other not
      at all moves it by about that handful.
    - `agreement_mean_iou`: the plain mean of per-class IoU over the classes either model
      predicts (the usual mIoU). On 11-class CamVid int8 vs Keras it read 0.74 where the
      pixel agreement was 0.984: reported, never gated on.

    Identical masks agree fully (1.0), also when both are empty.

    Args:
        masks: masks of the model under test, `(N, H, W)` or a list of `(H, W)`.
        reference_masks: masks of the reference model, same shapes.
        num_classes: model classes; 1 means binary.
        ignore_index: value in `reference_masks` to leave out (rarely needed), or None.

    Returns:
        dict with `pixel_agreement`, `agreement_iou`, `agreement_mean_iou`, `pixels`.

    Example:
    ```python
    import numpy as np
    from keras_unet.benchmarks import mask_agreement

    masks = np.random.default_rng(0).integers(0, 2, (2, 8, 8))
    mask_agreement(masks, masks, num_classes=1)["agreement_iou"]  # 1.0
    ```
    """
    matrix = confusion_matrix(reference_masks, masks, num_classes, ignore_index)
    pixels = int(matrix.sum())
    if pixels == 0 or matrix.sum() == np.trace(matrix):
        return {"pixel_agreement": 1.0, "agreement_iou": 1.0, "agreement_mean_iou": 1.0,
                "pixels": pixels}
    scores = scores_from_confusion(matrix, binary=num_classes == 1)
    return {
        "pixel_agreement": float(np.trace(matrix) / pixels),
        "agreement_iou": float(_gated_agreement(matrix[None], binary=num_classes == 1)[0]),
        "agreement_mean_iou": float(scores["mean_iou"]),
        "pixels": pixels,
    }


def agreement_iou(masks, reference_masks, num_classes, ignore_index=None) -> float:
    """The gated figure of `mask_agreement`: foreground IoU (binary) or frequency-weighted
    IoU (multi-class) of `masks` against `reference_masks`.

    Example:
    ```python
    import numpy as np
    from keras_unet.benchmarks import agreement_iou

    agreement_iou(np.ones((1, 2, 2)), np.ones((1, 2, 2)), num_classes=1)  # 1.0
    ```
    """
    return mask_agreement(masks, reference_masks, num_classes, ignore_index)["agreement_iou"]


def _gated_agreement(matrices, binary):
    """`agreement_iou` of each confusion matrix in `matrices` `(R, C, C)` (rows: the
    reference): binary, the foreground IoU (1.0 with no foreground in either: absent from
    both while background differs cannot happen); multi-class, per-class IoU weighted by the
    reference's share of pixels, a class in neither counting 0."""
    matrices = np.asarray(matrices, np.float64)
    tp = np.diagonal(matrices, axis1=1, axis2=2)
    truth = matrices.sum(axis=2)
    union = truth + matrices.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    if binary:
        return np.nan_to_num(iou[:, 1], nan=1.0)
    pixels = truth.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        frequency = np.where(pixels > 0, truth / pixels, 0.0)
    gated = (frequency * np.nan_to_num(iou, nan=0.0)).sum(axis=1)
    return np.where(pixels[:, 0] > 0, gated, 1.0)


def agreement_standard_error(masks, reference_masks, num_classes, resamples=1000, seed=0) -> float:
    """Bootstrap standard error of `agreement_iou` over the images: how much the figure would
    move had other images of the same kind been drawn.

    Export repair uses it to aim beyond the noise of its few verification images (on 32
    held-out nuclei photos it was 0.0007-0.0010 for every int8 file of the benchmark matrix).
    Images are resampled with replacement `resamples` times (a fixed `seed`, so an export
    decides the same way each time); each resample's figure is computed from the summed
    per-image confusion matrices, like `mask_agreement`'s. One image gives 0.

    Example:
    ```python
    reference = np.zeros((4, 8, 8), int); reference[:, 2:6, 2:6] = 1
    masks = reference.copy(); masks[0, 2, 2] = 0
    agreement_standard_error(masks, reference, num_classes=1)  # ~0.013
    ```
    """
    truths, preds = _as_list(reference_masks), _as_list(masks)
    if len(truths) != len(preds):
        raise ValueError(
            f"`masks` and `reference_masks` must hold the same number of masks. "
            f"Received: {len(preds)} and {len(truths)}"
        )
    if len(truths) < 2:
        return 0.0
    size = _matrix_size(num_classes)
    per_image = np.stack([confusion_matrix(t, p, num_classes).reshape(-1)
                          for t, p in zip(truths, preds)]).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(truths), (int(resamples), len(truths)))
    weights = np.stack([np.bincount(row, minlength=len(truths)) for row in draws])
    summed = (weights @ per_image).reshape(-1, size, size)
    return float(np.std(_gated_agreement(summed, binary=num_classes == 1)))
