"""The run folder of `keras-unet train`: what it holds, and how a stopped run resumes from it.

A run folder holds

  model.keras    the best epoch by validation IoU
  last.keras     the latest epoch (what a resumed run continues from)
  training.csv   one row per epoch (Keras' CSVLogger)
  metrics.json   validation IoU and Dice of model.keras, once the run is finished
  config.json    the run-defining options, the epochs completed, early stopping's best
                 value and count, and whether the run is finished

The rules that make any stop resumable: every file is written under a temporary name and
renamed into place; an epoch counts as done once model.keras, last.keras and then config.json
record it (`RunFolder.commit_epoch`, last in the epoch's callbacks); opening the folder again
removes temporary files and drops log rows beyond the committed epochs; a finished run is
never overwritten.

Example:
```python
folder = RunFolder("runs/nuclei", settings={"data": "data/nuclei", "seed": 0})
point = folder.open(epochs=20, patience=10)   # ValueError if the folder holds another run
folder.begin(point)
...                                           # fit, with folder.commit_epoch after each epoch
folder.finish({"val_iou": 0.79, "epochs_completed": 20})
```
"""

import csv
import dataclasses
import json
import math
import os

STATE_FILE = "config.json"
BEST_FILE, LAST_FILE, LOG_FILE, METRICS_FILE = "model.keras", "last.keras", "training.csv", "metrics.json"


def stopped_early(epochs_since_best: int, patience: int) -> bool:
    """Whether `EarlyStopping(patience)` ends a run that has gone `epochs_since_best` epochs
    without a better value (Keras stops at the end of an epoch that did not improve, once its
    count reaches the patience)."""
    return epochs_since_best >= max(patience, 1)


def trim_log(path: str, epochs: int) -> None:
    """Keep the header and the rows of the first `epochs` epochs of a CSVLogger file.

    CSVLogger writes an epoch's row before the epoch is committed to config.json; a run
    stopped in between leaves rows that the resumed run writes again.

    Example:
    ```python
    trim_log("runs/nuclei/training.csv", 2)   # rows of epochs 0 and 1 only
    ```
    """
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if not lines:
        return
    width = len(next(csv.reader([lines[0]])))
    kept = lines[:1]
    for line in lines[1:]:
        row = next(csv.reader([line]), [])
        if len(row) == width and row[0].isdigit() and int(row[0]) < epochs and line.endswith("\n"):
            kept.append(line)
    if kept != lines:
        from keras_unet.runtime.files import write_text_atomic

        write_text_atomic(path, "".join(kept))


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where a run starts: the epochs already done, and early stopping's state after them.

    Attributes:
        epoch: epochs completed before this start (0 for a new run).
        best_val_iou: the best validation IoU so far, None before any epoch.
        epochs_since_best: epochs since that value (early stopping's count).
    """

    epoch: int = 0
    best_val_iou: float | None = None
    epochs_since_best: int = 0

    def to_array(self) -> "numpy.ndarray":  # noqa: F821
        """The point as three float64 numbers (NaN for no best), which process 0 of a
        data-parallel run sends to the others."""
        import numpy as np

        best = np.nan if self.best_val_iou is None else self.best_val_iou
        return np.array([self.epoch, best, self.epochs_since_best], dtype=np.float64)

    @classmethod
    def from_array(cls, values) -> "ResumePoint":
        """The inverse of `to_array`."""
        epoch, best, since = (float(v) for v in values)
        return cls(int(epoch), None if math.isnan(best) else best, int(since))


class RunFolder:
    """The folder of one `keras-unet train` run, and its resume state in config.json.

    Args:
        path: the folder (`--out`), as given (messages quote it).
        settings: the run-defining options and their values; config.json records them, and
            a resumed run must have the same.
        defaults: the value of each setting for runs whose config.json lacks it (they were
            started before that option existed, so they ran with its default).

    Example:
    ```python
    folder = RunFolder("runs/nuclei", settings={"data": "data/nuclei", "seed": 0})
    folder.open(epochs=20, patience=10).epoch   # 0 for a new folder
    ```
    """

    def __init__(self, path: str, settings: dict, defaults: dict | None = None) -> None:
        self.path = path
        self.settings = dict(settings)
        self.defaults = dict(defaults or {})
        self.best_path = os.path.join(path, BEST_FILE)
        self.last_path = os.path.join(path, LAST_FILE)
        self.log_path = os.path.join(path, LOG_FILE)
        self.state_path = os.path.join(path, STATE_FILE)
        self.metrics_path = os.path.join(path, METRICS_FILE)

    def read_state(self) -> dict | None:
        """config.json, or None where there is none."""
        if not os.path.exists(self.state_path):
            return None
        with open(self.state_path) as f:
            return json.load(f)

    def epochs_completed(self) -> int:
        """The epochs config.json commits (0 without one)."""
        return (self.read_state() or {}).get("epochs_completed", 0)

    def check(self, state: dict | None, epochs: int, patience: int) -> int:
        """Decide how to treat the folder given its `state`; returns the epoch to start from.

        Raises:
            ValueError: the folder is not a run folder, holds a run with other settings, or
                holds a finished run that `epochs` and `patience` would not continue.
        """
        if state is None:
            from keras_unet.callbacks import is_temporary_file

            # Temporary files of a run killed before it wrote config.json do not count.
            if os.path.isdir(self.path) and [n for n in os.listdir(self.path) if not is_temporary_file(n)]:
                raise ValueError(
                    f"--out {self.path!r} exists and is not a keras-unet run folder (no {STATE_FILE}); "
                    "refusing to write into it. Choose an empty or new folder."
                )
            return 0
        saved = {k: state["args"].get(k, self.defaults.get(k)) for k in self.settings}
        changed = {k: (saved[k], v) for k, v in self.settings.items() if saved[k] != v}
        if changed:
            detail = ", ".join(f"--{k.replace('_', '-')} was {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise ValueError(
                f"--out {self.path!r} holds a run with different settings ({detail}). "
                "Resume with the same settings or choose a new --out."
            )
        done = state.get("epochs_completed", 0)
        if state.get("finished") and epochs <= done:
            raise ValueError(
                f"--out {self.path!r} holds a finished run ({done} epochs, see metrics.json). "
                f"Raise --epochs above {done} to continue it, or choose a new --out."
            )
        since = state.get("epochs_since_best", 0)
        if state.get("finished") and stopped_early(since, patience):
            raise ValueError(
                f"--out {self.path!r} holds a finished run: early stopping ended it after {done} "
                f"epochs, the last {since} without a better validation IoU (--patience "
                f"{patience}). Raise --patience above {since} to continue it, or choose a new --out."
            )
        return done

    def open(self, epochs: int, patience: int) -> ResumePoint:
        """Check the folder (see `check`), create it, remove the temporary files a killed run
        left (they were never complete) and the log rows beyond the committed epochs; returns
        where the run starts. Runs saved before config.json kept early stopping's count
        resume it from 0."""
        from keras_unet.callbacks import remove_temporary_files

        state = self.read_state()
        done = self.check(state, epochs, patience)
        os.makedirs(self.path, exist_ok=True)
        remove_temporary_files(self.path)
        if not done:
            return ResumePoint()
        trim_log(self.log_path, done)
        if state.get("best_val_iou") is None:
            return ResumePoint(done)
        return ResumePoint(done, float(state["best_val_iou"]), int(state.get("epochs_since_best", 0)))

    def _write_state(self, epochs_completed, best_val_iou, epochs_since_best, finished=False):
        from keras_unet.runtime.files import write_json_atomic

        write_json_atomic(self.state_path, {
            "args": self.settings, "epochs_completed": epochs_completed, "finished": finished,
            "best_val_iou": best_val_iou, "epochs_since_best": epochs_since_best,
        })

    def begin(self, point: ResumePoint) -> None:
        """Write config.json for a run starting at `point` (not finished)."""
        self._write_state(point.epoch, point.best_val_iou, point.epochs_since_best)

    def commit_epoch(self, epochs_completed: int, best_val_iou: float | None, epochs_since_best: int) -> None:
        """Record in config.json that `epochs_completed` epochs are done, with early stopping's
        best value and count after them. Call it once the epoch's checkpoints are written."""
        best = None if best_val_iou is None else float(best_val_iou)
        self._write_state(epochs_completed, best, int(epochs_since_best))

    def finish(self, metrics: dict) -> None:
        """Write metrics.json, then mark the run finished in config.json."""
        from keras_unet.runtime.files import write_json_atomic

        write_json_atomic(self.metrics_path, metrics)
        state = self.read_state()
        state["finished"] = True
        write_json_atomic(self.state_path, state)

    def load_last(self, epochs_done: int) -> "keras.Model":  # noqa: F821
        """The model of a resumed run, from last.keras; clear errors if it cannot be."""
        import keras

        import keras_unet  # noqa: F401  (registers the layers for loading)

        if not os.path.isfile(self.last_path):
            raise FileNotFoundError(
                f"--out {self.path!r}: {STATE_FILE} records {epochs_done} completed epoch(s) but "
                f"{LAST_FILE} is missing, so the run cannot resume. Choose a new --out to start again."
            )
        try:
            return keras.models.load_model(self.last_path)
        except Exception as error:  # noqa: BLE001 - any unreadable file gets the same advice
            reason = " ".join(str(error).split())[:200]
            raise ValueError(
                f"--out {self.path!r}: {self.last_path} cannot be loaded ({type(error).__name__}: "
                f"{reason}), so the run cannot resume from epoch {epochs_done}. {BEST_FILE} may "
                "still hold the best epoch; choose a new --out to start again."
            ) from error

    def diverged(self, error: Exception, lr: float) -> Exception:
        """`error` (a `TrainingDiverged`) again, saying what the folder kept and what to do."""
        done = self.epochs_completed()
        kept = (f"{LAST_FILE} keeps epoch {done} and {BEST_FILE} the best so far, no {METRICS_FILE} "
                f"was written. Lower --lr (now {lr:g}) and run again with the same --out to "
                f"resume from epoch {done}" if done else
                f"No epoch had completed, so nothing was saved. Lower --lr (now {lr:g}) and "
                f"run again")
        return type(error)(
            f"the training loss became {error.loss} at epoch {error.epoch}, batch {error.batch}; "
            f"training stopped before that epoch was saved. {kept}.",
            epoch=error.epoch, batch=error.batch, loss=error.loss,
        )

    def stop_line(self, epochs: int, command: str) -> str:
        """What config.json says is kept after a Ctrl-C, and the `command` that resumes."""
        try:
            state = self.read_state() or {}
        except (OSError, ValueError):
            state = {}
        done = state.get("epochs_completed") or 0
        if state.get("finished"):
            return f"the run in {self.path} had finished ({done} epochs, see {METRICS_FILE}); nothing was lost"
        if not done:
            return (f"no epoch had completed in {self.path}, so nothing was kept; "
                    f"to start again run: {command}")
        if done >= epochs:
            return (f"all {done} epochs completed and saved in {self.last_path}, but {METRICS_FILE} "
                    f"was not written yet; to finish run: {command}")
        return (f"stopped after {done} of {epochs} epochs, saved in {self.last_path} (the best so "
                f"far in {BEST_FILE}); to resume run: {command}")
