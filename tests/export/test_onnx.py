"""Keras -> ONNX: float32 (static, dynamic batch, dynamic size), int8 QDQ and float16,
checked against Keras under onnxruntime's CPU provider.

The tiny UNet is trained for a few seconds on the shipped nuclei images (cached for the
session) so that mask agreement of the quantized files measures something. Conversions are
marked `slow`; option checks are not.
"""

import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from export_testing import (  # noqa: E402
    check_export,
    check_export_metadata,
    export_each,
    free_size_copy,
    run_export_test,
)

import keras_unet  # noqa: E402
from keras_unet.export.job import open_job  # noqa: E402
from keras_unet.export.options import ExportOptions  # noqa: E402
from keras_unet.export.verify import verify_bytes  # noqa: E402
from keras_unet.export.calibration import load_images  # noqa: E402
from keras_unet.export.onnx import CONVERTER, ONNXOptions, export_onnx, float_ops_left  # noqa: E402
from keras_unet.datasets import nuclei_path  # noqa: E402

SIZE = (32, 32)


@pytest.fixture(scope="module")
def exports(model, held_out, tmp_path_factory):
    modes = {
        "none": dict(quantize="none", dynamic_batch=True, opset=13),
        # repair=False and a fixed activation type: these tests check what the conversion
        # itself leaves in float (with int8 activations onnxruntime 1.32 also leaves some
        # Conv in float). The timed default ("auto") is tested in test_int8_repair.py.
        "int8": dict(quantize="int8", repair=False, activation_type="uint8"),
        "int8_s8": dict(quantize="int8", activation_type="int8", repair=False),
        "fp16": dict(quantize="fp16"),
    }
    # The floor these tests assert, stated here rather than left to the exporter's default.
    return export_each(model, tmp_path_factory.mktemp("onnx"), "onnx", modes, held_out,
                       calibration_data=nuclei_path(), calibration_size=32, agreement_floor=0.95)


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int8", "int8_s8", "fp16"])
def test_quantized_masks_agree_with_keras(model, held_out, exports, mode):
    assert exports[mode].verification.n_images == len(held_out)
    check_export(model, exports[mode], held_out, agreement_floor=0.95)


@pytest.mark.slow
def test_int8_is_qdq_with_the_activation_type_asked_for(exports):
    def activation_zero_point_types(path):
        graph = onnx.load(path).graph
        inits = {i.name: i for i in graph.initializer}
        return {inits[n.input[2]].data_type for n in graph.node
                if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits}

    assert activation_zero_point_types(exports["int8"].path) == {onnx.TensorProto.UINT8}
    assert activation_zero_point_types(exports["int8_s8"].path) == {onnx.TensorProto.INT8}
    assert exports["int8"].input_dtype == "float32"  # QDQ keeps float I/O


@pytest.mark.slow
def test_float_ops_left_are_reported(model, exports, tmp_path):
    # The UNet's 2x2 up-convolutions run as integer Conv + DepthToSpace (export.decoder_form).
    result = exports["int8"]
    assert result.float_ops_left == {}
    assert not any("ConvTranspose" in w for w in result.warnings)
    # A 3x3 one has no such form, and onnxruntime's CPU provider has no int8 ConvTranspose.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((*SIZE, 3), batch_size=1, name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    custom = keras.Model(inputs, outputs, name="custom")
    calibration = load_images(nuclei_path(), SIZE, 3, limit=8, progress=False)
    result = run_export_test(custom, tmp_path, "onnx", "int8", calibration, agreement_floor=0.0,
                             calibration_data=nuclei_path(), calibration_size=8, repair=False,
                             activation_type="uint8")
    assert result.float_ops_left == {"ConvTranspose": 1}
    assert any("ConvTranspose" in w for w in result.warnings)


@pytest.mark.slow
def test_sizes_and_metadata(model, exports):
    full = exports["none"].size_bytes
    assert exports["fp16"].size_bytes < 0.7 * full
    for name, result in exports.items():
        quantization = name.split("_")[0]  # "int8_s8" is an int8 file
        metadata = check_export_metadata(result.path, model, "onnx", quantization,
                                         input_size=SIZE)
        assert metadata["num_classes"] == 1, name


def test_free_input_size_needs_input_size_or_dynamic_size(untrained, tmp_path):
    with pytest.raises(ValueError, match="--input-size"):
        export_onnx(free_size_copy(untrained), tmp_path / "free.onnx", progress=False)
    assert not (tmp_path / "free.onnx").exists()


@pytest.mark.slow
def test_dynamic_size_runs_at_other_sizes(model, tmp_path):
    free = free_size_copy(model)
    # The file verifies at 128x128 (these images resized); the helper runs it at 64x48.
    images = load_images(nuclei_path(), (64, 48), 3, limit=16, progress=False)
    result = run_export_test(free, tmp_path, "onnx", "none", images, dynamic_size=True,
                             dynamic_batch=True)
    assert result.input_shape == (None, None, None, 3)


@pytest.mark.slow
def test_converter_runs_again_on_one_job_with_nodes_kept_in_float(model, held_out, tmp_path,
                                                                  monkeypatch):
    """What a quantization repair step builds on: one float graph, several int8 conversions.

    The working directory is a fresh folder: nothing may be written into it (onnxruntime's
    symbolic shape inference would drop sym_shape_infer_temp.onnx there).
    """
    monkeypatch.chdir(tmp_path)
    exported = []
    original = keras.Model.export
    monkeypatch.setattr(keras.Model, "export",
                        lambda self, *a, **k: exported.append(a) or original(self, *a, **k))
    options = ExportOptions(quantize="int8", calibration_data=held_out[:16],
                            verification_data=held_out, verification_size=len(held_out),
                            progress=False)
    with open_job(model, options) as job:
        plain = CONVERTER.convert(job, ONNXOptions(quantize="int8"))
        # The first Conv and the Relu after it: excluding the Conv alone is not enough,
        # onnxruntime turns a float Conv between Q/DQ pairs back into a QLinearConv.
        first = [n.name for n in onnx.load_from_string(plain).graph.node
                 if n.op_type in ("Conv", "Relu")][:2]
        repaired = CONVERTER.convert(job, ONNXOptions(quantize="int8", nodes_to_exclude=first))
        assert len(exported) == 1  # the float graph is converted once per job
        left = {}
        for name, data in (("plain", plain), ("repaired", repaired)):
            (tmp_path / f"{name}.onnx").write_bytes(data)
            left[name] = float_ops_left(tmp_path / f"{name}.onnx", tmp_path)
        assert left["plain"] == {}
        assert left["repaired"].get("Conv", 0) >= 1  # the excluded Conv runs in float
        report = verify_bytes(job, CONVERTER, repaired, "int8", raise_on_failure=False)
        assert report.n_images == len(held_out) and report.agreement_iou >= 0.95
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx", "repaired.onnx"]


def test_bad_inputs_are_clear_errors(untrained, tmp_path):
    model = untrained
    with pytest.raises(ValueError, match="'dynamic' is not supported for ONNX"):
        export_onnx(model, tmp_path / "m.onnx", quantize="dynamic")
    with pytest.raises(ValueError, match="must end in '.onnx'"):
        export_onnx(model, tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="float32 input and output"):
        export_onnx(model, tmp_path / "m.onnx", io_dtype="uint8")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", opset=9)
    with pytest.raises(ValueError, match="activation_type='uint16'"):
        export_onnx(model, tmp_path / "m.onnx", activation_type="uint16")
    with pytest.raises(ValueError, match="calibrate_method='histogram'"):
        ONNXOptions(quantize="int8", calibrate_method="histogram")
    with pytest.raises(ValueError, match="real calibration images"):
        export_onnx(model, tmp_path / "m.onnx", quantize="int8")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        export_onnx(model, tmp_path / "m.onnx", quantize="int8",
                    calibration_data=tmp_path / "empty")
    assert not (tmp_path / "m.onnx").exists()
