"""`keras-unet train --init MODEL.keras --qat` (issue 13): quantization-aware fine-tuning of
a trained model from the command line, resumable, exported as int8 from its learned ranges."""

import json

import pytest

from keras_unet import cli
from keras_unet.datasets import nuclei_path

TINY = ["--image-size", "32", "--max-images", "48", "--quiet"]


@pytest.mark.slow
def test_a_trained_model_is_fine_tuned_quantize_aware_resumed_and_exported(tmp_path, capsys):
    import keras

    from keras_unet.quantization import is_quantize_aware
    from keras_unet.runtime import read_metadata

    data = str(nuclei_path())
    assert cli.main(["train", "--data", data, "--out", str(tmp_path / "float"), "--filters", "4",
                     "--depth", "2", "--use-batchnorm", "--epochs", "2", *TINY]) == 0
    init = str(tmp_path / "float" / "model.keras")
    qat_run = ["train", "--data", data, "--out", str(tmp_path / "qat"), "--init", init, "--qat", *TINY]
    assert cli.main(qat_run + ["--epochs", "1"]) == 0
    assert cli.main(qat_run + ["--epochs", "2"]) == 0  # resumes the QAT run
    assert "resuming" in capsys.readouterr().out
    state = json.loads((tmp_path / "qat" / "config.json").read_text())
    assert state["epochs_completed"] == 2 and state["args"]["qat"] and state["args"]["init"] == init
    model = keras.models.load_model(tmp_path / "qat" / "model.keras")
    assert is_quantize_aware(model)

    out = tmp_path / "m.tflite"
    assert cli.main(["export", str(tmp_path / "qat" / "model.keras"), "--quantize", "int8",
                     "--calibration-data", data, "--out", str(out), "--quiet"]) == 0
    assert read_metadata(out)["int8"]["calibration"] == "qat"
