"""keras-unet: U-Net segmentation for Keras 3, from training to the edge.

Example:
```python
import keras_unet

model = keras_unet.UNet(input_shape=(128, 128, 3))  # the original U-Net, 31,031,745 parameters
model.compile(optimizer="adam", loss=keras_unet.losses.CrossEntropyDice(),
              metrics=keras_unet.metrics.get_metrics(num_classes=1))
```
Importing the package registers every layer, loss and metric with Keras, so
`keras.models.load_model("model.keras")` needs no `custom_objects`.
"""

import os

# TensorFlow's C++ INFO/WARNING start-up lines (oneDNN, XNNPACK, grappler) would bury
# the output of training and of the CLI; an explicit setting by the user still wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_unet import data, datasets, encoders, layers, losses, metrics
from keras_unet.models import UNet
from keras_unet.version import __version__

__all__ = ["UNet", "data", "datasets", "encoders", "layers", "losses", "metrics", "__version__"]
