"""keras_unet.runtime: runners for .tflite/.onnx/.keras against the Keras model they came from.

The tests marked slow convert small Keras models and compare the runtimes with Keras; the
shared steps without files are in test_runner_rules.py.
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from keras_unet.runtime import load_runner
from keras_unet.runtime.metadata import read_metadata

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
