"""Quiet by default: TensorFlow's, the converter's and the runtimes' own lines stay off the
screen, in the CLI and in the Python API, and the caller's process is left as it was."""

import subprocess
import sys
import textwrap

import pytest

# Lines that are not for a keras-unet user (issue 11): absl banner, oneDNN note, converter and
# interpreter chatter, numpy/Keras warnings from inside the libraries.
NOISE = ("absl::InitializeLog", "oneDNN", "XNNPACK", "fully_quantize", "FutureWarning",
         "UserWarning", "np.object", "shuffle=True", "tensorflow/core", "I0000", "W0000")


def _python(code, timeout=300):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


def test_quiet_output_silences_native_writes_and_restores_the_process():
    done = _python("""
        import logging, os, sys, warnings
        from keras_unet.console.quiet import quiet_output

        os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        stderr, level = sys.stderr, logging.getLogger("tf2onnx").level
        with quiet_output() as quiet:
            os.write(2, b"NATIVE LINE\\n")
            print("python line", file=sys.stderr)
            warnings.warn("`shuffle=True` was passed, but will be ignored")
            assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
            with quiet_output() as inner:
                assert inner is None  # nested: the outer block does the work
        os.write(2, b"after the block\\n")
        assert "NATIVE LINE" in quiet.native_log
        assert sys.stderr is stderr and "TF_CPP_MIN_LOG_LEVEL" not in os.environ
        assert logging.getLogger("tf2onnx").level == level
        with quiet_output(enabled=False) as off:
            assert off is None
        print("ok")
    """)
    assert done.returncode == 0, done.stderr
    assert "python line" in done.stderr and "after the block" in done.stderr
    assert "NATIVE LINE" not in done.stderr and "shuffle" not in done.stderr


def test_an_error_inside_the_block_still_restores_descriptor_2():
    done = _python("""
        import os
        from keras_unet.console.quiet import quiet_output
        try:
            with quiet_output():
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass
        os.write(2, b"visible again\\n")
    """)
    assert "visible again" in done.stderr


@pytest.mark.slow
def test_the_python_export_api_prints_no_library_logs(tmp_path):
    done = _python(f"""
        import os, sys
        import keras_unet
        from keras_unet.export import export_onnx, export_tflite

        model = keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2)
        level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")  # TensorFlow sets its own on import
        # Importing Keras (TensorFlow) is the caller's own doing; what follows is ours.
        print("--- export ---", file=sys.stderr, flush=True)
        export_tflite(model, r"{tmp_path}/m.tflite", progress=False)
        export_onnx(model, r"{tmp_path}/m.onnx", progress=False)
        assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == level
        print("exported")
    """)
    assert done.returncode == 0, done.stderr
    assert "exported" in done.stdout
    ours = done.stderr.split("--- export ---")[1]
    noisy = [line for line in ours.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, done.stderr


@pytest.mark.slow
def test_cli_commands_print_only_their_own_lines(tmp_path):
    import keras_unet
    from keras_unet.datasets import nuclei_path

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2, class_names=["nucleus"])
    model.save(tmp_path / "model.keras")
    commands = [
        ["export", str(tmp_path / "model.keras"), "--out", str(tmp_path / "m.tflite"),
         "--quantize", "int8", "--calibration-data", str(nuclei_path()), "--calibration-size", "40",
         "--agreement-floor", "0", "--no-repair", "--quiet"],
        ["export", str(tmp_path / "model.keras"), "--out", str(tmp_path / "m.onnx"), "--quiet"],
        ["bench", str(tmp_path / "model.keras"), str(tmp_path / "m.tflite"), str(tmp_path / "m.onnx"),
         "--runs", "3", "--warmup", "1", "--quiet", "--no-compare-bare"],
    ]
    for argv in commands:
        done = subprocess.run([sys.executable, "-m", "keras_unet.cli", *argv], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        noisy = [line for line in (done.stderr + done.stdout).splitlines()
                 if any(n in line for n in NOISE)]
        assert not noisy, (argv[0], noisy)
