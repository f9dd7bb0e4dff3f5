"""Pixel-wise cross entropy and focal loss on Keras' own losses, and cross entropy + Dice.

Keras computes every pixel's value and the weighted mean (`reduction=
"mean_with_sample_weight"`: sum of weighted values over sum of weights). What this module
adds is the choice of the Keras loss from the labels and the model's channels, and the
per-pixel weight: the true class's entry of `class_weights`, 0 where the label is
`ignore_index`. Keras' `ignore_class` does the skipping for sparse labels with a softmax;
dense labels and sigmoid outputs have no `ignore_class` in Keras, so there the ignored
pixels get weight 0.

Keras' numerics, which differ from a hand-written `log(clip(p, 1e-7))` in two places:
with `from_logits=True` the values are exact (log-softmax / log-sigmoid), so a
confidently wrong pixel costs its full logit margin instead of at most 16.1 with no
gradient; and a sparse label outside `0..K-1` that is not `ignore_index` is an error
for `SparseCategoricalCrossentropy` (TensorFlow on CPU raises; `keras_unet.data` rejects
such masks when loading), where it used to count as a zero loss.
"""

import keras
from keras import ops

from keras_unet.losses.base import SegmentationLoss, class_weight_vector
from keras_unet.losses.region import Dice

_REDUCTION = "mean_with_sample_weight"


@keras.saving.register_keras_serializable(package="keras_unet", name="CrossEntropyLoss")
class CrossEntropy(SegmentationLoss):
    """Pixel-wise cross entropy: binary (one sigmoid channel or `multilabel`) or
    categorical (softmax), with `ignore_index` and class weights.

    Built on `keras.losses.BinaryCrossentropy`, `SparseCategoricalCrossentropy`
    (`ignore_class=ignore_index`) and `CategoricalCrossentropy` (one-hot labels). The mean
    runs over the pixels that count (weighted by `class_weights`, as PyTorch's
    `CrossEntropyLoss(weight=...)`), so ignored pixels do not dilute the loss.

    Args:
        ignore_index: label value whose pixels are skipped.
        class_weights: one weight per output channel; for a binary model also
            `[background, foreground]`.
        from_logits: whether `y_pred` holds logits.
        multilabel: dense multi-label targets with one sigmoid per channel.
        reduction, name, dtype: as for `keras.losses.Loss`.

    Example:
    ```python
    import numpy as np
    import keras_unet

    loss = keras_unet.losses.CrossEntropy(ignore_index=11)
    masks = np.array([[[0, 1], [11, 2]]])                 # class ids; 11 is skipped
    probabilities = np.full((1, 2, 2, 12), 1 / 12, "float32")
    float(loss(masks, probabilities))                     # log(12) = 2.48
    ```
    """

    def __init__(self, ignore_index=None, class_weights=None, from_logits=False,
                 multilabel=False, reduction="sum_over_batch_size", name="cross_entropy",
                 dtype=None):
        super().__init__(ignore_index=ignore_index, class_weights=class_weights,
                         from_logits=from_logits, multilabel=multilabel, reduction=reduction,
                         name=name, dtype=dtype)
        self._sigmoid_loss, self._softmax_loss, self._sparse_loss = self._keras_losses()

    def _keras_losses(self):
        """The Keras losses for sigmoid, softmax with dense labels, softmax with sparse
        labels (None: one-hot the labels and use the dense one)."""
        return (
            keras.losses.BinaryCrossentropy(from_logits=self.from_logits, reduction=_REDUCTION),
            keras.losses.CategoricalCrossentropy(from_logits=self.from_logits, reduction=_REDUCTION),
            keras.losses.SparseCategoricalCrossentropy(
                from_logits=self.from_logits, ignore_class=self.ignore_index, reduction=_REDUCTION),
        )

    def call(self, y_true, y_pred):
        y_pred, labels, valid, sparse = self._read(y_true, y_pred)
        num_channels, class_weights = y_pred.shape[-1], self.class_weights
        if self._is_sigmoid(y_pred):
            if class_weights is not None and num_channels == 1 and len(class_weights) == 2:
                background, foreground = class_weights
                valid = valid * (background + (foreground - background) * labels)
            elif class_weights is not None:
                valid = valid * class_weight_vector(class_weights, num_channels)
            # A trailing axis of 1: Keras averages over the last axis, we keep each channel.
            return self._sigmoid_loss(labels[..., None], y_pred[..., None], sample_weight=valid)
        weights = None if class_weights is None else class_weight_vector(class_weights, num_channels)
        class_ids = ops.cast(labels[..., 0], "int32") if sparse else None
        if sparse and self._sparse_loss is not None:
            pixel_weights = None if weights is None else ops.take(weights, class_ids)
            return self._sparse_loss(y_true, y_pred, sample_weight=pixel_weights)
        if sparse:
            labels = ops.one_hot(class_ids, num_channels)
        else:  # a pixel counts only if none of its channels holds `ignore_index`
            valid = ops.min(valid, axis=-1, keepdims=True)
        pixel_weights = valid[..., 0]
        if weights is not None:
            pixel_weights = pixel_weights * ops.sum(labels * weights, axis=-1)
        return self._softmax_loss(labels, y_pred, sample_weight=pixel_weights)


@keras.saving.register_keras_serializable(package="keras_unet", name="FocalLoss")
class Focal(CrossEntropy):
    """Focal loss (Lin et al., 2017): cross entropy scaled by `(1 - p_t) ** gamma`, so
    that easy pixels (most of the background) count less.

    Built on `keras.losses.BinaryFocalCrossentropy` and `CategoricalFocalCrossentropy`
    (`alpha=1`; Keras has no sparse focal loss, so sparse labels are one-hot encoded).
    Class balancing (the paper's `alpha`) is `class_weights`, normalised like the cross
    entropy's; for a binary model `class_weights=[0.75, 0.25]` is the paper's
    `alpha = 0.25`.

    Args:
        gamma: focusing parameter; 0 gives the cross entropy.
        ignore_index: label value whose pixels are skipped.
        class_weights: one weight per output channel; for a binary model also
            `[background, foreground]`.
        from_logits: whether `y_pred` holds logits.
        multilabel: dense multi-label targets with one sigmoid per channel.
        reduction, name, dtype: as for `keras.losses.Loss`.

    Example:
    ```python
    import numpy as np
    import keras_unet

    loss = keras_unet.losses.Focal(gamma=2.0)
    masks = np.ones((1, 4, 4, 1), "float32")
    float(loss(masks, np.full((1, 4, 4, 1), 0.9, "float32")))   # well classified: near 0
    ```
    """

    def __init__(self, gamma=2.0, ignore_index=None, class_weights=None, from_logits=False,
                 multilabel=False, reduction="sum_over_batch_size", name="focal", dtype=None):
        if gamma < 0:
            raise ValueError(f"`gamma` must be >= 0. Received: gamma={gamma!r}")
        self.gamma = float(gamma)  # before super().__init__, which builds the Keras losses
        super().__init__(ignore_index=ignore_index, class_weights=class_weights,
                         from_logits=from_logits, multilabel=multilabel, reduction=reduction,
                         name=name, dtype=dtype)

    def _keras_losses(self):
        return (
            keras.losses.BinaryFocalCrossentropy(
                gamma=self.gamma, from_logits=self.from_logits, reduction=_REDUCTION),
            keras.losses.CategoricalFocalCrossentropy(
                alpha=1.0, gamma=self.gamma, from_logits=self.from_logits, reduction=_REDUCTION),
            None,
        )

    def get_config(self):
        config = super().get_config()
        config["gamma"] = self.gamma
        return config


@keras.saving.register_keras_serializable(package="keras_unet", name="CrossEntropyDiceLoss")
class CrossEntropyDice(SegmentationLoss):
    """`ce_weight * CrossEntropy + dice_weight * Dice`, the usual U-Net training loss.

    Binary cross entropy for one sigmoid channel (or `multilabel`), categorical
    otherwise; `BCEDice` and `CEDice` are the same class.

    Args:
        ce_weight: weight of the cross entropy term.
        dice_weight: weight of the Dice term.
        smooth: Dice smoothing.
        ignore_index: label value whose pixels are skipped.
        class_weights: one weight per output channel (both terms).
        from_logits: whether `y_pred` holds logits.
        multilabel: dense multi-label targets with one sigmoid per channel.
        reduction, name, dtype: as for `keras.losses.Loss`.

    Example:
    ```python
    import keras_unet

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)
    model.compile("adam", loss=keras_unet.losses.CrossEntropyDice())
    ```
    """

    def __init__(self, ce_weight=1.0, dice_weight=1.0, smooth=1.0, ignore_index=None,
                 class_weights=None, from_logits=False, multilabel=False,
                 reduction="sum_over_batch_size", name="ce_dice", dtype=None):
        super().__init__(ignore_index=ignore_index, class_weights=class_weights,
                         from_logits=from_logits, multilabel=multilabel, reduction=reduction,
                         name=name, dtype=dtype)
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)
        shared = dict(ignore_index=ignore_index, class_weights=class_weights,
                      from_logits=from_logits, multilabel=multilabel)
        self._ce = CrossEntropy(**shared)
        self._dice = Dice(smooth=smooth, **shared)

    def get_config(self):
        config = super().get_config()
        config.update({"ce_weight": self.ce_weight, "dice_weight": self.dice_weight,
                       "smooth": self.smooth})
        return config

    def call(self, y_true, y_pred):
        return (self.ce_weight * self._ce.call(y_true, y_pred)
                + self.dice_weight * self._dice.call(y_true, y_pred))
