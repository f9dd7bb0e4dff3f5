"""What every loss here shares: its arguments and config, how labels are read, class weights.

The label convention is in the `keras_unet.losses` docstring.
"""

import keras
from keras import ops


def check_class_weights(class_weights):
    """`class_weights` as a list of floats (or None); raise if it cannot be one."""
    if class_weights is None:
        return None
    try:
        weights = [float(w) for w in class_weights]
    except TypeError:
        raise ValueError(
            f"`class_weights` must be a list of numbers, one per class. "
            f"Received: class_weights={class_weights!r}"
        ) from None
    if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f"`class_weights` must be non-negative with a positive sum. "
            f"Received: class_weights={class_weights!r}"
        )
    return weights


def class_weight_vector(class_weights, num_channels):
    """`class_weights` as a float32 tensor `(num_channels,)`; raise on a length mismatch."""
    if len(class_weights) != num_channels:
        raise ValueError(
            f"`class_weights` has {len(class_weights)} entries but the model has "
            f"{num_channels} output channel(s). Received: class_weights={class_weights!r}"
        )
    return ops.convert_to_tensor(class_weights, "float32")


def num_channels_of(y_pred):
    num_channels = y_pred.shape[-1]
    if num_channels is None:
        raise ValueError(f"`y_pred` needs a known last dimension. Received: shape={y_pred.shape}")
    return num_channels


def read_labels(y_true, y_pred, ignore_index, multilabel):
    """Labels as float32 of `y_pred`'s rank, with the pixels to skip marked.

    Returns:
        `(labels, valid, sparse)`: `labels` is `(B, H, W, 1)` class indices when `sparse`,
        else the dense `(B, H, W, K)` labels; values equal to `ignore_index` are set to 0.
        `valid` has the shape of `labels`: 1 where a label counts, 0 where it is ignored.
    """
    num_channels = num_channels_of(y_pred)
    labels = ops.convert_to_tensor(y_true)
    if len(labels.shape) == len(y_pred.shape) - 1:
        labels = ops.expand_dims(labels, -1)
    labels = ops.cast(labels, "float32")
    sparse = labels.shape[-1] != num_channels
    if sparse and (multilabel or labels.shape[-1] != 1):
        wanted = f"dense labels with one channel per class, shape (B, H, W, {num_channels})"
        raise ValueError(
            (f"`multilabel=True` needs {wanted}." if multilabel else
             f"Labels must be class indices (B, H, W, 1) or {wanted}.")
            + f" Received: y_true shape {tuple(labels.shape)}"
        )
    if ignore_index is None:
        return labels, ops.ones_like(labels), sparse
    valid = ops.cast(ops.not_equal(labels, float(ignore_index)), "float32")
    return labels * valid, valid, sparse


class SegmentationLoss(keras.losses.Loss):
    """Base of the losses here: `ignore_index`, `class_weights`, `from_logits`, `multilabel`.

    Subclasses implement `call(y_true, y_pred)` and return one float32 scalar.
    """

    def __init__(self, ignore_index=None, class_weights=None, from_logits=False,
                 multilabel=False, reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if ignore_index is not None and (isinstance(ignore_index, bool)
                                         or not isinstance(ignore_index, int)):
            raise ValueError(f"`ignore_index` must be an integer or None. Received: ignore_index={ignore_index!r}")
        self.ignore_index = ignore_index
        self.class_weights = check_class_weights(class_weights)
        self.from_logits = bool(from_logits)
        self.multilabel = bool(multilabel)

    def get_config(self):
        config = super().get_config()
        config.update({
            "ignore_index": self.ignore_index,
            "class_weights": self.class_weights,
            "from_logits": self.from_logits,
            "multilabel": self.multilabel,
        })
        return config

    def _is_sigmoid(self, y_pred):
        """One sigmoid per channel (binary or multi-label), else one softmax over channels."""
        return num_channels_of(y_pred) == 1 or self.multilabel

    def _read(self, y_true, y_pred):
        """float32 `(y_pred, labels, valid, sparse)`, also under mixed precision."""
        y_pred = ops.cast(y_pred, "float32")
        return (y_pred,) + read_labels(y_true, y_pred, self.ignore_index, self.multilabel)
