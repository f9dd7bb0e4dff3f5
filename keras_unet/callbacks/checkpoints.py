"""Checkpoints that are always a complete save: `AtomicModelCheckpoint` (temporary file,
then rename), `LocalModelCheckpoint` (the one saving process under a multi-process
distribution), and the names of the temporary files a killed save leaves behind."""

import contextlib
import os
import re

import keras

from keras_unet.runtime.files import atomic_output


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
