"""Our `.tflite` exports in MediaPipe Tasks' `vision.ImageSegmenter`, as Android/iOS apps run them.

MediaPipe reads the standard TFLite Metadata that every export carries
(`keras_unet.export.tflite_support_metadata`). Each file runs there as it is, and its masks
at model size must agree with `keras_unet.runtime.load_runner(path).predict_masks` (what
`keras-unet predict` uses) on >= 99% of the pixels: the category mask (binary: MediaPipe's 0
is our foreground 1), and the confidence masks equal our probabilities. Models: a binary RGB
model, a 3-class model with class names, and a 1-channel model exported with
`input_channels=3`, each as float32, fp16 and int8 (plus dynamic for the binary one), and a
model that outputs logits. They are tiny UNets trained for a few seconds on the shipped
nuclei images, so that their masks are not trivial.

The exports are `slow`; the input-channel conversion, the option checks and the logits
reference are not. The MediaPipe tests need `pip install mediapipe` (the `test` extra).
"""

import argparse

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from keras_unet.datasets import nuclei_path  # noqa: E402
from keras_unet.runtime import imageio, load_runner  # noqa: E402

SIZE = (32, 32)
MIN_PIXEL_AGREEMENT = 0.99


def _train(channels, num_classes, class_names, output_activation="auto"):
    import keras_unet

    images, masks = imageio.load_dataset_arrays(nuclei_path(), size=SIZE, channels=channels)
    labels = masks[:64, ..., None].astype("float32")
    loss = keras.losses.BinaryCrossentropy(from_logits=output_activation is None)
    if num_classes == 3:
        # background, nucleus, and the brighter half of the background
        brightness = images[:64].mean(axis=-1)
        labels = np.where(masks[:64] == 1, 1, np.where(brightness > np.median(brightness), 2, 0))
        loss = "sparse_categorical_crossentropy"
    keras.utils.set_random_seed(0)
    model = keras_unet.UNet((*SIZE, channels), num_classes=num_classes, filters=4, depth=2,
                            class_names=class_names, output_activation=output_activation)
    model.compile(keras.optimizers.Adam(1e-2), loss)
    model.fit(images[:64].astype("float32"), labels, batch_size=16, epochs=30, verbose=0)
    return model


@pytest.fixture(scope="module")
def models(trained_unet_path):
    """Tiny trained models by name (module scope: trained only when a slow test runs); the
    binary one is the session's (`trained_unet_path`: the same recipe as `_train(3, 1,
    ["nucleus"])`, trained once for the whole session)."""
    return {
        "binary": keras.saving.load_model(trained_unet_path),
        "three_classes": _train(3, 3, ["background", "nucleus", "bright"]),
        # Named [background, foreground]: MediaPipe labels its one output "nucleus".
        "gray": _train(1, 1, ["background", "nucleus"]),
        "logits": _train(3, 1, ["nucleus"], output_activation=None),
    }


@pytest.fixture(scope="module")
def test_images():
    """RGB nuclei images the models were not trained on, at model size, uint8."""
    images, _ = imageio.load_dataset_arrays(nuclei_path(), size=SIZE, channels=3)
    return images[150:182].astype(np.uint8)


def mediapipe_masks(path, images):
    """`(labels, category masks (N, H, W), confidence masks (N, H, W, K))` from MediaPipe."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                           output_category_mask=True,
                                           output_confidence_masks=True)
    categories, confidences = [], []
    with vision.ImageSegmenter.create_from_options(options) as segmenter:
        labels = list(segmenter.labels)
        for image in images:
            result = segmenter.segment(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                data=np.ascontiguousarray(image)))
            # Copy while `result` lives: the views point into memory it owns.
            categories.append(np.array(result.category_mask.numpy_view()).reshape(image.shape[:2]))
            confidences.append(np.stack([np.array(m.numpy_view()).reshape(image.shape[:2])
                                         for m in result.confidence_masks], axis=-1))
    return labels, np.stack(categories), np.stack(confidences)


def check_in_mediapipe(path, images, class_names):
    """MediaPipe's masks and labels for `path` agree with our runner's."""
    pytest.importorskip("mediapipe")
    with load_runner(path) as runner:
        ours = runner.predict_masks(images)
        probabilities = runner.predict(images)
        num_classes = runner.num_classes
    labels, category, confidence = mediapipe_masks(path, images)
    if num_classes == 1:
        assert labels == class_names[-1:]  # one output channel: the foreground
        # MediaPipe: 0 = the one category (foreground, confidence > 0.5), 255 = background.
        assert set(np.unique(category)) <= {0, 255}
        theirs = (category == 0).astype(ours.dtype)
        assert 0.01 < ours.mean() < 0.99, "trivial masks: the check would prove nothing"
    else:
        assert labels == class_names
        theirs = category.astype(ours.dtype)
        assert len(np.unique(ours)) >= 2, "trivial masks: the check would prove nothing"
    agreement = float(np.mean(theirs == ours))
    assert agreement >= MIN_PIXEL_AGREEMENT, agreement
    assert confidence.shape == probabilities.shape
    np.testing.assert_allclose(confidence, probabilities, atol=1e-5)
    return agreement


CASES = [
    ("binary", "none"), ("binary", "fp16"), ("binary", "dynamic"), ("binary", "int8"),
    ("three_classes", "none"), ("three_classes", "fp16"), ("three_classes", "int8"),
    ("gray", "none"), ("gray", "fp16"), ("gray", "int8"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, quantize", CASES)
def test_exports_run_in_mediapipe_like_keras_unet_predict(models, test_images, tmp_path, name,
                                                          quantize):
    from keras_unet.export.tflite import export_tflite

    pytest.importorskip("mediapipe")
    model = models[name]
    out = tmp_path / f"{name}_{quantize}.tflite"
    result = export_tflite(
        model, out, quantize=quantize, progress=False, check_speed=False,
        calibration_data=nuclei_path() if quantize == "int8" else None, calibration_size=48,
        agreement_floor=0.8, input_channels=3 if name == "gray" else None)
    assert result.metadata["channels"] == 3 and result.input_shape == (1, *SIZE, 3)
    # Nothing MediaPipe would refuse; a tiny model's int8 file may fall short of the repair
    # target, which the export says too.
    assert [warning for warning in result.warnings if warning != result.shortfall] == []
    check_in_mediapipe(out, test_images, model.class_names)
    if quantize == "int8" and model.num_classes == 1:
        # The uint8 output has no code at exactly 0.5, where `>=` and `>` would differ.
        with load_runner(out) as runner:
            assert runner.output_quantization == {"scale": pytest.approx(1 / 255.75),
                                                  "zero_point": 0}


@pytest.mark.slow
def test_a_logits_model_verifies_and_mediapipe_applies_the_sigmoid(models, test_images, tmp_path):
    from keras_unet.export.tflite import export_tflite
    from keras_unet.export.tflite_support_metadata import read_support_metadata

    model = models["logits"]
    out = tmp_path / "logits.tflite"
    # Verification compared raw logits with the runner's probabilities and failed.
    result = export_tflite(model, out, progress=False, check_speed=False)
    assert result.verification.passed and result.verification.max_abs_diff <= 1e-4
    assert result.metadata["output_activation"] is None
    assert read_support_metadata(out.read_bytes())["activation"] == "SIGMOID"
    check_in_mediapipe(out, test_images, model.class_names)


@pytest.mark.slow
def test_cli_input_channels_3_makes_a_gray_model_take_rgb(models, tmp_path, capsys):
    from keras_unet.export import cli
    from keras_unet.runtime.metadata import read_metadata

    path = tmp_path / "gray.keras"
    models["gray"].save(path)
    out = tmp_path / "gray.tflite"
    assert cli.main([str(path), "--out", str(out), "--input-channels", "3", "--quiet"]) == 0
    assert "input (1, 32, 32, 3) float32" in capsys.readouterr().out
    assert read_metadata(out)["channels"] == 3
    gray, _ = imageio.load_dataset_arrays(nuclei_path(), size=SIZE, channels=1)
    with load_runner(out) as runner:  # takes RGB; a gray image is repeated to RGB first
        assert runner.channels == 3
        np.testing.assert_allclose(runner.predict(gray[:4]),
                                   runner.predict(np.repeat(gray[:4], 3, axis=-1)), atol=1e-5)
    assert cli.main([str(path), "--out", str(tmp_path / "gray1.tflite"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "warning:" in printed and "--input-channels 3" in printed  # the MediaPipe hint


def test_rgb_to_gray_inside_the_model_is_the_runtime_conversion():
    from keras_unet.export.source import static_model

    inputs = keras.Input((8, 8, 1))
    identity = keras.Model(inputs, keras.layers.Activation("linear")(inputs))
    rgb = static_model(identity, (8, 8), input_channels=3)
    assert tuple(rgb.inputs[0].shape) == (1, 8, 8, 3)
    image = np.random.default_rng(0).uniform(0, 255, (1, 8, 8, 3)).astype("float32")
    gray = imageio.convert_channels(image[0], 1)  # ITU-R 601-2 luma, as files are read
    np.testing.assert_allclose(np.asarray(rgb(image))[0], gray, atol=1e-3)
    assert static_model(identity, (8, 8), input_channels=1).inputs[0].shape[-1] == 1
    with pytest.raises(ValueError, match="input_channels=3"):
        static_model(identity, (8, 8), input_channels=4)
    rgb_inputs = keras.Input((8, 8, 3))
    three = keras.Model(rgb_inputs, keras.layers.Conv2D(1, 1)(rgb_inputs))
    with pytest.raises(ValueError, match="takes 3 channel"):
        static_model(three, (8, 8), input_channels=1)


def test_logits_reference_gets_the_runners_activation():
    from keras_unet.export.verify import keras_predict

    inputs = keras.Input((4, 4, 3))
    logits = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
    images = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    raw = keras_predict(logits, images)
    probabilities = keras_predict(logits, images, logits=True)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(-1), raw.argmax(-1))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--out", "{tmp}/m.onnx", "--input-channels", "3"], "TFLite only"),
        (["--out", "{tmp}/m.tflite", "--input-channels", "1"], "takes 3 channel"),
        (["--out", "{tmp}/m.tflite", "--input-channels", "2"], "invalid choice"),
    ],
)
def test_input_channels_misuse_exits_2(untrained_unet_path, tmp_path, capsys, extra, message):
    from keras_unet.export import cli

    argv = [str(untrained_unet_path)] + [a.replace("{tmp}", str(tmp_path)) for a in extra]
    try:
        status = cli.main(argv + ["--quiet"])
    except SystemExit as exit:  # refused while parsing
        status = exit.code
    assert status == 2
    assert message in capsys.readouterr().err
    assert not any(p.suffix in (".onnx", ".tflite") for p in tmp_path.iterdir())


def test_help_says_what_mediapipe_needs():
    from keras_unet.export import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "--input-channels" in text and "MediaPipe needs uint8 or float32" in text
