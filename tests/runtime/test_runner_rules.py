"""keras_unet.runtime without files: the shared `Runner` steps on a numpy "model", describing
a built model, metadata read from a flatbuffer built with the TFLite schema, and the import
graph. No Keras, no converter: the fast lane. (Runners on real files: test_runtime.py.)
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
