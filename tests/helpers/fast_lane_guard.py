"""A pytest plugin that keeps heavy work out of the fast lane (`-m "not slow"`).

Rule: a test not marked `slow` must not fit a model (`keras.Model.fit`, `train_on_batch`),
convert one (the TFLite converter, tf2onnx, `keras.Model.export`), quantize one
(onnxruntime's static or dynamic quantizer) or start a Python process that imports
TensorFlow. Such a test fails, naming what it did, whether the work was asked for by the
test itself or by a fixture it set up (a session fixture that trains counts against the
first unmarked test that needs it).

How it costs nothing where TensorFlow is not loaded: the heavy entry points are patched
when their module is first imported (a meta-path finder that wraps the module's loader), or
at once if it is already loaded; the patched function checks one flag and calls the
original. Subprocesses started by an unmarked test get `subprocess_probe/` on PYTHONPATH,
whose `sitecustomize` notes any `import tensorflow` in a file this plugin reads when the
test ends. A process started with `-I`, `-S` or a non-Python program is not seen.

The state is a stack, so a pytester run inside a test (the guard's own test) checks its
inner tests by their own markers and leaves the outer test's record as it was.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.abc
import importlib.machinery
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

PROBE_DIR = Path(__file__).resolve().parent / "subprocess_probe"
REPORT_ENV = "KERAS_UNET_TEST_TF_REPORT"


def _report_folder() -> Path:
    return Path(tempfile.gettempdir()) / f"keras_unet_guard_{os.getpid()}"


@dataclasses.dataclass
class _Record:
    """What one running test is allowed, and what it did that it was not."""

    test_id: str
    guarded: bool
    violations: list[str] = dataclasses.field(default_factory=list)
    report_file: Path | None = None

    def subprocess_report(self) -> Path:
        if self.report_file is None:
            folder = _report_folder()
            folder.mkdir(exist_ok=True)
            self.report_file = folder / f"{uuid.uuid4().hex}.txt"
        return self.report_file

    def all_violations(self) -> list[str]:
        found = list(self.violations)
        if self.report_file is not None and self.report_file.exists():
            for line in self.report_file.read_text().splitlines():
                found.append(f"started a Python process that imports TensorFlow: {line}")
        return found


_STACK: list[_Record] = []


def _current() -> _Record | None:
    return _STACK[-1] if _STACK and _STACK[-1].guarded else None


def _refuse(what: str) -> None:
    record = _current()
    if record is None:
        return
    message = f"{record.test_id} is not marked `slow` but {what}; mark it @pytest.mark.slow"
    record.violations.append(what)
    # Failed is a BaseException: an `except Exception` in the code under test cannot hide it.
    pytest.fail(message, pytrace=False)


def _guarded(function: Callable, what: str) -> Callable:
    if getattr(function, "_fast_lane_guarded", False):
        return function

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _refuse(what)
        return function(*args, **kwargs)

    wrapper._fast_lane_guarded = True
    return wrapper


# Where each heavy entry point lives: module -> (class in it, or None for the module itself,
# {attribute: what calling it does}). Keras' Model overrides nothing of the backend trainer,
# so wrapping Model covers every subclass (Functional, Sequential, keras_unet's models) and
# every backend. Every TFLite converter class ends in one of lite.py's module-level
# `_convert_*` calls; tf2onnx's `from_*` functions all go through `process_tf_graph`;
# `quantize_static` and `quantize_dynamic` through a quantizer's `quantize_model`.
_TFLITE = "converts a model to TFLite (TFLiteConverter.convert)"
TARGETS: dict[str, tuple[str | None, dict[str, str]]] = {
    "keras.src.models.model": ("Model", {"fit": "fits a model (Model.fit)",
                                         "train_on_batch": "fits a model (Model.train_on_batch)",
                                         "export": "converts a model (Model.export)"}),
    "tensorflow.lite.python.lite": (None, {"_convert_graphdef": _TFLITE,
                                           "_convert_graphdef_with_arrays": _TFLITE,
                                           "_convert_saved_model": _TFLITE,
                                           "_convert_jax_hlo": _TFLITE}),
    "tf2onnx.convert": (None, {"process_tf_graph": "converts a model to ONNX (tf2onnx)"}),
    "tf2onnx.tfonnx": (None, {"process_tf_graph": "converts a model to ONNX (tf2onnx)"}),
    "onnxruntime.quantization.onnx_quantizer": (
        "ONNXQuantizer", {"quantize_model": "quantizes a model (onnxruntime.quantization)"}),
    "onnxruntime.quantization.qdq_quantizer": (
        "QDQQuantizer", {"quantize_model": "quantizes a model (onnxruntime.quantization)"}),
}


def targets_of(module: Any) -> tuple[Any, dict[str, str]]:
    """The object whose attributes are wrapped in `module`, and those attributes."""
    owner_name, names = TARGETS[module.__name__]
    return (module if owner_name is None else getattr(module, owner_name)), names


def patch_module(module: Any) -> None:
    """Wrap the heavy entry points of `module` (one of TARGETS); missing ones are skipped."""
    owner, names = targets_of(module)
    for name, what in names.items():
        original = getattr(owner, name, None)
        if original is not None:
            setattr(owner, name, _guarded(original, what))


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of a module in TARGETS to patch it once run."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in TARGETS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        run_module = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run_module(module)
            patch_module(module)

        spec.loader.exec_module = exec_module  # this loader object serves this module only
        return spec


def _guarded_popen_init(original: Callable) -> Callable:
    @functools.wraps(original)
    def __init__(self: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
        record = _current()
        if record is not None and not rest:
            env = dict(os.environ if kwargs.get("env") is None else kwargs["env"])
            env[REPORT_ENV] = str(record.subprocess_report())
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(PROBE_DIR), env.get("PYTHONPATH")) if p)
            kwargs["env"] = env
        original(self, args, *rest, **kwargs)

    __init__._fast_lane_guarded = True
    return __init__


def install() -> None:
    """Patch what is already imported and what will be; idempotent."""
    if not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
        for name in TARGETS:
            if name in sys.modules:
                patch_module(sys.modules[name])
    if not getattr(subprocess.Popen.__init__, "_fast_lane_guarded", False):
        subprocess.Popen.__init__ = _guarded_popen_init(subprocess.Popen.__init__)


def pytest_configure(config: pytest.Config) -> None:
    install()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Pushed before any fixture is set up, so a session fixture that trains is caught too.
    _STACK.append(_Record(item.nodeid, guarded=item.get_closest_marker("slow") is None))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    record = _STACK[-1] if _STACK and _STACK[-1].test_id == item.nodeid else None
    if record is None:
        return
    if record.guarded and call.when == "call" and report.passed:
        # What the test hid (caught the failure) or did in a subprocess.
        found = record.all_violations()
        if found:
            report.outcome = "failed"
            report.longrepr = (f"{item.nodeid} is not marked `slow` but it "
                               + "; ".join(dict.fromkeys(found)) + "; mark it @pytest.mark.slow")
    if call.when == "teardown":
        _STACK.pop()
        if record.report_file is not None:
            record.report_file.unlink(missing_ok=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    if not _STACK:  # the outermost session (not a pytester run inside a test)
        try:
            _report_folder().rmdir()  # each report file went with its test
        except OSError:
            pass
