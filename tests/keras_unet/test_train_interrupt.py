"""`keras-unet train` stopped at any moment: Ctrl-C, kills, a diverging loss, bad options.

The state of a run folder must be usable whatever happened: an epoch counts once
model.keras, last.keras and then config.json record it, every file is renamed into place,
and the same command resumes.
"""

import argparse
import csv
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from keras_unet import cli
from keras_unet.callbacks import is_temporary_file
from keras_unet.commands import train
from keras_unet.commands.run_folder import trim_log
from keras_unet.datasets import nuclei_path

TINY = ["--image-size", "32", "--channels", "1", "--filters", "4", "--depth", "2",
        "--max-images", "16", "--batch-size", "4", "--seed", "0", "--quiet"]  # fmt: skip
EPOCHS = 6


def _train_args(out, *extra):
    return ["train", "--data", str(nuclei_path()), "--out", str(out), *TINY, *extra]


def _error_lines(text):
    return [line for line in text.splitlines() if line.strip()]


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _log_epochs(path):
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.parametrize("option, value", [("--lr", "nan"), ("--lr", "-1"), ("--lr", "inf"),
                                           ("--val-split", "1.5"), ("--epochs", "0"),
                                           ("--batch-size", "0"), ("--dropout", "1"),
                                           ("--patience", "-1"), ("--depth", "0"),
                                           ("--channels", "2"), ("--max-images", "0")])
def test_a_bad_number_is_refused_by_name(option, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(_train_args(tmp_path / "run", option, value))
    assert stop.value.code == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f"argument {option}:" in lines[0] and value in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_bad_folders_are_refused_by_name(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    missing_data = ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]
    for args, option in ((missing_data, "--data"),
                         (_train_args(tmp_path / "file"), "--out"),
                         (_train_args(tmp_path / "r", "--val-data", str(tmp_path / "file")), "--val-data")):
        with pytest.raises(SystemExit) as stop:
            cli.main(args)
        assert stop.value.code == 2
        lines = _error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and f"argument {option}:" in lines[0], lines


def test_every_option_has_help_and_says_its_default_once():
    parser = cli.Parser(prog="keras-unet train", formatter_class=cli.HelpFormatter)
    train.add_arguments(parser)
    text = parser.format_help()
    entries = {}
    for entry in re.split(r"\n  (?=--)", text)[1:]:
        entries[entry.split()[0]] = " ".join(entry.split()[1:])
    assert len(entries) == len([a for a in parser._actions if a.option_strings]) - 1  # --help
    for option, entry in entries.items():
        assert entry.count("default") <= 1, (option, entry)
        assert not re.search(r"\(default [^:]", entry), (option, entry)
    for option in ("--val-data", "--ignore-index", "--class-names", "--loss", "--max-images"):
        assert "default: " in entries[option], (option, entries[option])  # what None means
    assert "(default: 0.2)" in entries["--val-split"] and "(default: 0.001)" in entries["--lr"]


@pytest.mark.slow
def test_a_diverging_run_exits_1_in_one_line_and_writes_no_model(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(_train_args(out, "--epochs", "2", "--lr", "1e12")) == 1
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert "TrainingDiverged" in lines[0] and "at epoch 1, batch" in lines[0], lines
    assert "Lower --lr (now 1e+12)" in lines[0] and "nothing was saved" in lines[0], lines
    assert not (out / "model.keras").exists() and not (out / "last.keras").exists()
    assert not (out / "metrics.json").exists()
    state = _strict_json(out / "config.json")
    assert state["epochs_completed"] == 0 and not state["finished"]


def _state_for(out, epochs_completed, **extra):
    """config.json as `train` writes it for the arguments of `_train_args(out)`."""
    args = cli.build_parser().parse_args(_train_args(out, "--epochs", str(EPOCHS)))
    os.makedirs(out, exist_ok=True)
    record = {key: getattr(args, key) for key in train.RUN_DEFINING}
    state = {"args": record, "epochs_completed": epochs_completed, "finished": False, **extra}
    (out / "config.json").write_text(json.dumps(state))
    return state


def test_an_unreadable_last_checkpoint_is_one_clear_line(tmp_path, capsys):
    out = tmp_path / "run"
    _state_for(out, 2)
    (out / "last.keras").write_bytes(b"PK\x03\x04 cut short")
    assert cli.main(_train_args(out, "--epochs", str(EPOCHS))) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "last.keras cannot be loaded" in lines[0], lines
    assert "resume from epoch 2" in lines[0]
    (out / "last.keras").unlink()
    assert cli.main(_train_args(out, "--epochs", str(EPOCHS))) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "last.keras is missing" in lines[0], lines


def test_log_rows_beyond_the_committed_epochs_are_dropped(tmp_path):
    path = tmp_path / "training.csv"
    path.write_text("epoch,loss,val_iou\n0,1.5,0.1\n1,1.2,0.2\n2,1.1,0.3\n3,1.0")
    trim_log(path, 2)
    assert path.read_text() == "epoch,loss,val_iou\n0,1.5,0.1\n1,1.2,0.2\n"
    trim_log(path, 2)  # nothing to drop: left as it is
    assert path.read_text() == "epoch,loss,val_iou\n0,1.5,0.1\n1,1.2,0.2\n"


def test_opening_a_run_folder_cleans_it_and_says_where_the_run_starts(tmp_path):
    from keras_unet.commands.run_folder import ResumePoint, RunFolder

    out = tmp_path / "run"
    settings = {"seed": 0, "filters": 4}
    folder = RunFolder(str(out), settings)
    assert folder.open(epochs=5, patience=3) == ResumePoint()  # a new folder, created
    folder.begin(ResumePoint())
    folder.commit_epoch(1, 0.5, 0)
    folder.commit_epoch(2, 0.5, 1)
    (out / "training.csv").write_text("epoch,val_iou\n0,0.5\n1,0.4\n2,0.45\n")
    (out / ".last.0123abcd.tmp.keras").write_bytes(b"PK\x03\x04")
    point = RunFolder(str(out), settings).open(epochs=5, patience=3)
    assert point == ResumePoint(2, 0.5, 1)
    assert ResumePoint.from_array(point.to_array()) == point
    assert ResumePoint.from_array(ResumePoint().to_array()) == ResumePoint()
    assert (out / "training.csv").read_text() == "epoch,val_iou\n0,0.5\n1,0.4\n"
    assert sorted(os.listdir(out)) == ["config.json", "training.csv"]
    folder.finish({"val_iou": 0.5, "epochs_completed": 2})
    assert _strict_json(out / "config.json")["finished"] and folder.epochs_completed() == 2
    assert _strict_json(out / "metrics.json") == {"val_iou": 0.5, "epochs_completed": 2}
    with pytest.raises(ValueError, match="finished run .2 epochs.*Raise --epochs above 2"):
        folder.open(epochs=2, patience=3)
    with pytest.raises(ValueError, match="--filters was 4, now 8"):
        RunFolder(str(out), {**settings, "filters": 8}).open(epochs=5, patience=3)


def test_the_interrupt_line_says_where_and_how_to_resume(tmp_path):
    out = tmp_path / "run"
    args = argparse.Namespace(out=str(out), epochs=EPOCHS, command_line="keras-unet train --out x")
    assert "no epoch had completed" in train.interrupted(args)
    _state_for(out, 3)
    line = train.interrupted(args)
    assert "after 3 of 6 epochs" in line and "last.keras" in line
    assert line.endswith("to resume run: keras-unet train --out x")
    _state_for(out, 6)
    assert "metrics.json was not written yet" in train.interrupted(args)
    _state_for(out, 6, finished=True)
    assert "had finished" in train.interrupted(args)


@pytest.mark.slow
def test_a_run_killed_before_its_first_epoch_restarts_cleanly(tmp_path, capsys):
    # Killed while writing its first config.json: only a temporary file is there.
    out = tmp_path / "run"
    out.mkdir()
    (out / ".config.0123abcd.tmp.json").write_text('{"args": ')
    assert cli.main(_train_args(out, "--epochs", "1")) == 0
    assert _log_epochs(out / "training.csv") == [0]
    # Killed during epoch 1, after CSVLogger's row and a checkpoint save began.
    out = tmp_path / "run2"
    _state_for(out, 0)
    (out / "training.csv").write_text("epoch,dice\n0,0.5\n")
    (out / ".last.0123abcd.tmp.keras").write_bytes(b"PK\x03\x04")
    assert cli.main(_train_args(out, "--epochs", "1")) == 0
    assert _log_epochs(out / "training.csv") == [0]
    assert not [name for name in os.listdir(out) if is_temporary_file(name)]
    assert _strict_json(out / "config.json")["finished"]


# -- the whole command, interrupted many times ------------------------------------------------


def _listing(folder):
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        return set()


def _stamp(path):
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _read_state(out):
    path = out / "config.json"
    return _strict_json(path) if path.exists() else None


# SIGINT is ignored in children of a shell's background job, and the test needs Ctrl-C. The child
# restores it itself: a preexec_fn would run Python between fork and exec in a parent that may
# hold JAX's or TensorFlow's threads, which can deadlock. Without one, Popen forks and execs in
# C; start_new_session (setsid, also in C) puts the child in its own process group, so that
# signals go to its group as a terminal's Ctrl-C would, and none meant for pytest reaches it.
CLI_WITH_CTRL_C = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from keras_unet.cli import main; sys.exit(main())"
)


def _run_once(command, out, logs, trigger, sig, timeout_s=90):
    """Run `command`; send `sig` when `trigger` fires.

    Returns (sent, returncode, stdout, stderr, whether the process rewrote config.json).

    trigger: ("save", n) the moment the n-th new temporary .keras file appears (mid-save);
    ("epoch", n, delay) `delay` s after it; ("start", delay) `delay` s after the start;
    ("config", delay) `delay` s after this process rewrote config.json (its run began).
    """
    stdout_path, stderr_path = logs / "stdout.txt", logs / "stderr.txt"
    config_before = _stamp(out / "config.json")
    present = _listing(out)  # leftovers of a killed run: the new process removes them
    seen = set()
    fire_at = None
    started = time.monotonic()
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, start_new_session=True)
        sent = False
        try:
            while process.poll() is None:
                now = time.monotonic()
                assert now - started < timeout_s, f"{command} ran over {timeout_s} s"
                if fire_at is None:
                    kind = trigger[0]
                    if kind == "start":
                        fire_at = started + trigger[1]
                    elif kind == "config" and _stamp(out / "config.json") != config_before:
                        fire_at = now + trigger[1]
                    elif kind in ("save", "epoch"):
                        seen |= {n for n in _listing(out) - present
                                 if n.endswith(".keras") and is_temporary_file(n)}
                        if len(seen) >= trigger[1]:
                            fire_at = now + (trigger[2] if kind == "epoch" else 0.0)
                if fire_at is not None and now >= fire_at:
                    os.killpg(process.pid, sig)
                    sent = True
                    break
                time.sleep(0.002)
            process.wait(timeout=timeout_s)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    began = _stamp(out / "config.json") != config_before
    return sent, process.returncode, stdout_path.read_text(), stderr_path.read_text(), began


def _check_consistent(out):
    """What config.json commits is on disk and loads; returns the epochs it commits."""
    import keras

    state = _read_state(out)
    done = (state or {}).get("epochs_completed", 0)
    if done:
        keras.models.load_model(out / "last.keras")
        keras.models.load_model(out / "model.keras")
        assert _log_epochs(out / "training.csv")[:done] == list(range(done))
    return done


@pytest.mark.slow
def test_a_run_interrupted_and_killed_at_random_moments_resumes_to_the_end(tmp_path):
    out = tmp_path / "run"
    logs = tmp_path / "logs"
    logs.mkdir()
    command = [sys.executable, "-c", CLI_WITH_CTRL_C, *_train_args(out, "--epochs", str(EPOCHS))]
    resume = "keras-unet " + shlex.join(command[3:])
    rng = random.Random(20240611)
    # Three of each signal: once in the middle of a checkpoint save, once somewhere around
    # an epoch's end (save, commit, next epoch or the final evaluation), once early on.
    plan = [(sig, how) for sig in (signal.SIGINT, signal.SIGKILL)
            for how in ("save", "epoch", "early")]
    rng.shuffle(plan)
    history = []
    started = time.monotonic()
    for sig, how in plan:
        done = _check_consistent(out)
        remaining = EPOCHS - done  # every remaining epoch saves last.keras once
        if remaining == 0:  # only the evaluation is left: stop it as it begins
            trigger = ("config", 0.0)
        elif how == "save":
            trigger = ("save", rng.randint(1, min(remaining, 4)))
        elif how == "epoch":
            trigger = ("epoch", rng.randint(1, remaining), rng.uniform(0.0, 0.4))
        elif sig == signal.SIGKILL:
            trigger = ("start", rng.uniform(0.3, 3.0))  # anywhere in the start-up
        else:  # Ctrl-C needs the CLI running: after its run began, before epoch 1 ends
            trigger = ("config", rng.uniform(0.0, 1.0))
        sent, code, stdout, stderr, began = _run_once(command, out, logs, trigger, sig)
        history.append((signal.Signals(sig).name, trigger, sent, code, done))
        assert sent, f"the run ended before {trigger} (exit {code}): {history}\n{stderr[-2000:]}"
        assert "File not found" not in stderr and "error:" not in stderr, stderr[-2000:]
        if sig == signal.SIGINT:
            assert code == 130, (history, stderr[-2000:])
            lines = _error_lines(stderr)
            assert len(lines) == 1, stderr[-2000:]
            assert "keras-unet train: interrupted: " in lines[0] and lines[0].endswith(resume), lines
            # An interrupted save removed its temporary file (a killed one cannot).
            assert not [n for n in _listing(out) if is_temporary_file(n)], _listing(out)
            if done and began:  # the run got as far as loading last.keras
                assert f"resuming {out} from epoch {done}" in stdout, stdout
        else:
            assert code == -signal.SIGKILL, (history, stderr[-2000:])
        assert _check_consistent(out) >= done, f"a rerun started over: {history}"
    sent, code, stdout, stderr, _ = _run_once(command, out, logs, ("start", 1e9), signal.SIGKILL)
    history.append(("none", None, sent, code, _check_consistent(out)))
    assert code == 0, (history, stderr[-3000:])
    assert _error_lines(stderr) == [], stderr[-3000:]

    import keras

    keras.models.load_model(out / "model.keras")
    keras.models.load_model(out / "last.keras")
    assert _log_epochs(out / "training.csv") == list(range(EPOCHS))
    metrics = _strict_json(out / "metrics.json")
    assert metrics["epochs_completed"] == EPOCHS and 0.0 <= metrics["val_iou"] <= 1.0
    state = _strict_json(out / "config.json")
    assert state["finished"] and state["epochs_completed"] == EPOCHS
    assert not [name for name in os.listdir(out) if is_temporary_file(name)]
    print(f"{len(history)} runs in {time.monotonic() - started:.0f} s:", *history, sep="\n  ")
