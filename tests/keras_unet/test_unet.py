import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from unet_testing import assert_config_round_trip, run_model_saving_test, run_training_step_test

import keras_unet
from keras_unet.encoders import get_encoder, list_encoders

RNG = np.random.default_rng(0)


def images(n=2, size=64, channels=3):
    return RNG.uniform(0, 255, size=(n, size, size, channels)).astype("float32")


def small_unet(**kwargs):
    defaults = {"input_shape": (64, 64, 3), "filters": 4, "depth": 3}
    defaults.update(kwargs)
    return keras_unet.UNet(**defaults)


def test_defaults_reproduce_the_seed_model():
    model = keras_unet.UNet(input_shape=(128, 128, 3))
    assert model.count_params() == 31_031_745
    assert model.output_shape == (None, 128, 128, 1)
    assert model.output_activation == "sigmoid"
    convs = [l for l in model._flatten_layers() if isinstance(l, keras.layers.Conv2DTranspose)]
    assert len(convs) == 4 and all(c.strides == (2, 2) and c.kernel_size == (2, 2) for c in convs)


@pytest.mark.parametrize("encoder", [
    e if e == "vanilla" else pytest.param(e, marks=pytest.mark.slow) for e in list_encoders()])
def test_every_encoder_round_trips_through_keras_file(encoder, tmp_path):
    model = small_unet(encoder=encoder, num_classes=3, use_batchnorm=True, use_attention=True,
                       class_names=["sky", "road", "car"], ignore_index=3)
    x = images()
    probabilities = model.predict(x, verbose=0)
    assert probabilities.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    loaded = run_model_saving_test(model, x, tmp_path)
    assert loaded.class_names == ["sky", "road", "car"] and loaded.ignore_index == 3
    assert_config_round_trip(model)


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        {"upsample": "bilinear", "residual": True},
        {"upsample": "nearest", "dropout": 0.3, "use_batchnorm": True},
        {"use_attention": True, "output_activation": None, "num_classes": 2},
    ],
)
def test_options_train_and_round_trip(options, tmp_path):
    model = small_unet(**options)
    x = images()
    # The target's shape from the model's, not from a predict call (one tf.function trace less).
    run_training_step_test(model, x, RNG.uniform(size=(len(x), *model.output_shape[1:])))
    run_model_saving_test(model, x, tmp_path)


def test_logits_head_is_unbounded_and_float32():
    model = small_unet(output_activation=None)
    y = model.predict(images(), verbose=0)
    assert y.dtype == np.float32
    assert y.min() < 0 or y.max() > 1


def test_dynamic_input_size_accepts_any_multiple_and_rejects_others():
    model = small_unet(input_shape=(None, None, 1), depth=2)
    assert model.predict(images(1, 32, 1)[:, :, :24], verbose=0).shape == (1, 32, 24, 1)
    with pytest.raises(ValueError, match="multiples of 2\\*\\*depth = 4"):
        model.predict(images(1, 30, 1), verbose=0)


def test_frozen_encoder_has_no_trainable_encoder_weights():
    model = small_unet(encoder="mobilenet_v3_small", encoder_trainable=False, use_batchnorm=True)
    trainable_names = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trainable_names and all(n.startswith(("decoder_block", "head")) for n in trainable_names)


def test_encoder_batchnorm_follows_bn_momentum():
    model = small_unet(encoder="mobilenet_v2", bn_momentum=0.8)
    momenta = {l.momentum for l in model.layers if isinstance(l, keras.layers.BatchNormalization)}
    assert momenta == {0.8}


def test_local_encoder_weights_file_is_loaded(tmp_path):
    app = keras.applications.MobileNetV3Small(
        input_shape=(64, 64, 3), include_top=False, weights=None, include_preprocessing=True
    )
    app.get_layer("conv").kernel.assign(np.full(app.get_layer("conv").kernel.shape, 0.25))
    path = str(tmp_path / "encoder.weights.h5")
    app.save_weights(path)
    model = small_unet(encoder="mobilenet_v3_small", encoder_weights=path)
    np.testing.assert_array_equal(np.asarray(model.get_layer("conv").kernel), 0.25)
    assert model.get_config()["encoder_weights"] == path


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square")
def test_imagenet_download_failure_says_what_to_do(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.applications.mobilenet_v2.file_utils.get_file", offline)
    with pytest.raises(RuntimeError, match="ImageNet weights.*encoder_weights="):
        small_unet(encoder="mobilenet_v2", encoder_weights="imagenet")


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"input_shape": (100, 100, 3), "depth": 3}, "multiples of 2\\*\\*depth = 8 \\(for example 96 or 104\\)"),
        ({"input_shape": (64, 64, 3), "depth": 7}, "multiples of 2\\*\\*depth = 128"),
        ({"filters": 0}, "filters.*Received: filters=0"),
        ({"encoder": "vgg16"}, "vanilla.*Received: encoder='vgg16'"),
        ({"upsample": "bicubic"}, "upsample.*Received"),
        ({"encoder": "resnet50", "depth": 6}, "depth must be <= 5"),
        ({"encoder": "mobilenet_v2", "input_shape": (64, 64, 1), "encoder_weights": "imagenet"}, "3 channels"),
        ({"encoder": "resnet50", "encoder_weights": "/no/such/file.h5"}, "encoder_weights.*/no/such/file.h5"),
        ({"encoder_weights": "imagenet"}, "vanilla.*no pretrained weights"),
        ({"num_classes": -2}, "num_classes"),
        ({"output_activation": "relu"}, "output_activation"),
        ({"input_shape": (64, 64)}, "input_shape"),
        ({"num_classes": 3, "class_names": ["a", "b"]}, "class_names.*3 class"),
        ({"ignore_index": -1}, "ignore_index.*Received: ignore_index=-1"),
        ({"ignore_index": "void"}, "ignore_index.*non-negative integer"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        small_unet(**kwargs)


def test_mismatched_weights_file_is_rejected(tmp_path):
    other = keras.applications.MobileNetV3Small(input_shape=(64, 64, 3), include_top=False, weights=None)
    path = str(tmp_path / "other.weights.h5")
    other.save_weights(path)
    with pytest.raises(ValueError, match="does not match encoder 'resnet50'"):
        small_unet(encoder="resnet50", encoder_weights=path)


def test_registry_lists_and_describes_encoders():
    assert list_encoders() == sorted(
        ["vanilla", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet50"]
    )
    assert get_encoder("resnet50").pretrained and not get_encoder("vanilla").pretrained


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_float32_output(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = small_unet(use_batchnorm=True, use_attention=True)
        x = images()
        assert model.get_layer("decoder_block_0").compute_dtype == policy.split("_")[1]
        y = model.predict(x, verbose=0)
        assert y.dtype == np.float32 and np.all(np.isfinite(y))
        run_training_step_test(model, x, RNG.uniform(size=y.shape).astype("float32"))
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
def test_jax_backend_loads_tensorflow_saved_model_with_same_outputs(tmp_path):
    # Training on JAX is covered by test_distribution (data-parallel, two processes).
    pytest.importorskip("jax")  # installed by the [test] extra; CI always has it
    model = small_unet(encoder="vanilla", num_classes=3, use_batchnorm=True, use_attention=True, residual=True)
    x = images()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", model.predict(x, verbose=0))
    model.save(tmp_path / "m.keras")
    mobile = small_unet(encoder="mobilenet_v3_small", upsample="bilinear")
    np.save(tmp_path / "expected_mobile.npy", mobile.predict(x, verbose=0))
    mobile.save(tmp_path / "mobile.keras")
    script = textwrap.dedent(
        """
        import sys, numpy as np, keras, keras_unet
        assert keras.backend.backend() == "jax", keras.backend.backend()
        d = sys.argv[1]
        x = np.load(d + "/x.npy")
        for name, expected in (("m", "expected"), ("mobile", "expected_mobile")):
            m = keras.models.load_model(d + "/" + name + ".keras")
            np.testing.assert_allclose(m.predict(x, verbose=0), np.load(d + "/" + expected + ".npy"), atol=2e-5)
        print("jax ok")
        """
    )
    # XLA without its optimisation passes: loading compiles JAX's truncated normal once per
    # kernel shape (he_normal), 41 s of optimised compiles for these two models against 14 s;
    # the outputs still match to 2e-5, and this test is about them, not XLA's speed.
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "jax ok" in result.stdout
