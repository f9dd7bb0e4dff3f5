"""`.ort` (ONNX Runtime Mobile's format): exported, checked against the .onnx, run everywhere."""

from pathlib import Path

import numpy as np
import pytest

import keras_unet
from keras_unet.export.ort import export_ort
from keras_unet.runtime import load_runner
from keras_unet.runtime.metadata import read_metadata


@pytest.fixture(scope="module")
def model():
    return keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2, class_names=["nucleus"])


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 36, 1), dtype=np.uint8) for _ in range(3)]


@pytest.mark.slow
def test_an_ort_file_keeps_the_metadata_and_masks_images_of_any_size(model, images, tmp_path):
    # Its float32 outputs against Keras: tests/test_float_exports.py.
    result = export_ort(model, tmp_path / "m.ort", progress=False)
    assert result.format == "ort" and result.path.endswith("m.ort")
    assert result.verification.passed
    assert (tmp_path / "m.ort").stat().st_size == result.size_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ort"]  # no .onnx or temporary left
    metadata = read_metadata(tmp_path / "m.ort")
    assert metadata["class_names"] == ["nucleus"] and metadata["channels"] == 1
    with load_runner(tmp_path / "m.ort") as runner:
        masks = runner.predict_masks(images)
    assert [m.shape for m in masks] == [(40, 36)] * 3


def test_a_wrong_suffix_is_refused(model, tmp_path):
    with pytest.raises(ValueError, match="'.ort'"):
        export_ort(model, tmp_path / "m.onnx")


@pytest.mark.slow
def test_the_benchmark_runs_an_ort_file(model, tmp_path):
    from keras_unet.benchmarks.suite import run_benchmark

    export_ort(model, tmp_path / "m.ort", progress=False)
    report = run_benchmark([str(tmp_path / "m.ort")], runs=2, warmup=1, progress=False)
    assert report.rows[0].error is None and report.rows[0].latency_p50_ms > 0


@pytest.mark.slow
def test_the_cli_writes_an_ort_file_from_its_suffix(model, tmp_path, capsys):
    from keras_unet import cli

    model.save(tmp_path / "model.keras")
    assert cli.main(["export", str(tmp_path / "model.keras"), "--out", str(tmp_path / "m.ort"),
                     "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "m.ort").is_file()
    assert read_metadata(tmp_path / "m.ort")["num_classes"] == 1


def test_an_ort_file_that_gives_other_outputs_is_refused(tmp_path):
    import onnx
    from onnx import numpy_helper

    from keras_unet.export.ort import check_same_outputs
    from keras_unet.export.verify import VerificationError

    reference = Path(__file__).parents[1] / "runtime" / "data" / "schema_v1.onnx"
    model = onnx.load(str(reference))
    for index, tensor in enumerate(model.graph.initializer):
        values = numpy_helper.to_array(tensor)
        if values.dtype == np.float32:  # the weights; shapes stay as they are
            model.graph.initializer[index].CopyFrom(
                numpy_helper.from_array(values + np.float32(1.0), tensor.name))
    other = tmp_path / "other.onnx"
    onnx.save(model, str(other))
    images = [np.full((8, 8, 3), 100, np.uint8)]
    assert check_same_outputs(reference, reference, images) == 0.0
    with pytest.raises(VerificationError, match="differs from the verified .onnx"):
        check_same_outputs(reference, other, images)
