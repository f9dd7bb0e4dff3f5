"""Registers keras_unet's serializable classes with Keras, whatever a program imports first.

Rule: the modules that define Keras objects (`REGISTERING_MODULES`) are imported exactly once,
as soon as `keras` is imported *and* no `keras_unet` module is half-way through its own import.
So `keras.models.load_model("model.keras")` finds `UNet`, the layers, losses, metrics and the
quantization layers without `custom_objects`, whether the program started with `import keras`,
`import keras_unet`, or any submodule such as `import keras_unet.layers`, before or after Keras.

Why the second condition: `import keras_unet.layers` imports Keras while `keras_unet.layers`
is still executing. Registering at that moment would import `keras_unet.models.unet`, which
reads names from the half-initialised `keras_unet.layers` and fails (a circular import). The
hook therefore counts the `keras_unet` modules executing in each thread and registers when
the outermost one has finished.

`install()` imports nothing heavy: it only puts a finder at the front of `sys.meta_path`,
which steps aside for good once registration has run.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading
import warnings
from types import ModuleType
from typing import Any, Callable

# Importing these registers every serializable class with Keras.
REGISTERING_MODULES = (
    "keras_unet.layers", "keras_unet.models.unet", "keras_unet.losses", "keras_unet.metrics",
    "keras_unet.quantization",
)  # fmt: skip

_PACKAGE_PREFIX = "keras_unet."
_executing = threading.local()  # .depth: keras_unet modules executing in this thread
_registered = False


def register_now() -> None:
    """Imports the registering modules (once); a failure warns and never breaks `import keras`."""
    global _registered
    if _registered:
        return
    _registered = True
    _uninstall()
    for module in REGISTERING_MODULES:
        try:
            importlib.import_module(module)
        except Exception as error:  # never break the user's `import keras`
            warnings.warn(f"keras_unet could not register its Keras objects: {error}", stacklevel=2)
            return


def _depth() -> int:
    return getattr(_executing, "depth", 0)


def _register_when_idle() -> None:
    if "keras" in sys.modules and _depth() == 0:
        register_now()


def _wrapped(exec_module: Callable[[ModuleType], Any], counts: bool) -> Callable[[ModuleType], None]:
    def exec_and_register(module: ModuleType) -> None:
        if counts:
            _executing.depth = _depth() + 1
        try:
            exec_module(module)
        finally:
            if counts:
                _executing.depth = _depth() - 1
        _register_when_idle()

    return exec_and_register


class _RegisterWhenKerasLoads(importlib.abc.MetaPathFinder):
    """Wraps the loaders of `keras` and of `keras_unet.*` modules until registration has run.

    It finds nothing itself: it asks the finders behind it, then wraps the loader's
    `exec_module` so that the end of each of those imports can trigger registration.
    """

    def find_spec(self, fullname, path=None, target=None):
        is_keras = fullname == "keras"
        if not (is_keras or fullname.startswith(_PACKAGE_PREFIX)) or _registered:
            return None
        spec = self._find_behind(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader.exec_module = _wrapped(spec.loader.exec_module, counts=not is_keras)
        return spec

    def _find_behind(self, fullname, path, target):
        finders = list(sys.meta_path)
        behind = finders[finders.index(self) + 1:] if self in finders else finders
        for finder in behind:
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None


def _uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegisterWhenKerasLoads)]


def install() -> None:
    """Registers now if Keras is loaded, else when it is (see the module docstring)."""
    if "keras" in sys.modules:
        register_now()
    elif not any(isinstance(finder, _RegisterWhenKerasLoads) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWhenKerasLoads())
