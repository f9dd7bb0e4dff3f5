"""`QuantizeAwareModel`: the functional model `quantize_aware` returns.

A plain functional graph (the quantize-aware layers and the `keras.ops` between them)
that also carries what the source `keras_unet.UNet` said about itself: its classes,
output activation, class names, input shape and depth. The exporters and runners read
those attributes (`keras_unet.runtime.describe.describe_model`,
`keras_unet.export.source.resolve_input_size`), so a QAT model exports with the same
metadata as the model it came from, and they survive a `.keras` round trip.

Example:
```python
import keras
import keras_unet
from keras_unet.quantization import quantize_aware

qat = quantize_aware(keras_unet.UNet((32, 32, 3), filters=4, depth=2))
qat.save("qat.keras")
keras.models.load_model("qat.keras").num_classes   # 1
```
"""

import keras

# The attributes of a keras_unet.UNet that metadata and export read.
SOURCE_FACTS = ("num_classes", "output_activation", "class_names", "ignore_index",
                "mask_encoding", "input_shape_", "depth")


def source_facts(model):
    """The `SOURCE_FACTS` that `model` has, JSON-ready (tuples as lists)."""
    facts = {}
    for key in SOURCE_FACTS:
        if hasattr(model, key):
            value = getattr(model, key)
            facts[key] = list(value) if isinstance(value, tuple) else value
    return facts


@keras.saving.register_keras_serializable(package="keras_unet")
class QuantizeAwareModel(keras.Model):
    """A functional model with fake quantization, plus its source model's attributes.

    Built by `keras_unet.quantization.quantize_aware`; constructed like a functional model
    (`QuantizeAwareModel(inputs, outputs, source={...})`).

    Args:
        *args, **kwargs: `keras.Model(inputs, outputs, name=...)` arguments.
        source: the source model's attributes (`source_facts`), set on this model too.

    Example:
    ```python
    import keras_unet
    from keras_unet.quantization import QuantizeAwareModel, quantize_aware

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)
    qat = quantize_aware(model)
    isinstance(qat, QuantizeAwareModel)          # True
    qat.source["num_classes"], qat.num_classes   # (1, 1)
    ```
    """

    def __init__(self, *args, source=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.source = dict(source or {})
        for key, value in self.source.items():
            setattr(self, key, tuple(value) if key == "input_shape_" else value)

    def get_config(self):
        config = super().get_config()
        config["source"] = self.source
        return config
