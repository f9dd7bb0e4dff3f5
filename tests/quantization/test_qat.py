"""keras_unet.quantization: the QAT copy of a UNet, its layers, and its bad inputs.

The float-exactness tests check the rewrite itself: with the quantizers taken out
(`float_copy(..., bake_weights=False)`), the QAT graph (composites expanded, batch norm
folded, normalizations split into ops) computes what the source model computes.
"""

import keras
import numpy as np
import pytest
from unet_testing import run_layer_test

import keras_unet
from keras_unet.quantization import (
    ActivationQuantizer,
    QuantizeAwareConv2D,
    QuantizeAwareConv2DTranspose,
    QuantizeAwareDepthwiseConv2D,
    QuantizeAwareModel,
    check_ranges,
    float_copy,
    is_quantize_aware,
    quantize_aware,
    track_ranges,
)
from keras_unet.quantization.fake_quant import fake_quant_weights
from keras_unet.quantization.registry import PROBABILITY_RANGE

SIZE = (32, 32, 3)
RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 255, (4, *SIZE)).astype("float32")
# The float32 export tolerance: folded kernels round differently (measured up to 1.2e-5
# on probabilities, with batch-norm scales up to 4.5).
FLOAT_ATOL = 1e-4


def _with_batch_norm_statistics(model):
    """`model` with moving statistics and affine parameters far from their initial 0/1.

    Folding a fresh batch norm (mean 0, variance 1, gamma 1, beta 0) would be the identity
    and prove nothing.
    """
    rng = np.random.default_rng(1)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 2.0, channels))
            layer.beta.assign(rng.normal(0, 0.5, channels))
            layer.moving_mean.assign(rng.normal(0, 0.5, channels))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, channels))
    return model


VARIANTS = {
    "vanilla_bn_attention_residual": dict(use_batchnorm=True, use_attention=True, residual=True),
    "vanilla_bilinear_dropout": dict(upsample="bilinear", dropout=0.1),
    "vanilla_nearest_bn": dict(upsample="nearest", use_batchnorm=True),
    "mobilenet_v3_small": dict(encoder="mobilenet_v3_small"),
    "mobilenet_v2_bn": dict(encoder="mobilenet_v2", use_batchnorm=True),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request):
    keras.utils.set_random_seed(0)
    model = keras_unet.UNet(SIZE, filters=4, depth=2, **VARIANTS[request.param])
    return _with_batch_norm_statistics(model)


def test_qat_copy_without_quantizers_computes_the_source_model(variant):
    qat = quantize_aware(variant)
    folded = float_copy(qat, bake_weights=False)
    np.testing.assert_allclose(folded(IMAGES), variant(IMAGES), atol=FLOAT_ATOL, rtol=0)
    # The batch norms are folded away and every convolution quantizes its kernel.
    kinds = {type(layer).__name__ for layer in qat.layers}
    assert "BatchNormalization" not in kinds
    assert not kinds & {"Conv2D", "DepthwiseConv2D", "Conv2DTranspose"}
    assert kinds & {"QuantizeAwareConv2D"}
    # It carries what the UNet says about itself (the exporters' metadata reads it).
    assert isinstance(qat, QuantizeAwareModel) and is_quantize_aware(qat)
    assert not is_quantize_aware(variant)
    assert (qat.num_classes, qat.output_activation, qat.input_shape_, qat.depth) == (
        variant.num_classes, variant.output_activation, variant.input_shape_, variant.depth)


def _quantizers(model):
    return {layer.name: layer for layer in model.layers if isinstance(layer, ActivationQuantizer)}


def test_quantizers_sit_where_int8_kernels_requantize():
    model = keras_unet.UNet(SIZE, filters=4, depth=2, use_batchnorm=True, use_attention=True)
    quantizers = _quantizers(quantize_aware(model))
    # conv -> (folded) batch norm -> relu: one quantizer, after the relu.
    assert "encoder_block_0_act1_quant" in quantizers
    assert not {"encoder_block_0_conv1_quant", "encoder_block_0_norm1_quant"} & set(quantizers)
    # Pixels are the input codes (scale 1); sigmoids sit on TFLite's fixed 1/256 grid.
    assert quantizers["image_quant"].fixed_range == (0.0, 255.0)
    assert quantizers["probabilities_quant"].fixed_range == PROBABILITY_RANGE
    # The upsampled tensor also feeds the attention gate: it has its own range.
    assert "decoder_block_0_up_quant" in quantizers
    # Without attention it feeds only the concatenation: quantized there, once.
    plain = _quantizers(quantize_aware(keras_unet.UNet(SIZE, filters=4, depth=2)))
    assert "decoder_block_0_up_quant" not in plain
    assert any(name.startswith("concatenate") for name in plain)


def test_fake_quant_weights_are_symmetric_int8_per_channel():
    kernel = RNG.normal(size=(3, 3, 4, 5)).astype("float32")
    kernel[..., 4] = 0.0  # an all-zero channel must stay finite and zero
    quantized = np.asarray(fake_quant_weights(kernel, axis=-1))
    bound = np.abs(kernel).max(axis=(0, 1, 2))
    for channel in range(4):
        codes = quantized[..., channel] / (bound[channel] / 127)
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
        assert np.abs(codes).max() == pytest.approx(127, abs=1e-3)
    np.testing.assert_array_equal(quantized[..., 4], 0.0)


def test_activation_quantizer_tracks_ranges_while_training_then_freezes():
    quantizer = ActivationQuantizer(ema_decay=0.5)
    first = np.linspace(-1.0, 3.0, 8, dtype="float32")[None]
    quantizer(first, training=True)
    assert quantizer.quantization_range() == pytest.approx((-1.0, 3.0))  # the first batch sets it
    quantizer(first * 3.0, training=True)
    assert quantizer.quantization_range() == pytest.approx((-2.0, 6.0))  # then a moving average
    outputs = np.asarray(quantizer(first * 10.0, training=False))
    assert quantizer.quantization_range() == pytest.approx((-2.0, 6.0))  # frozen at inference
    step = 8.0 / 255
    # Clipped to the range, nudged by less than a step so that 0.0 is a code.
    assert outputs.min() == pytest.approx(-2.0, abs=step) and outputs.max() == pytest.approx(6.0, abs=step)
    np.testing.assert_allclose(outputs / step, np.round(outputs / step), atol=1e-3)


@pytest.mark.parametrize("kwargs", [{}, {"fixed_range": (0.0, 255.0)}, {"ema_decay": 0.9}])
def test_activation_quantizer_layer_contract(kwargs, tmp_path):
    run_layer_test(ActivationQuantizer, kwargs, IMAGES[:2], (2, *SIZE), tmp_path)


@pytest.mark.parametrize("layer_cls, kwargs, channels", [
    (QuantizeAwareConv2D, {"filters": 4, "kernel_size": 3, "padding": "same"}, 4),
    (QuantizeAwareDepthwiseConv2D, {"kernel_size": 3, "padding": "same", "depth_multiplier": 2}, 6),
    (QuantizeAwareConv2DTranspose, {"filters": 4, "kernel_size": 2, "strides": 2}, 4),
])
def test_quantize_aware_convolution_layer_contract(layer_cls, kwargs, channels, tmp_path):
    inputs = IMAGES[:2, :8, :8] / 255.0
    factor = kwargs.get("strides", 1)
    run_layer_test(layer_cls, kwargs, inputs, (2, 8 * factor, 8 * factor, channels), tmp_path)


def test_qat_model_saves_and_reloads(tmp_path):
    model = _with_batch_norm_statistics(
        keras_unet.UNet(SIZE, filters=4, depth=2, encoder="mobilenet_v3_small",
                        class_names=["nucleus"]))
    qat = quantize_aware(model)
    qat(IMAGES, training=True)  # sets the ranges, which must survive the file
    path = tmp_path / "qat.keras"
    qat.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is QuantizeAwareModel
    assert loaded.class_names == ["nucleus"] and loaded.input_shape_ == SIZE
    np.testing.assert_allclose(loaded.predict(IMAGES, verbose=0), qat.predict(IMAGES, verbose=0),
                               atol=1e-6, rtol=0)
    assert _quantizers(loaded)["conv_bn_quant"].quantization_range() == pytest.approx(
        _quantizers(qat)["conv_bn_quant"].quantization_range())


@pytest.mark.slow
def test_fine_tuning_moves_weights_and_ranges_then_inference_freezes_them():
    keras.utils.set_random_seed(0)
    model = keras_unet.UNet(SIZE, filters=4, depth=2, use_batchnorm=True)
    qat = quantize_aware(model)
    masks = (IMAGES[..., :1] > 127).astype("float32")
    kernels = [np.array(w) for w in qat.trainable_weights]
    qat.compile(keras.optimizers.Adam(1e-2), keras_unet.losses.get_loss("bce_dice"))
    qat.fit(IMAGES, masks, batch_size=2, epochs=1, verbose=0)
    assert any(not np.allclose(a, np.array(b)) for a, b in zip(kernels, qat.trainable_weights))
    check_ranges(qat)  # every range was set by training
    quantizer = _quantizers(qat)["encoder_block_0_act1_quant"]
    assert quantizer.range_updates.numpy() == 2  # one update per batch
    trained = quantizer.quantization_range()
    qat.predict(IMAGES * 4.0, verbose=0)
    assert quantizer.quantization_range() == trained


def test_ranges_are_refused_until_tracked_and_tracking_leaves_weights_alone():
    qat = quantize_aware(keras_unet.UNet(SIZE, filters=4, depth=2))
    with pytest.raises(ValueError, match="never set by training"):
        check_ranges(qat)
    weights = [np.array(w) for w in qat.trainable_weights]
    track_ranges(qat, IMAGES)
    check_ranges(qat)
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(weights, qat.trainable_weights))


def test_unknown_layers_are_named():
    inputs = keras.Input(SIZE)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.LayerNormalization(name="odd_norm")(x)
    x = keras.layers.Activation("gelu", name="odd_activation")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))
    with pytest.raises(ValueError, match=r"odd_norm \(LayerNormalization\), odd_activation \(Activation\)"):
        quantize_aware(model)


def test_other_backends_are_refused(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="TensorFlow backend.*Received: backend='jax'"):
        quantize_aware(keras_unet.UNet(SIZE, filters=4, depth=2))


def test_a_qat_model_is_not_quantized_twice():
    qat = quantize_aware(keras_unet.UNet(SIZE, filters=4, depth=2))
    with pytest.raises(ValueError, match="quantize-aware already"):
        quantize_aware(qat)


@pytest.mark.parametrize("kwargs, match", [
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"fixed_range": (1.0, 2.0)}, "fixed_range"),
])
def test_activation_quantizer_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=f"Received: {match}="):
        ActivationQuantizer(**kwargs)
