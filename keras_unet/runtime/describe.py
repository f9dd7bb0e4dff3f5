"""What a Keras segmentation model says about itself: input size, classes, activation, names.

The one description of a model that everything storing or using metadata shares: the
exporter (`keras_unet.export.metadata.build_metadata`) writes it into `.tflite`/`.onnx`
files, and `keras_unet.runtime.keras.KerasRunner` gives it to a `.keras` file, so a model
reads the same whichever file it runs from. It lives at the bottom, in the runtime, so that
both reach it without importing upward; it imports neither Keras nor TensorFlow, and only
reads attributes of a model that is already built (duck typing: `inputs`, `outputs`,
`layers`, and a `keras_unet.UNet`'s own attributes).

A `keras_unet.UNet` reports its own `num_classes`, `output_activation`, `class_names`,
`ignore_index` and `mask_encoding`; for another model, the output's last dimension gives the
classes and the last layer's activation (sigmoid/softmax, or a trailing `Softmax` layer)
the activation; anything else counts as logits (`None`).

Example:
```python
import keras_unet
from keras_unet.runtime.describe import describe_model

model = keras_unet.UNet(input_shape=(128, 128, 3), num_classes=3, filters=8, depth=2)
describe_model(model)["output_activation"]   # "softmax"
```
"""

from typing import Optional

ACTIVATIONS = ("sigmoid", "softmax")


def model_input_shape(model) -> tuple:
    """`(height, width, channels)` of a model with one image input; None for a free size.

    Raises:
        ValueError: not exactly one input, or not a 4D `(N, H, W, C)` input.

    Example:
    ```python
    model_input_shape(keras_unet.UNet(input_shape=(None, None, 1), filters=4, depth=2))  # (None, None, 1)
    ```
    """
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ValueError(
            "Expected a model with exactly one image input (N, H, W, C). "
            f"Received: a model with {len(inputs or [])} inputs"
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ValueError(f"Expected a 4D image input (N, H, W, C). Received: input shape {shape}")
    return shape[1], shape[2], shape[3]


def output_activation(model) -> Optional[str]:
    """`"sigmoid"`, `"softmax"` or None (logits) at the model's output.

    Example:
    ```python
    output_activation(model)   # "sigmoid"
    ```
    """
    if hasattr(model, "output_activation"):
        return model.output_activation
    layer = model.layers[-1]
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    if type(layer).__name__ == "Softmax":
        name = "softmax"
    return name if name in ACTIVATIONS else None


def describe_model(model) -> dict:
    """The facts about `model` that its metadata carries.

    Args:
        model: a built Keras model with one `(N, H, W, C)` input.

    Returns:
        dict with `input_size` (`(H, W)`, None for a free dimension), `channels`,
        `num_classes` (1 = binary), `output_activation` (`"sigmoid"`, `"softmax"` or None),
        `class_names` (list of str or None), `ignore_index` (int or None) and
        `mask_encoding` (the model's, else `"binary"` for one class and `"index"` for more).

    Example:
    ```python
    facts = describe_model(model)
    facts["num_classes"], facts["channels"]   # (1, 3)
    ```
    """
    height, width, channels = model_input_shape(model)
    num_classes = getattr(model, "num_classes", None) or int(tuple(model.outputs[0].shape)[-1])
    class_names = getattr(model, "class_names", None)
    ignore_index = getattr(model, "ignore_index", None)
    return {
        "input_size": (height, width),
        "channels": int(channels),
        "num_classes": int(num_classes),
        "output_activation": output_activation(model),
        "class_names": [str(name) for name in class_names] if class_names else None,
        "ignore_index": None if ignore_index is None else int(ignore_index),
        "mask_encoding": getattr(model, "mask_encoding", None)
        or ("binary" if num_classes == 1 else "index"),
    }
