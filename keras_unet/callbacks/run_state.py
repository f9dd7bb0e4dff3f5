"""The state of a run that a stop must not lose: `ResumableEarlyStopping` (early stopping's
count across resumes), `CommitEpoch` (records each finished epoch), `InterruptCheck` (a Ctrl-C
that a library swallowed stops at the next batch)."""

from collections.abc import Callable

import keras

from keras_unet.console.interrupts import raise_if_interrupted


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` that goes on counting where a stopped run left off.

    Keras' callback forgets its best value and its count of epochs without improvement at
    every `fit`, so a run resumed with `initial_epoch` would wait `patience` epochs afresh.
    Given what the run had reached, this one stops at the epoch the uninterrupted run would.

    Args:
        initial_best: the best monitored value before the resume (None: none yet).
        epochs_since_best: epochs since that value, as `EarlyStopping.wait` had them.
        **kwargs: as for `keras.callbacks.EarlyStopping`.

    Example:
    ```python
    import numpy as np
    import keras_unet
    from keras_unet.callbacks import ResumableEarlyStopping

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)
    model.compile("adam", "binary_crossentropy", metrics=keras_unet.metrics.get_metrics(1))
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 1)).astype("float32")
    masks = (images > 127).astype("float32")


    # Stopped after epoch 7 with its best val_iou 0.81 at epoch 5: two epochs without
    # improvement already count towards the patience.
    stop = ResumableEarlyStopping(initial_best=0.81, epochs_since_best=2,
                                  monitor="val_iou", mode="max", patience=3)
    model.fit(images, masks, validation_split=0.25, initial_epoch=7, epochs=20, verbose=0,
              callbacks=[stop])   # stops after epoch 8 unless val_iou beats 0.81
    ```
    """

    def __init__(self, initial_best: float | None = None, epochs_since_best: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if epochs_since_best < 0:
            raise ValueError(f"`epochs_since_best` must be >= 0. Received: {epochs_since_best}")
        self.initial_best = initial_best
        self.epochs_since_best = int(epochs_since_best)

    def on_train_begin(self, logs=None) -> None:
        super().on_train_begin(logs)
        if self.initial_best is not None:
            self.best = self.initial_best
            self.wait = self.epochs_since_best


class CommitEpoch(keras.callbacks.Callback):
    """At the end of each epoch, call `commit(epochs_completed, best, epochs_since_best)`
    with early stopping's best value and its count of epochs since that value.

    What makes a stopped run resumable: a run folder records an epoch as done only once its
    checkpoints hold it, and with early stopping's state, so that a resumed run stops where
    the uninterrupted one would. So put it after the checkpoints and after `early_stopping`
    in the callback list (Keras calls them in order; by then both are up to date).

    Args:
        commit: records the epoch; `best` is None before any epoch had a monitored value.
        early_stopping: the run's `keras.callbacks.EarlyStopping` (or `ResumableEarlyStopping`).

    Example:
    ```python
    import numpy as np
    import keras_unet
    from keras_unet.callbacks import AtomicModelCheckpoint, CommitEpoch, ResumableEarlyStopping

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)
    model.compile("adam", "binary_crossentropy", metrics=keras_unet.metrics.get_metrics(1))
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 1)).astype("float32")
    masks = (images > 127).astype("float32")


    checkpoint = AtomicModelCheckpoint("runs/a/last.keras")
    stop = ResumableEarlyStopping(monitor="val_iou", mode="max", patience=10)
    commit = CommitEpoch(lambda done, best, since: print(done, best, since), stop)
    model.fit(images, masks, validation_split=0.25, epochs=2, verbose=0,
              callbacks=[checkpoint, stop, commit])   # the checkpoints first
    ```
    """

    def __init__(self, commit: Callable[[int, float | None, int], None],
                 early_stopping: keras.callbacks.EarlyStopping) -> None:
        super().__init__()
        self.commit = commit
        self.early_stopping = early_stopping

    def on_epoch_end(self, epoch, logs=None) -> None:
        best = self.early_stopping.best
        self.commit(epoch + 1, None if best is None else float(best), int(self.early_stopping.wait))


class InterruptCheck(keras.callbacks.Callback):
    """Raise `KeyboardInterrupt` at the next batch after a Ctrl-C, even one that a library
    caught and swallowed (`keras_unet.console.interrupts.raise_if_interrupted`).

    Put it first in the callback list: at an epoch's end it stops before any checkpoint of
    that epoch is written.

    Example:
    ```python
    import numpy as np
    import keras_unet
    from keras_unet.callbacks import AtomicModelCheckpoint, InterruptCheck

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)
    model.compile("adam", "binary_crossentropy", metrics=keras_unet.metrics.get_metrics(1))
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 1)).astype("float32")
    masks = (images > 127).astype("float32")


    # first: after a Ctrl-C, the epoch's checkpoint is not written
    model.fit(images, masks, epochs=1, verbose=0,
              callbacks=[InterruptCheck(), AtomicModelCheckpoint("runs/a/last.keras")])
    ```
    """

    def on_train_batch_end(self, batch, logs=None) -> None:
        raise_if_interrupted()

    def on_epoch_end(self, epoch, logs=None) -> None:
        raise_if_interrupted()

    def on_test_batch_end(self, batch, logs=None) -> None:
        raise_if_interrupted()
