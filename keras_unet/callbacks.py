"""Training callbacks that leave a run folder usable whenever training stops.

`keras.callbacks.ModelCheckpoint` writes its file in place: a Ctrl-C, a kill or a full disk
during the save leaves a truncated `.keras` file, and the run cannot resume from it.
`keras.callbacks.TerminateOnNaN` stops at the end of the epoch, after the epoch's
checkpoints have saved NaN weights over the last good ones. The two callbacks here close
both gaps:

- `AtomicModelCheckpoint`: `ModelCheckpoint` (same arguments) that saves to a temporary
  file beside the target and renames it into place (`keras_unet.runtime.files.atomic_output`),
  so the file at the target is always a complete save, the previous one until the new one
  is written. Temporary files left by a killed process are removed when training starts.
- `StopOnNonFiniteLoss`: raises `TrainingDiverged` at the first batch whose loss is NaN or
  infinite, before any checkpoint of that epoch is written.
- `ResumableEarlyStopping`: `EarlyStopping` that a resumed run starts from the best value
  and the epochs without improvement saved before the stop, instead of from scratch (which
  gave every resume `patience` more epochs than the uninterrupted run).
- `CommitEpoch`: after each epoch's checkpoints, hands the epoch count and early stopping's
  state to a function that records them (`keras-unet train` writes its config.json).
- `InterruptCheck`: stops at the next batch after a Ctrl-C that a library swallowed.
- `LocalModelCheckpoint`: `AtomicModelCheckpoint` for the one process that saves under a
  multi-process `keras.distribution`.

Example:
```python
import keras
import numpy as np
from keras_unet.callbacks import AtomicModelCheckpoint, StopOnNonFiniteLoss

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
model.compile("adam", "mse")
model.fit(np.zeros((8, 4)), np.zeros((8, 1)), epochs=2, verbose=0,
          callbacks=[StopOnNonFiniteLoss(), AtomicModelCheckpoint("last.keras")])
```
"""

import contextlib
import math
import os
import re
from collections.abc import Callable

import keras

from keras_unet.console.interrupts import raise_if_interrupted
from keras_unet.runtime.files import atomic_output

__all__ = ["AtomicModelCheckpoint", "CommitEpoch", "InterruptCheck", "LocalModelCheckpoint",
           "ResumableEarlyStopping", "StopOnNonFiniteLoss", "TrainingDiverged", "WarnOnCollapse",
           "is_temporary_file", "remove_temporary_files"]

# `atomic_output("last.keras")` writes `.last.<8 hex>.tmp.keras` (keras_unet.runtime.files);
# a weights-only save adds `.weights` before the suffix (Keras requires `.weights.h5`).
_TEMPORARY = re.compile(r"^\.(?P<stem>.+)\.[0-9a-f]{8}\.tmp(?:\.weights)?(?P<suffix>\.[^.]+)?$")


def is_temporary_file(name: str) -> bool:
    """Whether the file name `name` is a temporary file of `atomic_output`.

    Such a file is only ever complete once renamed, so one still under its temporary name
    was left by a process that stopped mid-write, and can be deleted.

    Example:
    ```python
    from keras_unet.callbacks import is_temporary_file

    is_temporary_file(".last.3fa2c91b.tmp.keras")   # True
    is_temporary_file("last.keras")                  # False
    ```
    """
    return _TEMPORARY.match(os.path.basename(name)) is not None


def remove_temporary_files(folder: str, target: str | None = None) -> list[str]:
    """Delete the temporary files `atomic_output` left in `folder`; return their names.

    Args:
        folder: the folder to clean (nothing happens if it does not exist).
        target: only the temporaries of this file name (`"last.keras"`); it may hold
            `ModelCheckpoint`'s `{epoch}`-style placeholders. `None`: all of them.

    Example:
    ```python
    from keras_unet.callbacks import remove_temporary_files

    remove_temporary_files("runs/nuclei")                  # every leftover
    remove_temporary_files("runs/nuclei", "last.keras")    # those of last.keras only
    ```
    """
    if not os.path.isdir(folder):
        return []
    wanted = None
    if target is not None:
        stem, suffix = os.path.splitext(os.path.basename(target))
        # `{epoch:02d}` and the like stand for any text.
        stem = ".*".join(re.escape(part) for part in re.split(r"\{[^}]*\}", stem))
        wanted = re.compile(rf"^(?:{stem})$"), suffix
    removed = []
    for name in os.listdir(folder):
        match = _TEMPORARY.match(name)
        if match is None:
            continue
        if wanted is not None and not (wanted[0].match(match["stem"])
                                       and (match["suffix"] or "") == wanted[1]):
            continue
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.remove(os.path.join(folder, name))
            removed.append(name)
    return sorted(removed)


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`keras.callbacks.ModelCheckpoint` whose file is always a complete save.

    Takes the arguments of `keras.callbacks.ModelCheckpoint` and decides when to save as
    it does (`save_best_only`, `save_freq`, `initial_value_threshold`). Each save goes to a
    temporary file beside `filepath` (same suffix, so Keras picks the same format) and
    replaces `filepath` with `os.replace` once written: an interrupted save (Ctrl-C, a
    kill, a full disk) leaves the previous checkpoint as it was. Temporary files that a
    killed process left beside `filepath` are deleted when training begins.

    Args:
        filepath: the checkpoint file, `.keras` (or `.h5`), or `.weights.h5` with
            `save_weights_only=True`; may hold `{epoch}`-style placeholders.
        **kwargs: the other arguments of `keras.callbacks.ModelCheckpoint`.

    Example:
    ```python
    import numpy as np
    import keras_unet
    from keras_unet.callbacks import AtomicModelCheckpoint

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)
    model.compile("adam", "binary_crossentropy", metrics=keras_unet.metrics.get_metrics(1))
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 1)).astype("float32")
    masks = (images > 127).astype("float32")

    best = AtomicModelCheckpoint("runs/a/model.keras", monitor="val_iou", mode="max",
                                 save_best_only=True)
    last = AtomicModelCheckpoint("runs/a/last.keras")
    model.fit(images, masks, validation_split=0.25, epochs=2, verbose=0, callbacks=[best, last])
    ```
    """

    def on_train_begin(self, logs=None) -> None:
        super().on_train_begin(logs)
        folder = os.path.dirname(os.path.abspath(self.filepath))
        remove_temporary_files(folder, os.path.basename(self.filepath))

    def _save_model(self, epoch, batch, logs) -> None:
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, batch, logs, filepath):
            return
        folder = os.path.dirname(filepath)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if os.path.isdir(filepath):
            raise IsADirectoryError(
                f"ModelCheckpoint needs a file path, not a folder. Received: filepath={filepath!r}"
            )
        with atomic_output(filepath) as tmp:
            if self.save_weights_only:
                # Keras insists on `.weights.h5`; the temporary name ends in `.tmp.h5`.
                weights = tmp.with_name(tmp.name[: -len(tmp.suffix)] + ".weights" + tmp.suffix)
                try:
                    self.model.save_weights(weights, overwrite=True)
                    os.replace(weights, tmp)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        weights.unlink()
            else:
                self.model.save(tmp, overwrite=True)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: finished saving model to {filepath}")


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


class LocalModelCheckpoint(AtomicModelCheckpoint):
    """`AtomicModelCheckpoint` that saves with the distribution switched off, for the one
    process (process 0) that writes under a multi-process `keras.distribution`
    (`keras_unet.distribution.local_only`: saving would otherwise wait for every process).

    Takes the arguments of `AtomicModelCheckpoint`.

    Example:
    ```python
    import numpy as np
    import keras_unet
    from keras_unet.callbacks import LocalModelCheckpoint

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)
    model.compile("adam", "binary_crossentropy", metrics=keras_unet.metrics.get_metrics(1))
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 1)).astype("float32")
    masks = (images > 127).astype("float32")


    is_chief = True   # process 0 of a multi-process keras.distribution
    callbacks = [LocalModelCheckpoint("runs/a/last.keras")] if is_chief else []
    model.fit(images, masks, epochs=1, verbose=0, callbacks=callbacks)
    ```
    """

    def _save_model(self, epoch, batch, logs) -> None:
        from keras_unet.distribution import local_only

        with local_only():
            super()._save_model(epoch, batch, logs)
