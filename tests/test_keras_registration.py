"""Saved models reload with `keras.models.load_model` whatever keras_unet module a program imports first.

Each case is a fresh Python process: it imports one public submodule before or after `keras`,
then loads a saved `UNet` (attention, MobileNetV2 encoder) and a quantization-aware model with
no `custom_objects`, predicts, and checks the predictions against the saving process's. Any
warning fails the case (`-W error`).

Every public module is a case before Keras: each one imports Keras at its own point of its
body, which is what the registration hook must wait out. After Keras, one case stands for all:
whichever submodule is named, `keras_unet/__init__.py` runs first, finds Keras loaded and
registers there (`_keras_registration.install`), before the submodule's own body runs, so the
other ten processes would repeat that path (a test below checks that it is the path taken).
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

PUBLIC_MODULES = (
    "keras_unet", "keras_unet.layers", "keras_unet.losses", "keras_unet.metrics", "keras_unet.models",
    "keras_unet.data", "keras_unet.callbacks", "keras_unet.quantization", "keras_unet.runtime",
    "keras_unet.export", "keras_unet.benchmarks",
)  # fmt: skip
# (first module, order): every module before Keras; the package alone after it (see above).
CASES = tuple((module, "before_keras") for module in PUBLIC_MODULES) + (("keras_unet", "after_keras"),)

LOAD_AND_PREDICT = """
import json, sys
import numpy as np
{imports}
def load_and_predict(path):
    import keras
    model = keras.models.load_model(path)
    return keras.ops.convert_to_numpy(model(np.load(sys.argv[1])))
print(json.dumps({{name: load_and_predict(path).tolist() for name, path in
                  (("unet", sys.argv[2]), ("qat", sys.argv[3]))}}))
"""


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    import keras

    import keras_unet
    from keras_unet.quantization import quantize_aware

    folder = tmp_path_factory.mktemp("saved")
    keras.utils.set_random_seed(0)
    unet = keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2, use_attention=True,
                           encoder="mobilenet_v2", encoder_weights=None)
    qat = quantize_aware(keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2))
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    qat.predict(images, verbose=0)  # the first batch sets the activation ranges
    paths = {"images": folder / "images.npy", "unet": folder / "unet.keras", "qat": folder / "qat.keras"}
    np.save(paths["images"], images)
    unet.save(paths["unet"])
    qat.save(paths["qat"])
    expected = {"unet": unet.predict(images, verbose=0), "qat": qat.predict(images, verbose=0)}
    return paths, expected


def _script(first_module, order):
    imports = f"import {first_module}\nimport keras"
    if order == "after_keras":
        imports = f"import keras\nimport {first_module}"
    return LOAD_AND_PREDICT.format(imports=imports)


def _run_case(case, paths):
    first_module, order = case
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-W", "error", "-c", _script(first_module, order),
               str(paths["images"]), str(paths["unet"]), str(paths["qat"])]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)


@pytest.mark.slow
def test_every_first_import_reloads_saved_models_without_warnings(saved_models):
    paths, expected = saved_models
    cases = list(CASES)
    # Two processes at a time: each spends most of its time importing TensorFlow on one core.
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(cases, pool.map(lambda case: _run_case(case, paths), cases)))
    failures = []
    for case, result in done.items():
        if result.returncode != 0:
            failures.append(f"{case}: exit {result.returncode}: {result.stderr.strip()[-600:]}")
            continue
        if "Warning" in result.stderr:
            failures.append(f"{case}: warned: {result.stderr.strip()[-600:]}")
            continue
        predictions = json.loads(result.stdout.strip().splitlines()[-1])
        for name in ("unet", "qat"):
            np.testing.assert_allclose(predictions[name], expected[name], atol=1e-5,
                                       err_msg=f"{case}: {name}")
    assert not failures, "\n".join(failures)


def test_keras_imported_inside_a_half_initialised_submodule_registers_after_it(tmp_path):
    """The rule, with a stand-in `keras` (no TensorFlow): a keras_unet module that imports
    `keras` half-way through its own body is finished before registration runs."""
    (tmp_path / "keras").mkdir()
    (tmp_path / "keras" / "__init__.py").write_text("")
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "halfway.py").write_text(
        "import keras\n"
        "from keras_unet import _keras_registration as registration\n"
        "assert registration.calls == [], 'registered while keras_unet.halfway was half-initialised'\n"
        "DEFINED_AFTER_KERAS = True\n")
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import keras_unet\n"
        f"keras_unet.__path__.append({str(planted)!r})\n"
        "from keras_unet import _keras_registration as registration\n"
        "registration.calls = []\n"
        "registration.REGISTERING_MODULES = ('keras_unet.halfway',)\n"
        "original = registration.register_now\n"
        "def spy():\n"
        "    registration.calls.append(registration._depth())\n"
        "    original()\n"
        "registration.register_now = spy\n"
        "import keras_unet.halfway\n"
        "assert registration.calls == [0], registration.calls\n"
        "assert keras_unet.halfway.DEFINED_AFTER_KERAS\n"
        "assert not any(type(f).__name__ == '_RegisterWhenKerasLoads' for f in sys.meta_path)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


@pytest.mark.slow  # ten Python processes (no TensorFlow): two seconds kept out of the fast lane
def test_after_keras_every_submodule_registers_while_the_package_initialises(tmp_path):
    """Why one after-Keras case stands for all: with `keras` loaded, importing any submodule
    runs `register_now` inside `keras_unet/__init__.py`, before that submodule's body (checked
    with a stand-in `keras`, so no TensorFlow: registering then warns, which is expected)."""
    (tmp_path / "keras").mkdir()
    (tmp_path / "keras" / "__init__.py").write_text("")
    code = (
        "import sys, importlib, json, warnings\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import keras\n"
        "module = sys.argv[1]\n"
        "calls = []\n"
        "def spy(frame, event, arg):\n"
        "    if event == 'call' and frame.f_code.co_name == 'register_now' \\\n"
        "            and frame.f_code.co_filename.endswith('_keras_registration.py'):\n"
        "        calls.append({'package_done': 'install' in frame.f_back.f_code.co_name,\n"
        "                      'module_started': module in sys.modules})\n"
        "sys.setprofile(spy)\n"
        "warnings.simplefilter('ignore')\n"
        "try:\n"
        "    importlib.import_module(module)\n"
        "except Exception:\n"
        "    pass  # the stand-in keras has nothing in it: only the order matters here\n"
        "sys.setprofile(None)\n"
        "print(json.dumps(calls))\n"
    )
    for module in PUBLIC_MODULES[1:]:
        done = subprocess.run([sys.executable, "-c", code, module], capture_output=True,
                              text=True, cwd=tmp_path, timeout=60)
        assert done.returncode == 0, f"{module}: {done.stderr[-2000:]}"
        calls = json.loads(done.stdout.strip().splitlines()[-1])
        assert calls, f"{module}: register_now never ran"
        assert calls[0] == {"package_done": True, "module_started": False}, (module, calls)
