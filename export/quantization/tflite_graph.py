"""A `.tflite` file's graph, read with the flatbuffer schema ai-edge-litert ships: which op
writes each tensor, and which ops read it (what `TFLiteQuantizer` keeps in float together);
and, for the passes that edit a file through the schema's object API (`ModelT`), each
operator code's builtin op and the index of an op's code (`builtin_codes`, `opcode_index`).

Example:
```python
from keras_unet.export.quantization.tflite_graph import tensor_consumers, tensor_ops

ops, outputs = tensor_ops(model_bytes)
```
"""


def builtin_codes(model) -> list:
    """The builtin op of each of `model.operatorCodes` (a `ModelT`), by operator index.

    A code's op is the larger of `builtinCode` and `deprecatedBuiltinCode`: files written
    before op 127 ran out fill only the deprecated byte, later ops only the 32-bit field.

    Example:
    ```python
    codes = builtin_codes(model)
    [codes[op.opcodeIndex] for op in model.subgraphs[0].operators]  # [3, 22, ...]
    ```
    """
    return [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]


def opcode_index(model, builtin, version=1) -> int:
    """Index of `builtin`'s operator code in `model` (a `ModelT`), added when it has none;
    its version raised to at least `version` (the kernel version the caller's op needs).

    Example:
    ```python
    op.opcodeIndex = opcode_index(model, schema.BuiltinOperator.ARG_MAX)
    ```
    """
    from ai_edge_litert import schema_py_generated as schema

    codes = builtin_codes(model)
    if builtin in codes:
        index = codes.index(builtin)
        model.operatorCodes[index].version = max(model.operatorCodes[index].version, version)
        return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.version = builtin, version
    code.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def tensor_consumers(model_bytes) -> dict:
    """`{tensor name: [output tensor names of the ops that read it]}` of a `.tflite` file.

    Example:
    ```python
    tensor_consumers(model_bytes)["m/spike/add"]  # ['StatefulPartitionedCall_1:0']
    ```
    """
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.Model.GetRootAsModel(model_bytes, 0).Subgraphs(0)
    name = lambda index: graph.Tensors(index).Name().decode()  # noqa: E731
    found: dict = {}
    for i in range(graph.OperatorsLength()):
        operator = graph.Operators(i)
        outputs = [name(operator.Outputs(j)) for j in range(operator.OutputsLength())]
        for j in range(operator.InputsLength()):
            if operator.Inputs(j) >= 0:
                found.setdefault(name(operator.Inputs(j)), []).extend(outputs)
    return found


def tensor_ops(model_bytes) -> tuple:
    """`{tensor name: op name}` for every op output of a `.tflite` file's contents, and
    the names of the model's output tensors.

    Example:
    ```python
    ops, outputs = tensor_ops(model_bytes)
    ops["unet_1/unet_1/normalization_1/sub"]  # 'SUB'
    ```
    """
    from ai_edge_litert import schema_py_generated as schema

    op_names = {value: key for key, value in vars(schema.BuiltinOperator).items()
                if not key.startswith("_")}
    model = schema.Model.GetRootAsModel(model_bytes, 0)
    graph = model.Subgraphs(0)
    found = {}
    for i in range(graph.OperatorsLength()):
        operator = graph.Operators(i)
        code = model.OperatorCodes(operator.OpcodeIndex())
        op = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        for j in range(operator.OutputsLength()):
            found[graph.Tensors(operator.Outputs(j)).Name().decode()] = op
    outputs = [graph.Tensors(graph.Outputs(j)).Name().decode()
               for j in range(graph.OutputsLength())]
    return found, outputs


def float_constant(model, tensor):
    """The float32 data of a constant `tensor` of a flatbuffer object `model`, shaped, or
    None when it is not a float32 constant (an activation, an int8 tensor)."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    if tensor.type != schema.TensorType.FLOAT32 or data is None or len(data) == 0:
        return None
    return np.frombuffer(bytes(bytearray(data)), np.float32).reshape(list(tensor.shape))
