"""The callbacks of `keras_unet.callbacks` and the JSON writer they rely on.

Tests that run `fit` are slow; the others drive a callback's hooks by hand, as fit would."""

import json
import math
import os

import keras
import numpy as np
import pytest

from keras_unet.callbacks import (AtomicModelCheckpoint, CommitEpoch, InterruptCheck, LocalModelCheckpoint,
                                  ResumableEarlyStopping, StopOnNonFiniteLoss, TrainingDiverged,
                                  WarnOnCollapse, is_temporary_file, remove_temporary_files)
from keras_unet.runtime.files import write_json_atomic

X = np.linspace(-1, 1, 64 * 4, dtype="float32").reshape(64, 4)
Y = X.sum(axis=1, keepdims=True)


def _model(lr=1e-2, optimizer=keras.optimizers.Adam):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer(lr), "mse")
    return model


def _fit(model, callbacks, epochs=1):
    return model.fit(X, Y, batch_size=8, epochs=epochs, verbose=0, callbacks=callbacks)


def _kernel(path):
    return keras.models.load_model(path).layers[0].get_weights()[0]


class EpochEnds(keras.callbacks.Callback):
    """Records the epochs whose end the callbacks after the raising one would have seen."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)


@pytest.mark.slow
def test_checkpoint_saves_a_loadable_file_and_no_temporary(tmp_path):
    path = tmp_path / "last.keras"
    model = _model()
    _fit(model, [AtomicModelCheckpoint(path)], epochs=2)
    assert os.listdir(tmp_path) == ["last.keras"]
    np.testing.assert_array_equal(_kernel(path), model.layers[0].get_weights()[0])


@pytest.mark.slow
def test_an_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.keras"
    model = _model()
    _fit(model, [AtomicModelCheckpoint(path)])
    before = path.read_bytes()
    written = []

    def save_half_then_interrupt(filepath, *args, **kwargs):
        written.append(str(filepath))
        with open(filepath, "wb") as f:
            f.write(before[: len(before) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "save", save_half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _fit(model, [AtomicModelCheckpoint(path)])
    # The half file went to a temporary name beside the target (with its suffix), and is gone.
    assert len(written) == 1 and written[0] != str(path)
    assert os.path.dirname(written[0]) == str(tmp_path) and written[0].endswith(".keras")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.keras"]
    keras.models.load_model(path)


@pytest.mark.slow
def test_leftovers_of_a_killed_save_are_removed_when_training_begins(tmp_path):
    leftover = tmp_path / ".last.0123abcd.tmp.keras"
    leftover.write_bytes(b"PK\x03\x04 half a zip")
    other = tmp_path / ".model.0123abcd.tmp.keras"  # another checkpoint's: not this one's to remove
    other.write_bytes(b"half")
    _fit(_model(), [AtomicModelCheckpoint(tmp_path / "last.keras")])
    assert sorted(os.listdir(tmp_path)) == [other.name, "last.keras"]
    assert remove_temporary_files(tmp_path) == [other.name]
    assert os.listdir(tmp_path) == ["last.keras"]


def test_temporary_names_are_recognised():
    assert is_temporary_file(".last.3fa2c91b.tmp.keras")
    assert is_temporary_file("runs/a/.config.3fa2c91b.tmp.json")
    assert is_temporary_file(".w.weights.3fa2c91b.tmp.weights.h5")
    assert not is_temporary_file("last.keras")
    assert not is_temporary_file(".last.keras")
    assert not is_temporary_file(".last.nothex00.tmp.keras")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_placeholders_and_weights_only(tmp_path):
    _fit(_model(), [AtomicModelCheckpoint(tmp_path / "e{epoch:02d}.keras"),
                    AtomicModelCheckpoint(tmp_path / "w.weights.h5", save_weights_only=True)], epochs=2)
    assert sorted(os.listdir(tmp_path)) == ["e01.keras", "e02.keras", "w.weights.h5"]
    model = _model()
    model.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_array_equal(model.layers[0].get_weights()[0], _kernel(tmp_path / "e02.keras"))


@pytest.mark.slow
def test_best_only_follows_keras(tmp_path):
    path = tmp_path / "best.keras"
    checkpoint = AtomicModelCheckpoint(path, monitor="loss", mode="min", save_best_only=True,
                                       initial_value_threshold=-1.0)  # nothing beats it
    _fit(_model(), [checkpoint], epochs=2)
    assert not path.exists()


@pytest.mark.slow
def test_a_huge_learning_rate_stops_before_the_epoch_is_saved(tmp_path):
    path = tmp_path / "last.keras"
    ends = EpochEnds()
    model = _model(lr=1e30, optimizer=keras.optimizers.SGD)
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, batch \d+.*last good checkpoint is kept"
                                               r".*Lower the learning rate") as raised:
        _fit(model, [StopOnNonFiniteLoss(), AtomicModelCheckpoint(path), ends], epochs=3)
    assert raised.value.epoch == 1 and not math.isfinite(raised.value.loss)
    assert ends.epochs == [] and not path.exists()


@pytest.mark.slow
def test_a_nan_loss_in_a_later_epoch_keeps_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "last.keras"

    class PoisonSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                kernel, bias = self.model.layers[0].get_weights()
                self.model.layers[0].set_weights([kernel * np.nan, bias])

    ends = EpochEnds()
    model = _model()
    with pytest.raises(TrainingDiverged, match="became nan at epoch 2, batch 1") as raised:
        _fit(model, [PoisonSecondEpoch(), StopOnNonFiniteLoss(advice="Lower --lr."),
                     AtomicModelCheckpoint(path), ends], epochs=3)
    assert str(raised.value).endswith("Lower --lr.")
    assert ends.epochs == [0]
    assert np.isfinite(_kernel(path)).all()
    assert os.listdir(tmp_path) == ["last.keras"]


def test_write_json_atomic_writes_non_finite_numbers_as_null(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"iou": float("nan"), "loss": np.float32("inf"), "dice": np.float32(0.5),
                             "per_class": [float("-inf"), 1.0], "epochs": np.int64(3), "ok": True})

    def refuse(constant):
        raise AssertionError(f"{constant} written to JSON")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data == {"iou": None, "loss": None, "dice": 0.5, "per_class": [None, 1.0], "epochs": 3,
                    "ok": True}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_collapse_to_no_foreground_is_warned_once_after_two_epochs():
    import io

    stream = io.StringIO()
    callback = WarnOnCollapse("Try --lr 1e-4.", stream=stream)
    logs = [{"iou": 0.01, "val_iou": 0.0}, {"iou": 0.0, "val_iou": 0.0},
            {"iou": 0.0, "val_iou": 0.0}, {"iou": 0.0, "val_iou": 0.0}]
    callback.on_epoch_end(0, logs[0])
    callback.on_epoch_end(1, logs[1])
    assert stream.getvalue() == ""  # one epoch at 0 may be a slow start
    for epoch in (2, 3):
        callback.on_epoch_end(epoch, logs[epoch])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "epochs 2-3 scored IoU 0" in lines[0] and lines[0].endswith("Try --lr 1e-4.")


def test_a_model_that_finds_foreground_is_not_warned_about():
    import io

    stream = io.StringIO()
    callback = WarnOnCollapse(stream=stream)
    for epoch, logs in enumerate([{"iou": 0.0, "val_iou": 0.0}, {"iou": 0.0, "val_iou": 0.2},
                                  {"iou": 0.0, "val_iou": 0.0}, {"iou": 0.3, "val_iou": 0.0}]):
        callback.on_epoch_end(epoch, logs)
    assert stream.getvalue() == "" and not callback.warned


# val_iou per epoch: improvements, plateaus, ties (a tie is no improvement) and a late gain.
VAL_IOU = [0.2, 0.5, 0.5, 0.4, 0.6, 0.55, 0.58, 0.6, 0.61, 0.3, 0.3, 0.3, 0.3]


def _stop_epoch(callback, model, epochs):
    """Feeds VAL_IOU[epochs] to an early-stopping callback; the epoch it stops at, or None."""
    model.stop_training = False
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in epochs:
        callback.on_epoch_end(epoch, {"val_iou": VAL_IOU[epoch]})
        if model.stop_training:
            return epoch
    return None


@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_a_resumed_early_stopping_stops_where_the_uninterrupted_one_does(patience):
    model = _model()
    settings = dict(monitor="val_iou", mode="max", patience=patience)
    uninterrupted = _stop_epoch(keras.callbacks.EarlyStopping(**settings), model, range(len(VAL_IOU)))
    assert uninterrupted is not None
    longer = []
    for split in range(1, uninterrupted + 1):  # stopped after `split` epochs, then resumed
        before = keras.callbacks.EarlyStopping(**settings)
        assert _stop_epoch(before, model, range(split)) in (None, uninterrupted)
        resumed = ResumableEarlyStopping(initial_best=before.best, epochs_since_best=before.wait,
                                         **settings)
        assert _stop_epoch(resumed, model, range(split, len(VAL_IOU))) == uninterrupted, split
        # Keras' own callback forgets the run before the resume and goes on longer.
        fresh = _stop_epoch(keras.callbacks.EarlyStopping(**settings), model, range(split, len(VAL_IOU)))
        longer.append(fresh is None or fresh > uninterrupted)
    assert any(longer)
    assert _stop_epoch(ResumableEarlyStopping(**settings), model, range(len(VAL_IOU))) == uninterrupted


def test_the_run_state_records_early_stoppings_best_and_count_after_each_epoch(tmp_path):
    from keras_unet.commands.run_folder import RunFolder, stopped_early

    model = _model()
    stop = ResumableEarlyStopping(monitor="val_iou", mode="max", patience=len(VAL_IOU))
    state = CommitEpoch(RunFolder(str(tmp_path), {}).commit_epoch, stop)
    for callback in (stop, state):
        callback.set_model(model)
        callback.on_train_begin()
    for epoch, value in enumerate(VAL_IOU):
        for callback in (stop, state):  # in train's order: early stopping first
            callback.on_epoch_end(epoch, {"val_iou": value})
        saved = json.loads((tmp_path / "config.json").read_text())
        assert saved["best_val_iou"] == max(VAL_IOU[:epoch + 1]), epoch
        assert (saved["epochs_since_best"], saved["epochs_completed"]) == (stop.wait, epoch + 1)
    assert saved["epochs_since_best"] == 4
    assert stopped_early(4, 4) and not stopped_early(4, 5) and not stopped_early(0, 0)


def test_epochs_since_best_must_not_be_negative():
    with pytest.raises(ValueError, match="epochs_since_best"):
        ResumableEarlyStopping(initial_best=0.5, epochs_since_best=-1)


# -- fast: each callback's hooks driven by hand, in the order fit calls them ----------------------


def _drive(callbacks, model, epoch_logs):
    """Call the hooks fit would: train begin, then each epoch's begin and end with its logs."""
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    for epoch, logs in enumerate(epoch_logs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)


def test_a_checkpoint_driven_by_hand_saves_atomically_and_cleans_up(tmp_path):
    leftover = tmp_path / ".last.0123abcd.tmp.keras"
    leftover.write_bytes(b"PK\x03\x04 half a zip")
    model = _model()
    best = AtomicModelCheckpoint(tmp_path / "best.keras", monitor="loss", mode="min", save_best_only=True)
    _drive([AtomicModelCheckpoint(tmp_path / "last.keras"), best], model,
           [{"loss": 2.0}, {"loss": 3.0}])
    assert sorted(os.listdir(tmp_path)) == ["best.keras", "last.keras"]  # the leftover is gone
    assert best.best == 2.0
    np.testing.assert_array_equal(_kernel(tmp_path / "last.keras"), model.layers[0].get_weights()[0])


def test_a_non_finite_batch_loss_raises_where_it_happened():
    stop = StopOnNonFiniteLoss(advice="Lower --lr.")
    stop.on_epoch_begin(1)
    stop.on_batch_end(0, {"loss": 0.5})
    with pytest.raises(TrainingDiverged, match=r"became inf at epoch 2, batch 3.*Lower --lr\.$") as raised:
        stop.on_batch_end(2, {"loss": float("inf")})
    assert (raised.value.epoch, raised.value.batch) == (2, 3)


def test_commit_epoch_hands_on_early_stoppings_state_after_each_epoch():
    model = _model()
    stop = ResumableEarlyStopping(initial_best=0.5, epochs_since_best=1, monitor="val_iou", mode="max",
                                  patience=10)
    commits = []
    _drive([stop, CommitEpoch(lambda *args: commits.append(args), stop)], model,
           [{"val_iou": 0.4}, {"val_iou": 0.7}, {"val_iou": 0.6}])
    assert commits == [(1, 0.5, 2), (2, 0.7, 0), (3, 0.7, 1)]
    assert all(type(best) is float and type(since) is int for _, best, since in commits)


def test_interrupt_check_raises_a_swallowed_ctrl_c_at_the_next_hook(monkeypatch):
    from keras_unet.console import interrupts

    check = InterruptCheck()
    check.on_train_batch_end(0)  # nothing pending: nothing happens
    monkeypatch.setattr(interrupts._pending, "is_set", lambda: True)
    for hook in (lambda: check.on_train_batch_end(1), lambda: check.on_epoch_end(0),
                 lambda: check.on_test_batch_end(0)):
        with pytest.raises(KeyboardInterrupt):
            hook()


def test_a_local_checkpoint_saves_with_the_distribution_switched_off(tmp_path, monkeypatch):
    model = _model()
    seen = []
    save = model.save

    marker = object()  # the distribution in force: set back after the save
    restored = []
    monkeypatch.setattr(keras.distribution, "distribution", lambda: marker)
    monkeypatch.setattr(keras.distribution, "set_distribution", restored.append)

    def save_and_note(filepath, *args, **kwargs):
        seen.append(list(restored))
        save(filepath, *args, **kwargs)

    monkeypatch.setattr(model, "save", save_and_note)
    _drive([LocalModelCheckpoint(tmp_path / "last.keras")], model, [{}])
    assert seen == [[None]] and restored == [None, marker]  # off for the save, then back
    assert os.listdir(tmp_path) == ["last.keras"]
    keras.models.load_model(tmp_path / "last.keras")
