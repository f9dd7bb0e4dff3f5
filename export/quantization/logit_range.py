"""A binary model's int8 logit range, never wider than the sigmoid after it can tell apart.

A binary U-Net ends in a convolution (the logit) and a sigmoid, and its masks are
`p >= 0.5`, that is `logit >= 0`. Post-training calibration gives the logit the range the
float model reaches, tens of units wide, so every logit near 0 rounds onto the same few
codes and pixels near the boundary flip. Beyond |x| = 8 a sigmoid is within 1/2981 of 0 or
1, so all such logits give the same uint8 output code (`SIGMOID_INPUT_RANGE`, the range QAT
fixes for the same reason): the range is clipped to [-8, 8] and no output code changes
except by the finer step (0.063 there). The head's per-layer error does not show the
problem: it matters only for the pixels whose logit is near 0.

The requantization of the convolution and the LOGISTIC/Sigmoid kernel are derived from the
tensors' scales when the file is loaded, so only the logit's scale and zero point change.
Files whose logit already fits, multi-class models, heads kept in float and sigmoids
inside the model (attention gates) come back as they were.

Why: see docs/notes/2026-11-28-logit-clip.md.

Example:
```python
from keras_unet.export.quantization.logit_range import onnx_clip_logit_range, tflite_clip_logit_range

model_bytes = tflite_clip_logit_range(model_bytes)
onnx_bytes = onnx_clip_logit_range(onnx_bytes)
```
"""

from typing import Optional

import numpy as np

from keras_unet.quantization.registry import SIGMOID_INPUT_RANGE

# What stands between an ONNX file's sigmoid and its output: Q/DQ pairs and reshapes.
ONNX_CARRIERS = ("QuantizeLinear", "DequantizeLinear", "Reshape", "Transpose", "Identity")


def clipped_quantization(scale, zero_point, qmin, qmax) -> Optional[tuple]:
    """`(scale, zero_point)` of the range `(scale, zero_point)` covers, clipped to
    `SIGMOID_INPUT_RANGE`, or None when it already fits (0 stays a code)."""
    low, high = (qmin - zero_point) * scale, (qmax - zero_point) * scale
    bound_low, bound_high = SIGMOID_INPUT_RANGE
    if low >= bound_low - 1e-6 and high <= bound_high + 1e-6:
        return None
    low, high = max(low, bound_low), min(high, bound_high)
    new_scale = (high - low) / (qmax - qmin)
    new_zero = int(np.clip(np.round(qmin - low / new_scale), qmin, qmax))
    return float(new_scale), new_zero


# TFLite ----------------------------------------------------------------------------------
def _tflite_logit(model, schema):
    """Index of the int8 tensor the output's LOGISTIC reads, or None."""
    from keras_unet.export.quantization.tflite_graph import builtin_codes

    graph = model.subgraphs[0]
    codes = builtin_codes(model)

    def opcode(op):
        return codes[op.opcodeIndex]

    ops = graph.operators or []
    carriers = (schema.BuiltinOperator.QUANTIZE, schema.BuiltinOperator.DEQUANTIZE,
                schema.BuiltinOperator.RESHAPE)

    def reaches_output(tensor):
        # The probabilities, or what only I/O conversions and reshapes make of them.
        while tensor not in list(graph.outputs):
            readers = [op for op in ops if tensor in list(op.inputs)]
            if len(readers) != 1 or opcode(readers[0]) not in carriers:
                return False
            tensor = int(readers[0].outputs[0])
        return True

    # Attention gates have sigmoids too; the head's is the one the output comes from.
    logistic = [op for op in ops if opcode(op) == schema.BuiltinOperator.LOGISTIC
                and reaches_output(int(op.outputs[0]))]
    if len(logistic) != 1:
        return None
    logit = int(logistic[0].inputs[0])
    tensor = graph.tensors[logit]
    quant = tensor.quantization
    readers = [op for op in ops if logit in list(op.inputs)]
    if (tensor.type != schema.TensorType.INT8 or int(tensor.shape[-1]) != 1 or len(readers) != 1
            or logit in list(graph.outputs) or quant is None or quant.scale is None
            or len(quant.scale) != 1):
        return None
    return logit


def tflite_clip_logit_range(model_bytes) -> bytes:
    """A full-int8 binary `.tflite` file with its logit range clipped to [-8, 8].

    Example:
    ```python
    model_bytes = tflite_clip_logit_range(model_bytes)
    ```
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    if schema.Model.GetRootAs(model_bytes, 0).SubgraphsLength() != 1:
        return model_bytes
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    logit = _tflite_logit(model, schema)
    if logit is None:
        return model_bytes
    quant = model.subgraphs[0].tensors[logit].quantization
    clipped = clipped_quantization(float(quant.scale[0]), int(quant.zeroPoint[0]), -128, 127)
    if clipped is None:
        return model_bytes
    quant.scale, quant.zeroPoint = [clipped[0]], [clipped[1]]
    quant.min, quant.max = None, None
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# ONNX ------------------------------------------------------------------------------------
def _onnx_logit(graph):
    """`(QuantizeLinear, DequantizeLinear)` in front of the output's Sigmoid, or None."""
    from keras_unet.export.quantization.onnx_debug import _producers

    outputs = {output.name for output in graph.output}

    def reaches_output(name):
        while name not in outputs:
            readers = [node for node in graph.node if name in node.input]
            if len(readers) != 1 or readers[0].op_type not in ONNX_CARRIERS:
                return False
            name = readers[0].output[0]
        return True

    # Attention gates have sigmoids too; the head's is the one the output comes from.
    sigmoids = [node for node in graph.node
                if node.op_type == "Sigmoid" and reaches_output(node.output[0])]
    if len(sigmoids) != 1:
        return None
    producers = _producers(graph)
    dequantize = producers.get(sigmoids[0].input[0])
    if dequantize is None or dequantize.op_type != "DequantizeLinear":
        return None
    quantize = producers.get(dequantize.input[0])
    if quantize is None or quantize.op_type != "QuantizeLinear":
        return None
    return quantize, dequantize


def onnx_clip_logit_range(model_bytes) -> bytes:
    """A QDQ binary `.onnx` file with its logit range clipped to [-8, 8].

    The QuantizeLinear/DequantizeLinear pair in front of the output's Sigmoid gets the
    clipped range's scale and zero point; onnxruntime fuses the pair into the integer
    kernels around it when it loads the file.

    Example:
    ```python
    onnx_bytes = onnx_clip_logit_range(onnx_bytes)
    ```
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    pair = _onnx_logit(graph)
    if pair is None:
        return model_bytes
    quantize, dequantize = pair
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    if len(quantize.input) < 3 or list(quantize.input[1:]) != list(dequantize.input[1:]):
        return model_bytes
    scale_name, zero_name = quantize.input[1], quantize.input[2]
    if scale_name not in initializers or zero_name not in initializers:
        return model_bytes
    scale = numpy_helper.to_array(initializers[scale_name])
    zero = numpy_helper.to_array(initializers[zero_name])
    users = [node for node in graph.node if scale_name in node.input or zero_name in node.input]
    if scale.size != 1 or zero.size != 1 or len(users) != 2:
        return model_bytes
    if zero.dtype not in (np.uint8, np.int8):
        return model_bytes  # a 16-bit logit (head kept at int16): fine enough as it is
    qmin, qmax = (0, 255) if zero.dtype == np.uint8 else (-128, 127)
    clipped = clipped_quantization(float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0]), qmin, qmax)
    if clipped is None:
        return model_bytes
    for name, value in ((scale_name, np.asarray(clipped[0], scale.dtype).reshape(scale.shape)),
                        (zero_name, np.asarray(clipped[1], zero.dtype).reshape(zero.shape))):
        initializers[name].CopyFrom(numpy_helper.from_array(value, name))
    return model.SerializeToString()
