"""Every public name of the API pages' plugin modules documents an `Example:`."""

import importlib
import inspect

import pytest

# The modules whose docstrings this documentation owns; export, runtime, callbacks and models
# are checked by their own areas.
MODULES = ("keras_unet.layers", "keras_unet.losses", "keras_unet.metrics", "keras_unet.data",
           "keras_unet.quantization", "keras_unet.encoders", "keras_unet.benchmarks")


def public_callables(module_name):
    module = importlib.import_module(module_name)
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            yield name, value


@pytest.mark.parametrize("module_name", MODULES)
def test_public_names_have_examples(module_name):
    missing = [name for name, value in public_callables(module_name)
               if "Example" not in (inspect.getdoc(value) or "")]
    assert not missing, f"{module_name}: no Example: in the docstring of {missing}"
