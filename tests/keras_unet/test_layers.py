import numpy as np
import pytest
from unet_testing import run_layer_test

from keras_unet.layers import (
    AttentionGate,
    ConvBlock,
    DecoderBlock,
    EncoderStage,
    InputNormalization,
)

RNG = np.random.default_rng(0)


def images(*shape):
    return RNG.uniform(0, 1, size=shape).astype("float32")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"filters": 8},
        {"filters": 8, "use_batchnorm": True, "dropout": 0.2},
        {"filters": 8, "residual": True},  # projection shortcut: 3 -> 8 channels
        {"filters": 3, "residual": True, "activation": "elu"},  # identity shortcut
    ],
)
def test_conv_block(kwargs, tmp_path):
    model = run_layer_test(ConvBlock, kwargs, images(2, 16, 16, 3), (2, 16, 16, kwargs["filters"]), tmp_path)
    block = model.layers[-1]
    if kwargs.get("residual"):
        assert (block.shortcut is not None) == (kwargs["filters"] != 3)
    assert (block.norm1 is not None) == kwargs.get("use_batchnorm", False)


def test_encoder_stage(tmp_path):
    run_layer_test(
        EncoderStage,
        {"filters": 8, "use_batchnorm": True, "pooling": "average"},
        images(2, 16, 16, 4),
        (2, 8, 8, 8),
        tmp_path,
    )


@pytest.mark.parametrize("upsample", ["transpose", "bilinear", "nearest"])
@pytest.mark.parametrize("use_attention", [False, True])
def test_decoder_block_with_skip(upsample, use_attention, tmp_path):
    run_layer_test(
        DecoderBlock,
        {"filters": 4, "upsample": upsample, "use_attention": use_attention, "use_batchnorm": True},
        [images(2, 8, 8, 8), images(2, 16, 16, 4)],
        (2, 16, 16, 4),
        tmp_path,
    )


def test_decoder_block_without_skip(tmp_path):
    run_layer_test(DecoderBlock, {"filters": 4}, images(2, 8, 8, 8), (2, 16, 16, 4), tmp_path)


def test_attention_gate_scales_skip_into_its_own_range(tmp_path):
    model = run_layer_test(
        AttentionGate, {"filters": 4}, [images(2, 8, 8, 6), images(2, 8, 8, 3)], (2, 8, 8, 6), tmp_path
    )
    skip, gate = images(1, 8, 8, 6), images(1, 8, 8, 3)
    gated = np.asarray(model([skip, gate]))
    # sigmoid attention in (0, 1) can only shrink a non-negative skip
    assert np.all(gated >= 0) and np.all(gated <= skip + 1e-6)


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("unit", [0.0, 1.0]),
        ("symmetric", [-1.0, 1.0]),
        ("none", [0.0, 255.0]),
    ],
)
def test_input_normalization_ranges(mode, expected, tmp_path):
    x = np.stack([np.zeros((4, 4, 3)), np.full((4, 4, 3), 255.0)]).astype("float32")
    model = run_layer_test(InputNormalization, {"mode": mode}, x, (2, 4, 4, 3), tmp_path)
    y = np.asarray(model(x))
    np.testing.assert_allclose([y[0].min(), y[1].max()], expected, atol=1e-6)


def test_input_normalization_caffe_matches_keras_preprocess_input():
    import keras

    x = RNG.uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    expected = keras.applications.resnet50.preprocess_input(x.copy())
    actual = np.asarray(InputNormalization("caffe")(x))
    np.testing.assert_allclose(actual, expected, atol=1e-4)


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: ConvBlock(0), "filters"),
        (lambda: ConvBlock(8, dropout=1.5), "dropout"),
        (lambda: DecoderBlock(8, upsample="bicubic"), "upsample"),
        (lambda: EncoderStage(8, pooling="min"), "pooling"),
        (lambda: InputNormalization("zscore"), "mode"),
        (lambda: AttentionGate(-1), "filters"),
    ],
)
def test_bad_arguments_name_the_argument(factory, message):
    with pytest.raises(ValueError, match=f"{message}.*Received"):
        factory()


def test_caffe_normalization_rejects_grayscale():
    with pytest.raises(ValueError, match="3 channels"):
        InputNormalization("caffe")(np.zeros((1, 4, 4, 1), "float32"))
