"""The OpenVINO runner: the same files as the other runners, the same numbers, clear errors.

Fast tests use a hand-built ONNX pixel model (sigmoid(sum(rgb) / 30 + bias), any batch) and
its OpenVINO IR. Slow tests share one module fixture: a tiny UNet (32x32, filters 4, depth
2) trained for a few seconds on the shipped nuclei images, so its masks are decisive, and
exported with `keras_unet.export` to float32 and int8 `.onnx` and `.tflite` files, plus an
IR converted from the float32 `.onnx` with its weights kept in float32.

Bounds: float32 within 1e-4 (max abs) of Keras, as every float32 export; int8 on OpenVINO
agrees with the same file on its own runtime at agreement IoU >= 0.985.
"""

import json
import os

import numpy as np
import pytest

from keras_unet import cli
from keras_unet.runtime import load_runner, runtimes_for
from keras_unet.runtime.scores import mask_agreement

ov = pytest.importorskip("openvino")  # the `test` extra installs it; CI runs these

FP32_ATOL = 1e-4
INT8_AGREEMENT = 0.985
SIZE = 32


def _pixel_onnx(path, bias=-12.8):
    """sigmoid(sum(rgb) / 30 + bias) per pixel, NHWC, batch free, no metadata."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["images", "weights"], ["weighted"]),
         helper.make_node("Add", ["weighted", "bias"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["probabilities"])],
        "pixel_model",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", SIZE, SIZE, 1])],
        initializer=[numpy_helper.from_array(np.full((3, 1), 1.0 / 30.0, np.float32), "weights"),
                     numpy_helper.from_array(np.array([bias], np.float32), "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def _images(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def pixel_onnx(tmp_path_factory):
    return _pixel_onnx(tmp_path_factory.mktemp("openvino_pixel") / "pixel.onnx")


def test_pixel_model_matches_onnxruntime_in_f32(pixel_onnx):
    images = _images(3)
    with load_runner(pixel_onnx, runtime="openvino", threads=1) as runner:
        assert runner.format == "openvino" and runner.metadata["format"] == "onnx"
        compiled = runner._default[0]
        assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
        assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
        probabilities = runner.predict(images)
    with load_runner(pixel_onnx) as native:
        expected = native.predict(images)
    assert probabilities.shape == (3, SIZE, SIZE, 1)
    np.testing.assert_allclose(probabilities, expected, atol=FP32_ATOL, rtol=0)


def test_ir_reads_its_metadata_from_rt_info(pixel_onnx, tmp_path):
    model = ov.convert_model(pixel_onnx)
    stored = {"schema_version": 1, "format": "openvino", "quantization": "none", "num_classes": 1,
              "channels": 3, "threshold": 0.7, "class_names": ["nucleus"], "output_activation": "sigmoid"}
    model.set_rt_info(json.dumps(stored), "keras_unet")
    xml = str(tmp_path / "pixel.xml")
    ov.save_model(model, xml, compress_to_fp16=False)
    assert runtimes_for(xml) == ["openvino"]
    with load_runner(xml) as runner:  # picked by the suffix
        assert runner.format == "openvino"
        assert runner.threshold == 0.7 and runner.metadata["class_names"] == ["nucleus"]
        masks = runner.predict_masks(_images(2))
    with load_runner(pixel_onnx) as native:
        probabilities = native.predict(_images(2))
    np.testing.assert_array_equal(masks, (probabilities[..., 0] >= 0.7).astype(masks.dtype))


def test_runner_refuses_bad_arguments(pixel_onnx, tmp_path):
    from keras_unet.runtime.openvino import OpenVINORunner

    with pytest.raises(ValueError, match="precision"):
        OpenVINORunner(pixel_onnx, precision="f64")
    with pytest.raises(ValueError, match="runtime"):
        load_runner(pixel_onnx, runtime="tensorrt")
    keras_file = tmp_path / "m.keras"
    keras_file.write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"openvino runtime runs \.onnx, \.tflite, \.xml"):
        load_runner(keras_file, runtime="openvino")


# Bad input through the CLI: one line on stderr, naming the file or what to install.
def _cli_error(capsys, argv):
    code = cli.main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return code, lines[0]


@pytest.fixture()
def images_dir(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(_images(1)[0]).save(folder / "a.png")
    return str(folder)


def test_cli_names_the_extra_when_openvino_is_missing(pixel_onnx, images_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)  # import openvino fails
    code, line = _cli_error(capsys, ["predict", pixel_onnx, "--images", images_dir,
                                     "--out", str(tmp_path / "out"), "--runtime", "openvino"])
    assert code == 1
    assert 'pip install "keras-unet-edge[openvino]"' in line
    assert not (tmp_path / "out").exists()


def test_cli_refuses_openvino_for_a_keras_file(images_dir, tmp_path, capsys):
    model = tmp_path / "model.keras"
    model.write_bytes(b"never loaded")
    code, line = _cli_error(capsys, ["evaluate", str(model), "--data", images_dir, "--runtime", "openvino"])
    assert code == 2
    assert "openvino runtime runs .onnx, .tflite, .xml files" in line and "model.keras" in line


def test_cli_refuses_an_xml_without_its_bin(images_dir, tmp_path, capsys):
    model = tmp_path / "unet.xml"
    model.write_text("<net></net>")
    code, line = _cli_error(capsys, ["predict", str(model), "--images", images_dir,
                                     "--out", str(tmp_path / "out")])
    assert code == 2
    assert "unet.bin" in line and "missing" in line


# The tiny trained UNet, exported once for the slow tests below.
@pytest.fixture(scope="module")
def exports(tmp_path_factory, trained_unet_path, held_out_images):
    """The session's tiny trained UNet (32x32 RGB) exported fp32 and int8 to .onnx and .tflite,
    and its fp32 .onnx converted to IR; with the held-out images and Keras' probabilities."""
    import keras

    from keras_unet.datasets import nuclei_path
    from keras_unet.export import export_onnx, export_tflite

    root = tmp_path_factory.mktemp("openvino_exports")
    model = keras.saving.load_model(trained_unet_path)
    assert tuple(model.inputs[0].shape[1:3]) == (SIZE, SIZE)
    held_out = held_out_images
    paths = {"held_out": held_out, "expected": np.asarray(model.predict(held_out, verbose=0))}
    for fmt, export in (("onnx", export_onnx), ("tflite", export_tflite)):
        for quantize in ("none", "int8"):
            # Every op in int8 (no repair): repair's choice among the files it builds hangs on
            # timings here, and this check compares runtimes on one file, the same every run.
            extra = ({"calibration_data": nuclei_path(), "repair": False}
                     if quantize == "int8" else {})
            result = export(model, root / f"unet_{quantize}.{fmt}", quantize=quantize,
                            progress=False, **extra)
            paths[f"{quantize}.{fmt}"] = result.path
    ir = str(root / "unet_none.xml")
    ov.save_model(ov.convert_model(paths["none.onnx"]), ir, compress_to_fp16=False)
    paths["none.xml"] = ir
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("name", ["none.onnx", "none.tflite", "none.xml"])
def test_fp32_agrees_with_keras(exports, name):
    with load_runner(exports[name], runtime="openvino", threads=2) as runner:
        assert runner.format == "openvino" and runner.quantization == "none"
        from keras_unet.runtime.metadata_schema import SCHEMA_VERSION

        assert runner.metadata.get("schema_version") == SCHEMA_VERSION  # the export's metadata was read
        probabilities = runner.predict(exports["held_out"])  # 32 images: batches of 16
    difference = float(np.max(np.abs(probabilities - exports["expected"])))
    print(f"OpenVINO {name}: max abs difference from Keras {difference:.2e}")
    assert difference <= FP32_ATOL


@pytest.mark.slow
@pytest.mark.parametrize("name", ["int8.onnx", "int8.tflite"])
def test_int8_masks_agree_with_the_native_runtime(exports, name):
    images = exports["held_out"]
    with load_runner(exports[name], runtime="openvino") as runner:
        assert runner.quantization == "int8"
        masks = runner.predict_masks(images)
    with load_runner(exports[name]) as native:  # onnxruntime / TFLite
        native_masks = native.predict_masks(images)
    assert np.logical_or(masks, native_masks).any()  # some foreground: not vacuous
    agreement = mask_agreement(masks, native_masks, 1)
    print(f"OpenVINO {name} vs {native.format}: agreement IoU {agreement['agreement_iou']:.4f}, "
          f"pixels {agreement['pixel_agreement']:.4f}")
    assert agreement["agreement_iou"] >= INT8_AGREEMENT


@pytest.mark.slow
def test_cli_takes_runtime_openvino(exports, tmp_path, capsys):
    from keras_unet.datasets import nuclei_path

    scores = tmp_path / "scores.json"
    code = cli.main(["evaluate", exports["int8.tflite"], "--data", str(nuclei_path()),
                     "--runtime", "openvino", "--threads", "1", "--json", str(scores)])
    assert code == 0, capsys.readouterr().err
    written = json.loads(scores.read_text())
    assert written["runtime"] == "openvino" and 0.0 < written["iou"] <= 1.0
    code = cli.main(["predict", exports["none.xml"], "--images", str(nuclei_path() / "images"),
                     "--out", str(tmp_path / "masks")])
    assert code == 0, capsys.readouterr().err
    assert len(os.listdir(tmp_path / "masks")) == len(os.listdir(nuclei_path() / "images"))
