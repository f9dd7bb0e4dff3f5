"""Training callbacks that leave a run folder usable whenever training stops.

`keras.callbacks.ModelCheckpoint` writes its file in place: a Ctrl-C, a kill or a full disk
during the save leaves a truncated `.keras` file, and the run cannot resume from it.
`keras.callbacks.TerminateOnNaN` stops at the end of the epoch, after the epoch's
checkpoints have saved NaN weights over the last good ones. The callbacks here close
both gaps, and keep the rest of a run's state across stops:

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

from keras_unet.callbacks.checkpoints import (
    AtomicModelCheckpoint,
    LocalModelCheckpoint,
    is_temporary_file,
    remove_temporary_files,
)
from keras_unet.callbacks.divergence import StopOnNonFiniteLoss, TrainingDiverged, WarnOnCollapse
from keras_unet.callbacks.run_state import CommitEpoch, InterruptCheck, ResumableEarlyStopping

__all__ = ["AtomicModelCheckpoint", "CommitEpoch", "InterruptCheck", "LocalModelCheckpoint",
           "ResumableEarlyStopping", "StopOnNonFiniteLoss", "TrainingDiverged", "WarnOnCollapse",
           "is_temporary_file", "remove_temporary_files"]
