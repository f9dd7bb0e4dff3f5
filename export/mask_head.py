"""Append the mask step to an exported file: the device gets a uint8 class-id mask, no maths.

`--output mask` exports end the graph with what `predict_masks` does after the model:

- binary (one output channel): `p >= threshold`, then a cast to uint8 (0/1);
- multi-class: arg-max over the classes (the first class wins a tie, as numpy's), then uint8.

The output is `(N, H, W)` uint8. It is appended to the verified probability file, so the
model itself is the one that passed verification; the pipeline then checks that the mask file
gives the masks the probability file gives (`keras_unet.export.checks.with_mask_head`). For an
int8 file with a uint8 output, the threshold is compared in the output's integer codes
(`code >= ceil(threshold / scale + zero_point)`), which is `dequantized p >= threshold`.

Example:
```python
from keras_unet.export.mask_head import tflite_with_mask_head

mask_bytes = tflite_with_mask_head(model_bytes, num_classes=1, threshold=0.5)
```
"""

import math

import numpy as np

MASK_OUTPUT_NAME = "mask"


def threshold_code(threshold, scale, zero_point) -> int:
    """The smallest integer code whose dequantized value is `>= threshold`."""
    code = math.ceil(threshold / scale + zero_point - 1e-9)
    while (code - 1 - zero_point) * scale >= threshold:  # float rounding at the boundary
        code -= 1
    while (code - zero_point) * scale < threshold:
        code += 1
    return code


# TFLite ----------------------------------------------------------------------------------
def tflite_with_mask_head(model_bytes, num_classes, threshold=0.5) -> bytes:
    """`.tflite` contents whose single output becomes a `(N, H, W)` uint8 mask.

    Args:
        model_bytes: a verified `.tflite` file's contents (float32 or uint8 output).
        num_classes: 1 (binary, threshold) or more (arg-max).
        threshold: binary models: foreground where `p >= threshold`.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from keras_unet.export.quantization.tflite_graph import opcode_index

    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    graph = model.subgraphs[0]
    output_index = graph.outputs[0]
    output = graph.tensors[output_index]
    shape = [int(d) for d in output.shape]
    mask_shape = shape[:-1]

    def tensor(name, tensor_shape, dtype, data=None, quantization=None):
        buffer = schema.BufferT()
        if data is not None:
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        model.buffers.append(buffer)
        new = schema.TensorT()
        new.shape, new.type, new.name = list(tensor_shape), dtype, name.encode()
        new.buffer = len(model.buffers) - 1
        new.quantization = quantization
        graph.tensors.append(new)
        return len(graph.tensors) - 1

    def operator(builtin, inputs, outputs, options_type=0, options=None):
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode_index(model, builtin), inputs, outputs
        op.builtinOptionsType, op.builtinOptions = options_type, options
        graph.operators.append(op)

    mask = tensor(MASK_OUTPUT_NAME, mask_shape, schema.TensorType.UINT8)
    if num_classes == 1:
        if output.type == schema.TensorType.UINT8:
            q = output.quantization
            code = threshold_code(threshold, float(q.scale[0]), int(q.zeroPoint[0]))
            limit = tensor("mask/threshold", [1], schema.TensorType.UINT8,
                           np.array([min(max(code, 0), 255)], np.uint8), _copy_quantization(q))
        else:
            limit = tensor("mask/threshold", [1], schema.TensorType.FLOAT32,
                           np.array([threshold], np.float32))
        above = tensor("mask/above", shape, schema.TensorType.BOOL)
        operator(schema.BuiltinOperator.GREATER_EQUAL, [output_index, limit], [above])
        as_uint8 = tensor("mask/uint8", shape, schema.TensorType.UINT8)
        options = schema.CastOptionsT()
        options.inDataType, options.outDataType = schema.TensorType.BOOL, schema.TensorType.UINT8
        operator(schema.BuiltinOperator.CAST, [above], [as_uint8],
                 schema.BuiltinOptions.CastOptions, options)
        # SQUEEZE, not RESHAPE: no fixed batch in the graph, so the file still takes any batch.
        options = schema.SqueezeOptionsT()
        options.squeezeDims = [len(shape) - 1]
        operator(schema.BuiltinOperator.SQUEEZE, [as_uint8], [mask],
                 schema.BuiltinOptions.SqueezeOptions, options)
    else:
        axis = tensor("mask/axis", [1], schema.TensorType.INT32, np.array([len(shape) - 1], np.int32))
        index = tensor("mask/argmax", mask_shape, schema.TensorType.INT32)
        options = schema.ArgMaxOptionsT()
        options.outputType = schema.TensorType.INT32
        operator(schema.BuiltinOperator.ARG_MAX, [output_index, axis], [index],
                 schema.BuiltinOptions.ArgMaxOptions, options)
        options = schema.CastOptionsT()
        options.inDataType, options.outDataType = schema.TensorType.INT32, schema.TensorType.UINT8
        operator(schema.BuiltinOperator.CAST, [index], [mask], schema.BuiltinOptions.CastOptions,
                 options)
    graph.outputs = [mask]
    for signature in model.signatureDefs or []:
        for entry in signature.outputs or []:
            if entry.tensorIndex == output_index:
                entry.tensorIndex, entry.name = mask, MASK_OUTPUT_NAME.encode()
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _copy_quantization(quantization):
    from ai_edge_litert import schema_py_generated as schema

    copy = schema.QuantizationParametersT()
    copy.scale, copy.zeroPoint = list(quantization.scale), list(quantization.zeroPoint)
    return copy


# ONNX ------------------------------------------------------------------------------------
def onnx_with_mask_head(model_bytes, num_classes, threshold=0.5) -> bytes:
    """`.onnx` contents whose single (float) output becomes a `(N, H, W)` uint8 mask."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    output = graph.output[0]
    name = output.name
    dims = [d for d in output.type.tensor_type.shape.dim][:-1]
    if num_classes == 1:
        graph.initializer.extend([
            numpy_helper.from_array(np.array(threshold, np.float32), "mask/threshold"),
            numpy_helper.from_array(np.array([-1], np.int64), "mask/last_axis"),
        ])
        nodes = [
            helper.make_node("GreaterOrEqual", [name, "mask/threshold"], ["mask/above"]),
            helper.make_node("Cast", ["mask/above"], ["mask/uint8"], to=TensorProto.UINT8),
            helper.make_node("Squeeze", ["mask/uint8", "mask/last_axis"], [MASK_OUTPUT_NAME]),
        ]
    else:
        nodes = [
            helper.make_node("ArgMax", [name], ["mask/argmax"], axis=-1, keepdims=0),
            helper.make_node("Cast", ["mask/argmax"], [MASK_OUTPUT_NAME], to=TensorProto.UINT8),
        ]
    graph.node.extend(nodes)
    mask = helper.make_tensor_value_info(MASK_OUTPUT_NAME, TensorProto.UINT8, None)
    mask.type.tensor_type.shape.dim.extend(dims)
    del graph.output[:]
    graph.output.append(mask)
    onnx.checker.check_model(model)
    return model.SerializeToString()
