"""Int8 requantizations in a `.tflite` file that TFLite's built-in kernels compute exactly.

Where one int8 tensor is read at two scales (a QAT U-Net's skip connection: the encoder's
own range for its max pool, the decoder concatenation's range for the skip), the converter
writes a `QUANTIZE` op from int8 to int8. TFLite's built-in kernel for it (the one that runs
without the XNNPack delegate: `OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`, TFLite
Micro, or where a delegate hands the op back) multiplies the int8 value by a fixed-point
multiplier and then shifts right with rounding: for a scale ratio below 0.5 the value is
rounded twice, values come out one step high, and downstream the mask's logit drifts up.
XNNPack rounds once.

`precise_requantize` writes each such op as a 1x1 `DEPTHWISE_CONV_2D` with weights 1 (int8
127 at scale 1/127 per channel) and no bias: the same requantization from an accumulator
127 times larger, which the kernels round once. XNNPack runs either form. Post-training
files already requantize their skips that way (`keras_unet.export.decoder_form`).

Why: see docs/notes/2026-11-28-requantization-and-skip-scales.md.

Example:
```python
from keras_unet.export.quantization.requantize import precise_requantize

model_bytes = precise_requantize(model_bytes)
```
"""

import numpy as np

# Below this input/output scale ratio TFLite's fixed-point multiply shifts right after
# rounding (QuantizeMultiplier gives a negative shift): the second rounding.
EXACT_RATIO = 0.5
WEIGHT = 127  # int8 weight 127 at scale 1/127: the value 1.0, exactly
DEPTHWISE_VERSION = 3  # per-channel int8 DEPTHWISE_CONV_2D


def _imprecise_requantizations(graph, schema, codes):
    """Indices of the QUANTIZE ops from and to one 8-bit type with a ratio below 0.5."""
    found = []
    eight_bit = (schema.TensorType.INT8, schema.TensorType.UINT8)
    for index, op in enumerate(graph.operators):
        if codes[op.opcodeIndex] != schema.BuiltinOperator.QUANTIZE:
            continue
        source, target = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
        if source.type not in eight_bit or target.type != source.type:
            continue
        if source.quantization is None or target.quantization is None:
            continue
        ratio = float(source.quantization.scale[0]) / float(target.quantization.scale[0])
        if ratio < EXACT_RATIO and len(source.shape) == 4:
            found.append(index)
    return found


def precise_requantize(model_bytes) -> bytes:
    """`model_bytes` with every imprecise int8 requantization written as a 1x1 depthwise
    convolution (see the module docstring); a file without one comes back unchanged.

    Example:
    ```python
    precise_requantize(open("model_int8.tflite", "rb").read())
    ```
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from keras_unet.export.quantization.tflite_graph import builtin_codes, opcode_index

    packed = schema.Model.GetRootAs(model_bytes, 0)
    if packed.SubgraphsLength() != 1:
        return model_bytes
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    codes = builtin_codes(model)
    graph = model.subgraphs[0]
    targets = _imprecise_requantizations(graph, schema, codes)
    if not targets:
        return model_bytes
    depthwise = opcode_index(model, schema.BuiltinOperator.DEPTHWISE_CONV_2D, DEPTHWISE_VERSION)
    for index in targets:
        op = graph.operators[index]
        source = graph.tensors[op.inputs[0]]
        channels = int(source.shape[-1])
        in_scale = float(source.quantization.scale[0])
        weights = _constant(model, graph, schema, f"{source.name.decode()}/requantize_weights",
                            np.full((1, 1, 1, channels), WEIGHT, np.int8), schema.TensorType.INT8,
                            [1.0 / WEIGHT] * channels)
        bias = _constant(model, graph, schema, f"{source.name.decode()}/requantize_bias",
                         np.zeros(channels, np.int32), schema.TensorType.INT32,
                         [in_scale / WEIGHT] * channels)
        options = schema.DepthwiseConv2DOptionsT()
        options.padding, options.strideH, options.strideW = schema.Padding.VALID, 1, 1
        options.depthMultiplier, options.dilationHFactor, options.dilationWFactor = 1, 1, 1
        options.fusedActivationFunction = schema.ActivationFunctionType.NONE
        op.opcodeIndex = depthwise
        op.inputs = [op.inputs[0], weights, bias]
        op.builtinOptionsType = schema.BuiltinOptions.DepthwiseConv2DOptions
        op.builtinOptions = options
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _constant(model, graph, schema, name, values, tensor_type, scales):
    """A new constant tensor (its own buffer), per-channel quantized on the last axis."""
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(values.tobytes(), np.uint8)
    model.buffers.append(buffer)
    quant = schema.QuantizationParametersT()
    quant.scale = list(scales)
    quant.zeroPoint = [0] * len(scales)
    quant.quantizedDimension = values.ndim - 1
    tensor = schema.TensorT()
    tensor.name, tensor.type, tensor.shape = name.encode(), tensor_type, list(values.shape)
    tensor.buffer, tensor.quantization = len(model.buffers) - 1, quant
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1
