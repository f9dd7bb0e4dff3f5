"""keras_unet.runtime: runners for .tflite/.onnx/.keras against the Keras model they came from.

Fast tests (no Keras, no converter) drive the shared `Runner` steps with a numpy "model",
read metadata from a flatbuffer built with the TFLite schema, and check the import graph;
the tests marked slow convert small Keras models and compare the runtimes with Keras.
"""

import ast
import json
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from keras_unet.runtime import load_runner
from keras_unet.runtime.base import Runner
from keras_unet.runtime.describe import describe_model
from keras_unet.runtime.metadata import (
    read_metadata,
    read_tflite_metadata,
    tensor_metadata,
    tflite_metadata_entries,
    tflite_schema,
)
from keras_unet.runtime.scores import probabilities_to_masks

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "keras_unet" / "runtime"
RNG = np.random.default_rng(0)


def tiny_model(classes=1, size=(16, 16), activation="auto", batch_size=None):
    import keras

    inputs = keras.Input((*size, 3), batch_size=batch_size)
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    if activation == "auto":
        activation = "sigmoid" if classes == 1 else "softmax"
    # Large final weights spread the probabilities away from 0.5, so masks mean something.
    x = keras.layers.Conv2D(classes, 1, activation=activation,
                            kernel_initializer=keras.initializers.RandomNormal(stddev=3.0),
                            bias_initializer=keras.initializers.Constant(-1.0))(x)
    return keras.Model(inputs, x)


def images(n, size=16):
    return RNG.uniform(0, 255, (n, size, size, 3)).astype("float32")


def smooth_images(n, size=16):
    """Images with spatial structure, like the real ones int8 is calibrated for."""
    y, x = np.mgrid[0:size, 0:size] / size
    out = [np.stack([np.sin(6 * x + i) , np.cos(5 * y - i), x * y], -1) for i in range(n)]
    return ((np.stack(out) + 1) * 127.5).clip(0, 255).astype("float32")


def convert(model, int8=False):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in smooth_images(16))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()


def io_details(data):
    """The tensor facts the exporter passes to build_metadata."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    facts = {}
    for side, detail in (("input", interpreter.get_input_details()[0]),
                         ("output", interpreter.get_output_details()[0])):
        scale, zero_point = detail["quantization"]
        facts[f"{side}_dtype"] = np.dtype(detail["dtype"]).name
        facts[f"{side}_quantization"] = {"scale": scale, "zero_point": zero_point} if scale else None
    return facts


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import keras

    from keras_unet.export.metadata import build_metadata, embed_onnx_metadata, embed_tflite_metadata

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("runtime")
    models = {"binary": tiny_model(1), "multi": tiny_model(3), "logits": tiny_model(3, activation=None)}
    models["binary_int8"] = models["binary"]
    paths = {}
    for name, model in models.items():
        int8 = name.endswith("int8")
        data = convert(model, int8)
        paths[f"{name}_plain"] = folder / f"{name}_plain.tflite"
        paths[f"{name}_plain"].write_bytes(data)
        metadata = build_metadata(model, format="tflite", quantization="int8" if int8 else "none",
                                  input_size=(16, 16), class_names=["a", "b", "c"] if name == "multi" else None,
                                  **io_details(data))
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(embed_tflite_metadata(data, metadata))
    binary = models["binary"]
    paths["onnx"] = folder / "binary.onnx"
    binary.export(str(paths["onnx"]), format="onnx", verbose=False)
    paths["onnx_plain"] = folder / "binary_plain.onnx"
    paths["onnx_plain"].write_bytes(paths["onnx"].read_bytes())
    embed_onnx_metadata(paths["onnx"], build_metadata(binary, format="onnx", quantization="none",
                                                      input_size=(16, 16), input_dtype="float32"))
    paths["keras"] = folder / "binary.keras"
    binary.save(paths["keras"])
    return {"paths": paths, **models}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["binary", "onnx", "keras"])
def test_float_runners_match_keras(files, name):
    x = images(3)
    expected = files["binary"].predict(x, verbose=0)
    with load_runner(files["paths"][name], threads=1) as runner:
        np.testing.assert_allclose(runner.predict(x), expected, atol=1e-4)
        assert runner.num_classes == 1 and runner.input_size == (16, 16)
        assert runner.format == {"binary": "tflite"}.get(name, name)
        assert runner.quantization == "none" and runner.metadata["output_activation"] == "sigmoid"


@pytest.mark.slow
def test_int8_runner_quantizes_io_and_stays_close(files):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # metadata and tensors agree: nothing to warn about
        runner = load_runner(files["paths"]["binary_int8"])
    assert runner.quantization == "int8"
    assert runner.input_quantization == runner.metadata["input_quantization"]
    batch = runner.prepare(smooth_images(2))
    assert batch.dtype == np.uint8
    # uint8 input with scale ~1, zero point 0: the quantized batch is the rounded image.
    np.testing.assert_allclose(batch, np.round(smooth_images(2)), atol=1)
    raw = runner.run(batch)
    assert raw.dtype == np.uint8
    x = smooth_images(4)
    expected = files["binary"].predict(x, verbose=0)
    probabilities = runner.predict(x)
    assert probabilities.dtype == np.float32
    assert np.abs(probabilities - expected).max() < 0.05
    assert_masks_agree(runner.predict_masks(x), expected)


def assert_masks_agree(masks, expected, margin=0.05):
    """int8 masks equal Keras' wherever Keras is not within `margin` of the threshold."""
    confident = np.abs(expected[..., 0] - 0.5) > margin
    assert confident.mean() > 0.2  # the check below is not vacuous
    np.testing.assert_array_equal(masks[confident], (expected[..., 0] >= 0.5)[confident])


@pytest.mark.slow
def test_metadata_that_disagrees_with_the_tensors_loses(files, tmp_path):
    from keras_unet.export.metadata import build_metadata, embed_tflite_metadata

    path = tmp_path / "lying.tflite"
    data = files["paths"]["binary_int8_plain"].read_bytes()
    metadata = build_metadata(files["binary"], format="tflite", quantization="int8", input_size=(16, 16),
                              input_dtype="uint8", input_quantization={"scale": 0.5, "zero_point": 3},
                              output_dtype="uint8", output_quantization={"scale": 1 / 256, "zero_point": 0})
    path.write_bytes(embed_tflite_metadata(data, metadata))
    with pytest.warns(UserWarning, match="input_quantization=.*using"):
        runner = load_runner(path)
    assert runner.input_quantization["zero_point"] == 0
    assert runner.metadata["input_quantization"] == runner.input_quantization


@pytest.mark.slow
def test_batches_on_a_batch_one_model_match_image_by_image(files):
    runner = load_runner(files["paths"]["multi"])
    assert runner.interpreter.get_input_details()[0]["shape"][0] == 1
    x = runner.prepare(images(3))
    together = runner.run(x)
    apart = np.concatenate([runner.run(x[i : i + 1]) for i in range(3)])
    assert together.shape == (3, 16, 16, 3)
    np.testing.assert_allclose(together, apart, atol=1e-6)


@pytest.mark.slow
def test_a_graph_that_cannot_batch_falls_back_to_one_image_at_a_time(files, monkeypatch):
    runner = load_runner(files["paths"]["multi"])
    resize = runner.interpreter.resize_tensor_input

    def refuse_batches(index, shape, *args, **kwargs):
        if shape[0] != 1:  # as some graphs (e.g. nearest upsampling) refuse in practice
            raise ValueError("cannot resize this graph")
        return resize(index, shape, *args, **kwargs)

    monkeypatch.setattr(runner.interpreter, "resize_tensor_input", refuse_batches)
    x = runner.prepare(images(3))
    with pytest.warns(UserWarning, match="one at a time"):
        together = runner.run(x)
    apart = np.concatenate([runner.run(x[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(together, apart, atol=1e-6)
    np.testing.assert_allclose(runner.run(x), together)  # later batches loop straight away


@pytest.mark.slow
def test_logits_get_the_activation_in_postprocess(files):
    runner = load_runner(files["paths"]["logits"])
    assert runner.metadata["output_activation"] is None
    x = images(2)
    logits = files["logits"].predict(x, verbose=0)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(runner.predict(x), expected, atol=1e-4)
    np.testing.assert_array_equal(runner.predict_masks(x), expected.argmax(-1))


@pytest.mark.slow
def test_predict_returns_each_image_at_its_own_size(files):
    runner = load_runner(files["paths"]["multi"])
    shapes = [(20, 30, 3), (16, 16, 3), (9, 41)]  # the last one grayscale: converted to RGB
    result = runner.predict([RNG.uniform(0, 255, s).astype("float32") for s in shapes])
    assert [r.shape for r in result] == [(20, 30, 3), (16, 16, 3), (9, 41, 3)]
    np.testing.assert_allclose([r.sum(-1).mean() for r in result], 1.0, atol=1e-4)
    # The image already at the model's size comes back exactly as Keras computes it.
    same = RNG.uniform(0, 255, (16, 16, 3)).astype("float32")
    np.testing.assert_allclose(runner.predict([np.zeros((8, 8, 3)), same])[1],
                               files["multi"].predict(same[None], verbose=0)[0], atol=1e-4)
    masks = runner.predict_masks([RNG.uniform(0, 255, s) for s in shapes])
    assert [m.shape for m in masks] == [s[:2] for s in shapes] and max(m.max() for m in masks) <= 2
    # One size for all: one array; a single (H, W, C) image is a batch of one.
    assert runner.predict(images(2, 24)).shape == (2, 24, 24, 3)
    assert runner.predict_masks(images(1, 24)[0]).shape == (1, 24, 24)


@pytest.mark.slow
def test_predict_masks_thresholds_probabilities(files):
    runner = load_runner(files["paths"]["binary"])
    x = images(2)
    probabilities = runner.predict(x)[..., 0]
    threshold = float(np.median(probabilities))
    masks = runner.predict_masks(x, threshold=threshold)
    np.testing.assert_array_equal(masks, (probabilities >= threshold).astype(np.uint8))
    assert 0.3 < masks.mean() < 0.7  # the median splits the pixels


@pytest.mark.slow
def test_any_size_tflite_model_resizes_its_input_tensor(tmp_path):
    import keras
    import tensorflow as tf

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(3, 3, padding="same")(inputs / 255.0)
    # A pooled-and-upsampled skip, like a UNet: only even sizes line up.
    x = keras.layers.UpSampling2D()(keras.layers.MaxPooling2D()(x))
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(keras.layers.Add()([x, inputs / 255.0]))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "any.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    with pytest.warns(UserWarning, match="no keras_unet metadata"):
        runner = load_runner(path)
    assert runner.input_size == (None, None)
    # Two sizes in one call: grouped by size, each run at its own size, order kept.
    x8, x24 = images(2, 8), images(1, 24)
    result = runner.predict([x8[0], x24[0], x8[1]])
    np.testing.assert_allclose(np.stack([result[0], result[2]]), model.predict(x8, verbose=0), atol=1e-5)
    np.testing.assert_allclose(result[1], model.predict(x24, verbose=0)[0], atol=1e-5)
    with pytest.raises(ValueError, match="multiples of its total stride"):
        runner.predict(images(1, 9))


@pytest.mark.slow
def test_fixed_batch_onnx_runs_any_batch(files, tmp_path):
    import onnx

    proto = onnx.load(str(files["paths"]["onnx"]))
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 2  # a file exported with batch 2
    path = tmp_path / "batch2.onnx"
    onnx.save(proto, str(path))
    runner = load_runner(path)
    assert runner.session.get_inputs()[0].shape[0] == 2
    x = images(3)  # odd: the last slice is padded
    np.testing.assert_allclose(runner.predict(x), files["binary"].predict(x, verbose=0), atol=1e-4)


@pytest.mark.slow
def test_keras_runner_describes_its_model_as_an_export_would(tmp_path):
    import keras

    from keras_unet import UNet
    from keras_unet.export.metadata import build_metadata

    model = UNet(input_shape=(32, 32, 3), num_classes=3, filters=4, depth=2,
                 class_names=["sky", "road", "car"])
    path = tmp_path / "unet.keras"
    model.save(path)
    runner = load_runner(path)
    assert runner.format == "keras" and runner.num_classes == 3
    # The runner's metadata is what an export of the model would store, field for field.
    assert runner.metadata == build_metadata(model, format="keras", quantization="none",
                                             input_size=(32, 32), input_dtype="float32",
                                             source_model=path)
    assert runner.metadata["class_names"] == ["sky", "road", "car"]
    x = images(2, 32)
    np.testing.assert_allclose(runner.predict(x), model.predict(x, verbose=0), atol=1e-5)
    # A plain Keras model: classes from the output, activation from a trailing Softmax layer.
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Softmax()(keras.layers.Conv2D(2, 1)(inputs))
    plain = tmp_path / "plain.keras"
    keras.Model(inputs, outputs).save(plain)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner = load_runner(plain)
    assert not [w for w in caught if "metadata" in str(w.message)]  # described, not guessed
    assert runner.num_classes == 2 and runner.metadata["output_activation"] == "softmax"
    assert runner.metadata["mask_encoding"] == "index" and runner.input_size == (16, 16)


@pytest.mark.slow
def test_tflite_without_the_schema_module_runs_on_its_tensors(files, monkeypatch):
    """A tflite-runtime device without ai-edge-litert's schema: warned, still the same masks."""
    x = smooth_images(2)
    expected = load_runner(files["paths"]["binary"]).predict_masks(x)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.schema_py_generated", None)
    with pytest.raises(ImportError, match="pip install ai-edge-litert"):
        read_metadata(files["paths"]["binary"])
    with pytest.warns(UserWarning, match="cannot be read here"):
        runner = load_runner(files["paths"]["binary"])
    assert runner.metadata["output_activation"] == "sigmoid" and runner.metadata["class_names"] is None
    np.testing.assert_array_equal(runner.predict_masks(x), expected)


@pytest.mark.slow
def test_files_without_metadata_still_run(files):
    for name in ("binary_plain", "onnx_plain", "binary_int8_plain"):
        with pytest.warns(UserWarning, match="no keras_unet metadata"):
            runner = load_runner(files["paths"][name])
        assert runner.metadata["output_activation"] == "sigmoid" and runner.num_classes == 1
        assert runner.input_size == (16, 16) and runner.channels == 3
        expected = files["binary"].predict(smooth_images(2), verbose=0)
        assert_masks_agree(runner.predict_masks(smooth_images(2)), expected)
    assert runner.quantization == "int8" and runner.input_quantization is not None


@pytest.mark.slow
def test_bad_files_and_inputs_raise_clear_errors(files, tmp_path):
    with pytest.raises(ValueError, match="Expected a model file ending in .tflite"):
        load_runner(tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        load_runner(tmp_path / "missing.onnx")
    for suffix in (".tflite", ".onnx", ".keras"):
        broken = tmp_path / f"broken{suffix}"
        broken.write_bytes(b"not a model at all" * 10)
        with pytest.raises(ValueError, match=f"broken\\{suffix}"):
            load_runner(broken)
    runner = load_runner(files["paths"]["binary"])
    with pytest.raises(ValueError, match="takes images with 3 channel"):
        runner.predict(np.zeros((16, 16, 5), np.float32)[None])
    with pytest.raises(ValueError, match="empty"):
        runner.predict([])
    with pytest.warns(UserWarning, match=r"floats in \[0, 1\]"):
        runner.predict(images(1) / 255.0)


# Fast: the shared runner steps on a numpy "model", metadata bytes, the import graph. ------------


class ArrayRunner(Runner):
    """A runner whose model is a numpy function of the prepared batch: no file, no runtime."""

    format = "onnx"

    def __init__(self, function, input_size=(8, 8), channels=3, num_classes=1,
                 input_dtype=np.float32, input_quantization=None, output_quantization=None,
                 output_activation="sigmoid", threshold=0.5):
        self.function = function
        self.input_size = input_size
        self.input_dtype = np.dtype(input_dtype)
        self.input_quantization = input_quantization
        self.output_quantization = output_quantization
        self.batches = []
        metadata = tensor_metadata("onnx", input_size, channels, num_classes, input_dtype,
                                   np.float32, input_quantization, output_quantization)
        metadata.update(output_activation=output_activation, threshold=threshold)
        super().__init__(f"array-model-{id(self)}", metadata)

    def run(self, batch):
        self.batches.append(batch)
        return self.function(batch)


def test_predict_masks_follows_the_shared_threshold_rule():
    # Probability exactly at the threshold on the left half: p >= threshold is foreground.
    def half_at_threshold(batch):
        out = np.full(batch.shape[:3] + (1,), 0.25, np.float32)
        out[:, :, :4] = 0.5
        return out

    runner = ArrayRunner(half_at_threshold)
    x = np.zeros((2, 8, 8, 3), np.uint8)
    masks = runner.predict_masks(x)
    assert masks.dtype == np.uint8 and masks.shape == (2, 8, 8)
    assert (masks[:, :, :4] == 1).all() and (masks[:, :, 4:] == 0).all()
    np.testing.assert_array_equal(masks, probabilities_to_masks(runner.predict(x), 0.5))
    assert runner.predict_masks(x, threshold=0.6).sum() == 0
    assert ArrayRunner(half_at_threshold, threshold=0.2).predict_masks(x).all()  # the metadata's
    # Images of different sizes: a list of masks, each at its image's size.
    masks = runner.predict_masks([np.zeros((8, 8, 3)), np.zeros((16, 12, 3))])
    assert [m.shape for m in masks] == [(8, 8), (16, 12)] and masks[1].dtype == np.uint8


def test_multiclass_masks_are_the_argmax_of_activated_logits():
    logits = np.random.default_rng(1).normal(size=(1, 8, 8, 4)).astype(np.float32) * 3
    runner = ArrayRunner(lambda batch: np.repeat(logits, len(batch), 0), num_classes=4,
                         output_activation=None)
    probabilities = runner.predict(np.zeros((2, 8, 8, 3)))
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(probabilities, np.repeat(expected, 2, 0), rtol=1e-5)
    masks = runner.predict_masks(np.zeros((2, 8, 8, 3)))
    assert masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[1], logits[0].argmax(-1))


def test_prepare_converts_channels_resizes_and_quantizes():
    quant = {"scale": 2.0, "zero_point": 10}
    runner = ArrayRunner(lambda batch: batch, input_dtype=np.uint8, input_quantization=quant)
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    batch = runner.prepare([gray])
    assert batch.dtype == np.uint8 and batch.shape == (1, 8, 8, 3)
    expected = np.clip(np.round(gray / 2.0 + 10), 0, 255)
    for channel in range(3):  # gray -> RGB repeats the channel, then q = x / scale + zero_point
        np.testing.assert_array_equal(batch[0, ..., channel], expected)
    assert runner.prepare(np.zeros((3, 32, 16, 4), np.uint8)).shape == (3, 8, 8, 3)  # alpha dropped
    with pytest.raises(ValueError, match="takes images with 5 channel"):
        ArrayRunner(lambda b: b, channels=5).prepare(np.zeros((8, 8, 3)))


def test_integer_outputs_are_dequantized():
    quant = {"scale": 1 / 256, "zero_point": 0}
    runner = ArrayRunner(lambda batch: np.full(batch.shape[:3] + (1,), 192, np.uint8),
                         output_quantization=quant)
    np.testing.assert_allclose(runner.predict(np.zeros((1, 8, 8, 3))), 0.75)


def test_any_size_model_groups_images_by_size_and_keeps_order():
    runner = ArrayRunner(lambda batch: batch[..., :1] / 255.0, input_size=(None, None))
    shapes = [(8, 8), (16, 8), (8, 8)]
    images_in = [np.full(shape + (3,), 51.0 * (i + 1)) for i, shape in enumerate(shapes)]
    result = runner.predict(images_in)
    assert [r.shape for r in result] == [(8, 8, 1), (16, 8, 1), (8, 8, 1)]
    assert [b.shape for b in runner.batches] == [(2, 8, 8, 3), (1, 16, 8, 3)]
    np.testing.assert_allclose([float(r.mean()) for r in result], [0.2, 0.4, 0.6], rtol=1e-6)


def test_floats_in_unit_range_warn_once_per_model():
    runner = ArrayRunner(lambda batch: batch[..., :1] / 255.0)
    with pytest.warns(UserWarning, match=r"floats in \[0, 1\]"):
        runner.predict(np.full((1, 8, 8, 3), 0.5, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runner.predict(np.full((1, 8, 8, 3), 0.5, np.float32))  # said once
        ArrayRunner(lambda b: b[..., :1]).predict(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        runner.predict([])


def fake_model(input_shape, output_shape, last_layer, **attributes):
    """The attributes describe_model reads from a built Keras model, without Keras."""
    return SimpleNamespace(inputs=[SimpleNamespace(shape=input_shape)],
                           outputs=[SimpleNamespace(shape=output_shape)], layers=[last_layer],
                           **attributes)


def test_describe_model_reads_a_built_model():
    def sigmoid(x):
        return x

    class Softmax:  # a trailing keras.layers.Softmax, known by its class name
        activation = None

    plain = describe_model(fake_model((None, 32, None, 3), (None, 32, None, 1),
                                      SimpleNamespace(activation=sigmoid)))
    assert plain == {"input_size": (32, None), "channels": 3, "num_classes": 1,
                     "output_activation": "sigmoid", "class_names": None, "ignore_index": None,
                     "mask_encoding": "binary"}
    softmax = describe_model(fake_model((None, 8, 8, 1), (None, 8, 8, 4), Softmax()))
    assert softmax["output_activation"] == "softmax" and softmax["mask_encoding"] == "index"
    linear = describe_model(fake_model((None, 8, 8, 1), (None, 8, 8, 4),
                                       SimpleNamespace(activation=lambda x: x)))
    assert linear["output_activation"] is None and linear["num_classes"] == 4  # logits
    unet = describe_model(fake_model((None, None, None, 3), (None, None, None, 3),
                                     SimpleNamespace(activation=None), num_classes=3,
                                     output_activation="softmax", class_names=("a", "b", "c"),
                                     ignore_index=np.int64(11), mask_encoding="trimap"))
    assert unet["class_names"] == ["a", "b", "c"] and unet["ignore_index"] == 11
    assert unet["mask_encoding"] == "trimap" and unet["input_size"] == (None, None)
    with pytest.raises(ValueError, match="exactly one image input"):
        describe_model(SimpleNamespace(inputs=[], outputs=[], layers=[]))
    with pytest.raises(ValueError, match="4D image input"):
        describe_model(fake_model((None, 8, 3), (None, 8, 1), Softmax()))


def tflite_bytes(entries):
    """A TFLite flatbuffer holding only metadata `entries` ({name: bytes or buffer index})."""
    import flatbuffers

    schema = tflite_schema()
    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]  # buffer 0 is the empty sentinel, as converters write
    model.metadata = []
    for name, value in entries.items():
        entry = schema.MetadataT()
        entry.name = name
        if isinstance(value, int):
            entry.buffer = value
        else:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(value, np.uint8)
            model.buffers.append(buffer)
            entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_tflite_metadata_is_read_with_the_schema_module(tmp_path, monkeypatch):
    stored = {"num_classes": 2, "class_names": ["a", "b"]}
    data = tflite_bytes({"min_runtime_version": b"1.5.0", "keras_unet": json.dumps(stored).encode()})
    assert tflite_metadata_entries(data) == {"min_runtime_version": b"1.5.0",
                                             "keras_unet": json.dumps(stored).encode()}
    assert read_tflite_metadata(data) == stored
    path = tmp_path / "meta.tflite"
    path.write_bytes(data)
    assert read_metadata(path) == stored
    assert read_tflite_metadata(tflite_bytes({"min_runtime_version": b"1.5.0"})) is None
    with pytest.raises(ValueError, match="not valid JSON"):
        read_tflite_metadata(tflite_bytes({"keras_unet": b"{oops"}))
    with pytest.raises(ValueError, match="points at buffer 7"):
        tflite_metadata_entries(tflite_bytes({"keras_unet": 7}))
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all" * 10)
    with pytest.raises(ValueError, match=r"junk\.tflite.*TFL3"):
        read_metadata(junk)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.schema_py_generated", None)
    with pytest.raises(ImportError, match="pip install ai-edge-litert"):
        read_metadata(path)


def _imports(path):
    """`(module, at_top_level)` for every import statement of a source file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, id(node) in top))
            found += [(f"{node.module}.{alias.name}", id(node) in top) for alias in node.names]
    return found


def test_runtime_imports_only_downward_and_without_circles():
    modules = {f"keras_unet.runtime.{p.stem}": p for p in RUNTIME.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name, path in modules.items():
        imports = _imports(path)
        for module, top in imports:
            upward = module.startswith("keras_unet.") and not module.startswith(
                ("keras_unet.runtime", "keras_unet.console", "keras_unet.version"))
            assert not upward, f"{name} imports {module} (above the runtime)"
            if top:
                assert module.split(".")[0] not in ("tensorflow", "keras"), f"{name} imports {module}"
        graph[name] = {module for module, top in imports if top and module in modules}
    done, active = set(), []

    def visit(name):
        assert name not in active, f"import circle: {' -> '.join(active + [name])}"
        if name in done:
            return
        active.append(name)
        for child in graph[name]:
            visit(child)
        active.pop()
        done.add(name)

    for name in graph:
        visit(name)
    # metadata and the onnx runner no longer need each other
    assert "keras_unet.runtime.onnx" not in graph["keras_unet.runtime.metadata"]


def test_importing_every_runtime_module_loads_no_framework_and_no_runtime():
    names = sorted(f"keras_unet.runtime.{p.stem}" for p in RUNTIME.glob("*.py") if p.stem != "__init__")
    code = (f"import sys, importlib\nfor n in {names!r}: importlib.import_module(n)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'jax', "
            "'onnxruntime', 'ai_edge_litert', 'tflite_runtime', 'flatbuffers') or m.startswith(("
            "'keras_unet.export', 'keras_unet.benchmarks', 'keras_unet.models', 'keras_unet.data')))\n"
            "sys.exit(f'imported {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout
