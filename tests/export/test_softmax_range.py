"""A multi-class int8 file's logits get the range its softmax can show (`softmax_range`).

The end-to-end model is one 1x1 convolution and a softmax over 3 classes on a ramp of pixel
values x = 0..255: a constant class (logit 0), a falling one (25.07 - 0.2x) and a rising
one (0.2x - 26.07). Calibrated on those values the logits span [-26, 25.9], a step of 0.2.
At x = 125 the falling class leads the constant one by 0.07: at that step both round to 0
and the arg-max ties to class 0. The smallest per-pixel top logit is 0 and the largest
runner-up 0 (the constant class, wherever another leads), so the range becomes [-8, 8]
(step 0.063), where 0.07 keeps a code of its own and class 1 wins, as in Keras.
"""

import numpy as np
import pytest

from keras_unet.export.quantization.ranges import RangeSampler
from keras_unet.export.quantization.softmax_range import LOGIT_SPAN, SoftmaxLogits, softmax_ranges

RAMP = np.arange(256, dtype="float32").reshape(1, 16, 16, 1)


def _logits(x):
    return np.stack([np.zeros_like(x), 25.07 - 0.2 * x, 0.2 * x - 26.07], axis=-1)


def test_the_range_runs_from_the_lowest_top_to_the_highest_runner_up_each_widened_by_8():
    logits = SoftmaxLogits(axis=-1, expected_images=1)
    logits.add(_logits(RAMP[..., 0]))
    low, high = logits.range((-26.07, 25.07), percentile=100.0)
    assert low == pytest.approx(0.0 - LOGIT_SPAN)
    assert high == pytest.approx(0.0 + LOGIT_SPAN)


def test_the_range_never_widens_the_tensor_and_always_holds_zero():
    logits = SoftmaxLogits(axis=-1, expected_images=1)
    logits.add(_logits(RAMP[..., 0]))
    assert logits.range((-3.0, 2.0), percentile=100.0) == (-3.0, 2.0)
    # Every pixel decided by 50: the low end stops at the largest runner-up (-30), so no top
    # is clipped below it; the high end at -30 + 8 is raised to hold 0.
    confident = SoftmaxLogits(axis=-1, expected_images=1)
    confident.add(np.array([[20.0, -30.0], [-30.0, 20.0]], "float32"))
    assert confident.range((-30.0, 20.0), percentile=100.0) == (-30.0, 0.0)


def test_the_class_axis_is_the_softmax_axis():
    nchw = SoftmaxLogits(axis=1, expected_images=1)
    nchw.add(np.moveaxis(_logits(RAMP[..., 0]), -1, 1))
    nhwc = SoftmaxLogits(axis=-1, expected_images=1)
    nhwc.add(_logits(RAMP[..., 0]))
    assert nchw.range((-26.07, 25.07), 100.0) == pytest.approx(nhwc.range((-26.07, 25.07), 100.0))


def test_the_percentile_reads_the_tails_and_one_class_or_no_images_change_nothing():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(1, 100, 100, 4)).astype("float32")
    values[..., 0] += 10.0                          # class 0 leads every pixel by about 10
    values[0, 0, 0] = [-1.0, -1.5, -2.0, -2.5]      # but one, whose top is -1
    logits = SoftmaxLogits(axis=-1, expected_images=1)
    logits.add(values)
    exact = logits.range((-50.0, 50.0), 100.0)
    tails = logits.range((-50.0, 50.0), 99.9)
    assert exact[0] == pytest.approx(-1.0 - LOGIT_SPAN)
    assert exact[0] < tails[0] and tails[1] <= exact[1]
    single = SoftmaxLogits(axis=-1, expected_images=1)
    single.add(values[..., :1])
    assert single.images == 0 and single.range((-5.0, 5.0), 100.0) == (-5.0, 5.0)
    assert softmax_ranges({"logits": logits, "absent": single}, {"logits": (-50.0, 50.0)},
                          100.0) == {"logits": exact}


def test_tails_are_the_percentiles_without_zero_forced_in():
    sampler = RangeSampler(expected_images=1)
    sampler.add({"positive": np.linspace(2.0, 5.0, 10001, dtype="float32")})
    assert sampler.tails(100.0)["positive"] == (pytest.approx(2.0), pytest.approx(5.0))
    assert sampler.ranges(100.0)["positive"] == (0.0, pytest.approx(5.0))


def _softmax_ramp_model():
    import keras

    inputs = keras.Input((16, 16, 1), name="image")
    logits = keras.layers.Conv2D(3, 1, name="head")(inputs)
    outputs = keras.layers.Activation("softmax", name="probabilities")(logits)
    model = keras.Model(inputs, outputs, name="ramp3")
    kernel = np.array([0.0, -0.2, 0.2], "float32").reshape(1, 1, 1, 3)
    model.get_layer("head").set_weights([kernel, np.array([0.0, 25.07, -26.07], "float32")])
    return model


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_a_near_tie_keeps_its_class_in_the_int8_file(fmt, tmp_path):
    pytest.importorskip("keras")
    from keras_unet.export import export_onnx, export_tflite
    from keras_unet.runtime import load_runner

    images = np.concatenate([RAMP, RAMP[:, ::-1], RAMP[:, :, ::-1], RAMP[:, ::-1, ::-1]] * 4)
    out = tmp_path / f"ramp3.{fmt}"
    options = dict(quantize="int8", calibration_data=images, verification_data=images,
                   repair=False, progress=False)
    if fmt == "tflite":
        export_tflite(_softmax_ramp_model(), out, check_speed=False, **options)
    else:
        export_onnx(_softmax_ramp_model(), out, activation_type="uint8", **options)
    probabilities = np.asarray(load_runner(str(out)).predict(RAMP))[0]
    expected = _logits(RAMP[0, ..., 0]).argmax(-1)
    assert expected.reshape(-1)[125] == 1
    np.testing.assert_array_equal(probabilities.argmax(-1), expected)
