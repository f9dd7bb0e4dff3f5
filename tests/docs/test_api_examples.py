"""Every public name has an API page and documents an `Example:` whose code runs.

The public names are the `__all__` of the modules below (the API reference's pages). Each
class or function carries a Google-style `Example:` section with at least one fenced
```python block using the public import path. The blocks are read with `inspect.getdoc`,
grouped per module and run in this process, each in a fresh namespace inside a temporary
working folder, so the whole reference costs one TensorFlow import. The examples that fit,
export, convert or quantize run in the slow lane, one test each (`SLOW`); the fast-lane guard
fails an unlisted example that does any of that. An API page renders a name through a
`::: target` directive of docs/api/, or a module directive's `members:` list.
"""

import importlib
import inspect
import re
import time
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

MODULES = ("keras_unet", "keras_unet.runtime", "keras_unet.layers", "keras_unet.losses",
           "keras_unet.metrics", "keras_unet.data", "keras_unet.export", "keras_unet.quantization",
           "keras_unet.callbacks", "keras_unet.benchmarks", "keras_unet.models",
           "keras_unet.encoders")

# Examples that fit, export, convert or quantize: the slow lane runs them one test each.
SLOW = frozenset({
    "keras_unet.UNet",
    "keras_unet.runtime.read_metadata",
    "keras_unet.export.ExportResult",
    "keras_unet.export.VerificationError",
    "keras_unet.export.export_onnx",
    "keras_unet.export.export_ort",
    "keras_unet.export.export_tflite",
    "keras_unet.export.run_export",
    "keras_unet.export.verify_export",
    "keras_unet.quantization.distillation_loss",
    "keras_unet.quantization.quantize_aware",
    "keras_unet.callbacks.AtomicModelCheckpoint",
    "keras_unet.callbacks.CommitEpoch",
    "keras_unet.callbacks.InterruptCheck",
    "keras_unet.callbacks.LocalModelCheckpoint",
    "keras_unet.callbacks.ResumableEarlyStopping",
    "keras_unet.callbacks.StopOnNonFiniteLoss",
    "keras_unet.callbacks.TrainingDiverged",
    "keras_unet.callbacks.WarnOnCollapse",
    "keras_unet.benchmarks.run_benchmark",
})

SECTION = re.compile(r"^Examples?:\s*$")
FENCE = re.compile(r"^```python\s*\n(.*?)^```\s*$", re.S | re.M)


def public_names():
    """`{qualified public name: object}` for every class and function in the modules' `__all__`.

    A name re-exported by a later module (`keras_unet.models.UNet` is `keras_unet.UNet`,
    `keras_unet.export.load_runner` is `keras_unet.runtime.load_runner`) is listed once, under
    the first module that exports it.
    """
    names, seen = {}, set()
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if (inspect.isclass(value) or inspect.isfunction(value)) and id(value) not in seen:
                seen.add(id(value))
                names[f"{module_name}.{name}"] = value
    return names


def example_blocks(value):
    """The fenced ```python blocks of a docstring's `Example:` section."""
    lines = (inspect.getdoc(value) or "").splitlines()
    starts = [i for i, line in enumerate(lines) if SECTION.match(line)]
    if not starts:
        return []
    section = "\n".join(lines[starts[0] + 1:]) + "\n"
    return [block for block in FENCE.findall(section)]


def run_blocks(examples, folder, monkeypatch):
    """Run `[(name, code)]` in `folder`, each in a fresh namespace; return the failures."""
    failures = []
    for index, (name, code) in enumerate(examples):
        target = folder / f"{index}-{name}"
        target.mkdir()
        monkeypatch.chdir(target)
        try:
            exec(compile(code, f"<Example of {name}>", "exec"), {"__name__": "__example__"})
        except Exception:  # noqa: BLE001 - every failing example is reported, not the first only
            failures.append(f"{name}:\n{traceback.format_exc(limit=-3)}")
    return failures


NAMES = public_names()


def module_of(qualified):
    return next(m for m in sorted(MODULES, key=len, reverse=True) if qualified.startswith(m + "."))


@pytest.mark.parametrize("module_name", MODULES)
def test_public_names_have_examples(module_name):
    names = [name for name in NAMES if module_of(name) == module_name]
    missing = [name for name in names if not example_blocks(NAMES[name])]
    assert not missing, f"no ```python block under Example: in the docstring of {missing}"


def test_slow_list_names_public_names():
    assert SLOW <= set(NAMES), f"SLOW names no public name: {sorted(SLOW - set(NAMES))}"


@pytest.mark.parametrize("module_name", MODULES)
def test_examples_run(module_name, tmp_path, monkeypatch):
    examples = [(name, block) for name in NAMES if module_of(name) == module_name
                and name not in SLOW for block in example_blocks(NAMES[name])]
    failures = run_blocks(examples, tmp_path, monkeypatch)
    assert not failures, "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW))
def test_slow_examples_run(name, tmp_path, monkeypatch):
    examples = [(name, block) for block in example_blocks(NAMES[name])]
    start = time.perf_counter()
    failures = run_blocks(examples, tmp_path, monkeypatch)
    assert not failures, "\n".join(failures)
    # Examples are read by users, and run here: a few seconds on tiny data, not a training run.
    assert time.perf_counter() - start < 60, f"the Example of {name} takes over a minute"


def documented_objects():
    """The objects the API pages render: `::: target` directives and their `members:` lists."""
    objects = set()
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        directives = re.findall(r"^::: ([\w.]+)\n((?:[ \t]+\S.*\n)*)", page.read_text(encoding="utf-8"), re.M)
        for target, options in directives:
            value = resolve(target)
            members = re.search(r"^\s*members:\s*(.+)$", options, re.M)
            if not inspect.ismodule(value):
                objects.add(id(value))
            elif members is None:  # the whole module: its __all__, else what it defines
                names = getattr(value, "__all__", None) or [
                    name for name, member in vars(value).items()
                    if not name.startswith("_") and getattr(member, "__module__", None) == value.__name__]
                objects.update(id(getattr(value, name)) for name in names)
            elif members.group(1).strip() != "false":
                objects.update(id(getattr(value, name.strip()))
                               for name in members.group(1).strip("[] ").split(","))
    return objects


def resolve(target):
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError:
        module, _, name = target.rpartition(".")
        return getattr(importlib.import_module(module), name)


def test_every_public_name_has_an_api_page():
    documented = documented_objects()
    missing = [name for name, value in NAMES.items() if id(value) not in documented]
    assert not missing, f"no docs/api page renders {missing}"
