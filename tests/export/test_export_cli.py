"""`keras-unet export` end to end, in-process (main([...]) rather than a subprocess).

Exports are marked `slow`; argument and input checks (exit status 2) are not.
"""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from export_testing import check_export_metadata  # noqa: E402

from keras_unet.export import cli  # noqa: E402
from keras_unet.runtime import imageio  # noqa: E402
from keras_unet.cli import main as keras_unet_main  # noqa: E402
from keras_unet.datasets import nuclei_path  # noqa: E402

SIZE = (32, 32)


@pytest.mark.slow
def test_tflite_fp32_through_the_keras_unet_command(model, model_path, tmp_path, capsys):
    out = tmp_path / "model.tflite"
    status = keras_unet_main(["export", str(model_path), "--format", "tflite", "--out", str(out),
                              "--quiet"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert out.exists()
    assert "verification passed" in printed and "max_abs_diff=" in printed and "MB" in printed
    check_export_metadata(out, model, "tflite", "none")


@pytest.mark.slow
def test_int8_onnx_with_calibration_folder(model, model_path, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # onnxruntime tools must not write into the working directory
    out = tmp_path / "model_int8.onnx"
    status = cli.main([str(model_path), "--out", str(out), "--quantize", "int8",
                       "--calibration-data", str(nuclei_path()), "--calibration-size", "24",
                       "--dynamic-batch", "--agreement-floor", "0.95", "--quiet"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "onnx, quantize=int8" in printed  # format taken from the suffix
    assert "agreement_iou=" in printed and "ConvTranspose" not in printed
    check_export_metadata(out, model, "onnx", "int8")
    assert [p.name for p in tmp_path.iterdir()] == ["model_int8.onnx"]


@pytest.mark.slow
def test_int8_tflite_uint8_io(model, model_path, tmp_path, capsys):
    out = tmp_path / "model_int8.tflite"
    status = cli.main([str(model_path), "--format", "tflite", "--out", str(out), "--quantize",
                       "int8", "--io", "uint8", "--calibration-data", str(nuclei_path()),
                       "--calibration-size", "24", "--agreement-floor", "0.9", "--quiet"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "input (1, 32, 32, 3) uint8" in printed
    assert check_export_metadata(out, model, "tflite", "int8")["input_dtype"] == "uint8"


@pytest.mark.slow
def test_existing_output_needs_force_and_survives_a_failed_export(model_path, tmp_path, capsys):
    out = tmp_path / "model.tflite"
    out.write_bytes(b"earlier export")
    args = [str(model_path), "--out", str(out), "--quantize", "int8", "--quiet"]
    dark = tmp_path / "dark"
    dark.mkdir()
    images, _ = imageio.load_dataset_arrays(nuclei_path(), size=SIZE, channels=1)
    for i, image in enumerate(images[:16]):
        Image.fromarray((image[..., 0] // 20).astype(np.uint8)).save(dark / f"{i}.png")
    calibration = ["--calibration-data", str(dark), "--verification-data", str(nuclei_path())]

    assert cli.main(args + calibration) == 2
    assert "--force" in capsys.readouterr().err
    # Calibrated on images 20x too dark, the pure int8 file fails verification: exit 1 with
    # the numbers, and the earlier file stays. (Repair can rescue such a file by keeping
    # layers in float; this test is about the refusal.)
    assert cli.main(args + calibration + ["--force", "--no-repair"]) == 1
    err = capsys.readouterr().err
    assert "agreement_iou=" in err and "FAILED" in err
    assert out.read_bytes() == b"earlier export"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--format", "onnx", "--out", "{tmp}/m.tflite"], "must end in '.onnx'"),
        (["--out", "{tmp}/m.pb"], "Cannot tell the format"),
        (["--out", "{tmp}/m.onnx", "--quantize", "dynamic"], "not supported for ONNX"),
        (["--out", "{tmp}/m.tflite", "--quantize", "int8"], "--calibration-data"),
        (["--out", "{tmp}/m.tflite", "--quantize", "int8", "--calibration-data", "{tmp}/none"],
         "does not exist"),
        (["--out", "{tmp}/m.tflite", "--quantize", "int8", "--calibration-data", "{tmp}"],
         "holds no images"),
        (["--out", "{tmp}/m.onnx", "--io", "uint8"], "TFLite only"),
    ],
)
def test_bad_input_exits_2_with_a_message(untrained_unet_path, tmp_path, capsys, extra, message):
    argv = [str(untrained_unet_path)] + [a.replace("{tmp}", str(tmp_path)) for a in extra] + ["--quiet"]
    try:
        status = cli.main(argv)
    except SystemExit as exit:  # refused while parsing the options
        status = exit.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not any(p.suffix in (".onnx", ".tflite") for p in tmp_path.iterdir())


def test_not_a_keras_model_exits_2(tmp_path, capsys):
    fake = tmp_path / "model.keras"
    fake.write_bytes(b"PK\x03\x04 definitely not a zip")
    assert keras_unet_main(["export", str(fake), "--out", str(tmp_path / "m.tflite")]) == 2
    assert "not a valid .keras file" in capsys.readouterr().err


def test_help_lists_the_options_without_importing_heavy_packages():
    code = (
        "import sys\n"
        "from keras_unet.export import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "heavy = ('tensorflow', 'keras', 'onnx', 'onnxruntime', 'tf2onnx')\n"
        "print('heavy imports:', [m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    for option in ("--quantize", "--calibration-data", "--verification-data", "--input-size",
                   "--io", "--agreement-floor", "--opset", "--dynamic-batch", "--dynamic-size",
                   "--no-verify", "--force"):
        assert option in done.stdout, option
    assert "{none,fp16,dynamic,int8,int16x8}" in done.stdout
    assert "heavy imports: []" in done.stdout
