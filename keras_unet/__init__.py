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
Keras is imported (before or after this package or any of its submodules), so
`keras.models.load_model("model.keras")` needs no `custom_objects`.
"""

import importlib

from keras_unet import _keras_registration
from keras_unet.version import __version__

_SUBMODULES = (
    "benchmarks", "callbacks", "data", "datasets", "encoders", "export", "layers", "losses", "metrics",
    "models", "quantization", "runtime",
)  # fmt: skip
_ATTRIBUTES = {"UNet": "keras_unet.models"}


def __getattr__(name):
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_unet.{name}")
    raise AttributeError(f"module 'keras_unet' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES) | set(_ATTRIBUTES))


# Layers, losses, metrics and models register with Keras when Keras loads, whichever module
# of this package a program imports first (see keras_unet/_keras_registration.py).
_keras_registration.install()

__all__ = ["UNet", "__version__", *_SUBMODULES]
