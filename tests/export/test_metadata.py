"""keras_unet.export.metadata (write side) and keras_unet.runtime.metadata (TF-free read side).

Tests that convert a model to have a file to write into are marked `slow`.
"""

import json

import keras
import numpy as np
import onnx
import pytest

from keras_unet.export.metadata import build_metadata, embed_onnx_metadata, embed_tflite_metadata, validate_metadata
from keras_unet.runtime.metadata import read_metadata, read_tflite_metadata, tflite_metadata_entries
from keras_unet.runtime.metadata_schema import SCHEMA_VERSION


def tiny_model(classes):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs / 255.0)
    outputs = keras.layers.Conv2D(classes, 1, activation="sigmoid" if classes == 1 else "softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def models():
    return {1: tiny_model(1), 3: tiny_model(3)}


@pytest.fixture(scope="module")
def tflite_bytes(models):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(models[3]).convert()


@pytest.fixture(scope="module")
def onnx_path(models, tmp_path_factory):
    path = tmp_path_factory.mktemp("metadata") / "multi.onnx"
    models[3].export(str(path), format="onnx", verbose=False)
    return path


def test_build_metadata_fills_the_schema_from_the_model(models):
    metadata = build_metadata(models[3], format="tflite", quantization="int8", input_size=(16, 16),
                              input_dtype=np.dtype("uint8"),
                              input_quantization={"scale": np.float32(1.0), "zero_point": np.int64(0)},
                              output_dtype="uint8", output_quantization={"scale": 1 / 256, "zero_point": 0},
                              class_names=["sky", "road", "car"], source_model="/home/me/run/model.keras")
    assert metadata["num_classes"] == 3 and metadata["channels"] == 3
    assert metadata["output_activation"] == "softmax" and metadata["threshold"] is None
    assert metadata["mask_encoding"] == "index" and metadata["input_size"] == [16, 16]
    assert metadata["input_quantization"] == {"scale": 1.0, "zero_point": 0}
    assert type(metadata["input_quantization"]["zero_point"]) is int
    assert metadata["source_model"] == "model.keras"  # no absolute paths inside shipped files
    from keras_unet.version import __version__

    assert metadata["keras_unet_version"] == __version__ and metadata["schema_version"] == SCHEMA_VERSION == 3
    binary = build_metadata(models[1], format="onnx", quantization="none", input_size=None,
                            input_dtype="float32")
    assert binary["output_activation"] == "sigmoid" and binary["threshold"] == 0.5
    assert binary["mask_encoding"] == "binary" and binary["input_size"] == [None, None]


def test_model_attributes_fill_the_defaults_and_arguments_win():
    # A Softmax layer at the end, and the attributes a keras_unet.UNet carries.
    inputs = keras.Input((16, 16, 1))
    outputs = keras.layers.Softmax()(keras.layers.Conv2D(3, 1)(inputs))
    model = keras.Model(inputs, outputs)
    model.class_names, model.ignore_index, model.mask_encoding = ["a", "b", "c"], 255, "trimap"
    from keras_unet.export.source import model_facts
    from keras_unet.runtime.describe import describe_model

    assert model_facts(model) == {"num_classes": 3, "output_activation": "softmax", "channels": 1}
    common = dict(format="onnx", quantization="none", input_size=(16, 16), input_dtype="float32")
    metadata = build_metadata(model, **common)
    assert (metadata["class_names"], metadata["ignore_index"], metadata["mask_encoding"]) == (
        ["a", "b", "c"], 255, "trimap")
    facts = describe_model(model)  # the .keras runner's description says the same
    assert {key: metadata[key] for key in facts if key != "input_size"} == {
        key: value for key, value in facts.items() if key != "input_size"}
    chosen = build_metadata(model, class_names=["x", "y", "z"], ignore_index=0,
                            mask_encoding="index", **common)
    assert (chosen["class_names"], chosen["ignore_index"], chosen["mask_encoding"]) == (
        ["x", "y", "z"], 0, "index")


def test_build_metadata_rejects_bad_fields(models):
    with pytest.raises(ValueError, match="class_names"):
        build_metadata(models[3], format="tflite", quantization="none", input_size=(16, 16),
                       input_dtype="float32", class_names=["only", "two"])
    with pytest.raises(ValueError, match="quantization=.int4"):
        build_metadata(models[1], format="tflite", quantization="int4", input_size=(16, 16),
                       input_dtype="float32")
    with pytest.raises(ValueError, match="input_quantization"):
        build_metadata(models[1], format="tflite", quantization="int8", input_size=(16, 16),
                       input_dtype="uint8", input_quantization={"scale": 0.5})
    with pytest.raises(ValueError, match="lacks the field 'num_classes'"):
        validate_metadata({"format": "onnx", "quantization": "none"})


@pytest.mark.slow
def test_tflite_round_trip_replaces_and_keeps_the_file_loadable(models, tflite_bytes):
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    metadata = build_metadata(models[3], format="tflite", quantization="none", input_size=(16, 16),
                              input_dtype="float32", class_names=["a", "b", "c"])
    once = embed_tflite_metadata(tflite_bytes, metadata)
    twice = embed_tflite_metadata(once, {**metadata, "class_names": ["x", "y", "z"]})
    # The hand-written reader and the schema module shipped with ai-edge-litert agree.
    model = schema.Model.GetRootAs(twice, 0)
    names = [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]
    assert names.count("keras_unet") == 1
    assert set(names) == set(tflite_metadata_entries(twice))
    assert set(tflite_metadata_entries(tflite_bytes)) <= set(names)  # converter's entries kept
    raw = model.Buffers(model.Metadata(names.index("keras_unet")).Buffer()).DataAsNumpy().tobytes()
    assert json.loads(raw)["class_names"] == ["x", "y", "z"]
    assert read_tflite_metadata(twice) == {**metadata, "class_names": ["x", "y", "z"]}
    # The interpreter still runs the rewritten file, with the same results.
    x = np.random.default_rng(0).uniform(0, 255, (1, 16, 16, 3)).astype("float32")
    outputs = []
    for data in (tflite_bytes, twice):
        interpreter = Interpreter(model_content=data)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert read_tflite_metadata(tflite_bytes) is None


@pytest.mark.slow
def test_onnx_round_trip_by_path_and_by_model_proto(models, onnx_path, tmp_path):
    metadata = build_metadata(models[3], format="onnx", quantization="none", input_size=(16, 16),
                              input_dtype="float32")
    assert read_metadata(onnx_path) is None
    path = tmp_path / "m.onnx"
    path.write_bytes(onnx_path.read_bytes())
    embed_onnx_metadata(path, metadata)
    embed_onnx_metadata(path, {**metadata, "threshold": 0.3})
    keys = [p.key for p in onnx.load(str(path)).metadata_props]
    assert keys.count("keras_unet") == 1
    assert read_metadata(path)["threshold"] == 0.3
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left behind
    proto = embed_onnx_metadata(onnx.load(str(onnx_path)), metadata)
    assert isinstance(proto, onnx.ModelProto)
    other = tmp_path / "proto.onnx"
    onnx.save(proto, str(other))
    assert read_metadata(other) == metadata


@pytest.mark.slow
def test_read_metadata_errors_name_the_file(tmp_path, tflite_bytes):
    with pytest.raises(FileNotFoundError, match="nothing.tflite"):
        read_metadata(tmp_path / "nothing.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="bad.tflite.*not a valid TFLite model"):
        read_metadata(bad)
    wrong = tmp_path / "model.pt"
    wrong.write_bytes(b"x")
    with pytest.raises(ValueError, match="Expected a .tflite, .onnx or .ort file"):
        read_metadata(wrong)
    # A keras_unet entry that is not JSON is reported as such, with the file's name.
    garbled = tmp_path / "garbled.tflite"
    garbled.write_bytes(embed_tflite_metadata(tflite_bytes, {"num_classes": 1}).replace(
        b'{"num_classes": 1}', b'{"num_classes": 1!'))
    with pytest.raises(ValueError, match="garbled.tflite.*not valid JSON"):
        read_metadata(garbled)


@pytest.mark.slow
def test_newer_schema_warns(tmp_path, tflite_bytes):
    path = tmp_path / "future.tflite"
    path.write_bytes(embed_tflite_metadata(tflite_bytes, {"schema_version": 99, "num_classes": 3}))
    with pytest.warns(UserWarning, match="schema 99"):
        assert read_metadata(path)["num_classes"] == 3
