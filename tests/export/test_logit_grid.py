"""A binary int8 file rounds its logit without moving any pixel across p = 0.5.

The model is one 1x1 convolution and a sigmoid on a ramp of pixel values 0..255, with
logits 0.01 * x - 1.0037: from -1.0037 to 1.5463, crossing 0 between x = 100 (-0.0037)
and x = 101 (+0.0063). On any grid with 0 as a code (the calibrated one, step 0.01, or
[-8, 8], step 0.063), the logit of x = 100 rounds to 0, reads p = 0.5 and turns
foreground; the file must keep it background.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras_unet.export.quantization.logit_grid import (  # noqa: E402
    LOGIT_SCALE,
    onnx_sign_exact_logit,
    tflite_sign_exact_logit,
)

RAMP = np.arange(256, dtype="float32").reshape(1, 16, 16, 1)
WEIGHT, BIAS = 0.01, -1.0037


def _ramp_model(num_classes=1):
    inputs = keras.Input((16, 16, 1), name="image")
    logits = keras.layers.Conv2D(num_classes, 1, name="head")(inputs)
    activation = "sigmoid" if num_classes == 1 else "softmax"
    outputs = keras.layers.Activation(activation, name="probabilities")(logits)
    model = keras.Model(inputs, outputs, name="ramp")
    kernel = np.full((1, 1, 1, num_classes), WEIGHT, "float32") * np.arange(1, num_classes + 1)
    model.get_layer("head").set_weights([kernel, np.full(num_classes, BIAS, "float32")])
    return model


def _images():
    # The ramp and its mirror images: every value 0..255, calibration and verification alike.
    return np.concatenate([RAMP, RAMP[:, ::-1], RAMP[:, :, ::-1], RAMP[:, ::-1, ::-1]] * 4)


def _export(fmt, tmp_path, model=None):
    from keras_unet.export import export_onnx, export_tflite

    out = tmp_path / f"ramp.{fmt}"
    options = dict(quantize="int8", calibration_data=_images(), verification_data=_images(),
                   repair=False, progress=False)
    if fmt == "tflite":
        export_tflite(model or _ramp_model(), out, check_speed=False, **options)
    else:
        export_onnx(model or _ramp_model(), out, activation_type="uint8", **options)
    return out


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_an_int8_binary_file_keeps_every_pixel_on_its_side_of_one_half(fmt, tmp_path):
    from keras_unet.runtime import load_runner

    probabilities = np.asarray(load_runner(str(_export(fmt, tmp_path))).predict(RAMP))[0, ..., 0]
    values = RAMP[0, ..., 0]
    np.testing.assert_array_equal(probabilities >= 0.5, WEIGHT * values + BIAS >= 0)
    # The price: probabilities read up to half a logit step low (0.008 at p = 0.5).
    expected = 1 / (1 + np.exp(-(WEIGHT * values + BIAS)))
    assert np.abs(probabilities - expected).max() <= 0.25 * LOGIT_SCALE + 1 / 255
    assert (probabilities - expected).mean() < 0


def test_the_tflite_logit_sits_on_the_fixed_grid(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(_export("tflite", tmp_path)))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    logistic = [op for op in interpreter._get_ops_details() if op["op_name"] == "LOGISTIC"]
    scale, zero_point = tensors[logistic[0]["inputs"][0]]["quantization"]
    assert scale == pytest.approx(LOGIT_SCALE) and zero_point == 0


def test_files_without_a_binary_int8_head_are_left_as_they_are(tmp_path):
    import onnx

    from keras_unet.export import export_onnx, export_tflite

    # Float files, and a multi-class int8 file (arg-max over logits: no sign to keep).
    export_tflite(_ramp_model(), tmp_path / "float.tflite", check_speed=False, progress=False)
    export_onnx(_ramp_model(), tmp_path / "float.onnx", progress=False)
    multi = _export("onnx", tmp_path, model=_ramp_model(num_classes=3))
    for path in (tmp_path / "float.tflite",):
        data = path.read_bytes()
        assert tflite_sign_exact_logit(data) is data
    for path in (tmp_path / "float.onnx", multi):
        data = onnx.load(str(path)).SerializeToString()
        assert onnx_sign_exact_logit(data) is data
