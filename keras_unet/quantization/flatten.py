"""Expand keras_unet's composite layers into one functional graph of Keras primitives.

A `UNet` is a functional graph whose nodes are `keras.applications` layers (already
primitives: Conv2D, BatchNormalization, ReLU ...) and keras_unet layers that hold
sublayers (`ConvBlock`, `EncoderStage`, `DecoderBlock`, `AttentionGate`). Quantization
needs to see inside the latter: a batch norm inside a `ConvBlock` folds into the
convolution before it, and a quantizer goes after each activation. `flatten` rebuilds the
model with every composite replaced by its own `call`, traced on the graph's tensors: the
sublayers (and the `keras.ops` between them: `ops.concatenate`, `+`, `ops.sigmoid`)
become nodes of the new graph. The layers' code stays the one definition of what they
compute; nothing here restates it.

Each composite is traced through a copy with the same weights whose sublayers are renamed
`<composite>_<sublayer>` (`decoder_block_0_block_conv1`), since sublayer names are only
unique inside their parent. Nested composites (the `ConvBlock` inside a `DecoderBlock`)
are expanded by repeating the pass until none is left. The result computes the same
numbers as the model (only the graph is different) and shares no weights with it.

Example:
```python
import keras_unet
from keras_unet.quantization.flatten import flatten

model = keras_unet.UNet((32, 32, 3), filters=4, depth=2, use_batchnorm=True)
flat = flatten(model)
sorted({type(layer).__name__ for layer in flat.layers})
# ['Activation', 'BatchNormalization', 'Concatenate', 'Conv2D', 'Conv2DTranspose', ...]
```
"""

import keras
from keras import tree

from keras_unet.layers import AttentionGate, ConvBlock, DecoderBlock, EncoderStage

COMPOSITE_LAYERS = (ConvBlock, DecoderBlock, EncoderStage, AttentionGate)
# Deepest nesting in keras_unet is DecoderBlock > ConvBlock; this only guards a cycle.
MAX_PASSES = 8


def _copy_layer(layer):
    """A new instance of `layer` with its config and (once built) its weights."""
    twin = type(layer).from_config(layer.get_config())
    if layer.built:
        twin.build_from_config(layer.get_build_config())
        twin.set_weights(layer.get_weights())
    return twin


def _expand(layer, args, kwargs):
    """Calls a copy of the composite `layer` so that its sublayers become graph nodes."""
    twin = type(layer).from_config(layer.get_config())
    twin.build(tree.map_structure(lambda tensor: tuple(tensor.shape), args[0]))
    twin.set_weights(layer.get_weights())
    for sublayer in twin._layers:  # direct sublayers only; deeper ones on the next pass
        sublayer.name = f"{layer.name}_{sublayer.name}"
    kwargs = {key: value for key, value in kwargs.items() if key != "training"}
    return twin.call(*args, **kwargs)


def _flatten_once(model):
    expanded = []

    def call(operation, *args, **kwargs):
        if isinstance(operation, COMPOSITE_LAYERS):
            expanded.append(operation.name)
            return _expand(operation, args, kwargs)
        return operation(*args, **kwargs)

    def clone(operation):
        return _copy_layer(operation) if isinstance(operation, keras.layers.Layer) else operation

    flat = keras.models.clone_model(model, clone_function=clone, call_function=call)
    return flat, expanded


def flatten(model):
    """A functional copy of `model` with every keras_unet composite layer expanded.

    Args:
        model: a functional `keras.Model` (a `keras_unet.UNet`).

    Returns:
        A `keras.Model` with the same inputs and outputs whose nodes are Keras layers and
        `keras.ops` operations, with copies of `model`'s weights.

    Example:
    ```python
    import numpy as np
    import keras_unet
    from keras_unet.quantization import flatten

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    flat = flatten(model)
    np.allclose(flat(images), model(images), atol=1e-6)   # True
    ```
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            "`model` must be a functional keras.Model such as keras_unet.UNet (a subclassed "
            f"model's graph cannot be read). Received: model={type(model).__name__}")
    flat, expanded = _flatten_once(model)
    for _ in range(MAX_PASSES):
        if not expanded:
            return flat
        flat, expanded = _flatten_once(flat)
    raise ValueError(f"Composite layers still nested after {MAX_PASSES} passes. Received: {expanded}")
