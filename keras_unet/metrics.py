"""IoU and Dice for segmentation, binary or multi-class, skipping `ignore_index`.

Both metrics build on `keras.metrics.IoU`: they accumulate its confusion matrix over all
batches (so the score is the data set's, not a mean of per-batch scores) and reuse its
`ignore_class` handling. What they add: turning probabilities into classes (threshold
for one sigmoid channel, argmax for softmax), one-hot or sparse `y_true`, the Dice
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
    """Confusion-matrix segmentation metric; subclasses define `_scores`."""

    def __init__(self, num_classes=1, class_id=None, threshold=0.5, ignore_index=None,
                 name=None, dtype=None):
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
            else:  # one-hot
                y_true = ops.argmax(y_true, axis=-1)
        if sample_weight is not None:
            sample_weight = ops.convert_to_tensor(sample_weight)
            if len(sample_weight.shape) == len(y_true.shape) + 1:
                sample_weight = sample_weight[..., 0]
        return super().update_state(ops.cast(y_true, "int32"), y_pred, sample_weight)

    def _stats(self):
        cm = ops.cast(self.total_cm, "float32")
        tp = ops.diag(cm)
        # Rows are true classes, columns predictions (keras' confusion_matrix).
        return tp, ops.sum(cm, axis=0) - tp, ops.sum(cm, axis=1) - tp

    def _scores(self, tp, fp, fn):
        raise NotImplementedError

    def per_class_result(self):
        """Score of every class `(max(num_classes, 2),)`; NaN for classes never seen
        (absent from labels and predictions).

        Example:
        ```python
        metric.update_state(y_true, y_pred)
        metric.per_class_result()   # e.g. [0.98, 0.71]
        ```
        """
        tp, fp, fn = self._stats()
        seen = (tp + fp + fn) > 0
        safe = ops.where(seen, tp + fp + fn, 1.0)
        return ops.where(seen, self._scores(tp, fp, fn, safe), float("nan"))

    def result(self):
        tp, fp, fn = self._stats()
        ids = ops.convert_to_tensor(self.target_class_ids, "int32")
        tp, fp, fn = (ops.take(x, ids) for x in (tp, fp, fn))
        seen = ops.cast((tp + fp + fn) > 0, "float32")
        safe = ops.where(seen > 0, tp + fp + fn, 1.0)
        scores = self._scores(tp, fp, fn, safe) * seen
        return ops.sum(scores) / ops.maximum(ops.sum(seen), 1.0)

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
        threshold: probability above which a binary pixel is foreground.
        ignore_index: label value whose pixels are skipped.
        name: metric name.
        dtype: dtype of the accumulated confusion matrix (int by default).

    Example:
    ```python
    metric = keras_unet.metrics.IoU(num_classes=12, ignore_index=11)
    metric.update_state(masks, probabilities)
    metric.result()
    ```
    """

    def __init__(self, num_classes=1, class_id=None, threshold=0.5, ignore_index=None,
                 name="iou", dtype=None):
        super().__init__(num_classes=num_classes, class_id=class_id, threshold=threshold,
                         ignore_index=ignore_index, name=name, dtype=dtype)

    def _scores(self, tp, fp, fn, safe_denominator):
        return tp / safe_denominator


@keras.saving.register_keras_serializable(package="keras_unet")
class Dice(_SegmentationScore):
    """Dice coefficient (F1), `2 TP / (2 TP + FP + FN)`, accumulated over the data set.

    Args:
        num_classes: the model's output channels: 1 for binary (sigmoid), K for softmax.
        class_id: score of this one class only; None averages (see module docstring).
        threshold: probability above which a binary pixel is foreground.
        ignore_index: label value whose pixels are skipped.
        name: metric name.
        dtype: dtype of the accumulated confusion matrix (int by default).

    Example:
    ```python
    metric = keras_unet.metrics.Dice()
    metric.update_state(masks, probabilities)
    ```
    """

    def __init__(self, num_classes=1, class_id=None, threshold=0.5, ignore_index=None,
                 name="dice", dtype=None):
        super().__init__(num_classes=num_classes, class_id=class_id, threshold=threshold,
                         ignore_index=ignore_index, name=name, dtype=dtype)

    def _scores(self, tp, fp, fn, safe_denominator):
        # tp + fp + fn > 0 wherever the result is kept, so 2tp + fp + fn > 0 too.
        return 2.0 * tp / (safe_denominator + tp)


def get_metrics(num_classes=1, ignore_index=None, threshold=0.5, per_class=False):
    """The metrics the CLI compiles a model with: IoU and Dice (and per-class IoU).

    Args:
        num_classes: the model's output channels (1 = binary).
        ignore_index: label value whose pixels are skipped.
        threshold: probability threshold for binary models.
        per_class: also one `IoU(class_id=c, name="iou_c")` per class (multi-class only).

    Example:
    ```python
    model.compile("adam", loss="binary_crossentropy", metrics=get_metrics(1))
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
