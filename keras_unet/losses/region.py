"""Region losses from per-class TP, FP, FN sums over the batch: Dice, Jaccard, Tversky.

Computed here, not by `keras.losses.Dice` / `keras.losses.Tversky`: those have no
`smooth` term (only `epsilon` in the denominator, so an empty class gives 1 - 0 instead
of 0), no `ignore_index`, no sparse labels and no per-class average (`axis=None` pools
all channels into one score). Keras' `tversky` in 3.15 also applies `alpha` to the false
negatives, against its docstring (fixed upstream in keras-team/keras#23333), so the
meaning of `alpha` would change with the Keras version.

Under a `tf.distribute` strategy with several replicas (`keras-unet train --strategy
mirrored`) each replica sees a slice of the batch, and Keras sums the replicas' gradients.
Keras' own losses therefore divide each replica's mean by the number of replicas; a loss that
returns one scalar per batch, as these do, is left as it is, so the region term's gradient
came out `replicas` times too large (twice the update of one device on the same batch, with
2 replicas). Here each replica adds up its TP, FP and FN with the other replicas' first (an
all-reduce, through which TensorFlow differentiates) and divides the loss by the number of
replicas: the loss is the one of the whole global batch and the step is the step of one
device on it. On the JAX backend (`keras.distribution`) the batch is one global array and
nothing needs doing.
"""

import keras
from keras import ops

from keras_unet.losses.base import SegmentationLoss, class_weight_vector


class RegionLoss(SegmentationLoss):
    """Dice-like loss `1 - mean_c score(TP_c, FP_c, FN_c)`; subclasses define `_score`."""

    def __init__(self, smooth=1.0, **kwargs):
        super().__init__(**kwargs)
        if smooth < 0:
            raise ValueError(f"`smooth` must be >= 0. Received: smooth={smooth!r}")
        self.smooth = float(smooth)

    def get_config(self):
        config = super().get_config()
        config["smooth"] = self.smooth
        return config

    def _score(self, tp, fp, fn):
        raise NotImplementedError

    def call(self, y_true, y_pred):
        y_pred, labels, valid, sparse = self._read(y_true, y_pred)
        num_channels = y_pred.shape[-1]
        if self.from_logits:
            sigmoid = self._is_sigmoid(y_pred)
            y_pred = ops.sigmoid(y_pred) if sigmoid else ops.softmax(y_pred, axis=-1)
        target = ops.one_hot(ops.cast(labels[..., 0], "int32"), num_channels) if sparse else labels
        axes = tuple(range(len(y_pred.shape) - 1))
        tp = ops.sum(y_pred * target * valid, axis=axes)
        fp = ops.sum(y_pred * (1.0 - target) * valid, axis=axes)
        fn = ops.sum((1.0 - y_pred) * target * valid, axis=axes)
        (tp, fp, fn), replicas = sum_over_replicas([tp, fp, fn])
        scores = self._score(tp, fp, fn)
        if self.class_weights is None:
            loss = 1.0 - ops.mean(scores)
        else:
            weights = class_weight_vector(self.class_weights, num_channels)
            loss = 1.0 - ops.sum(scores * weights) / ops.sum(weights)
        # Keras sums the replicas' gradients: each replica holds its share, as Keras' own
        # losses do (see the module docstring).
        return loss / replicas if replicas > 1 else loss


def sum_over_replicas(values):
    """`values` summed over the replicas of a `tf.distribute` strategy, and their number.

    Outside a strategy, in its cross-replica context, or on another backend than TensorFlow,
    the values come back as they are with 1.

    Example:
    ```python
    (tp, fp, fn), replicas = sum_over_replicas([tp, fp, fn])
    ```
    """
    if keras.backend.backend() != "tensorflow":
        return values, 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values, 1
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values), context.num_replicas_in_sync


@keras.saving.register_keras_serializable(package="keras_unet", name="DiceLoss")
class Dice(RegionLoss):
    """Soft Dice loss: `1 - (2 TP + s) / (2 TP + FP + FN + s)` per class, then averaged.

    For binary models (one sigmoid channel) it is the Dice of the foreground. See the
    `keras_unet.losses` docstring for the label convention, `ignore_index` and
    `class_weights`. With `smooth=0` and one channel it equals `keras.losses.Dice()`
    (up to Keras' `epsilon`).

    Args:
        smooth: added to numerator and denominator (keeps the loss defined for classes
            absent from the batch).
        ignore_index: label value whose pixels are skipped.
        class_weights: one weight per output channel for the class average.
        from_logits: whether `y_pred` holds logits.
        multilabel: dense multi-label targets with one sigmoid per channel.
        reduction, name, dtype: as for `keras.losses.Loss`.

    Example:
    ```python
    import numpy as np
    import keras_unet

    loss = keras_unet.losses.Dice()
    float(loss(np.ones((1, 4, 4, 1)), np.full((1, 4, 4, 1), 0.5)))   # 1 - 2*0.5/1.5 = 0.33
    ```
    """

    def __init__(self, smooth=1.0, ignore_index=None, class_weights=None, from_logits=False,
                 multilabel=False, reduction="sum_over_batch_size", name="dice", dtype=None):
        super().__init__(smooth=smooth, ignore_index=ignore_index, class_weights=class_weights,
                         from_logits=from_logits, multilabel=multilabel, reduction=reduction,
                         name=name, dtype=dtype)

    def _score(self, tp, fp, fn):
        return (2.0 * tp + self.smooth) / (2.0 * tp + fp + fn + self.smooth)


@keras.saving.register_keras_serializable(package="keras_unet", name="JaccardLoss")
class Jaccard(RegionLoss):
    """Soft Jaccard (IoU) loss: `1 - (TP + s) / (TP + FP + FN + s)` per class, averaged.

    Args:
        smooth: added to numerator and denominator.
        ignore_index: label value whose pixels are skipped.
        class_weights: one weight per output channel for the class average.
        from_logits: whether `y_pred` holds logits.
        multilabel: dense multi-label targets with one sigmoid per channel.
        reduction, name, dtype: as for `keras.losses.Loss`.

    Example:
    ```python
    import numpy as np
    import keras_unet

    loss = keras_unet.losses.Jaccard()
    float(loss(np.ones((1, 4, 4, 1)), np.full((1, 4, 4, 1), 0.5)))   # 1 - 0.5/1 = 0.5
    ```
    """

    def __init__(self, smooth=1.0, ignore_index=None, class_weights=None, from_logits=False,
                 multilabel=False, reduction="sum_over_batch_size", name="jaccard", dtype=None):
        super().__init__(smooth=smooth, ignore_index=ignore_index, class_weights=class_weights,
                         from_logits=from_logits, multilabel=multilabel, reduction=reduction,
                         name=name, dtype=dtype)

    def _score(self, tp, fp, fn):
        return (tp + self.smooth) / (tp + fp + fn + self.smooth)


@keras.saving.register_keras_serializable(package="keras_unet", name="TverskyLoss")
class Tversky(RegionLoss):
    """Tversky loss (Salehi et al., 2017): `1 - (TP + s) / (TP + a FP + b FN + s)`.

    `alpha = beta = 0.5` is Dice; `beta > alpha` penalises missed foreground more (useful
    for small structures). `alpha` weighs the false positives, as in the paper.

    Args:
        alpha: weight of false positives.
        beta: weight of false negatives.
        smooth: added to numerator and denominator.
        ignore_index: label value whose pixels are skipped.
        class_weights: one weight per output channel for the class average.
        from_logits: whether `y_pred` holds logits.
        multilabel: dense multi-label targets with one sigmoid per channel.
        reduction, name, dtype: as for `keras.losses.Loss`.

    Example:
    ```python
    import numpy as np
    import keras_unet

    # beta > alpha: a missed foreground pixel costs more than a false alarm
    loss = keras_unet.losses.Tversky(alpha=0.3, beta=0.7)
    float(loss(np.ones((1, 4, 4, 1)), np.full((1, 4, 4, 1), 0.5)))
    ```
    """

    def __init__(self, alpha=0.5, beta=0.5, smooth=1.0, ignore_index=None, class_weights=None,
                 from_logits=False, multilabel=False, reduction="sum_over_batch_size",
                 name="tversky", dtype=None):
        super().__init__(smooth=smooth, ignore_index=ignore_index, class_weights=class_weights,
                         from_logits=from_logits, multilabel=multilabel, reduction=reduction,
                         name=name, dtype=dtype)
        if alpha < 0 or beta < 0:
            raise ValueError(f"`alpha` and `beta` must be >= 0. Received: alpha={alpha}, beta={beta}")
        self.alpha = float(alpha)
        self.beta = float(beta)

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "beta": self.beta})
        return config

    def _score(self, tp, fp, fn):
        return (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
