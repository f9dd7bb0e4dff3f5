"""keras-unet: U-Net segmentation for Keras 3, from training to the edge.

Example:
```python
import keras_unet

model = keras_unet.UNet(input_shape=(128, 128, 3))  # the original U-Net, 31,031,745 parameters
model.compile(optimizer="adam", loss=keras_unet.losses.CrossEntropyDice(),
              metrics=keras_unet.metrics.get_metrics(num_classes=1))
```

One import root, lightest first (see docs/ARCHITECTURE.md):
`keras_unet.runtime` (numpy + a runtime: runs exported files) <- the Keras plugin
(`layers`, `encoders`, `models`, `losses`, `metrics`, `data`) <- `keras_unet.export`
<- `keras_unet.benchmarks` <- `keras_unet.cli`.

`import keras_unet` imports neither Keras nor TensorFlow, so the command line and an
edge device (`pip install "keras-unet-edge[edge]"`) start fast. The Keras names below are
imported on first use. Layers, losses and metrics are registered with Keras as soon as
Keras is imported (before or after this package), so
`keras.models.load_model("model.keras")` needs no `custom_objects`.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from keras_unet.version import __version__

_SUBMODULES = (
    "benchmarks", "callbacks", "data", "datasets", "encoders", "export", "layers", "losses", "metrics",
    "models", "quantization", "runtime",
)  # fmt: skip
_ATTRIBUTES = {"UNet": "keras_unet.models"}
# Importing these registers every serializable class with Keras.
_REGISTERING_MODULES = (
    "keras_unet.layers", "keras_unet.models.unet", "keras_unet.losses", "keras_unet.metrics",
    "keras_unet.quantization",
)  # fmt: skip


def __getattr__(name):
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_unet.{name}")
    raise AttributeError(f"module 'keras_unet' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES) | set(_ATTRIBUTES))


def _register_with_keras():
    for module in _REGISTERING_MODULES:
        try:
            importlib.import_module(module)
        except Exception as error:  # never break the user's `import keras`
            warnings.warn(f"keras_unet could not register its Keras objects: {error}",
                          stacklevel=2)
            return


class _RegisterWhenKerasLoads(importlib.abc.MetaPathFinder):
    """Runs `_register_with_keras` right after `import keras` completes, once.

    It steps aside from `sys.meta_path` the first time `keras` is looked up, so the
    normal finders locate Keras, and only wraps that one module's loader.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_keras = spec.loader.exec_module

        def exec_module(module):
            exec_keras(module)
            _register_with_keras()

        spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    _register_with_keras()
elif not any(isinstance(finder, _RegisterWhenKerasLoads) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenKerasLoads())

__all__ = ["UNet", "__version__", *_SUBMODULES]
