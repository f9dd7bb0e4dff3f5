"""What each Keras layer or op of a flattened model is to the quantizer (the 8-bit registry).

tensorflow-model-optimization's default 8-bit registry
(`quantization/keras/default_8bit/default_8bit_quantize_registry.py`) lists, per layer
class, which weights to quantize and whether the output gets a quantizer; its transforms
fold batch norm and move the quantizer after a following ReLU. This table is the same
idea for the graphs `keras_unet.quantization.flatten` produces, placed where TFLite's
int8 kernels put a requantization:

| kind | layers / ops | output quantizer |
|---|---|---|
| `weighted` | Conv2D, DepthwiseConv2D, Conv2DTranspose | yes, unless fused (below) |
| `batch_norm` | BatchNormalization | folded into the convolution before it |
| `fusable` | ReLU (max 6 or none), Activation relu/relu6, `ops.relu` | yes; the op before it gets none |
| `compute` | Add, Subtract, Multiply, Concatenate, pooling averages, other activations | yes |
| `affine` | InputNormalization, Rescaling | after each of the ops it lowers to (`x / 127.5`, `- 1`) |
| `fixed` | sigmoid, softmax (layers or ops) | fixed to [0, 255/256] (below) |
| `passthrough` | MaxPooling2D, ZeroPadding2D, UpSampling2D, Dropout, Reshape, Flatten | no: the int8 kernel keeps its input's scale |

"Fused": TFLite computes a convolution (or an ADD/SUB/MUL) and a ReLU/ReLU6 after it as one
kernel whose int8 output is the ReLU's, so the only quantizer goes after the ReLU; a
constant added to a convolution's output (MobileNetV3's `x + 3` in its hard sigmoid) is
folded into the convolution's bias by the converter, so it too passes the quantizer on.
An output that only a concatenation reads gets none either: TFLite computes it at the
concatenation's scale. TFLite's LOGISTIC and SOFTMAX int8 kernels always output scale
1/256, hence the fixed range; a sigmoid's input is fixed to [-8, 8] (`SIGMOID_INPUT_RANGE`).

Example:
```python
from keras_unet.quantization.registry import classify

classify(keras.layers.ReLU(6.0), constant_operand=False).kind   # "fusable"
```
"""

import dataclasses
from typing import Optional, Tuple

WEIGHTED = ("Conv2D", "DepthwiseConv2D", "Conv2DTranspose")
# TFLite's LOGISTIC and SOFTMAX int8 kernels always output scale 1/256, zero point -128
# (uint8: 0): the grid 0, 1/256, ..., 255/256.
PROBABILITY_RANGE = (0.0, 255.0 / 256.0)
# The input of a sigmoid: beyond |x| = 8 it is within 1/2981 of 0 or 1, so every such x
# gives the same output code on that grid (round(256 * sigmoid(-8)) = 0), and clipping
# there costs nothing. The learned range of logits is much wider (about [-30, 15] on the
# nuclei models): its steps of ~0.18 flipped mask pixels whose logit was near 0, where
# [-8, 8] has steps of 0.063.
SIGMOID_INPUT_RANGE = (-8.0, 8.0)
# Activation names Keras resolves to (keras.activations.get(...).__name__).
FUSABLE_ACTIVATIONS = ("relu", "relu6")
PROBABILITY_ACTIVATIONS = ("sigmoid", "softmax")
LINEAR_ACTIVATIONS = ("linear",)
# Activations with an int8 TFLite kernel of their own, quantized at their output.
COMPUTE_ACTIVATIONS = ("hard_silu", "hard_swish", "hard_sigmoid", "tanh", "elu", "leaky_relu")

LAYER_KINDS = {
    "BatchNormalization": "batch_norm",
    "Add": "compute", "Subtract": "compute", "Multiply": "compute", "Concatenate": "compute",
    "AveragePooling2D": "compute", "GlobalAveragePooling2D": "compute", "Rescaling": "affine",
    "MaxPooling2D": "passthrough", "ZeroPadding2D": "passthrough", "UpSampling2D": "passthrough",
    "Dropout": "passthrough", "SpatialDropout2D": "passthrough", "Reshape": "passthrough",
    "Flatten": "passthrough", "Cropping2D": "passthrough",
    "Softmax": "fixed",
    **{name: "weighted" for name in WEIGHTED},
}
# keras.ops called on symbolic tensors (`ops.concatenate`, `x + y`, `ops.sigmoid`).
OP_KINDS = {
    "Add": "compute", "Subtract": "compute", "Multiply": "compute", "Divide": "compute",
    "TrueDivide": "compute", "Concatenate": "compute", "Mean": "compute",
    "Relu": "fusable", "Relu6": "fusable", "Sigmoid": "fixed", "Softmax": "fixed",
    "HardSilu": "compute", "HardSigmoid": "compute", "Tanh": "compute",
    "Flip": "passthrough", "Reshape": "passthrough",
}


@dataclasses.dataclass(frozen=True)
class Kind:
    """What the quantizer does with one operation.

    Attributes:
        kind: `"weighted"`, `"batch_norm"`, `"fusable"`, `"compute"`, `"affine"`,
            `"fixed"`, `"passthrough"`, or `"unknown"`.
        fixed_range: the output range of a `"fixed"` operation.
        fuses: whether TFLite can fuse a following ReLU into this operation.
        input_range: the range to quantize this operation's input to, when it is fixed
            (a sigmoid's).
    """

    kind: str
    fixed_range: Optional[Tuple[float, float]] = None
    fuses: bool = False
    input_range: Optional[Tuple[float, float]] = None


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None)


def _relu_kind(layer):
    plain = not layer.negative_slope and not layer.threshold
    return Kind("fusable") if plain and layer.max_value in (None, 6.0) else Kind("compute")


def _activation_kind(name):
    if name in LINEAR_ACTIVATIONS:
        return Kind("passthrough")
    if name in FUSABLE_ACTIVATIONS:
        return Kind("fusable")
    if name == "sigmoid":
        return Kind("fixed", PROBABILITY_RANGE, input_range=SIGMOID_INPUT_RANGE)
    if name in PROBABILITY_ACTIVATIONS:
        return Kind("fixed", PROBABILITY_RANGE)
    if name in COMPUTE_ACTIVATIONS:
        return Kind("compute")
    return Kind("unknown")


def _normalization_kind(layer):
    # mode "none" is the identity; the others are an affine map of the image.
    return Kind("passthrough") if getattr(layer, "mode", None) == "none" else Kind("affine")


def classify(operation, constant_operand):
    """The `Kind` of one operation of a flattened model.

    Args:
        operation: a Keras layer or a `keras.ops` operation from the model's graph.
        constant_operand: whether the call had a Python/numpy constant among its
            positional arguments (`x + 3.0`).

    Example:
    ```python
    classify(keras.layers.Activation("sigmoid"), False).input_range   # (-8.0, 8.0)
    ```
    """
    import keras

    name = type(operation).__name__
    if not isinstance(operation, keras.layers.Layer):
        kind = OP_KINDS.get(name)
        if kind is None:
            return Kind("unknown")
        if kind == "fixed":
            sigmoid = SIGMOID_INPUT_RANGE if name == "Sigmoid" else None
            return Kind("fixed", PROBABILITY_RANGE, input_range=sigmoid)
        # A tensor + tensor ADD/SUB takes a fused ReLU; a constant added to a convolution
        # is folded into its bias, which takes one too.
        fuses = name in ("Add", "Subtract") or (name == "Multiply" and not constant_operand)
        return Kind(kind, fuses=fuses)
    if name == "InputNormalization":
        return _normalization_kind(operation)
    if name == "ReLU":
        return _relu_kind(operation)
    if name == "Activation":
        return _activation_kind(_activation_name(operation))
    kind = LAYER_KINDS.get(name)
    if kind is None:
        return Kind("unknown")
    if kind == "weighted":
        # A convolution with a built-in activation quantizes after that activation.
        activation = _activation_name(operation)
        if activation not in LINEAR_ACTIVATIONS + FUSABLE_ACTIVATIONS:
            return Kind("unknown")
        return Kind("weighted", fuses=activation in LINEAR_ACTIVATIONS)
    if kind == "fixed":
        return Kind("fixed", PROBABILITY_RANGE)
    return Kind(kind, fuses=name in ("Add", "Subtract", "Multiply"))
