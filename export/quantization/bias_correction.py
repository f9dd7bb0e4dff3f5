"""Bias correction: each convolution's bias absorbs the mean shift its int8 weights cause.

Both quantizers write a convolution's weights per output channel, symmetric, on the grid
`scale = max |w| / 127` (TFLite's narrow range; onnxruntime's symmetric `QInt8`). The
rounding error `E = Q(W) - W` moves every output by `conv(x, E)`; its mean over the data is
not noise but a bias, which each layer adds and the next ones carry. With `m` the mean of
each input channel over the calibration images, that mean shift is, per output channel,

    shift[o] = sum over (i, kh, kw) of E[o, i, kh, kw] * m[i]

(padding ignored: measured on CamVid, the exact `mean(conv(x, E))` did no better).
Subtracting it from the float bias before quantization removes it; the bias is int32 in the
file, fine enough to carry the correction. This is the empirical bias correction of Nagel
et al., "Data-Free Quantization Through Weight Equalization and Bias Correction" (2019), the
correction OpenVINO's NNCF applies by default in its post-training quantization.

It is a calibration variant of its own (`"percentile+bias"`, see `variants`): the int8 step tries the best
calibration again with it when that one falls short of the target, and keeps it only when
the file verifies better: it helped on one model and hurt on another.
Ops kept in float keep their bias (their weights are not rounded). Why, and the
measurements: docs/notes/2026-12-07-bias-correction.md.

Example:
```python
from keras_unet.export.quantization.bias_correction import tflite_correct_biases

corrected = tflite_correct_biases(calibrated_model, sampler.channel_means())
```
"""

import copy
from typing import Any, Optional

import numpy as np


def weight_rounding_error(weights: Any) -> np.ndarray:
    """`Q(W) - W` of float `weights` `(out channels, ...)` quantized per output channel,
    symmetric int8 over [-127, 127] (a channel of zeros stays exact)."""
    from keras_unet.export.quantization.weight_rounding import nearest_round

    weights = np.asarray(weights, np.float64)
    return nearest_round(weights) - weights


def output_shift(weights: Any, input_means: Any, groups: int = 1) -> Optional[np.ndarray]:
    """The mean shift of each output channel that int8 rounding of `weights` causes.

    Args:
        weights: float kernel `(out, in / groups, kh, kw)` (ONNX's Conv layout).
        input_means: mean of each input channel over the calibration images.
        groups: convolution groups (the input channels for a depthwise convolution).

    Returns:
        `(out,)` float32, or None when the means do not fit the kernel.
    """
    error = weight_rounding_error(weights).sum(axis=(2, 3))  # (out, in / groups)
    means = np.asarray(input_means, np.float64).ravel()
    outputs, per_group = error.shape
    if groups < 1 or outputs % groups or means.size != per_group * groups:
        return None
    channel = (np.arange(outputs) // (outputs // groups))[:, None] * per_group + np.arange(per_group)
    return (error * means[channel]).sum(axis=1).astype(np.float32)


def tflite_correct_biases(model_bytes: Any, means: dict, keep: Any = ()) -> bytes:
    """A float (calibrated) `.tflite` model with each CONV_2D's and DEPTHWISE_CONV_2D's bias
    corrected for its int8 weights; ops whose output is named in `keep` (kept in float) and
    ops without a constant float kernel and bias, or without input means, are left as they are.

    Args:
        model_bytes: a float `.tflite` model, e.g. `TFLiteQuantizer.calibrated_model`.
        means: `{tensor name: channel means}` (`RangeSampler.channel_means`, NHWC).
        keep: output tensor names of ops left uncorrected.
    """
    from ai_edge_litert import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    from keras_unet.export.quantization.tflite_graph import builtin_codes, float_constant

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    graph = model.subgraphs[0]
    codes = builtin_codes(model)
    kinds = {schema.BuiltinOperator.CONV_2D: "conv",
             schema.BuiltinOperator.DEPTHWISE_CONV_2D: "depthwise"}
    # The converter shares equal constants (zero biases) between ops, as one tensor or one
    # buffer: a corrected bias that is shared gets a tensor and buffer of its own.
    buffer_users: dict = {}
    for tensor in graph.tensors:
        buffer_users[tensor.buffer] = buffer_users.get(tensor.buffer, 0) + 1
    tensor_readers: dict = {}
    for op in graph.operators or []:
        for index in op.inputs:
            tensor_readers[index] = tensor_readers.get(index, 0) + 1
    keep = set(keep)
    for op in graph.operators or []:
        kind = kinds.get(codes[op.opcodeIndex])
        inputs = list(op.inputs)
        if kind is None or len(inputs) < 3 or min(inputs[:3]) < 0:
            continue
        if graph.tensors[op.outputs[0]].name.decode() in keep:
            continue
        source, kernel, bias = (graph.tensors[index] for index in inputs[:3])
        mean = means.get(source.name.decode())
        weights, biases = float_constant(model, kernel), float_constant(model, bias)
        if mean is None or weights is None or biases is None:
            continue
        if kind == "conv":  # (out, kh, kw, in / groups)
            layout = weights.transpose(0, 3, 1, 2)
            groups = max(1, np.size(mean) // max(layout.shape[1], 1))
        else:  # (1, kh, kw, out)
            layout = weights.transpose(3, 0, 1, 2)
            groups = np.size(mean)
        shift = output_shift(layout, mean, groups)
        if shift is None or shift.shape != biases.shape:
            continue
        data = np.frombuffer((biases - shift).astype(np.float32).tobytes(), np.uint8)
        if tensor_readers[inputs[2]] > 1 or buffer_users[bias.buffer] > 1:
            bias = copy.deepcopy(bias)
            bias.name = bias.name + f"_corrected_{len(graph.tensors)}".encode()
            model.buffers.append(type(model.buffers[bias.buffer])())
            bias.buffer = len(model.buffers) - 1
            graph.tensors.append(bias)
            op.inputs[2] = len(graph.tensors) - 1
        model.buffers[bias.buffer].data = data
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def onnx_correct_biases(model: Any, means: dict, exclude: Any = ()) -> Any:
    """A copy of a float ONNX `ModelProto` with each `Conv`'s bias corrected for its int8
    weights (a bias added where the Conv has none); nodes named in `exclude` (kept in float)
    and Convs without an initializer kernel or input means are left as they are.

    Args:
        model: the float graph `quantize_static` reads (after `quant_pre_process`).
        means: `{tensor name: channel means}` (`RangeSampler.channel_means`, NCHW).
        exclude: node names left uncorrected.
    """
    import onnx
    from onnx import numpy_helper

    corrected = onnx.ModelProto()
    corrected.CopyFrom(model)
    graph = corrected.graph
    inits = {init.name: init for init in graph.initializer}
    readers: dict = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    exclude = set(exclude)
    for node in graph.node:
        if node.op_type != "Conv" or node.name in exclude or len(node.input) < 2:
            continue
        mean = means.get(node.input[0])
        kernel = inits.get(node.input[1])
        if mean is None or kernel is None or kernel.data_type != onnx.TensorProto.FLOAT:
            continue
        weights = numpy_helper.to_array(kernel)
        groups = next((attr.i for attr in node.attribute if attr.name == "group"), 1)
        shift = output_shift(weights, mean, groups) if weights.ndim == 4 else None
        if shift is None:
            continue
        has_bias = len(node.input) > 2 and node.input[2] in inits
        bias = (numpy_helper.to_array(inits[node.input[2]]) if has_bias
                else np.zeros(len(weights), np.float32))
        name = node.input[2] if has_bias and readers[node.input[2]] == 1 else f"{node.name}_bias_corrected"
        new = numpy_helper.from_array((bias - shift).astype(np.float32), name)
        if name in inits:
            inits[name].CopyFrom(new)
        else:
            graph.initializer.append(new)
            inits[name] = graph.initializer[-1]
            if len(node.input) > 2:
                node.input[2] = name
            else:
                node.input.append(name)
    return corrected
