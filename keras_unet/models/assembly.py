"""The model a training run starts from, assembled from its options: a new `UNet`, a copy of a
trained model, or (quantization-aware fine-tuning) the int8-simulating copy of one, compiled
with the optimizer and loss that go with it.

Example:
```python
from keras_unet.models.assembly import ModelOptions, initial_model

options = ModelOptions(image_size=(128, 128), channels=1, filters=16, use_batchnorm=True)
model = initial_model(options)   # a new UNet, compiled with Adam and bce_dice
```
"""

import dataclasses

import keras

from keras_unet.models.unet import UNet


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """What a training run builds and compiles.

    Attributes:
        image_size: `(height, width)` of the model's input.
        channels, num_classes, filters, depth, use_batchnorm, dropout, upsample,
        use_attention, residual, encoder, encoder_weights, class_names: as for `UNet`.
        loss: a name `keras_unet.losses.get_loss` knows; None: `default_loss(num_classes)`.
        learning_rate: the optimizer's learning rate.
        ignore_index: the mask value that the loss and the metrics skip, or None.
    """

    image_size: tuple[int, int]
    channels: int = 3
    num_classes: int = 1
    filters: int = 64
    depth: int = 4
    use_batchnorm: bool = False
    dropout: float = 0.0
    upsample: str = "transpose"
    use_attention: bool = False
    residual: bool = False
    encoder: str = "vanilla"
    encoder_weights: str | None = None
    class_names: list[str] | None = None
    loss: str | None = None
    learning_rate: float = 1e-3
    ignore_index: int | None = None


def default_loss(num_classes: int) -> str:
    """`bce_dice` for a binary model (one sigmoid output), `ce_dice` for several classes."""
    return "bce_dice" if num_classes == 1 else "ce_dice"


def build_unet(options: ModelOptions) -> UNet:
    """A new `UNet` with the options' architecture (weights from the current Keras seed).

    Example:
    ```python
    build_unet(ModelOptions(image_size=(64, 64), filters=8, depth=2)).count_params()
    ```
    """
    return UNet(
        input_shape=(*options.image_size, options.channels),
        num_classes=options.num_classes,
        filters=options.filters,
        depth=options.depth,
        use_batchnorm=options.use_batchnorm,
        dropout=options.dropout,
        upsample=options.upsample,
        use_attention=options.use_attention,
        residual=options.residual,
        encoder=options.encoder,
        encoder_weights=options.encoder_weights,
        class_names=options.class_names,
        ignore_index=options.ignore_index,
    )


def compile_for_training(model: keras.Model, options: ModelOptions, teacher: keras.Model | None = None) -> None:
    """Compile `model` with Adam and the segmentation loss, and the IoU/Dice metrics (per
    class too); with a `teacher` (quantization-aware fine-tuning), SGD with momentum 0.9 and
    the distillation loss towards the teacher's probabilities (what worked for QAT, see
    `keras_unet.quantization.distillation`)."""
    from keras_unet import losses, metrics

    if teacher is not None:
        from keras_unet.quantization import distillation_loss

        optimizer = keras.optimizers.SGD(options.learning_rate, momentum=0.9)
        loss = distillation_loss(teacher)
    else:
        optimizer = keras.optimizers.Adam(options.learning_rate)
        loss = losses.get_loss(options.loss or default_loss(options.num_classes),
                               ignore_index=options.ignore_index)
    model.compile(
        optimizer=optimizer, loss=loss,
        metrics=metrics.get_metrics(options.num_classes, ignore_index=options.ignore_index, per_class=True),
    )


def initial_model(options: ModelOptions, init: keras.Model | None = None, qat: bool = False) -> keras.Model:
    """The compiled model a new run starts from.

    Args:
        options: the architecture (used only without `init`), loss and learning rate.
        init: a trained model to start from (its architecture and weights), or None for a
            new `UNet`.
        qat: fine-tune `init` quantization-aware: its int8-simulating copy
            (`keras_unet.quantization.quantize_aware`) learns to reproduce `init`'s outputs.

    Example:
    ```python
    model = initial_model(options, init=keras.models.load_model("model.keras"), qat=True)
    ```
    """
    if init is None:
        model = build_unet(options)
    elif qat:
        from keras_unet.quantization import quantize_aware

        model = quantize_aware(init)
    else:
        model = keras.models.clone_model(init)
        model.set_weights(init.get_weights())
    compile_for_training(model, options, teacher=init if qat else None)
    return model
