"""InputNormalization: the float numbers of every mode stay those of the original formulas.

The caffe mode now subtracts the means before reversing the channels (so int8 TFLite files
stay exact, see the layer's module docstring); these tests pin its float32 output to the
formula it replaced, `flip(x) - mean_bgr`, bit for bit, and check that its config and
saved files did not change. Its int8 error per layer is checked in
tests/export/test_quantization_report.py.
"""

import keras
import numpy as np
import pytest
from unet_testing import assert_config_round_trip, run_model_saving_test

from keras_unet.layers import InputNormalization
from keras_unet.layers.input_normalization import CAFFE_BGR_MEAN

RNG = np.random.default_rng(0)
# Fractional values too: resized and augmented images are not whole numbers.
PIXELS = np.concatenate([
    RNG.uniform(0, 255, (3, 8, 8, 3)),
    RNG.integers(0, 256, (1, 8, 8, 3)),
]).astype("float32")

PREVIOUS = {
    "caffe": lambda x: x[..., ::-1] - np.asarray(CAFFE_BGR_MEAN, "float32"),
    "unit": lambda x: x / np.float32(255.0),
    "symmetric": lambda x: x / np.float32(127.5) - np.float32(1.0),
    "none": lambda x: x,
}


def test_caffe_equals_the_previous_formula_bit_for_bit():
    actual = np.asarray(InputNormalization("caffe")(PIXELS))
    np.testing.assert_array_equal(actual, PREVIOUS["caffe"](PIXELS))
    assert actual.dtype == np.float32


@pytest.mark.parametrize("mode", sorted(PREVIOUS))
def test_every_mode_keeps_its_float_output_eager_and_compiled(mode):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, InputNormalization(mode)(inputs))
    expected = PREVIOUS[mode](PIXELS)
    np.testing.assert_allclose(np.asarray(model(PIXELS)), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(model.predict(PIXELS, verbose=0), expected, rtol=0, atol=1e-5)


def test_caffe_channel_order_is_bgr():
    pixel = np.array([[[[10.0, 20.0, 30.0]]]], "float32")  # R, G, B
    out = np.asarray(InputNormalization("caffe")(pixel))[0, 0, 0]
    np.testing.assert_allclose(out, [30.0 - 103.939, 20.0 - 116.779, 10.0 - 123.68], atol=1e-4)


def test_config_is_the_one_older_files_hold(tmp_path):
    layer = InputNormalization("caffe", name="normalization")
    config = layer.get_config()
    base = keras.layers.Layer(name="normalization").get_config()
    assert set(config) - set(base) == {"mode"}
    assert config["mode"] == "caffe"
    assert_config_round_trip(layer)

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, layer(inputs), name="caffe_model")
    loaded = run_model_saving_test(model, PIXELS, tmp_path)
    assert not loaded.get_layer("normalization").weights  # nothing new to load
    np.testing.assert_array_equal(loaded.predict(PIXELS, verbose=0), PREVIOUS["caffe"](PIXELS))
