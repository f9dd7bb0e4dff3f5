"""DEPTH_TO_SPACE written as RESHAPE -> TRANSPOSE -> RESHAPE in a float `.tflite` model.

The export's decoder computes each 2x2 up-convolution as a 1x1 convolution and
`depth_to_space(2)` (`keras_unet.export.decoder_form`). TFLite has no 16-bit
DEPTH_TO_SPACE: its kernel takes float32, uint8, int8, int32 and int64, neither TFLite's
16x8 quantizer nor the LiteRT quantizer quantizes the op at 16 bits, and so a 16-bit
activation file would compute it in float. The same bytes move with three ops that have
int16 kernels and keep the quantization of their input:

    (N, H, W, b*b*C) -RESHAPE-> (N*H, W, b, b*C) -TRANSPOSE(0, 2, 1, 3)-> (N*H, b, W, b*C)
                     -RESHAPE-> (N, H*b, W*b, C)

(NHWC, DCR order: input channel `(i * b + j) * C + c` of pixel `(h, w)` is output pixel
`(h * b + i, w * b + j)`, channel `c`.) The two new tensors carry the input's recorded
range, so a calibrated model stays calibrated. The file is written at batch 1 (ops of
another batch are left alone); the shapes fold the batch in (-1), so a runtime can resize it.

Example:
```python
from keras_unet.export.quantization.tflite_depth_to_space import depth_to_space_as_transpose

calibrated = depth_to_space_as_transpose(calibrated)
```
"""

import copy

import numpy as np


def _constant(model, graph, schema, name, values):
    buffer = schema.BufferT()
    buffer.data = np.asarray(values, dtype="<i4").tobytes()
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.shape = [len(values)]
    tensor.type = schema.TensorType.INT32
    tensor.buffer = len(model.buffers) - 1
    tensor.name = name.encode()
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def _like(graph, source, name, shape):
    tensor = copy.deepcopy(graph.tensors[source])
    tensor.name = name.encode()
    tensor.shape = list(shape)
    tensor.shapeSignature = None
    tensor.buffer = 0  # a buffer index of 0 is the empty buffer: an activation
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def _operator(schema, opcode, inputs, outputs, options_type, options):
    operator = schema.OperatorT()
    operator.opcodeIndex = opcode
    operator.inputs = list(inputs)
    operator.outputs = list(outputs)
    operator.builtinOptionsType = options_type
    operator.builtinOptions = options
    return operator


def _drop_unused_opcodes(model):
    # An op code no operator uses still has to resolve when a runtime loads the file.
    used = sorted({operator.opcodeIndex for graph in model.subgraphs for operator in graph.operators})
    index = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[old] for old in used]
    for graph in model.subgraphs:
        for operator in graph.operators:
            operator.opcodeIndex = index[operator.opcodeIndex]


def depth_to_space_as_transpose(model_bytes) -> bytes:
    """`model_bytes` with every batch-1 DEPTH_TO_SPACE written as RESHAPE, TRANSPOSE, RESHAPE.

    Args:
        model_bytes: a float `.tflite` model (calibrated or not).

    Returns:
        The rewritten model, or `model_bytes` unchanged when it has no such op.

    Example:
    ```python
    rewritten = depth_to_space_as_transpose(float_model)
    ```
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    from keras_unet.export.quantization.tflite_graph import builtin_codes, opcode_index

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    codes = builtin_codes(model)
    changed = False
    for graph in model.subgraphs:
        operators = []
        for operator in graph.operators:
            op = codes[operator.opcodeIndex]
            shape = list(graph.tensors[operator.inputs[0]].shape)
            if op != schema.BuiltinOperator.DEPTH_TO_SPACE or len(shape) != 4 or shape[0] != 1:
                operators.append(operator)
                continue
            block = operator.builtinOptions.blockSize
            _, height, width, depth = shape
            out = operator.outputs[0]
            name = graph.tensors[out].name.decode()
            split_shape = [height, width, block, depth // block]
            moved_shape = [height, block, width, depth // block]
            final_shape = list(graph.tensors[out].shape)
            # -1 where the batch folds in, so a runtime can still resize the batch.
            split_target = [-1] + split_shape[1:]
            final_target = [-1] + final_shape[1:]
            split = _like(graph, operator.inputs[0], f"{name}/d2s_split", split_shape)
            moved = _like(graph, operator.inputs[0], f"{name}/d2s_moved", moved_shape)
            reshape = opcode_index(model, schema.BuiltinOperator.RESHAPE)
            transpose = opcode_index(model, schema.BuiltinOperator.TRANSPOSE)

            def reshape_options(new_shape):
                options = schema.ReshapeOptionsT()
                options.newShape = list(new_shape)
                return options

            operators += [
                _operator(schema, reshape,
                          [operator.inputs[0],
                           _constant(model, graph, schema, f"{name}/d2s_split_shape", split_target)],
                          [split], schema.BuiltinOptions.ReshapeOptions, reshape_options(split_target)),
                _operator(schema, transpose,
                          [split, _constant(model, graph, schema, f"{name}/d2s_perm", [0, 2, 1, 3])],
                          [moved], schema.BuiltinOptions.TransposeOptions, schema.TransposeOptionsT()),
                _operator(schema, reshape,
                          [moved,
                           _constant(model, graph, schema, f"{name}/d2s_shape", final_target)],
                          [out], schema.BuiltinOptions.ReshapeOptions, reshape_options(final_target)),
            ]
            changed = True
        graph.operators = operators
    if not changed:
        return bytes(model_bytes)
    _drop_unused_opcodes(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
