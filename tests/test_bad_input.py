"""Bad input on every subcommand: refused with one line naming the culprit, nothing changed.

Each case runs `keras-unet` in-process and asserts: a non-zero exit (2 where the input is at
fault), one line on stderr (progress bars aside) that names the option or file, no
traceback, and every file that existed before is unchanged (and nothing half-written is left).
Besides the hand-written cases, every option the parser validates is given a value it must
refuse. Two cases also run as real processes, where TensorFlow's start-up lines would show;
the one that loads TensorFlow, and a case refused only after a conversion, are `slow`.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_unet import cli
from keras_unet.datasets import nuclei_path


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace with a tiny model, good and broken data folders, and files to protect."""
    import keras_unet

    root = tmp_path_factory.mktemp("bad_input")
    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2, class_names=["nucleus"])
    model.save(root / "model.keras")
    pairs = sorted((nuclei_path() / "images").iterdir())[:4]
    for name in ("data", "broken_image", "wrong_size", "no_masks"):
        (root / name / "images").mkdir(parents=True)
        if name != "no_masks":
            (root / name / "masks").mkdir()
        for image in pairs:
            shutil.copy(image, root / name / "images" / image.name)
            if name != "no_masks":
                shutil.copy(nuclei_path() / "masks" / image.name, root / name / "masks" / image.name)
    (root / "broken_image" / "images" / pairs[0].name).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    Image.fromarray(np.zeros((17, 23), np.uint8)).save(root / "wrong_size" / "masks" / pairs[1].name)
    (root / "images").mkdir()
    for image in pairs[:2]:
        shutil.copy(image, root / "images" / image.name)
    (root / "broken_images").mkdir()
    (root / "broken_images" / "bad.png").write_bytes(b"not a png at all")
    (root / "empty").mkdir()
    (root / "a_file.txt").write_text("precious")
    (root / "garbage.tflite").write_bytes(os.urandom(256))
    (root / "garbage.onnx").write_bytes(os.urandom(256))
    (root / "picture.keras").write_bytes(pairs[0].read_bytes())
    (root / "existing.tflite").write_bytes(b"an earlier export")
    (root / "masks_out").mkdir()
    (root / "masks_out" / pairs[0].name).write_bytes(b"an earlier mask")
    (root / "demo_out").mkdir()
    return root


M = "{ws}/model.keras"
TRAIN = ["train", "--data", "{ws}/data", "--out", "{ws}/run", "--image-size", "32",
         "--channels", "1", "--filters", "4", "--depth", "2", "--epochs", "1", "--quiet"]
PREDICT = ["predict", M, "--images", "{ws}/images", "--out", "{ws}/masks"]
EVALUATE = ["evaluate", M, "--data", "{ws}/data"]
EXPORT = ["export", M, "--out", "{ws}/m.tflite", "--quiet"]
BENCH = ["bench", M, "--runs", "2", "--quiet"]

# (argv, exit status, text the one line must contain: the option or the file)
CASES = [
    # train: numbers out of range, NaN, negative, zero
    (TRAIN + ["--lr", "nan"], 2, "--lr"),
    (TRAIN + ["--lr", "-1"], 2, "--lr"),
    (TRAIN + ["--lr", "0"], 2, "--lr"),
    (TRAIN + ["--lr", "inf"], 2, "--lr"),
    (TRAIN + ["--epochs", "0"], 2, "--epochs"),
    (TRAIN + ["--batch-size", "-1"], 2, "--batch-size"),
    (TRAIN + ["--val-split", "1.5"], 2, "--val-split"),
    (TRAIN + ["--val-split", "0"], 2, "--val-split"),
    (TRAIN + ["--dropout", "1"], 2, "--dropout"),
    (TRAIN + ["--filters", "0"], 2, "--filters"),
    (TRAIN + ["--depth", "0"], 2, "--depth"),
    (TRAIN + ["--image-size", "0"], 2, "--image-size"),
    (TRAIN + ["--image-size", "32", "32", "32"], 2, "--image-size"),
    (TRAIN + ["--channels", "2"], 2, "--channels"),
    (TRAIN + ["--patience", "-1"], 2, "--patience"),
    (TRAIN + ["--max-images", "0"], 2, "--max-images"),
    (TRAIN + ["--num-classes", "0"], 2, "--num-classes"),
    (TRAIN + ["--image-size", "30"], 2, "2**depth"),
    # train: paths
    (TRAIN + ["--data", "{ws}/missing"], 2, "missing"),
    (TRAIN + ["--data", "{ws}/a_file.txt"], 2, "a_file.txt"),
    (TRAIN + ["--out", "{ws}/a_file.txt"], 2, "a_file.txt"),
    (TRAIN + ["--out", "{ws}/images"], 2, "images"),
    (TRAIN + ["--data", "{ws}/no_masks"], 2, "masks"),
    (TRAIN + ["--data", "{ws}/wrong_size"], 2, "wrong_size"),
    (TRAIN + ["--data", "{ws}/broken_image"], 2, "broken_image"),
    # train: distribution (this process runs TensorFlow; data-parallel is JAX's)
    (TRAIN + ["--strategy", "multiworker"], 2, "keras-team/keras#20585"),
    (TRAIN + ["--strategy", "data-parallel"], 2, "KERAS_BACKEND=jax"),
    (TRAIN + ["--strategy", "data-parallel", "--num-processes", "2"], 2, "--coordinator"),
    # train: quantization-aware fine-tuning
    (TRAIN + ["--qat"], 2, "--init"),
    (TRAIN + ["--init", "{ws}/missing.keras"], 2, "missing.keras"),
    (TRAIN + ["--init", "{ws}/a_file.txt"], 2, "a_file.txt"),
    (TRAIN + ["--strategy", "data-parallel", "--num-processes", "2", "--coordinator", "127.0.0.1:9",
              "--process-id", "2"], 2, "--process-id"),
    (TRAIN + ["--coordinator", "127.0.0.1:9"], 2, "--coordinator"),
    (TRAIN + ["--strategy", "data-parallel", "--coordinator", "localhost"], 2, "--coordinator"),
    (TRAIN + ["--coordinator-timeout", "0"], 2, "--coordinator-timeout"),
    # predict
    (PREDICT + ["--batch-size", "-1"], 2, "--batch-size"),
    (PREDICT + ["--batch-size", "0"], 2, "--batch-size"),
    (PREDICT + ["--threshold", "1.5"], 2, "--threshold"),
    (PREDICT + ["--threshold", "nan"], 2, "--threshold"),
    (PREDICT + ["--threads", "0"], 2, "--threads"),
    (["predict", "{ws}/missing.keras", "--images", "{ws}/images", "--out", "{ws}/masks"], 2, "missing.keras"),
    (["predict", "{ws}/images", "--images", "{ws}/images", "--out", "{ws}/masks"], 2, "images"),
    (["predict", "{ws}/garbage.tflite", "--images", "{ws}/images", "--out", "{ws}/masks"], 2, "garbage.tflite"),
    (["predict", "{ws}/garbage.onnx", "--images", "{ws}/images", "--out", "{ws}/masks"], 2, "garbage.onnx"),
    (["predict", "{ws}/a_file.txt", "--images", "{ws}/images", "--out", "{ws}/masks"], 2, "a_file.txt"),
    (PREDICT[:3] + ["{ws}/missing", "--out", "{ws}/masks"], 2, "missing"),
    (PREDICT[:3] + ["{ws}/empty", "--out", "{ws}/masks"], 2, "empty"),
    (PREDICT[:3] + ["{ws}/broken_images", "--out", "{ws}/masks"], 2, "bad.png"),
    (PREDICT[:5] + ["{ws}/a_file.txt"], 2, "a_file.txt"),
    (PREDICT[:5] + ["{ws}/masks_out"], 2, "--overwrite"),
    # evaluate
    (EVALUATE + ["--batch-size", "-1"], 2, "--batch-size"),
    (EVALUATE + ["--threads", "-2"], 2, "--threads"),
    (EVALUATE[:3] + ["{ws}/missing"], 2, "missing"),
    (EVALUATE[:3] + ["{ws}/no_masks"], 2, "masks"),
    (EVALUATE[:3] + ["{ws}/wrong_size"], 2, "wrong_size"),
    (EVALUATE[:3] + ["{ws}/broken_image"], 2, "broken_image"),
    (EVALUATE + ["--json", "{ws}/missing/scores.json"], 2, "missing"),
    (["evaluate", "{ws}/picture.keras", "--data", "{ws}/data"], 2, "picture.keras"),
    # export
    (EXPORT + ["--agreement-floor", "1.5"], 2, "--agreement-floor"),
    (EXPORT + ["--agreement-floor", "nan"], 2, "--agreement-floor"),
    (EXPORT + ["--calibration-size", "0"], 2, "--calibration-size"),
    (EXPORT + ["--threads", "0"], 2, "--threads"),
    (EXPORT + ["--opset", "5"], 2, "--opset"),
    (["export", M, "--out", "{ws}/existing.tflite"], 2, "existing.tflite"),
    (["export", M, "--out", "{ws}/m.pb"], 2, "m.pb"),
    (["export", M, "--out", "{ws}/missing/m.tflite"], 2, "missing"),
    (EXPORT + ["--quantize", "int8"], 2, "--calibration-data"),
    (EXPORT + ["--quantize", "int8", "--calibration-data", "{ws}/empty"], 2, "empty"),
    (EXPORT + ["--quantize", "int8", "--calibration-data", "{ws}/missing"], 2, "missing"),
    (EXPORT + ["--quantize", "int8", "--calibration-data", "{ws}/data", "--report",
               "{ws}/missing/r.json"], 2, "--report"),
    (EXPORT + ["--repair"], 2, "--repair"),
    (EXPORT + ["--integer-only"], 2, "--integer-only"),
    (EXPORT + ["--quantize", "int16x8"], 2, "--calibration-data"),
    # refused after the conversion (the verification images are read to verify it): slow
    pytest.param(EXPORT + ["--verification-data", "{ws}/empty"], 2, "empty", marks=pytest.mark.slow,
                 id="export --verification-data {ws}/empty"),
    (["export", "{ws}/picture.keras", "--out", "{ws}/m.tflite"], 2, "picture.keras"),
    (["export", "{ws}/missing.keras", "--out", "{ws}/m.tflite"], 2, "missing.keras"),
    # bench
    (BENCH + ["--runs", "0"], 2, "--runs"),
    (BENCH[:2] + ["--seconds", "-1"], 2, "--seconds"),
    (BENCH + ["--warmup", "-1"], 2, "--warmup"),
    (BENCH + ["--threads", "nan"], 2, "--threads"),
    (BENCH + ["--csv", "{ws}/images"], 2, "images"),
    (["bench", "{ws}/missing.onnx"], 2, "missing.onnx"),
    (BENCH + ["--data", "{ws}/missing"], 2, "missing"),
    # demo
    (["demo", "--epochs", "0"], 2, "--epochs"),
    (["demo", "--bench-seconds", "nan"], 2, "--bench-seconds"),
    (["demo", "--out", "{ws}/demo_out"], 2, "demo_out"),
    (["demo", "--out", "{ws}/a_file.txt"], 2, "a_file.txt"),
    # web
    (["web"], 2, "MODEL"),
    (["web", "{ws}/missing.onnx"], 2, "missing.onnx"),
    (["web", "--port", "70000"], 2, "--port"),
    (["web", "--threads", "0"], 2, "--threads"),
]


def _snapshot(root):
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*")) if path.is_file()
    }


def _message_lines(err):
    # Progress bars redraw with "\r"; what is left once they are dropped is the message.
    pieces = [p for line in err.split("\n") for p in line.split("\r")]
    return [p for p in pieces if p.strip() and "%|" not in p]


# Values each kind of validated option must refuse, by the validator's name; any other
# validator (numbers, HOST:PORT, choices) is given a word. A file to write is refused when it
# is a folder, and when its folder is missing: every command follows that one rule.
BAD_VALUES = {"existing_dir": ("{ws}/missing",), "existing_file": ("{ws}/missing.keras",),
              "output_dir": ("{ws}/a_file.txt",),
              "output_file": ("{ws}/images", "{ws}/missing/out.json")}
BASE = {"train": TRAIN, "predict": PREDICT, "evaluate": EVALUATE, "export": EXPORT, "bench": BENCH,
        "demo": ["demo"], "web": ["web"]}


def _case_id(case):
    argv = case.values[0] if hasattr(case, "values") else case[0]
    return " ".join(argv[:1] + argv[-2:])


def _commands():
    parser = cli.build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _is_validated(action):
    return bool(action.option_strings) and action.type not in (None, str)


def _validated_options():
    commands = _commands()
    for name, base in BASE.items():
        for action in commands[name]._actions:
            if _is_validated(action):
                option = action.option_strings[0]
                for value in BAD_VALUES.get(getattr(action.type, "__name__", ""), ("word",)):
                    yield pytest.param(base + [option, value], option, value,
                                       id=f"{name} {option} {value.replace('{ws}/', '')}")


def _run(argv, capfd):
    try:
        got = cli.main(argv)
    except SystemExit as exit:  # refused while the options were parsed
        got = exit.code
    out, err = capfd.readouterr()
    return got, out, err


@pytest.mark.parametrize("argv, status, culprit", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_is_refused_in_one_line(ws, capfd, argv, status, culprit):
    argv = [a.replace("{ws}", str(ws)) for a in argv]
    before = _snapshot(ws)
    got, out, err = _run(argv, capfd)
    lines = _message_lines(err)
    assert got == status, (got, err)
    assert len(lines) == 1, err
    assert culprit in lines[0], lines[0]
    assert "Traceback" not in err + out
    assert _snapshot(ws) == before


def test_every_command_with_validated_options_is_checked():
    validating = {name for name, sub in _commands().items() if any(map(_is_validated, sub._actions))}
    assert validating == set(BASE)


@pytest.mark.parametrize("argv, option, value", _validated_options())
def test_every_validated_option_refuses_a_bad_value_in_one_line(ws, capfd, argv, option, value):
    # A value given twice: the last one counts, so the base command's own value is overridden.
    argv = [a.replace("{ws}", str(ws)) for a in argv]
    before = _snapshot(ws)
    got, out, err = _run(argv, capfd)
    lines = _message_lines(err)
    assert got == 2, (got, err)
    assert len(lines) == 1, err
    named = value.replace("{ws}/", "").split("/")[0]
    assert option in lines[0] or named in lines[0], lines[0]
    assert "Traceback" not in err + out
    assert _snapshot(ws) == before


@pytest.mark.parametrize("argv, culprit", [
    # loads the model, so TensorFlow starts in the process: slow
    pytest.param(["evaluate", M, "--data", "{ws}/wrong_size"], "wrong_size", marks=pytest.mark.slow),
    (["export", M, "--out", "{ws}/existing.tflite"], "existing.tflite"),
])
def test_a_real_process_prints_one_line_and_no_library_logs(ws, argv, culprit):
    argv = [a.replace("{ws}", str(ws)) for a in argv]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "keras_unet.cli", *argv], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and culprit in lines[0], done.stderr


def test_debug_shows_the_traceback(ws, capfd):
    status = cli.main(["evaluate", str(Path(ws) / "model.keras"), "--data", str(ws / "wrong_size"),
                       "--debug"])
    assert status == 2
    assert "Traceback" in capfd.readouterr().err
