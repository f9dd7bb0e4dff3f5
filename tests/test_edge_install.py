"""`pip install "keras-unet-edge[edge]"`: `keras-unet predict`, `evaluate` and `bench` run exported
files where TensorFlow, Keras and the converters are not installed, and give the same masks and
IoU as the full install.

The edge process gets a `sitecustomize` whose meta-path hook makes those imports fail, as on a
device with only numpy, pillow, tqdm, ai-edge-litert and onnxruntime (the `[edge]` extra).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from keras_unet import cli

pytestmark = pytest.mark.slow

ABSENT_ON_EDGE = ("tensorflow", "tensorflow_cpu", "keras", "tf_keras", "onnx", "tf2onnx", "jax",
                  "torch", "matplotlib")
BLOCKER = f"""
import sys

class NotInstalledOnTheEdge:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT_ON_EDGE!r}:
            raise ImportError(f"No module named {{name!r}} (blocked: edge install)")
        return None

sys.meta_path.insert(0, NotInstalledOnTheEdge())
"""
EDGE_CLI = """
import sys
from keras_unet import cli
code = cli.main(sys.argv[1:])
leaked = sorted(m for m in sys.modules if m.split(".")[0] in {absent!r})
print("LEAKED", leaked)
sys.exit(code)
"""
SIZE = 32


@pytest.fixture(scope="module")
def edge_setup(tmp_path_factory, trained_unet_path):
    """A labelled folder of 8 nuclei images the session's tiny trained UNet never saw, and
    that UNet exported as fp32 and int8 TFLite and ONNX."""
    import keras

    from keras_unet.datasets import nuclei_path
    from keras_unet.export import export_onnx, export_tflite
    from keras_unet.runtime import imageio

    root = tmp_path_factory.mktemp("edge_install")
    for sub in ("images", "masks"):
        (root / "data" / sub).mkdir(parents=True)
    images, masks = imageio.load_dataset_arrays(nuclei_path(), size=(SIZE, SIZE), channels=3)
    for index in range(150, 158):
        Image.fromarray(images[index].astype(np.uint8)).save(root / "data" / "images" / f"img{index}.png")
        Image.fromarray((masks[index] > 0).astype(np.uint8) * 255).save(
            root / "data" / "masks" / f"img{index}.png")
    model = keras.saving.load_model(trained_unet_path)
    models = {"model.keras": root / "model.keras"}
    model.save(models["model.keras"])
    data = str(root / "data")
    for name, export, quantize in (("fp32.tflite", export_tflite, "none"),
                                   ("int8.tflite", export_tflite, "int8"),
                                   ("fp32.onnx", export_onnx, "none"),
                                   ("int8.onnx", export_onnx, "int8")):
        models[name] = root / name
        export(model, models[name], quantize=quantize, progress=False, agreement_floor=0.9,
               calibration_data=data if quantize == "int8" else None)
    blocker = root / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    return {"root": root, "data": data, "models": models, "blocker": blocker}


def _edge(setup, *args):
    env = {**os.environ, "PYTHONPATH": str(setup["blocker"]), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EDGE_CLI.format(absent=ABSENT_ON_EDGE)), *map(str, args)],
        env=env, capture_output=True, text=True, timeout=300, cwd=setup["root"],
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "LEAKED []" in done.stdout, done.stdout[-2000:]
    return done


def _read_masks(folder):
    return {name: np.asarray(Image.open(folder / name)) for name in sorted(os.listdir(folder))}


EXPORTED = ("fp32.tflite", "int8.tflite", "fp32.onnx", "int8.onnx")


@pytest.mark.parametrize("name", EXPORTED)
def test_predict_and_evaluate_on_the_edge_equal_the_full_install(edge_setup, name):
    model, data, root = edge_setup["models"][name], edge_setup["data"], edge_setup["root"]
    full_masks, edge_masks = root / f"full_{name}", root / f"edge_{name}"
    assert cli.main(["predict", str(model), "--images", f"{data}/images", "--out", str(full_masks)]) == 0
    _edge(edge_setup, "predict", model, "--images", f"{data}/images", "--out", edge_masks)
    full, edge = _read_masks(full_masks), _read_masks(edge_masks)
    assert list(full) == list(edge) and len(full) == 8
    for key in full:
        np.testing.assert_array_equal(full[key], edge[key])

    full_json, edge_json = root / f"full_{name}.json", root / f"edge_{name}.json"
    assert cli.main(["evaluate", str(model), "--data", data, "--json", str(full_json)]) == 0
    _edge(edge_setup, "evaluate", model, "--data", data, "--json", edge_json)
    full_scores, edge_scores = json.loads(full_json.read_text()), json.loads(edge_json.read_text())
    assert edge_scores["iou"] == full_scores["iou"] and edge_scores["iou"] > 0.5


def test_bench_on_the_edge_equals_the_full_install(edge_setup):
    models = [edge_setup["models"][name] for name in EXPORTED]
    root, data = edge_setup["root"], edge_setup["data"]
    common = ["--data", data, "--threads", "1", "--warmup", "1", "--runs", "3"]
    assert cli.main(["bench", *map(str, models), *common, "--json", str(root / "full_bench.json")]) == 0
    done = _edge(edge_setup, "bench", *models, *common, "--json", root / "edge_bench.json",
                 "--plot", root / "edge_bench.png")
    assert "matplotlib" in done.stdout + done.stderr and not (root / "edge_bench.png").exists()
    full = {row["model"]: row for row in json.loads((root / "full_bench.json").read_text())["rows"]}
    edge = {row["model"]: row for row in json.loads((root / "edge_bench.json").read_text())["rows"]}
    assert set(full) == set(edge) and len(edge) == 4
    for key, row in edge.items():
        assert row["error"] is None, row["error"]
        assert row["iou"] == full[key]["iou"] and row["latency_p50_ms"] > 0


def test_training_and_export_say_which_extra_to_install(edge_setup):
    env = {**os.environ, "PYTHONPATH": str(edge_setup["blocker"])}
    for args in (["train", "--data", edge_setup["data"], "--out", "run"],
                 ["export", str(edge_setup["models"]["model.keras"]), "--out", "m.tflite"]):
        done = subprocess.run([sys.executable, "-m", "keras_unet.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120, cwd=edge_setup["root"])
        assert done.returncode != 0
        assert "keras-unet-edge[cpu]" in done.stderr, done.stderr[-2000:]
