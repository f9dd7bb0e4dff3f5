"""Tiny models and a tiny labelled data folder shared by the benchmark tests.

The model is a 1x1 convolution with fixed weights: sigmoid((mean(rgb) - 128) / 10), so its mask
is exactly "pixel brighter than 128". The images (32x32) hold a bright 16x16 square; the
ground-truth masks hold the same square shifted down by 4 rows. Hence, by hand: intersection
12 * 16 = 192, union 256 + 256 - 192 = 320, IoU = 0.6, Dice = 2 * 192 / 512 = 0.75.

`tiny_models` converts that model with TensorFlow into every format (slow: for tests marked
`slow`). `onnx_models` writes the same function as a hand-built ONNX graph in milliseconds, plus
an "empty" model that predicts background everywhere. Against the bright model's masks the
empty one agrees on the 768 background pixels of 1024 per image: `pixel_agreement` 0.75,
`agreement_iou` (foreground IoU) 0.0, `agreement_mean_iou` (768/1024 + 0) / 2 = 0.375.
"""

import os

import numpy as np
import pytest
from PIL import Image
from pixel_onnx import pixel_model

SIZE = 32
HAND_IOU = 0.6
HAND_DICE = 0.75


def _image(offset):
    image = np.full((SIZE, SIZE, 3), 50, np.uint8)
    image[8 + offset : 24 + offset, 8:24] = 200
    return image


def _mask(offset):
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[12 + offset : 28 + offset, 8:24] = 255
    return mask


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_data")
    os.makedirs(root / "images")
    os.makedirs(root / "masks")
    for index, offset in enumerate([0, 2, 4]):
        Image.fromarray(_image(offset)).save(root / "images" / f"img{index}.png")
        Image.fromarray(_mask(offset)).save(root / "masks" / f"img{index}.png")
    return str(root)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Paths of the same tiny model as .keras, .tflite and .onnx (no metadata embedded)."""
    import keras

    root = tmp_path_factory.mktemp("bench_models")
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid")
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.full((1, 1, 3, 1), 1.0 / 30.0, np.float32), np.array([-12.8], np.float32)])
    paths = {"keras": str(root / "tiny.keras"), "tflite": str(root / "tiny.tflite"), "onnx": str(root / "tiny.onnx")}
    model.save(paths["keras"])
    import tensorflow as tf

    with open(paths["tflite"], "wb") as handle:
        handle.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    model.export(paths["onnx"], format="onnx", verbose=False)
    return paths


@pytest.fixture(scope="session")
def hand_scores():
    """IoU and Dice of the tiny model on the tiny data, worked out by hand (module docstring)."""
    return {"iou": HAND_IOU, "dice": HAND_DICE}


def _onnx_pixel_model(path, bias):
    """sigmoid(sum(rgb) / 30 + bias) per pixel, NHWC in and out, batch free."""
    return pixel_model(path, SIZE, np.full((3, 1), 1.0 / 30.0), [bias], "Sigmoid")


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory):
    """`bright`: the tiny model (hand IoU 0.6) as ONNX, built without TensorFlow; `empty`: all background."""
    root = tmp_path_factory.mktemp("bench_onnx")
    return {
        "bright": _onnx_pixel_model(root / "bright.onnx", -12.8),
        "empty": _onnx_pixel_model(root / "empty.onnx", -100.0),
    }


@pytest.fixture(scope="session")
def empty_vs_bright_agreement():
    """`mask_agreement` of the empty model against the bright one, by hand (module docstring)."""
    return {"pixel_agreement": 0.75, "agreement_iou": 0.0, "agreement_mean_iou": 0.375}


@pytest.fixture()
def corrupted_model(tmp_path):
    path = tmp_path / "broken.tflite"
    path.write_bytes(b"this is not a flatbuffer" * 10)
    return str(path)
