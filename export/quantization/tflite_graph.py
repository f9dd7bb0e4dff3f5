"""A `.tflite` file's graph, read with the flatbuffer schema ai-edge-litert ships: which op
writes each tensor, and which ops read it (what `TFLiteQuantizer` keeps in float together).

Example:
```python
from keras_unet.export.quantization.tflite_graph import tensor_consumers, tensor_ops

ops, outputs = tensor_ops(model_bytes)
```
"""


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
