"""The fast-lane guard (tests/helpers/fast_lane_guard.py) fails unmarked heavy tests only.

Inner test files run in this process under pytester, with the guard as their plugin: an
unmarked test that fits, or that starts a Python process importing TensorFlow, fails; the
same test marked `slow` passes, and so does an unmarked subprocess that stays TF-free. The
subprocess cases import a stand-in `tensorflow` package (the probe watches the name), so
the check costs a Python start-up, not a TensorFlow one.
"""

import importlib
import subprocess
import sys

import pytest

import fast_lane_guard

INNER_TESTS = '''
import subprocess, sys

import numpy as np
import pytest


def _fit():
    import keras

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
    model.fit(np.zeros((2, 2)), np.zeros((2, 1)), epochs=1, verbose=0)


def _python(code):
    env = {"PATH": "", "PYTHONPATH": FAKE_TF}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_unmarked_fit():
    _fit()


def test_unmarked_fit_whose_failure_is_caught():
    try:
        _fit()
    except BaseException:
        pass


@pytest.mark.slow
def test_marked_fit():
    _fit()


def test_unmarked_tensorflow_process():
    assert _python("import tensorflow").returncode == 0


@pytest.mark.slow
def test_marked_tensorflow_process():
    assert _python("import tensorflow").returncode == 0


def test_unmarked_light_process():
    assert _python("import json").returncode == 0
'''


@pytest.fixture(scope="module")
def keras_loaded():
    # Imported before pytester starts: it drops the modules imported while it ran, and
    # numpy's extension cannot be loaded twice in one process.
    return pytest.importorskip("keras")


@pytest.fixture()
def inner(keras_loaded, pytester):
    fake = pytester.mkdir("fake_site")
    (fake / "tensorflow").mkdir()
    (fake / "tensorflow" / "__init__.py").write_text("")
    pytester.makeini("[pytest]\nmarkers =\n    slow: heavy\n")
    pytester.makepyfile(test_inner=f"FAKE_TF = {str(fake)!r}\n" + INNER_TESTS)
    return pytester


def test_unmarked_heavy_tests_fail_and_marked_ones_pass(inner, request):
    result = inner.runpytest_inprocess("-p", "fast_lane_guard", "-p", "no:cacheprovider")
    # The inner tests' records are gone: this (unmarked) test is guarded again.
    assert fast_lane_guard._current().test_id == request.node.nodeid
    result.assert_outcomes(passed=3, failed=3)
    failed = {r.nodeid.split("::")[-1] for r in result.reprec.getreports("pytest_runtest_logreport")
              if r.failed}
    assert failed == {"test_unmarked_fit", "test_unmarked_fit_whose_failure_is_caught",
                      "test_unmarked_tensorflow_process"}
    result.stdout.fnmatch_lines(["*test_unmarked_fit is not marked `slow` but fits a model*",
                                 "*started a Python process that imports TensorFlow: *-c import tensorflow*"])


@pytest.mark.parametrize("module_name", sorted(fast_lane_guard.TARGETS))
def test_every_entry_point_exists_and_is_wrapped(module_name):
    # Guards against a library renaming what the guard wraps: the guard would then see nothing.
    pytest.importorskip(module_name.split(".")[0])
    module = importlib.import_module(module_name)
    owner, names = fast_lane_guard.targets_of(module)
    for name in names:
        assert getattr(getattr(owner, name), "_fast_lane_guarded", False), (module_name, name)


def test_installing_the_guard_imports_nothing_heavy():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import fast_lane_guard; "
            "fast_lane_guard.install(); "
            "heavy = [m for m in ('tensorflow', 'keras', 'tf2onnx', 'onnxruntime', 'jax') "
            "if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code, str(fast_lane_guard.PROBE_DIR.parent)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
