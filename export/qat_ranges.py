"""Which tensor of a float ONNX graph each QAT quantizer's range belongs to.

tf2onnx names ONNX tensors after TensorFlow ops and moves convolutions to NCHW, so a
Keras quantizer cannot be found by name. It is found by value instead: the Keras float
copy (with the quantized tensors as extra outputs) and the ONNX graph run on the same
images, and an ONNX tensor belongs to a quantizer when its sorted values equal those of
the tensor the quantizer rounds (a transpose does not change them).

onnxruntime also quantizes tensors that have no quantizer of their own, inside ops that
TFLite runs as one kernel. Their ranges follow from the learned ones through the
elementwise ops around them (`derive_ranges`):

- forward: MobileNetV3's hard-swish is `x * relu6(x + 3) / 6` in ONNX; with `x` in
  `[lo, hi]`, `relu6(x + 3)` lies in `[0, min(6, hi + 3)]` and the `/ 6` in a sixth of that;
- backward: a convolution whose output is only `+ 3` and then `relu6` (its hard sigmoid,
  which TFLite folds into the bias) needs no range beyond `relu6`'s learned one minus 3:
  anything outside it is clipped away after; an input only a concatenation reads takes
  the concatenation's range (the QAT graph quantizes it there, as TFLite computes it).

Example:
```python
from keras_unet.export.qat_ranges import tensor_ranges

ranges, derived = tensor_ranges("prepared.onnx", probe_model, quantizers, images)
```
"""

import numpy as np

# Keras and onnxruntime compute the same float graph to about 1e-6 relative.
MATCH_RTOL = 1e-4
# Ops that move values without changing them: a range passes through both ways.
SAME_RANGE = ("Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten",
              "DepthToSpace")
# Ops whose outputs lie within their input's range (padding adds zeros, which every range
# holds): onnxruntime quantizes their output with their input's scale and zero point.
WITHIN_RANGE = ("MaxPool", "Resize", "Pad", "Slice", "Split", "Gather")
# Monotone elementwise ops with one constant operand (tensor first or second).
AFFINE = ("Add", "Sub", "Mul", "Div")


def onnx_intermediates(path, images, input_name):
    """`{tensor name: value}` of every float tensor the ONNX graph computes on `images`.

    Example:
    ```python
    values = onnx_intermediates("prepared.onnx", images, "image")
    ```
    """
    import onnx
    import onnxruntime

    proto = onnx.load(str(path))
    floats = {info.name for info in proto.graph.value_info
              if info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    known = {output.name for output in proto.graph.output}
    for name in sorted(floats - known):
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    runs = [session.run(names, {input_name: image[None]}) for image in images]
    values = {name: np.concatenate([run[i] for run in runs]) for i, name in enumerate(names)}
    values[input_name] = np.asarray(images, "float32")
    return values


def match_tensors(probe_values, onnx_values):
    """For each probe array, the names of the ONNX tensors holding the same values.

    Example:
    ```python
    match_tensors([np.arange(4.0)], {"t": np.arange(4.0)[::-1]})   # [['t']]
    ```
    """
    by_size = {}
    for name, value in onnx_values.items():
        by_size.setdefault(value.size, []).append((name, np.sort(value, axis=None)))
    matches = []
    for probe in probe_values:
        wanted = np.sort(np.asarray(probe, "float32"), axis=None)
        tolerance = MATCH_RTOL * max(1.0, float(np.abs(wanted).max(initial=0.0)))
        matches.append([name for name, value in by_size.get(wanted.size, [])
                        if np.abs(value - wanted).max(initial=0.0) <= tolerance])
    return matches


def _constant(proto, name):
    from onnx import numpy_helper

    for init in proto.graph.initializer:
        if init.name == name:
            value = numpy_helper.to_array(init)
            return float(value.reshape(())) if value.size == 1 else None
    return None


def _forward(node, proto, ranges):
    """The range of `node`'s output from its inputs' ranges, or None."""
    if node.op_type in SAME_RANGE + WITHIN_RANGE and node.input[0] in ranges:
        return ranges[node.input[0]]
    if node.op_type in ("Relu", "Clip") and node.input[0] in ranges:
        low, high = ranges[node.input[0]]
        floor = _constant(proto, node.input[1]) if len(node.input) > 1 and node.input[1] else None
        cap = _constant(proto, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        floor = 0.0 if node.op_type == "Relu" else (-np.inf if floor is None else floor)
        cap = np.inf if cap is None else cap
        return (float(np.clip(low, floor, cap)), float(np.clip(high, floor, cap)))
    if node.op_type in AFFINE and len(node.input) == 2:
        for tensor, other in ((0, 1), (1, 0)):
            constant = _constant(proto, node.input[other])
            if node.input[tensor] in ranges and constant is not None:
                if node.op_type == "Sub" and tensor == 1:
                    return None  # constant - x: not needed by any model here
                low, high = ranges[node.input[tensor]]
                ends = {"Add": (low + constant, high + constant),
                        "Sub": (low - constant, high - constant),
                        "Mul": (low * constant, high * constant),
                        "Div": (low / constant, high / constant) if constant else None}[node.op_type]
                return None if ends is None else (min(ends), max(ends))
    return None


def _backward(node, proto, ranges):
    """The range a tensor needs when `node`, its only consumer, maps it onto a known range."""
    output = ranges.get(node.output[0])
    if output is None:
        return None
    if node.op_type in SAME_RANGE + ("Relu", "Clip"):
        return output  # values outside the output's range are clipped after anyway
    if node.op_type == "Concat":
        return output  # an input only the concatenation reads is quantized at its scale
    if node.op_type in ("Add", "Sub") and len(node.input) == 2:
        constant = _constant(proto, node.input[1])
        if constant is not None:
            shift = -constant if node.op_type == "Add" else constant
            return (output[0] + shift, output[1] + shift)
    return None


def derive_ranges(proto, ranges):
    """Ranges of the tensors around known ones, through elementwise ops (module docstring).

    Args:
        proto: the float `onnx.ModelProto`.
        ranges: `{tensor name: (low, high)}` known so far; extended in place.

    Returns:
        The names whose range was derived.

    Example:
    ```python
    derived = derive_ranges(onnx.load("prepared.onnx"), ranges)
    ```
    """
    consumers = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    derived = []
    changed = True
    while changed:
        changed = False
        for node in proto.graph.node:
            found = node.output and node.output[0] not in ranges and _forward(node, proto, ranges)
            if found:
                ranges[node.output[0]] = found
                derived.append(node.output[0])
                changed = True
        for node in reversed(proto.graph.node):
            for name in node.output:
                users = consumers.get(name, [])
                if name in ranges or len(users) != 1:
                    continue
                found = _backward(users[0], proto, ranges)
                if found:
                    ranges[name] = found
                    derived.append(name)
                    changed = True
    return derived


def tensor_ranges(path, probe_model, quantizers, images, input_name="image"):
    """`({ONNX tensor: (low, high)}, derived names)` for a QAT model's float ONNX graph.

    Args:
        path: the float ONNX graph (after `quant_pre_process`).
        probe_model: Keras model whose outputs are the tensors the quantizers round.
        quantizers: the `ActivationQuantizer` of each probe output, in order.
        images: a few images `(N, H, W, C)`; noise works (only values are compared).
        input_name: the ONNX input.

    Example:
    ```python
    ranges, derived = tensor_ranges(prepared, probe_model, quantizers, images)
    ```
    """
    import onnx

    probe_values = probe_model.predict(images, verbose=0)
    if len(quantizers) == 1:
        probe_values = [probe_values]
    matches = match_tensors(probe_values, onnx_intermediates(path, images, input_name))
    ranges = {}
    for quantizer, names in zip(quantizers, matches):
        for name in names:
            ranges[name] = quantizer.quantization_range()
    derived = derive_ranges(onnx.load(str(path)), ranges)
    return ranges, derived
