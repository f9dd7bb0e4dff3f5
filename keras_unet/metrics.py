"""IoU and Dice for segmentation, binary or multi-class, skipping `ignore_index`.

Both metrics build on `keras.metrics.IoU`: they accumulate its confusion matrix over all
batches (so the score is the data set's, not a mean of per-batch scores) and reuse its
`ignore_class` handling. What they add: turning probabilities into classes (argmax
for softmax; for one sigmoid channel `p >= threshold`, the project's one rule, as
`keras_unet.runtime.scores.probabilities_to_masks`), one-hot or sparse `y_true`, the Dice
score, and `per_class_result()`.

Which classes are averaged:

- binary (`num_classes=1`): the foreground class only (class 1), the usual "IoU" of a
  binary segmentation. Pass `class_id=0` for the background.
- multi-class: the mean over classes, skipping classes absent from both the labels
  and the predictions seen so far (as `keras.metrics.MeanIoU`), or one class with
  `class_id`.

Label values outside `0..num_classes-1` (after `ignore_index` is removed) are skipped as
well, as `keras.metrics.IoU` does; `keras_unet.data` rejects such masks when loading.

Example:
```python
import keras_unet

model = keras_unet.UNet(input_shape=(128, 128, 3), num_classes=12)
model.compile("adam", loss="sparse_categorical_crossentropy",
              metrics=keras_unet.metrics.get_metrics(num_classes=12, ignore_index=11))
```
"""

import keras
from keras import ops

__all__ = ["Dice", "IoU", "get_metrics"]


class _SegmentationScore(keras.metrics.IoU):
    """Confusion-matrix segmentation metric. `IoU` and `Dice` differ only in `_score`;
    their arguments are documented once, on `IoU`."""

    def __init__(self, num_classes=1, class_id=None, threshold=0.5, ignore_index=None,
                 name=None, dtype=None):
        name = name or type(self).__name__.lower()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive integer. Received: num_classes={num_classes!r}")
        matrix_size = max(num_classes, 2)
        if class_id is not None and not 0 <= class_id < matrix_size:
            raise ValueError(
                f"`class_id` must be in 0..{matrix_size - 1} (binary models have classes 0 and "
                f"1). Received: class_id={class_id!r}"
            )
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"`threshold` must be in (0, 1). Received: threshold={threshold!r}")
        if class_id is not None:
            targets = [class_id]
        elif num_classes == 1:
            targets = [1]
        else:
            targets = list(range(num_classes))
        super().__init__(num_classes=matrix_size, target_class_ids=targets,
                         ignore_class=ignore_index, sparse_y_true=True, sparse_y_pred=True,
                         name=name, dtype=dtype)
        self.model_classes = num_classes
        self.class_id = class_id
        self.threshold = float(threshold)
        self.ignore_index = ignore_index

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        channels = y_pred.shape[-1]
        if channels == 1:
            y_pred = ops.cast(ops.cast(y_pred[..., 0], "float32") >= self.threshold, "int32")
        else:
            y_pred = ops.argmax(y_pred, axis=-1)
        if len(y_true.shape) == len(y_pred.shape) + 1:
            if y_true.shape[-1] == 1:
                y_true = y_true[..., 0]
            else:  # one-hot, or a teacher's probabilities
                y_true = ops.argmax(y_true, axis=-1)
        if channels == 1 and "float" in str(y_true.dtype):
            # Soft targets (a teacher's probabilities: `train --qat` distils from one) are
            # masks by the same rule as the predictions; truncating them to int would count
            # only p == 1 as foreground. Labels 0, 1 and out-of-range values stay as they are.
            soft = (y_true > 0) & (y_true < 1)
            y_true = ops.where(soft, ops.cast(y_true >= self.threshold, y_true.dtype), y_true)
        if sample_weight is not None:
            sample_weight = ops.convert_to_tensor(sample_weight)
            if len(sample_weight.shape) == len(y_true.shape) + 1:
                sample_weight = sample_weight[..., 0]
        return super().update_state(ops.cast(y_true, "int32"), y_pred, sample_weight)

    def _score(self, tp, union):
        """The score per class from `tp` and `union = tp + fp + fn` (never 0 here)."""
        raise NotImplementedError

    def _scores_and_seen(self):
        """Score of every class (0 where unseen) and whether the class was seen, i.e.
        occurs in the labels or the predictions seen so far."""
        cm = ops.cast(self.total_cm, "float32")  # rows: true classes, columns: predictions
        tp = ops.diag(cm)
        union = ops.sum(cm, axis=0) + ops.sum(cm, axis=1) - tp  # tp + fp + fn
        seen = union > 0
        scores = self._score(tp, ops.where(seen, union, 1.0))
        return scores * ops.cast(seen, "float32"), seen

    def per_class_result(self):
        """Score of every class `(max(num_classes, 2),)`; NaN for classes never seen
        (absent from labels and predictions).

        Example:
        ```python
        metric.update_state(y_true, y_pred)
        metric.per_class_result()   # e.g. [0.98, 0.71]
        ```
        """
        scores, seen = self._scores_and_seen()
        return ops.where(seen, scores, float("nan"))

    def result(self):
        scores, seen = self._scores_and_seen()
        ids = ops.convert_to_tensor(self.target_class_ids, "int32")
        seen = ops.cast(ops.take(seen, ids), "float32")
        return ops.sum(ops.take(scores, ids)) / ops.maximum(ops.sum(seen), 1.0)

    def get_config(self):
        return {
            "num_classes": self.model_classes,
            "class_id": self.class_id,
            "threshold": self.threshold,
            "ignore_index": self.ignore_index,
            "name": self.name,
            "dtype": self._dtype,
        }


@keras.saving.register_keras_serializable(package="keras_unet")
class IoU(_SegmentationScore):
    """Intersection over union, `TP / (TP + FP + FN)`, accumulated over the data set.

    Args:
        num_classes: the model's output channels: 1 for binary (sigmoid), K for softmax.
        class_id: score of this one class only; None averages (see module docstring).
        threshold: a binary pixel is foreground where `p >= threshold`.
        ignore_index: label value whose pixels are skipped.
        name: metric name; by default the class name in lower case (`"iou"`, `"dice"`).
        dtype: dtype of the accumulated confusion matrix (int by default).

    Example:
    ```python
    import numpy as np
    import keras_unet

    metric = keras_unet.metrics.IoU(num_classes=3, ignore_index=255)
    masks = np.array([[[0, 1], [2, 255]]])                       # 255 is skipped
    probabilities = np.eye(3, dtype="float32")[[[[0, 1], [1, 0]]]]   # predicts 0, 1, 1, 0
    metric.update_state(masks, probabilities)
    float(metric.result())   # classes 0 and 1 right, class 2 missed
    ```
    """

    def _score(self, tp, union):
        return tp / union


@keras.saving.register_keras_serializable(package="keras_unet")
class Dice(_SegmentationScore):
    """Dice coefficient (F1), `2 TP / (2 TP + FP + FN)`, accumulated over the data set.

    Args: the same as `IoU` (`num_classes`, `class_id`, `threshold`, `ignore_index`,
    `name` (`"dice"` by default), `dtype`).

    Example:
    ```python
    import numpy as np
    import keras_unet

    metric = keras_unet.metrics.Dice()
    masks = np.array([[[1, 1], [0, 0]]], "float32")[..., None]
    probabilities = np.array([[[0.9, 0.2], [0.1, 0.3]]], "float32")[..., None]
    metric.update_state(masks, probabilities)
    float(metric.result())   # 2*1 / (2*1 + 0 + 1) = 0.67
    ```
    """

    def _score(self, tp, union):
        return 2.0 * tp / (union + tp)


def get_metrics(num_classes=1, ignore_index=None, threshold=0.5, per_class=False):
    """The metrics the CLI compiles a model with: IoU and Dice (and per-class IoU).

    Args:
        num_classes: the model's output channels (1 = binary).
        ignore_index: label value whose pixels are skipped.
        threshold: binary models: a pixel is foreground where `p >= threshold`.
        per_class: also one `IoU(class_id=c, name="iou_c")` per class (multi-class only).

    Example:
    ```python
    import keras_unet
    from keras_unet.metrics import get_metrics

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)
    model.compile("adam", loss="binary_crossentropy", metrics=get_metrics(1))
    [metric.name for metric in get_metrics(1)]   # ['iou', 'dice']
    ```
    """
    metrics = [
        IoU(num_classes, threshold=threshold, ignore_index=ignore_index, name="iou"),
        Dice(num_classes, threshold=threshold, ignore_index=ignore_index, name="dice"),
    ]
    if per_class and num_classes > 1:
        metrics += [IoU(num_classes, class_id=c, ignore_index=ignore_index, name=f"iou_{c}")
                    for c in range(num_classes)]
    return metrics
