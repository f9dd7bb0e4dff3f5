"""Training that goes wrong, said at once: `StopOnNonFiniteLoss` raises `TrainingDiverged` at
the first NaN or infinite loss; `WarnOnCollapse` warns when the model predicts no foreground."""

import math

import keras


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite (raised by `StopOnNonFiniteLoss`).

    Attributes:
        epoch: the epoch (1-based) in which the loss diverged.
        batch: the batch (1-based) of that epoch.
        loss: the loss value (NaN or +-inf).

    Example:
    ```python
    import keras
    import numpy as np
    from keras_unet.callbacks import StopOnNonFiniteLoss, TrainingDiverged

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(1e30), "mse")
    try:
        model.fit(np.ones((64, 4)), np.ones((64, 1)), batch_size=8, epochs=3, verbose=0,
                  callbacks=[StopOnNonFiniteLoss()])
    except TrainingDiverged as error:
        error.epoch, error.batch, error.loss   # where it diverged, and the loss value
    ```
    """

    def __init__(self, message: str, epoch: int | None = None, batch: int | None = None,
                 loss: float | None = None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.loss = loss


class StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """Stop training at the first batch whose loss is NaN or infinite, by raising.

    `keras.callbacks.TerminateOnNaN()` lets the epoch end, so the epoch's checkpoints save
    NaN weights over the last good ones. This callback raises `TrainingDiverged` from the
    batch itself: no callback's `on_epoch_end` runs for that epoch, every checkpoint keeps
    the last finite epoch, and the message says where the loss diverged. Put it first in
    the callback list.

    Args:
        advice: the sentence ending the message (what to change).

    Example:
    ```python
    import keras
    import numpy as np
    from keras_unet.callbacks import StopOnNonFiniteLoss, TrainingDiverged

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(1e30), "mse")
    try:
        model.fit(np.ones((64, 4)), np.ones((64, 1)), batch_size=8, epochs=3, verbose=0,
                  callbacks=[StopOnNonFiniteLoss()])
    except TrainingDiverged as error:
        print(error)   # the training loss became inf at epoch 1, batch 2 ...
    ```
    """

    def __init__(self, advice: str = "Lower the learning rate.") -> None:
        super().__init__(raise_error=True)
        self.advice = advice
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(loss)
        if math.isfinite(loss):
            return
        raise TrainingDiverged(
            f"the training loss became {loss} at epoch {self._epoch + 1}, batch {batch + 1}: "
            f"training stopped before that epoch was saved, so the last good checkpoint is kept. "
            f"{self.advice}",
            epoch=self._epoch + 1, batch=batch + 1, loss=loss,
        )


class WarnOnCollapse(keras.callbacks.Callback):
    """Warn once when `patience` epochs in a row score an IoU of exactly 0 on the training
    and the validation data: the model predicts no foreground at all.

    A model can collapse that way at too high a learning rate (the original U-Net without
    batch norm does at Adam's default 1e-3) while its loss stays finite, so nothing else
    says so. Why: see docs/notes/2026-11-24-batch-norm-momentum.md.

    Args:
        advice: the sentence ending the warning (what to change).
        patience: epochs in a row with IoU 0 before warning.
        stream: where the warning goes (default `sys.stderr`).

    Example:
    ```python
    import numpy as np
    import keras_unet
    from keras_unet.callbacks import WarnOnCollapse

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)
    model.compile("adam", "binary_crossentropy", metrics=keras_unet.metrics.get_metrics(1))
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 1)).astype("float32")
    masks = (images > 127).astype("float32")

    # The advice ends the warning, printed once when IoU stays 0 for `patience` epochs.
    model.fit(images, 0 * masks, validation_split=0.25, epochs=2, verbose=0,
              callbacks=[WarnOnCollapse("Try --lr 1e-4.", patience=2)])
    ```
    """

    def __init__(self, advice: str = "Lower the learning rate.", patience: int = 2, stream=None) -> None:
        super().__init__()
        self.advice = advice
        self.patience = patience
        self.stream = stream
        self._zeros = 0
        self.warned = False

    def on_epoch_end(self, epoch, logs=None) -> None:
        import sys

        logs = logs or {}
        collapsed = logs.get("iou") == 0.0 and logs.get("val_iou", 0.0) == 0.0
        self._zeros = self._zeros + 1 if collapsed else 0
        if self._zeros >= self.patience and not self.warned:
            self.warned = True
            print(f"warning: epochs {epoch + 2 - self._zeros}-{epoch + 1} scored IoU 0 on the "
                  f"training and validation data: the model predicts no foreground. "
                  f"{self.advice}", file=self.stream or sys.stderr, flush=True)
