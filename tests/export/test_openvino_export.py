"""OpenVINO IR export (`.xml` + `.bin`): verified against Keras, metadata inside, written atomically."""

import numpy as np
import pytest

pytest.importorskip("openvino")  # the [openvino] extra; CI's test extra installs it

from keras_unet.export.openvino import export_openvino  # noqa: E402
from keras_unet.export.openvino_convert import IRFiles, write_ir_atomic  # noqa: E402

INT8_TARGET = 0.985


@pytest.fixture(scope="module")
def calibration():
    """100 nuclei images (0-99): the ones the tiny UNet trained on and more, none held out."""
    from keras_unet.datasets import nuclei_path
    from keras_unet.runtime import imageio

    images, _ = imageio.load_dataset_arrays(nuclei_path(), size=(32, 32), channels=3)
    return images[:100].astype("float32")


def _keras_probabilities(model, images):
    return np.asarray(model.predict(images, verbose=0), np.float32)


@pytest.mark.slow
def test_a_float32_ir_matches_keras_and_carries_the_metadata(model, held_out, tmp_path):
    from keras_unet.runtime import load_runner
    from keras_unet.runtime.metadata import read_metadata

    result = export_openvino(model, tmp_path / "m.xml", verification_data=held_out, progress=False)
    assert result.format == "openvino" and result.verification.passed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]  # no temporary left
    assert result.size_bytes == sum(p.stat().st_size for p in tmp_path.iterdir())
    assert 'element_type="f16"' not in (tmp_path / "m.xml").read_text()  # float weights kept
    with load_runner(tmp_path / "m.xml") as runner:
        assert runner.format == "openvino"
        got = np.asarray(runner.predict(held_out), np.float32)
    assert float(np.max(np.abs(got - _keras_probabilities(model, held_out)))) <= 1e-4
    metadata = read_metadata(tmp_path / "m.xml")
    assert metadata == result.metadata
    assert metadata["class_names"] == ["nucleus"] and metadata["quantization"] == "none"


@pytest.mark.slow
def test_an_int8_ir_keeps_the_keras_masks(model, held_out, calibration, tmp_path):
    from keras_unet.runtime import load_runner
    from keras_unet.runtime.metadata import read_metadata
    from keras_unet.runtime.scores import mask_agreement, probabilities_to_masks

    # The default floor (0.95) passes this model's all-int8 file (0.974); asking for the
    # target makes the ONNX repair keep layers in float until it holds, and the IR is checked again.
    result = export_openvino(model, tmp_path / "m.xml", quantize="int8", calibration_data=calibration,
                             verification_data=held_out, progress=False, agreement_floor=INT8_TARGET)
    with load_runner(tmp_path / "m.xml") as runner:
        masks = probabilities_to_masks(np.asarray(runner.predict(held_out), np.float32), 0.5)
    reference = probabilities_to_masks(_keras_probabilities(model, held_out), 0.5)
    agreement = mask_agreement(masks, reference, num_classes=1)["agreement_iou"]
    print(f"int8 IR agreement_iou with Keras on 32 held-out images: {agreement:.4f}")
    assert agreement >= INT8_TARGET
    # The result reports the IR's own verification, on the same images.
    assert result.verification.agreement_iou == pytest.approx(agreement, abs=1e-6)
    metadata = read_metadata(tmp_path / "m.xml")
    assert metadata["quantization"] == "int8" and metadata["int8"]["calibration"]


@pytest.mark.slow
def test_a_float16_ir_keeps_half_weights_and_the_masks(model, held_out, tmp_path):
    result = export_openvino(model, tmp_path / "m.xml", quantize="fp16", verification_data=held_out,
                             progress=False)
    assert result.verification.passed and result.verification.criterion.startswith("agreement_iou")
    assert 'element_type="f16"' in (tmp_path / "m.xml").read_text()
    assert result.metadata["quantization"] == "fp16"


@pytest.mark.slow
def test_the_cli_writes_ir_from_the_format(model_path, tmp_path, capsys):
    from keras_unet import cli
    from keras_unet.runtime.metadata import read_metadata

    out = tmp_path / "m.xml"
    assert cli.main(["export", str(model_path), "--format", "openvino", "--out", str(out), "--quiet"]) == 0
    assert "(openvino, quantize=none" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    assert read_metadata(out)["class_names"] == ["nucleus"]


def test_an_out_not_ending_in_xml_is_refused(untrained, tmp_path):
    with pytest.raises(ValueError, match=r"must end in '\.xml'. Received: out="):
        export_openvino(untrained, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option, match", [
    ({"output": "mask"}, "outputs probabilities"),
    ({"input_channels": 1}, "input_channels"),
    ({"quantize": "dynamic"}, "quantize='dynamic'"),
    ({"io_dtype": "uint8"}, "io_dtype"),
])
def test_options_the_ir_cannot_honour_are_refused_in_one_line(untrained, tmp_path, option, match):
    with pytest.raises(ValueError, match=match) as error:
        export_openvino(untrained, tmp_path / "m.xml", **option)
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_the_cli_refuses_a_suffix_that_is_not_the_formats(untrained_unet_path, tmp_path, capsys):
    from keras_unet import cli

    assert cli.main(["export", str(untrained_unet_path), "--format", "openvino",
                     "--out", str(tmp_path / "m.onnx")]) == 2
    assert "--out must end in '.xml' for --format openvino" in capsys.readouterr().err


def test_without_openvino_the_error_names_the_extra(untrained, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    with pytest.raises(ImportError, match=r"keras-unet-edge\[openvino\]"):
        export_openvino(untrained, tmp_path / "m.xml")


def test_the_two_files_replace_an_earlier_pair_and_leave_nothing_else(tmp_path):
    (tmp_path / "m.xml").write_bytes(b"old xml")
    (tmp_path / "m.bin").write_bytes(b"old weights")
    write_ir_atomic(tmp_path / "m.xml", IRFiles(xml=b"<net/>", weights=b"\x00" * 8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    assert (tmp_path / "m.xml").read_bytes() == b"<net/>"
    assert (tmp_path / "m.bin").read_bytes() == b"\x00" * 8


def test_a_write_that_fails_leaves_the_earlier_pair(tmp_path, monkeypatch):
    from pathlib import Path

    (tmp_path / "m.xml").write_bytes(b"old xml")
    (tmp_path / "m.bin").write_bytes(b"old weights")
    write_bytes = Path.write_bytes

    def disk_full_on_weights(self, data):  # both files are written before anything is renamed
        if self.suffix == ".bin":
            raise OSError("No space left on device")
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_full_on_weights)
    with pytest.raises(OSError, match="No space"):
        write_ir_atomic(tmp_path / "m.xml", IRFiles(xml=b"<net/>", weights=b"new"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    assert (tmp_path / "m.xml").read_bytes() == b"old xml"
    assert (tmp_path / "m.bin").read_bytes() == b"old weights"


def test_read_metadata_names_a_bad_ir_file(tmp_path):
    from keras_unet.runtime.metadata import read_metadata

    (tmp_path / "m.xml").write_text("<not a network/>")
    with pytest.raises(FileNotFoundError, match=r"m\.bin.* is missing"):
        read_metadata(tmp_path / "m.xml")
    (tmp_path / "m.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"m\.xml' is not a valid OpenVINO IR model"):
        read_metadata(tmp_path / "m.xml")


def test_the_cli_tells_openvino_from_the_xml_suffix():
    import argparse

    from keras_unet.export import cli

    assert cli._format(argparse.Namespace(out="models/m.xml", format=None)) == "openvino"
