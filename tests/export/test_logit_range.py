"""A binary int8 file's logit range is clipped to the [-8, 8] its sigmoid can tell apart.

The model is one 1x1 convolution and a sigmoid on a ramp of pixel values 0..255, with
logits 0.2 * x - 20.07: from -20.07 to 30.93, crossing 0 between x = 100 (-0.07) and
x = 101 (+0.13). Calibrated on those values, the logit's step is 0.2: x = 100 rounds to 0,
reads p = 0.5 and turns foreground. On [-8, 8] (step 0.063) it stays background.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras_unet.export.quantization.logit_range import (  # noqa: E402
    clipped_quantization,
    onnx_clip_logit_range,
    tflite_clip_logit_range,
)

RAMP = np.arange(256, dtype="float32").reshape(1, 16, 16, 1)
STEP = 16 / 255


def _ramp_model(weight=0.2, bias=-20.07, num_classes=1):
    inputs = keras.Input((16, 16, 1), name="image")
    logits = keras.layers.Conv2D(num_classes, 1, name="head")(inputs)
    activation = "sigmoid" if num_classes == 1 else "softmax"
    outputs = keras.layers.Activation(activation, name="probabilities")(logits)
    model = keras.Model(inputs, outputs, name="ramp")
    kernel = np.full((1, 1, 1, num_classes), weight, "float32") * np.arange(1, num_classes + 1)
    model.get_layer("head").set_weights([kernel, np.full(num_classes, bias, "float32")])
    return model


def _images():
    # The ramp and its mirror images: every value 0..255, calibration and verification alike.
    return np.concatenate([RAMP, RAMP[:, ::-1], RAMP[:, :, ::-1], RAMP[:, ::-1, ::-1]] * 4)


def _export(fmt, tmp_path, model=None, name="ramp"):
    from keras_unet.export import export_onnx, export_tflite

    out = tmp_path / f"{name}.{fmt}"
    options = dict(quantize="int8", calibration_data=_images(), verification_data=_images(),
                   repair=False, progress=False)
    if fmt == "tflite":
        export_tflite(model or _ramp_model(), out, check_speed=False, **options)
    else:
        export_onnx(model or _ramp_model(), out, activation_type="uint8", **options)
    return out


def _logit_quantization(fmt, path):
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        logistic = [op for op in interpreter._get_ops_details() if op["op_name"] == "LOGISTIC"]
        return tensors[logistic[0]["inputs"][0]]["quantization"]
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    sigmoid = [node for node in graph.node if node.op_type == "Sigmoid"][0]
    dequantize = [node for node in graph.node if sigmoid.input[0] in node.output][0]
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return float(values[dequantize.input[1]]), int(values[dequantize.input[2]])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_a_wide_logit_range_is_clipped_and_no_pixel_near_the_threshold_flips(fmt, tmp_path):
    from keras_unet.runtime import load_runner

    path = _export(fmt, tmp_path)
    scale, zero_point = _logit_quantization(fmt, path)
    assert scale == pytest.approx(STEP, rel=1e-5)
    assert zero_point == (0 if fmt == "tflite" else 128)   # [-8.03, 7.97]
    probabilities = np.asarray(load_runner(str(path)).predict(RAMP))[0, ..., 0]
    logits = 0.2 * RAMP[0, ..., 0] - 20.07
    np.testing.assert_array_equal(probabilities >= 0.5, logits >= 0)
    # Within half a logit step of the float probabilities (the calibrated step 0.2 allowed 0.025).
    expected = 1 / (1 + np.exp(-logits))
    assert np.abs(probabilities - expected).max() <= 0.25 * STEP / 2 + 1 / 255


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_a_narrow_logit_range_keeps_its_finer_calibrated_step(fmt, tmp_path):
    # Logits in [-1.0, 1.55]: step 0.01 from calibration, finer than [-8, 8]'s.
    path = _export(fmt, tmp_path, model=_ramp_model(weight=0.01, bias=-1.0037))
    scale, _ = _logit_quantization(fmt, path)
    assert scale == pytest.approx(2.5537 / 255, rel=0.02)
    data = path.read_bytes()
    clip = tflite_clip_logit_range if fmt == "tflite" else onnx_clip_logit_range
    if fmt == "tflite":  # the ONNX file carries metadata the bytes would be compared with
        assert clip(data) is data


@pytest.mark.slow
def test_files_without_a_binary_int8_head_are_left_as_they_are(tmp_path):
    import onnx

    from keras_unet.export import export_onnx, export_tflite

    # Float files, and a multi-class int8 file (arg-max over logits, no sigmoid).
    export_tflite(_ramp_model(), tmp_path / "float.tflite", check_speed=False, progress=False)
    export_onnx(_ramp_model(), tmp_path / "float.onnx", progress=False)
    multi = _export("onnx", tmp_path, model=_ramp_model(weight=0.01, bias=-1.0, num_classes=3),
                    name="multi")
    data = (tmp_path / "float.tflite").read_bytes()
    assert tflite_clip_logit_range(data) is data
    for path in (tmp_path / "float.onnx", multi):
        data = onnx.load(str(path)).SerializeToString()
        assert onnx_clip_logit_range(data) is data


def test_the_clipped_range_keeps_zero_a_code_and_only_narrows():
    # The seed file's calibrated logit (int8): scale 0.342, zero point 57 -> [-63.3, 23.9].
    scale, zero_point = clipped_quantization(0.34190088, 57, -128, 127)
    assert scale == pytest.approx(STEP) and zero_point == 0
    # One side inside [-8, 8] keeps its end: [-2, 30] -> [-2, 8].
    scale, zero_point = clipped_quantization(32 / 255, -112, -128, 127)
    assert (-128 - zero_point) * scale == pytest.approx(-2.0, abs=scale)
    assert (127 - zero_point) * scale == pytest.approx(8.0, abs=scale)
    assert clipped_quantization(STEP / 2, 0, -128, 127) is None
