"""export.runtime: runners for .tflite/.onnx/.keras, metadata, and the no-TensorFlow promise."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from export.metadata import build_metadata, embed_onnx_metadata, embed_tflite_metadata
from export.runtime import load_runner
from export.runtime.metadata import read_metadata, tflite_metadata_entries

RNG = np.random.default_rng(0)


def tiny_model(classes=1, size=(16, 16)):
    inputs = keras.Input((*size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(classes, 1, activation="sigmoid" if classes == 1 else "softmax")(x)
    return keras.Model(inputs, x)


def images(n, size=16):
    return RNG.uniform(0, 255, (n, size, size, 3)).astype("float32")


def _tflite_bytes(model, int8=False):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in images(16))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runtime")
    binary, multi = tiny_model(1), tiny_model(3)
    paths = {}
    for name, model, int8 in (("binary", binary, False), ("binary_int8", binary, True), ("multi", multi, False)):
        data = _tflite_bytes(model, int8)
        paths[f"{name}_plain"] = folder / f"{name}_plain.tflite"
        paths[f"{name}_plain"].write_bytes(data)
        details = {"input_dtype": "uint8" if int8 else "float32", "output_dtype": "uint8" if int8 else "float32"}
        metadata = build_metadata(model, format="tflite", quantization="int8" if int8 else "none",
                                  input_size=(16, 16), class_names=["a", "b", "c"] if name == "multi" else None,
                                  **details)
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(embed_tflite_metadata(data, metadata))
    paths["onnx"] = folder / "binary.onnx"
    binary.export(str(paths["onnx"]), format="onnx", verbose=False)
    paths["onnx_plain"] = folder / "binary_plain.onnx"
    paths["onnx_plain"].write_bytes(paths["onnx"].read_bytes())
    embed_onnx_metadata(paths["onnx"], build_metadata(binary, format="onnx", quantization="none",
                                                      input_size=(16, 16), input_dtype="float32"))
    paths["keras"] = folder / "binary.keras"
    binary.save(paths["keras"])
    return {"paths": paths, "binary": binary, "multi": multi}


def test_metadata_round_trips_and_is_replaced_not_duplicated(files):
    path = files["paths"]["multi"]
    metadata = read_metadata(path)
    assert metadata["num_classes"] == 3 and metadata["class_names"] == ["a", "b", "c"]
    assert metadata["output_activation"] == "softmax" and metadata["input_size"] == [16, 16]
    again = embed_tflite_metadata(path.read_bytes(), {**metadata, "threshold": 0.7})
    entries = tflite_metadata_entries(again)
    assert list(entries).count("keras_unet") == 1
    # the flatbuffer schema that ships with ai-edge-litert reads the same entry
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(again, 0)
    names = [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]
    assert names.count("keras_unet") == 1
    assert read_metadata(files["paths"]["onnx"])["format"] == "onnx"


@pytest.mark.parametrize("name", ["binary", "onnx", "keras"])
def test_float_runners_match_keras(files, name):
    x = images(3)
    expected = files["binary"].predict(x, verbose=0)
    runner = load_runner(files["paths"][name], threads=1)
    np.testing.assert_allclose(runner.predict(x), expected, atol=1e-4)
    assert runner.num_classes == 1 and runner.input_size == (16, 16)
    assert runner.format == {"binary": "tflite"}.get(name, name)


def test_int8_runner_quantizes_io_and_stays_close(files):
    runner = load_runner(files["paths"]["binary_int8"])
    batch = runner.prepare(images(2))
    assert batch.dtype == np.uint8
    raw = runner.run(batch)
    assert raw.dtype == np.uint8
    x = images(4)
    assert np.abs(runner.predict(x) - files["binary"].predict(x, verbose=0)).max() < 0.05
    assert runner.quantization == "int8"


def test_predict_returns_each_image_at_its_own_size(files):
    runner = load_runner(files["paths"]["multi"])
    shapes = [(20, 30, 3), (16, 16, 3), (9, 41)]  # the last one grayscale: converted to RGB
    result = runner.predict([RNG.uniform(0, 255, s).astype("float32") for s in shapes])
    assert [r.shape for r in result] == [(20, 30, 3), (16, 16, 3), (9, 41, 3)]
    np.testing.assert_allclose([r.sum(-1).mean() for r in result], 1.0, atol=1e-4)
    masks = runner.predict_masks([RNG.uniform(0, 255, s) for s in shapes])
    assert [m.shape for m in masks] == [s[:2] for s in shapes] and max(m.max() for m in masks) <= 2


def test_predict_masks_thresholds_probabilities(files):
    runner = load_runner(files["paths"]["binary"])
    x = images(2)
    probabilities = runner.predict(x)[..., 0]
    threshold = float(np.median(probabilities))
    masks = runner.predict_masks(x, threshold=threshold)
    np.testing.assert_array_equal(masks, (probabilities >= threshold).astype(np.uint8))


def test_any_size_tflite_model_resizes_its_input_tensor(tmp_path):
    import tensorflow as tf

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inputs / 255.0))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    path = tmp_path / "any.tflite"
    path.write_bytes(converter.convert())
    with pytest.warns(UserWarning, match="no keras_unet metadata"):
        runner = load_runner(path)
    assert runner.input_size == (None, None)
    for size in (8, 24):
        x = images(2, size)
        np.testing.assert_allclose(runner.predict(x), model.predict(x, verbose=0), atol=1e-5)


def test_files_without_metadata_still_run(files):
    for name in ("binary_plain", "onnx_plain"):
        with pytest.warns(UserWarning, match="no keras_unet metadata"):
            runner = load_runner(files["paths"][name])
        assert runner.metadata["output_activation"] == "sigmoid"
        assert runner.predict_masks(images(1)).shape == (1, 16, 16)


def test_bad_files_and_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Expected a model file ending in .tflite"):
        load_runner(tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        load_runner(tmp_path / "missing.onnx")
    for suffix in (".tflite", ".onnx", ".keras"):
        broken = tmp_path / f"broken{suffix}"
        broken.write_bytes(b"not a model at all" * 10)
        with pytest.raises(ValueError, match=f"broken\\{suffix}"):
            load_runner(broken)


def test_runtime_needs_no_tensorflow(files, tmp_path):
    """An edge device has numpy, pillow and a runtime: importing TensorFlow or Keras must fail there."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "keras_unet"):
                    raise ImportError(f"{name} is not installed on this device")
        sys.meta_path.insert(0, Block())
        """
    ))
    script = textwrap.dedent(
        """
        import sys, numpy as np
        from export.runtime import load_runner
        from export.runtime.metadata import read_metadata
        x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
        for path in sys.argv[1:]:
            runner = load_runner(path)
            assert runner.predict_masks(x).shape == (2, 16, 16)
            assert read_metadata(path)["num_classes"] == runner.num_classes
        assert not any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules)
        print("edge ok")
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), root])}
    paths = [str(files["paths"][n]) for n in ("binary", "binary_int8", "multi", "onnx")]
    result = subprocess.run([sys.executable, "-c", script, *paths], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "edge ok" in result.stdout
