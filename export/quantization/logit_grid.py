"""A binary model's int8 logit grid placed so that rounding never moves a pixel across 0.5.

A binary U-Net ends in a convolution (the logit) and a sigmoid, and its masks are
`p >= 0.5`, that is `logit >= 0`. In an int8 file the logit is rounded to its tensor's grid
`k * scale`, which has 0 on it: every logit in `[-scale/2, 0)` rounds to 0, reads `p = 0.5`
and becomes foreground. That one rounding was most of what post-training int8 cost the
masks. Measured on the 84 held-out test images of the int8 matrix, with the float model's
own logits rounded and nothing else changed (mask agreement with the float masks):

| logit grid | seed model | MobileNetV3-large | ResNet50 |
|---|---|---|---|
| calibrated (scale 0.342, the seed file's) | 0.980 | 0.983 | 0.977 |
| [-8, 8] (scale 16/255, what QAT uses) | 0.996 | 0.997 | 0.996 |
| [-8, 8], 0 half a step off the grid | 1.000 | 1.000 | 1.000 |

The whole seed TFLite int8 file agreed 0.980 with the float model on those images: its
head was all of its loss. No per-layer error shows it (the head's SQNR was 43 dB); it
matters only for the few pixels whose logit is within a step of 0 (0.7% of the
foreground within 0.03).

So every int8 file of a binary model gets its logit on the fixed [-8, 8] grid (beyond 8 a
sigmoid is within 1/2981 of 1: the same uint8 code; `SIGMOID_INPUT_RANGE`) and the head's
int32 bias lowered by half a step: a logit in `[0, scale)` then rounds to code 0 (`p =
0.5`, foreground) and one in `[-scale, 0)` to code -1 (`p = 0.484`, background), so the
file's mask is the sign of the logit the int8 convolution computed. Its probabilities read
up to half a logit step low (at most 0.008 near 0.5, about two output codes).

Left unchanged: multi-class models (arg-max over logits), files whose head stayed float,
and sigmoids inside the model (attention gates). A QAT model's head quantizer makes the
same shift at inference (`ActivationQuantizer(keep_sign=True)`), so the file and its QAT
model agree.

Example:
```python
from keras_unet.export.quantization.logit_grid import onnx_sign_exact_logit, tflite_sign_exact_logit

model_bytes = tflite_sign_exact_logit(model_bytes)
onnx_bytes = onnx_sign_exact_logit(onnx_bytes)
```
"""

import numpy as np

from keras_unet.quantization.registry import SIGMOID_INPUT_RANGE

LOGIT_SCALE = (SIGMOID_INPUT_RANGE[1] - SIGMOID_INPUT_RANGE[0]) / 255.0
# What stands between an ONNX file's sigmoid and its output: Q/DQ pairs and reshapes.
ONNX_CARRIERS = ("QuantizeLinear", "DequantizeLinear", "Reshape", "Transpose", "Identity")


def _bias_shift(bias_codes, bias_scale):
    """The int32 bias codes lowered by half a logit step."""
    shift = np.round(0.5 * LOGIT_SCALE / np.asarray(bias_scale, "float64"))
    shifted = np.asarray(bias_codes, "int64") - shift.astype("int64")
    return np.clip(shifted, np.iinfo("int32").min, np.iinfo("int32").max).astype("int32")


# TFLite ----------------------------------------------------------------------------------
def _tflite_head(model, schema):
    """`(logit tensor, bias tensor)` indices of the binary head, or None."""
    graph = model.subgraphs[0]

    def opcode(op):
        code = model.operatorCodes[op.opcodeIndex]
        return max(code.builtinCode, code.deprecatedBuiltinCode)

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
    readers = [op for op in ops if logit in list(op.inputs)]
    producers = [op for op in ops if logit in list(op.outputs)]
    if (tensor.type != schema.TensorType.INT8 or int(tensor.shape[-1]) != 1
            or len(readers) != 1 or len(producers) != 1 or logit in list(graph.outputs)
            or opcode(producers[0]) != schema.BuiltinOperator.CONV_2D
            or len(producers[0].inputs) < 3 or producers[0].inputs[2] < 0):
        return None
    bias = int(producers[0].inputs[2])
    bias_tensor = graph.tensors[bias]
    quant = bias_tensor.quantization
    if (bias_tensor.type != schema.TensorType.INT32 or quant is None or quant.scale is None
            or len(quant.scale) != 1 or model.buffers[bias_tensor.buffer].data is None):
        return None
    return logit, bias


def tflite_sign_exact_logit(model_bytes):
    """A full-int8 binary `.tflite` file with its logit on the [-8, 8] grid, 0 between codes.

    Sets the scale of the tensor the single LOGISTIC reads to 16/255 (zero point 0) and
    lowers its CONV_2D's int32 bias by half that step; TFLite derives each kernel's
    requantization from the tensors' scales when it loads the file, so nothing else
    changes. Any other file (float, multi-class, a head kept in float) comes back as it was.

    Example:
    ```python
    model_bytes = tflite_sign_exact_logit(model_bytes)
    ```
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(model_bytes, 0)
    if root.SubgraphsLength() != 1:
        return model_bytes
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    head = _tflite_head(model, schema)
    if head is None:
        return model_bytes
    logit, bias = head
    graph = model.subgraphs[0]
    quant = graph.tensors[logit].quantization
    quant.scale, quant.zeroPoint = [LOGIT_SCALE], [0]
    quant.min, quant.max = [SIGMOID_INPUT_RANGE[0]], [SIGMOID_INPUT_RANGE[1]]
    buffer = model.buffers[graph.tensors[bias].buffer]
    codes = np.frombuffer(np.asarray(buffer.data, "uint8").tobytes(), "<i4")
    buffer.data = np.frombuffer(
        _bias_shift(codes, graph.tensors[bias].quantization.scale[0]).astype("<i4").tobytes(),
        "uint8")
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# ONNX ------------------------------------------------------------------------------------
def _producer(graph, name):
    found = [node for node in graph.node if name in node.output]
    return found[0] if len(found) == 1 else None


def _onnx_head(graph):
    """`(QuantizeLinear, DequantizeLinear, bias DequantizeLinear)` of the head, or None."""
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
    dequantize = _producer(graph, sigmoids[0].input[0])
    if dequantize is None or dequantize.op_type != "DequantizeLinear":
        return None
    quantize = _producer(graph, dequantize.input[0])
    if quantize is None or quantize.op_type != "QuantizeLinear":
        return None
    conv = _producer(graph, quantize.input[0])
    if conv is None or conv.op_type != "Conv" or len(conv.input) < 3:
        return None
    bias = _producer(graph, conv.input[2])
    if bias is None or bias.op_type != "DequantizeLinear":
        return None
    return quantize, dequantize, bias


def onnx_sign_exact_logit(model_bytes):
    """A QDQ binary `.onnx` file with its logit on the [-8, 8] grid, 0 between codes.

    The QuantizeLinear/DequantizeLinear pair in front of the single Sigmoid gets scale
    16/255 (zero point 128 for uint8, 0 for int8) and the Conv before it an int32 bias
    half a step lower. Any other file comes back as it was.

    Example:
    ```python
    onnx_bytes = onnx_sign_exact_logit(onnx_bytes)
    ```
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    head = _onnx_head(graph)
    if head is None:
        return model_bytes
    quantize, dequantize, bias = head
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    names = [quantize.input[1], quantize.input[2] if len(quantize.input) > 2 else None,
             bias.input[0], bias.input[1]]
    if any(name not in initializers for name in names) or list(quantize.input[1:]) != list(
            dequantize.input[1:]):
        return model_bytes
    scale_name, zero_name, codes_name, bias_scale_name = names
    zero = numpy_helper.to_array(initializers[zero_name])
    codes = numpy_helper.to_array(initializers[codes_name])
    bias_scale = numpy_helper.to_array(initializers[bias_scale_name])
    users = [node for node in graph.node if scale_name in node.input or zero_name in node.input]
    if (zero.size != 1 or codes.dtype != np.int32 or codes.size != 1 or bias_scale.size != 1
            or len(users) != 2):
        return model_bytes
    middle = 128 if zero.dtype == np.uint8 else 0
    replacements = {
        scale_name: np.asarray(LOGIT_SCALE, "float32").reshape(
            numpy_helper.to_array(initializers[scale_name]).shape),
        zero_name: np.asarray(middle, zero.dtype).reshape(zero.shape),
        codes_name: _bias_shift(codes, bias_scale.reshape(-1)[0]).reshape(codes.shape),
    }
    for name, value in replacements.items():
        initializers[name].CopyFrom(numpy_helper.from_array(value, name))
    return model.SerializeToString()
