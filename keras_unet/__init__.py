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

from keras_unet import data, datasets, encoders, layers, losses, metrics
from keras_unet.models import UNet
from keras_unet.version import __version__

__all__ = ["UNet", "data", "datasets", "encoders", "layers", "losses", "metrics", "__version__"]
