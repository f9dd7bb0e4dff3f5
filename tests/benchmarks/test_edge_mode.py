"""Edge mode: `python -m keras_unet.benchmarks` from a copy of benchmarks/ and export/runtime/ alone,
in a process where importing TensorFlow, Keras (and matplotlib, tqdm) fails."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

LAUNCHER = '''
import importlib.abc, os, runpy, sys

BLOCKED = {"tensorflow", "keras", "tf_keras", "jax", "torch", "matplotlib", "tqdm", "keras_unet"}


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"edge mode: {name} is not installed")
        return None


# An editable install of the project would resolve `benchmarks`/`export` to the checkout; drop
# it so only the copied files can be imported, as on the device.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path[:] = [os.path.dirname(os.path.abspath(__file__))] + [p for p in sys.path if "__editable__" not in p]
sys.path_importer_cache.clear()
sys.meta_path.insert(0, Blocker())
sys.argv = ["benchmarks"] + sys.argv[1:]
try:
    runpy.run_module("benchmarks", run_name="__main__", alter_sys=True)
finally:
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("LEAKED", leaked)
    print("FROM", sys.modules["benchmarks"].__file__, list(sys.modules["export"].__path__))
'''


def _copy_harness(destination):
    # What benchmarks/README.md tells a user to copy to the device.
    shutil.copytree(REPO / "benchmarks", destination / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))
    (destination / "export").mkdir()
    if (REPO / "export" / "__init__.py").exists():
        shutil.copy(REPO / "export" / "__init__.py", destination / "export" / "__init__.py")
    shutil.copytree(REPO / "export" / "runtime", destination / "export" / "runtime",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (destination / "edge_launcher.py").write_text(LAUNCHER)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_benchmark_runs_without_tensorflow_or_keras(fmt, tiny_models, data_dir, hand_scores, tmp_path):
    _copy_harness(tmp_path)
    out = tmp_path / "report.json"
    # -I: no PYTHONPATH, no user site, no current folder; the launcher puts only its own folder,
    # holding the copied harness, in front of site-packages.
    done = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "edge_launcher.py"), tiny_models[fmt], "--data", data_dir,
         "--threads", "1", "--warmup", "1", "--runs", "3", "--json", str(out), "--plot", str(tmp_path / "p.png")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LEAKED []" in done.stdout
    assert f"FROM {tmp_path / 'benchmarks' / '__init__.py'} ['{tmp_path / 'export'}']" in done.stdout
    assert "matplotlib is not installed" in done.stdout and not (tmp_path / "p.png").exists()
    (row,) = json.loads(out.read_text())["rows"]
    assert row["error"] is None, row["error"]
    assert row["format"] == fmt and row["iou"] == pytest.approx(hand_scores["iou"]) and row["latency_p50_ms"] > 0
