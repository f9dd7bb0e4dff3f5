"""The edge promise: keras_unet.runtime runs .tflite/.onnx files where TensorFlow and Keras are absent.

A subprocess gets a `sitecustomize` whose meta-path hook makes `import tensorflow`,
`import keras` (and the converters) raise ImportError, as on a device with only numpy,
pillow and the runtimes installed (`pip install "keras-unet-edge[edge]"`).
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_unet.export.metadata import build_metadata, embed_onnx_metadata, embed_tflite_metadata
from keras_unet.runtime.loaders import interpreter_class

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BLOCKER = """
import sys

class BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "tensorflow_cpu", "onnx", "tf2onnx", "jax", "torch"):
            raise ImportError(f"No module named {name!r} (blocked: this is an edge device)")
        return None

sys.meta_path.insert(0, BlockTensorFlow())
"""

EDGE_SCRIPT = """
import json, sys
import numpy as np

for name in ("tensorflow", "keras"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"the blocker failed: {name} imported")

import keras_unet, keras_unet.export, keras_unet.runtime
from keras_unet.runtime import load_runner, read_metadata

x = np.load(sys.argv[1])
report = {"outputs": {}}
for path in sys.argv[2:]:
    with load_runner(path, threads=1) as runner:
        probabilities = runner.predict(x)
        masks = runner.predict_masks(list(x))
        report["outputs"][path] = {
            "probabilities": probabilities.tolist(),
            "masks_shape": [list(m.shape) for m in masks],
            "quantization": runner.quantization,
            "metadata": read_metadata(path),
            "runner_metadata_classes": runner.num_classes,
        }
try:
    load_runner(sys.argv[-1].replace(".onnx", ".keras"))
except ImportError as error:
    report["keras_error"] = str(error)
report["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "onnx", "tf2onnx"))
print(json.dumps(report))
"""


def tiny_model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs / 255.0)
    outputs = keras.layers.Conv2D(2, 1, activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def edge_files(tmp_path_factory):
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("edge")
    model = tiny_model()
    y, x = np.mgrid[0:16, 0:16] / 16.0
    images = np.stack([np.stack([np.sin(5 * x + i), np.cos(4 * y), x * y], -1) for i in range(4)])
    images = ((images + 1) * 127.5).clip(0, 255).astype("float32")
    paths = {}
    for name in ("float", "int8"):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if name == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image[None]] for image in images)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
        data = converter.convert()
        interpreter = interpreter_class()(model_content=data)  # tf.lite's is deprecated
        io = {}
        for side, detail in (("input", interpreter.get_input_details()[0]),
                             ("output", interpreter.get_output_details()[0])):
            scale, zero_point = detail["quantization"]
            io[f"{side}_dtype"] = np.dtype(detail["dtype"]).name
            io[f"{side}_quantization"] = {"scale": scale, "zero_point": zero_point} if scale else None
        metadata = build_metadata(model, format="tflite", quantization="none" if name == "float" else "int8",
                                  input_size=(16, 16), class_names=["background", "cell"], **io)
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(embed_tflite_metadata(data, metadata))
    paths["onnx"] = folder / "float.onnx"
    model.export(str(paths["onnx"]), format="onnx", verbose=False)
    embed_onnx_metadata(paths["onnx"], build_metadata(model, format="onnx", quantization="none",
                                                      input_size=(16, 16), input_dtype="float32",
                                                      class_names=["background", "cell"]))
    model.save(folder / "float.keras")
    np.save(folder / "images.npy", images)
    blocker = folder / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    return {"paths": paths, "model": model, "images": images, "folder": folder, "blocker": blocker}


@pytest.fixture(scope="module")
def edge_report(edge_files):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(edge_files["blocker"]), ROOT])}
    paths = [str(edge_files["paths"][name]) for name in ("float", "int8", "onnx")]
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EDGE_SCRIPT), str(edge_files["folder"] / "images.npy"), *paths],
        env=env, capture_output=True, text=True, timeout=120, cwd=str(edge_files["folder"]),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "UserWarning" not in result.stderr, result.stderr[-3000:]  # metadata matched the tensors
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_tensorflow_or_keras_is_imported(edge_report):
    assert edge_report["modules"] == []


def test_edge_runners_match_keras(edge_files, edge_report):
    expected = edge_files["model"].predict(edge_files["images"], verbose=0)
    outputs = edge_report["outputs"]
    for name in ("float", "onnx"):
        np.testing.assert_allclose(outputs[str(edge_files["paths"][name])]["probabilities"], expected, atol=1e-4)
    int8 = outputs[str(edge_files["paths"]["int8"])]
    assert int8["quantization"] == "int8"
    assert np.abs(np.asarray(int8["probabilities"]) - expected).max() < 0.05
    for output in outputs.values():
        assert output["masks_shape"] == [[16, 16]] * 4


def test_edge_reads_the_metadata(edge_files, edge_report):
    for name in ("float", "int8", "onnx"):
        output = edge_report["outputs"][str(edge_files["paths"][name])]
        metadata = output["metadata"]
        assert metadata["format"] == ("onnx" if name == "onnx" else "tflite")
        assert metadata["num_classes"] == output["runner_metadata_classes"] == 2
        assert metadata["class_names"] == ["background", "cell"]
        assert metadata["output_activation"] == "softmax"


def test_keras_files_need_keras_and_say_so(edge_report):
    assert "pip install keras" in edge_report["keras_error"]
