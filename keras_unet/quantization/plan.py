"""Where the quantizers go in a flattened model: read the graph once, decide per operation.

For every operation of a `keras_unet.quantization.flatten` graph, `plan` records its
`registry.Kind`, the batch norm folded into it (a convolution whose only consumer is a
batch norm), and whether its output gets an `ActivationQuantizer`: every output except
a pass-through's, a convolution's whose batch norm is folded into it (the batch norm
decides), and one whose only consumer TFLite fuses into it (a ReLU after a convolution or
an ADD; a constant added to a convolution, which the converter folds into the bias).

Example:
```python
from keras_unet.quantization.flatten import flatten
from keras_unet.quantization.plan import plan

steps = plan(flatten(model))
[step.name for step in steps.values() if step.quantize_output][:3]
```
"""

import dataclasses
from typing import Optional

import keras

from keras_unet.quantization.registry import Kind, classify

OUTPUT = "model output"


@dataclasses.dataclass
class Step:
    """The quantizer's decision for one operation.

    Attributes:
        name: the operation's name.
        kind: its `registry.Kind`.
        folded: the `BatchNormalization` layer folded into this convolution, or None.
        folded_into: for a folded batch norm, the convolution it went into.
        quantize_output: whether an `ActivationQuantizer` follows it.
        output_range: the fixed range of that quantizer, or None for a learned one.
    """

    name: str
    kind: Kind
    folded: Optional[object] = None
    folded_into: Optional[object] = None
    quantize_output: bool = True
    output_range: Optional[tuple] = None


def _graph(model):
    """(operation, node) in topological order, and the consumers of each operation."""
    order, consumers = [], {}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            order.append((node.operation, node))
            for tensor in node.input_tensors:
                producer = tensor._keras_history.operation
                consumers.setdefault(id(producer), []).append(node.operation)
    for tensor in model.outputs:
        consumers.setdefault(id(tensor._keras_history.operation), []).append(OUTPUT)
    return order, consumers


def _has_constant(node):
    return any(not isinstance(arg, keras.KerasTensor) for arg in node.arguments.args)


def _foldable(operation, batch_norm):
    axis = batch_norm.axis if isinstance(batch_norm.axis, int) else batch_norm.axis[0]
    return (classify(operation, False).fuses and axis in (-1, 3)
            and type(operation).__name__ in ("Conv2D", "DepthwiseConv2D", "Conv2DTranspose"))


def plan(model):
    """`{id(operation): Step}` for every operation of the flattened `model`.

    Raises:
        ValueError: the graph has layers or ops the quantizer does not know; the message
            names each one.

    Example:
    ```python
    steps = plan(flat)
    ```
    """
    order, consumers = _graph(model)
    steps, unknown = {}, []
    for operation, node in order:
        kind = classify(operation, _has_constant(node))
        if kind.kind == "unknown":
            unknown.append(f"{operation.name} ({type(operation).__name__})")
        steps[id(operation)] = Step(operation.name, kind)
    if unknown:
        raise ValueError(
            "quantize_aware cannot simulate int8 kernels for these layers or ops: "
            f"{', '.join(unknown)}. It knows the keras_unet layers and encoders, Conv2D, "
            "DepthwiseConv2D, Conv2DTranspose, BatchNormalization, ReLU, Activation (relu, "
            "relu6, sigmoid, softmax, hard_silu, tanh), Add, Multiply, Concatenate, pooling, "
            "padding, upsampling and Dropout (keras_unet.quantization.registry); replace the "
            "others, or export the float model with post-training int8 (keras-unet export "
            f"--quantize int8). Received: model={model.name!r}")
    for operation, _ in order:
        step = steps[id(operation)]
        users = consumers.get(id(operation), [])
        if len(users) == 1 and isinstance(users[0], keras.layers.BatchNormalization):
            if _foldable(operation, users[0]):
                step.folded = users[0]
                steps[id(users[0])].folded_into = operation
    for operation, node in order:
        step = steps[id(operation)]
        step.quantize_output = _quantizes_output(step, operation, consumers, steps)
        step.output_range = _output_range(step, operation, consumers, steps)
    return steps


def _output_range(step, operation, consumers, steps):
    """The fixed range of the step's quantizer: its own kind's, or the one its reader needs."""
    if step.kind.fixed_range is not None:
        return step.kind.fixed_range
    users = consumers.get(id(operation), [])
    if len(users) == 1 and users[0] != OUTPUT:
        return steps[id(users[0])].kind.input_range
    return None


def _fuses(step, steps):
    """Whether TFLite can fuse a ReLU into the op that computes this step's output."""
    if step.kind.kind == "batch_norm":
        return step.folded_into is not None
    if step.kind.kind == "weighted":
        return step.folded is None and step.kind.fuses
    return step.kind.fuses


def _quantizes_output(step, operation, consumers, steps):
    kind = step.kind.kind
    # An affine layer is split into its ops, each quantized where it is rebuilt.
    if kind in ("passthrough", "affine") or (kind == "weighted" and step.folded is not None):
        return False
    if kind == "fixed":
        return True
    users = consumers.get(id(operation), [])
    if len(users) != 1 or users[0] == OUTPUT:
        return True
    user = steps[id(users[0])]
    if user.kind.kind == "fusable" and _fuses(step, steps):
        return False
    # An input only a concatenation reads is computed at the concatenation's scale (TFLite
    # and tensorflow-model-optimization's ConcatTransform alike): one quantizer, after it.
    if type(users[0]).__name__ == "Concatenate":
        return False
    # conv -> x + constant: the converter folds the constant into the convolution's bias,
    # so the sum is what the int8 CONV_2D computes and is quantized after it (or after a
    # ReLU that follows it).
    is_convolution = kind == "weighted" or (kind == "batch_norm" and step.folded_into is not None)
    return not (is_convolution and type(users[0]).__name__ in ("Add", "Subtract")
                and not isinstance(users[0], keras.layers.Layer) and _one_tensor_input(users[0]))


def _one_tensor_input(operation):
    node = operation._inbound_nodes[-1]
    return len(node.input_tensors) == 1
