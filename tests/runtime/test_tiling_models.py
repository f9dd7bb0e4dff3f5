"""Tiled inference on real models: a hand-set Keras model (a 3x3 averaging convolution and a
sigmoid: bright regions are foreground) as `.keras`, `.tflite` and `.onnx`, on a synthetic
image 8x its input size whose true mask is known. (The tiling rules: test_tiling.py.)
"""

import json

import numpy as np
import pytest
from PIL import Image

from keras_unet import cli


# Real models: .keras, .tflite, .onnx ------------------------------------------------------
MODEL_SIZE = 32
IMAGE_SIZE = 8 * MODEL_SIZE


def averaging_model(size=(MODEL_SIZE, MODEL_SIZE)):
    """Foreground where the 3x3 neighbourhood's mean brightness is above 128.

    One hand-set layer: a 3x3 convolution averaging the three channels (so a tile's border
    pixels see the zero padding, as a UNet's do) and a steep sigmoid.
    """
    import keras

    inputs = keras.Input((*size, 3))
    conv = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")
    outputs = conv(inputs)
    steepness = 0.1
    conv.set_weights([np.full((3, 3, 3, 1), steepness / 27, np.float32),
                      np.array([-128 * steepness], np.float32)])
    return keras.Model(inputs, outputs)


def synthetic_scene():
    """An image 8x the model input with a known mask: a disc, thin bars and small squares."""
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    truth = (y - 90) ** 2 + (x - 100) ** 2 < 60**2
    for offset in range(20, IMAGE_SIZE - 20, 14):
        truth |= (np.abs(x - offset) < 2) & (y > 180) & (y < 240)  # bars 3 pixels wide
    for top in range(10, 170, 22):
        truth |= (y >= top) & (y < top + 5) & (x >= 200) & (x < 205 + top % 3)  # 5x5 squares
    rng = np.random.default_rng(1)
    image = np.where(truth[..., None], 215.0, 40.0) + rng.uniform(-20, 20, (IMAGE_SIZE, IMAGE_SIZE, 3))
    return image.clip(0, 255).round().astype(np.uint8), truth.astype(np.uint8)


def iou(mask, truth):
    return np.logical_and(mask, truth).sum() / np.logical_or(mask, truth).sum()


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    from keras_unet.export import export_onnx, export_tflite

    folder = tmp_path_factory.mktemp("tiling")
    model = averaging_model()
    paths = {fmt: folder / f"model.{fmt}" for fmt in ("keras", "tflite", "onnx")}
    model.save(paths["keras"])
    export_tflite(model, paths["tflite"], progress=False)
    export_onnx(model, paths["onnx"], progress=False)
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["keras", "tflite", "onnx"])
def test_tiled_predict_beats_resize_on_an_image_8x_the_model(model_files, fmt):
    from keras_unet.runtime import load_runner

    image, truth = synthetic_scene()
    with load_runner(model_files[fmt], threads=1) as runner:
        assert runner.input_size == (MODEL_SIZE, MODEL_SIZE)
        tiled = runner.predict_masks(image, tile=True)
        resized = runner.predict_masks(image)
    assert tiled.shape == resized.shape == (1, IMAGE_SIZE, IMAGE_SIZE)  # native size
    tiled_iou, resized_iou = iou(tiled[0], truth), iou(resized[0], truth)
    assert tiled_iou >= resized_iou
    assert tiled_iou >= 0.99, (tiled_iou, resized_iou)  # the bars and squares survive
    assert resized_iou < 0.9, (tiled_iou, resized_iou)


@pytest.mark.slow
def test_blended_tiles_have_no_seams_on_a_model_with_context(model_files):
    from keras_unet.runtime import load_runner

    image, _ = synthetic_scene()
    whole = averaging_model((IMAGE_SIZE, IMAGE_SIZE))  # the same layer over the whole image
    reference = whole.predict(image[None].astype(np.float32), verbose=0)[0]
    with load_runner(model_files["tflite"], threads=1) as runner:
        blended = runner.predict(image, tile=True)[0]
        abutting = runner.predict(image, tile=0.0)[0]
    # Tiles that only touch see zero padding at each other's edges: a seam of wrong values.
    assert np.abs(abutting - reference).max() > 0.2
    # Blended, a tile's edge pixels weigh ~1% against the neighbour's inside.
    assert np.abs(blended - reference).max() < 0.03  # measured 0.017; abutting 0.97


@pytest.mark.slow
def test_any_size_keras_model_tiles_at_the_given_size(model_files, tmp_path):
    from keras_unet.runtime import load_runner

    path = tmp_path / "any_size.keras"
    averaging_model((None, None)).save(path)
    image, _ = synthetic_scene()
    with load_runner(path) as runner:
        assert runner.input_size == (None, None)
        with pytest.raises(ValueError, match="tile_size"):
            runner.predict(image, tile=True)
        free = runner.predict(image, tile=True, tile_size=(MODEL_SIZE, MODEL_SIZE))
    with load_runner(model_files["keras"]) as runner:
        fixed = runner.predict(image, tile=True)
    np.testing.assert_allclose(free, fixed, atol=1e-5)


@pytest.mark.slow
def test_cli_tiles_an_exported_file(model_files, tmp_path):
    from keras_unet.runtime import load_runner

    image, truth = synthetic_scene()
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    Image.fromarray(image).save(tmp_path / "data" / "images" / "scene.png")
    Image.fromarray(truth * 255).save(tmp_path / "data" / "masks" / "scene.png")
    model = str(model_files["onnx"])
    assert cli.main(["predict", model, "--images", str(tmp_path / "data" / "images"),
                     "--out", str(tmp_path / "out"), "--tile"]) == 0
    written = np.asarray(Image.open(tmp_path / "out" / "scene.png"))
    with load_runner(model) as runner:
        expected = runner.predict_masks(image, tile=True)[0]
    np.testing.assert_array_equal(written, expected * 255)
    report = tmp_path / "scores.json"
    assert cli.main(["evaluate", model, "--data", str(tmp_path / "data"), "--tile",
                     "--json", str(report)]) == 0
    assert json.loads(report.read_text())["iou"] == pytest.approx(iou(expected, truth))
