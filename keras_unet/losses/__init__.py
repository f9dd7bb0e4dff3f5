"""Segmentation losses with `ignore_index` and class weights, on Keras' own where it has them.

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

What each loss builds on:

| loss | Keras | what is added here |
|---|---|---|
| `CrossEntropy` | `BinaryCrossentropy`; `SparseCategoricalCrossentropy(ignore_class=...)`; `CategoricalCrossentropy` | picks one from channels and labels; class weights and `ignore_index` for dense/binary labels as `sample_weight` |
| `Focal` | `BinaryFocalCrossentropy`; `CategoricalFocalCrossentropy(alpha=1)` | the same, and one-hot for sparse labels (Keras has no sparse focal loss) |
| `Dice`, `Jaccard`, `Tversky` | none (computed here) | see below |
| `CrossEntropyDice` | the two above | the weighted sum |

The region losses are written out here because `keras.losses.Dice`/`Tversky` have no
`ignore_index`, no sparse labels, no per-class average and no `smooth` term (an empty class
scores 0 instead of 1), and Keras 3.15's `tversky` applies `alpha` to the false negatives
against its own docstring (keras-team/keras#23333). Keras has no Jaccard loss. They are
computed over the whole batch (one sum per class), like `keras.losses.Dice` with
`axis=None`, so empty masks do not make them undefined.

Losses are registered as `keras_unet>DiceLoss`, `keras_unet>JaccardLoss` ... so that
they never clash with the metrics of the same class name (`keras_unet>Dice`).

Example:
```python
import keras_unet

model = keras_unet.UNet(input_shape=(128, 128, 3), num_classes=12)
model.compile("adam", loss=keras_unet.losses.CrossEntropyDice(ignore_index=11))
```
"""

from keras_unet.losses.cross_entropy import CrossEntropy, CrossEntropyDice, Focal
from keras_unet.losses.region import Dice, Jaccard, Tversky

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
    from keras_unet.losses import CrossEntropyDice, get_loss

    loss = get_loss("ce_dice", ignore_index=11)
    isinstance(loss, CrossEntropyDice)   # True
    ```
    """
    key = str(name).lower().replace("-", "_").replace("+", "_")
    if key not in LOSSES:
        raise KeyError(
            f"Unknown loss '{name}'. Valid names: {', '.join(sorted(LOSSES))}. Received: name={name!r}"
        )
    return LOSSES[key](**kwargs)
