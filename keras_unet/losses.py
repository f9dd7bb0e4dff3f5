"""Segmentation losses with `ignore_index` and class weights.

Label convention (the one `keras_unet.data` produces):

- `y_pred`: probabilities `(B, H, W, K)` (sigmoid for `K = 1`, softmax otherwise), or
  logits with `from_logits=True`. Computed in float32, also under mixed precision.
- `y_true`: either **sparse** class indices `(B, H, W, 1)` (or `(B, H, W)`), int or
  float, 0/1 for binary; or **dense** `(B, H, W, K)`: one-hot for multi-class, one 0/1
  channel per label for multi-label (`multilabel=True`).
- `ignore_index`: pixels whose label equals it count in no loss term (for dense labels:
  each channel element equal to it). Use it for void/border classes (CamVid's 11).
- `class_weights`: one weight per channel of `y_pred` (for binary: one weight, or two
  for background and foreground in the cross entropies). Region losses (Dice, Jaccard,
  Tversky) average the per-class scores with these weights; cross entropies weight each
  pixel by its true class's weight and divide by the sum of the weights, as PyTorch's
  `CrossEntropyLoss(weight=...)` does.

Losses are registered as `keras_unet>DiceLoss`, `keras_unet>JaccardLoss` ... so that
they never clash with the metrics of the same class name (`keras_unet>Dice`).

Region losses are computed over the whole batch (one sum per class), like
`keras.losses.Dice` with `axis=None`, so empty masks do not make them undefined. Keras'
own `Dice` and `Tversky` losses have no `ignore_index`, no sparse labels and no per-class
averaging, so these classes compute the same formulas themselves.

Example:
```python
import keras_unet

model = keras_unet.UNet(input_shape=(128, 128, 3), num_classes=12)
model.compile("adam", loss=keras_unet.losses.CrossEntropyDice(ignore_index=11))
```
"""

import keras
from keras import ops

_EPSILON = 1e-7

__all__ = [
    "BCEDice",
    "CEDice",
    "CrossEntropy",
    "CrossEntropyDice",
    "Dice",
    "Focal",
    "Jaccard",
    "LOSSES",
    "Tversky",
    "get_loss",
]


def _check_weights(class_weights):
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


def _prepare(y_true, y_pred, ignore_index, from_logits, multilabel):
    """Return float32 `(probs, target, valid)`, all `(B, H, W, K)` (valid broadcastable).

    `target` is one-hot (or the dense labels); `valid` is 1 where a label counts.
    """
    y_pred = ops.cast(y_pred, "float32")
    num_channels = y_pred.shape[-1]
    if num_channels is None:
        raise ValueError(f"`y_pred` needs a known last dimension. Received: shape={y_pred.shape}")
    sigmoid = num_channels == 1 or multilabel
    if from_logits:
        y_pred = ops.sigmoid(y_pred) if sigmoid else ops.softmax(y_pred, axis=-1)
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == len(y_pred.shape) - 1:
        y_true = ops.expand_dims(y_true, -1)
    y_true = ops.cast(y_true, "float32")
    dense = y_true.shape[-1] == num_channels
    if ignore_index is not None:
        valid = ops.cast(ops.not_equal(y_true, float(ignore_index)), "float32")
        y_true = y_true * valid
    else:
        valid = ops.ones_like(y_true[..., :1] if not dense else y_true)
    if dense:
        target = y_true
    else:
        if multilabel:
            raise ValueError(
                "`multilabel=True` needs dense labels with one channel per class, shape "
                f"(B, H, W, {num_channels}). Received: y_true shape {tuple(y_true.shape)}"
            )
        target = ops.one_hot(ops.cast(y_true[..., 0], "int32"), num_channels)
    return y_pred, target, valid


def _class_weight_vector(class_weights, num_channels):
    if class_weights is None:
        return None
    if len(class_weights) != num_channels:
        raise ValueError(
            f"`class_weights` has {len(class_weights)} entries but the model has "
            f"{num_channels} output channel(s). Received: class_weights={class_weights!r}"
        )
    return ops.convert_to_tensor(class_weights, "float32")


def _mean_over_classes(scores, class_weights):
    if class_weights is None:
        return ops.mean(scores)
    weights = _class_weight_vector(class_weights, scores.shape[-1])
    return ops.sum(scores * weights) / ops.sum(weights)


class _SegmentationLoss(keras.losses.Loss):
    """Shared arguments and config of the losses in this module."""

    def __init__(self, ignore_index=None, class_weights=None, from_logits=False,
                 multilabel=False, reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if ignore_index is not None and (isinstance(ignore_index, bool)
                                         or not isinstance(ignore_index, int)):
            raise ValueError(f"`ignore_index` must be an integer or None. Received: ignore_index={ignore_index!r}")
        self.ignore_index = ignore_index
        self.class_weights = _check_weights(class_weights)
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

    def _inputs(self, y_true, y_pred):
        return _prepare(y_true, y_pred, self.ignore_index, self.from_logits, self.multilabel)


class _RegionLoss(_SegmentationLoss):
    """Dice-like losses from per-class TP, FP, FN sums over the batch."""

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
        probs, target, valid = self._inputs(y_true, y_pred)
        axes = tuple(range(len(probs.shape) - 1))
        tp = ops.sum(probs * target * valid, axis=axes)
        fp = ops.sum(probs * (1.0 - target) * valid, axis=axes)
        fn = ops.sum((1.0 - probs) * target * valid, axis=axes)
        return 1.0 - _mean_over_classes(self._score(tp, fp, fn), self.class_weights)


@keras.saving.register_keras_serializable(package="keras_unet", name="DiceLoss")
class Dice(_RegionLoss):
    """Soft Dice loss: `1 - (2 TP + s) / (2 TP + FP + FN + s)` per class, then averaged.

    For binary models (one sigmoid channel) it is the Dice of the foreground. See the
    module docstring for the label convention, `ignore_index` and `class_weights`.

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
    loss = keras_unet.losses.Dice()
    loss(np.ones((1, 4, 4, 1)), np.full((1, 4, 4, 1), 0.5))
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
class Jaccard(_RegionLoss):
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
    model.compile("adam", loss=keras_unet.losses.Jaccard())
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
class Tversky(_RegionLoss):
    """Tversky loss (Salehi et al., 2017): `1 - (TP + s) / (TP + a FP + b FN + s)`.

    `alpha = beta = 0.5` is Dice; `beta > alpha` penalises missed foreground more (useful
    for small structures). Same formula as `keras.losses.Tversky`, plus sparse labels,
    `ignore_index` and class weights.

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
    model.compile("adam", loss=keras_unet.losses.Tversky(alpha=0.3, beta=0.7))
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


def _pixel_weights(target, valid, class_weights, sigmoid):
    """Per-element weight: `valid` times the class weight of the element's true class."""
    if class_weights is None:
        return valid
    num_channels = target.shape[-1]
    if sigmoid and len(class_weights) == 2 and num_channels == 1:
        # binary: [background weight, foreground weight]
        weight = class_weights[0] + (class_weights[1] - class_weights[0]) * target
        return valid * weight
    weights = _class_weight_vector(class_weights, num_channels)
    if sigmoid:  # multi-label: weight per channel
        return valid * weights
    return valid * ops.sum(target * weights, axis=-1, keepdims=True)


def _weighted_mean(values, weights):
    weights = ops.broadcast_to(weights, ops.shape(values))
    return ops.sum(values * weights) / ops.maximum(ops.sum(weights), _EPSILON)


@keras.saving.register_keras_serializable(package="keras_unet", name="CrossEntropyLoss")
class CrossEntropy(_SegmentationLoss):
    """Pixel-wise cross entropy: binary (one sigmoid channel or `multilabel`) or
    categorical (softmax), with `ignore_index` and class weights.

    The mean runs over the pixels that count (and is weighted by `class_weights`), not
    over all pixels, so ignored pixels do not dilute the loss.

    Args:
        ignore_index: label value whose pixels are skipped.
        class_weights: one weight per output channel; for a binary model also
            `[background, foreground]`.
        from_logits: whether `y_pred` holds logits.
        multilabel: dense multi-label targets with one sigmoid per channel.
        reduction, name, dtype: as for `keras.losses.Loss`.

    Example:
    ```python
    model.compile("adam", loss=keras_unet.losses.CrossEntropy(ignore_index=11))
    ```
    """

    def __init__(self, ignore_index=None, class_weights=None, from_logits=False,
                 multilabel=False, reduction="sum_over_batch_size", name="cross_entropy",
                 dtype=None):
        super().__init__(ignore_index=ignore_index, class_weights=class_weights,
                         from_logits=from_logits, multilabel=multilabel, reduction=reduction,
                         name=name, dtype=dtype)

    def _elementwise(self, probs, target, sigmoid):
        probs = ops.clip(probs, _EPSILON, 1.0 - _EPSILON)
        if sigmoid:
            return -(target * ops.log(probs) + (1.0 - target) * ops.log(1.0 - probs))
        return -ops.sum(target * ops.log(probs), axis=-1, keepdims=True)

    def call(self, y_true, y_pred):
        probs, target, valid = self._inputs(y_true, y_pred)
        sigmoid = probs.shape[-1] == 1 or self.multilabel
        if not sigmoid and valid.shape[-1] != 1:
            valid = ops.min(valid, axis=-1, keepdims=True)
        values = self._elementwise(probs, target, sigmoid)
        weights = _pixel_weights(target, valid, self.class_weights, sigmoid)
        return _weighted_mean(values, weights)


@keras.saving.register_keras_serializable(package="keras_unet", name="FocalLoss")
class Focal(CrossEntropy):
    """Focal loss (Lin et al., 2017): cross entropy scaled by `(1 - p_t) ** gamma`, so
    that easy pixels (most of the background) count less.

    Class balancing (the paper's `alpha`) is `class_weights`; for a binary model
    `class_weights=[0.75, 0.25]` is the paper's `alpha = 0.25`.

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
    model.compile("adam", loss=keras_unet.losses.Focal(gamma=2.0))
    ```
    """

    def __init__(self, gamma=2.0, ignore_index=None, class_weights=None, from_logits=False,
                 multilabel=False, reduction="sum_over_batch_size", name="focal", dtype=None):
        super().__init__(ignore_index=ignore_index, class_weights=class_weights,
                         from_logits=from_logits, multilabel=multilabel, reduction=reduction,
                         name=name, dtype=dtype)
        if gamma < 0:
            raise ValueError(f"`gamma` must be >= 0. Received: gamma={gamma!r}")
        self.gamma = float(gamma)

    def get_config(self):
        config = super().get_config()
        config["gamma"] = self.gamma
        return config

    def _elementwise(self, probs, target, sigmoid):
        probs = ops.clip(probs, _EPSILON, 1.0 - _EPSILON)
        if sigmoid:
            p_t = target * probs + (1.0 - target) * (1.0 - probs)
            return -ops.power(1.0 - p_t, self.gamma) * ops.log(p_t)
        return -ops.sum(target * ops.power(1.0 - probs, self.gamma) * ops.log(probs),
                        axis=-1, keepdims=True)


@keras.saving.register_keras_serializable(package="keras_unet", name="CrossEntropyDiceLoss")
class CrossEntropyDice(_SegmentationLoss):
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


BCEDice = CrossEntropyDice
CEDice = CrossEntropyDice

LOSSES = {
    "dice": Dice,
    "jaccard": Jaccard,
    "focal": Focal,
    "tversky": Tversky,
    "bce_dice": CrossEntropyDice,
    "ce_dice": CrossEntropyDice,
    "bce": CrossEntropy,
    "ce": CrossEntropy,
}


def get_loss(name, **kwargs):
    """Build a loss by name, for the CLI.

    Args:
        name: one of `"dice"`, `"jaccard"`, `"focal"`, `"tversky"`, `"bce_dice"`,
            `"ce_dice"`, `"bce"`, `"ce"` (the `b`/no-`b` pairs are the same class: binary or
            categorical is read from the model's output channels).
        **kwargs: passed to the class (`ignore_index`, `class_weights`, ...).

    Example:
    ```python
    loss = get_loss("ce_dice", ignore_index=11)
    ```
    """
    key = str(name).lower().replace("-", "_").replace("+", "_")
    if key not in LOSSES:
        raise KeyError(
            f"Unknown loss '{name}'. Valid names: {', '.join(sorted(LOSSES))}. Received: name={name!r}"
        )
    return LOSSES[key](**kwargs)
