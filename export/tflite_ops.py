"""What a `.tflite` file computes in float, and what a typical NPU delegate would not run.

Read from the flatbuffer with the schema ai-edge-litert ships, as `tflite_convert.custom_ops`
does; nothing is run.

- `float_ops`: an op computes in float when one of its activation tensors (inputs that are
  not constants, and outputs) is float32. A DEQUANTIZE of a constant (fp16 or int8 weights
  turned to float once, at load time) is not compute: the op that reads its float output is
  listed. The QUANTIZE/DEQUANTIZE at the edges of a float-I/O file are listed: they read or
  write float tensors, on the CPU. An integer-only file (integer input and output, every op
  quantized) has none.
- `npu_fallbacks`: the ops a typical NPU delegate (NNAPI, Qualcomm QNN/HTP, MediaTek Neuron,
  Edge-TPU-like accelerators) leaves to the CPU, as far as the file tells: float ops, custom
  ops, and every op with a 16-bit activation. TFLite's post-training quantization guide
  (tensorflow.org/lite/performance/post_training_quantization, "16-bit activations with
  8-bit weights", Limitations) says the 16x8 mode is incompatible with the existing
  hardware-accelerated delegates, and XNNPack, TFLite's CPU delegate, takes float32, fp16
  and 8-bit quantized ops only (its delegate flags: QS8, QU8; no int16). A vendor delegate
  that runs 16-bit activations (Qualcomm QNN's w8a16 on Hexagon HTP) takes more: check on
  the device.

Example:
```python
from keras_unet.export.tflite_ops import float_ops, npu_fallbacks

float_ops(model_bytes)        # [] for an integer-only file
npu_fallbacks(model_bytes)    # ['CONV_2D (unet/conv1/Relu)', ...] for a 16x8 file
```
"""

from __future__ import annotations


def _ops(model_bytes: bytes) -> list:
    """`(op name, output tensor name, [(input type, constant)], [output types])` per op."""
    from ai_edge_litert import schema_py_generated as schema

    names = {value: key for key, value in vars(schema.BuiltinOperator).items()
             if not key.startswith("_")}
    types = {value: key for key, value in vars(schema.TensorType).items() if not key.startswith("_")}
    model = schema.Model.GetRootAs(model_bytes, 0)
    found = []
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)

        def constant(tensor):
            buffer = tensor.Buffer()
            return buffer > 0 and model.Buffers(buffer).DataLength() > 0

        for i in range(graph.OperatorsLength()):
            operator = graph.Operators(i)
            code = model.OperatorCodes(operator.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            op = names.get(builtin, "?")
            if builtin == schema.BuiltinOperator.CUSTOM:
                op = f"CUSTOM:{(code.CustomCode() or b'?').decode()}"
            inputs = [graph.Tensors(operator.Inputs(j)) for j in range(operator.InputsLength())
                      if operator.Inputs(j) >= 0]
            outputs = [graph.Tensors(operator.Outputs(j)) for j in range(operator.OutputsLength())]
            name = outputs[0].Name().decode() if outputs else f"op {i}"
            found.append((op, name, [(types[t.Type()], constant(t)) for t in inputs],
                          [types[t.Type()] for t in outputs]))
    return found


def _label(op: str, name: str) -> str:
    return f"{op} ({name})"


def float_ops(model_bytes: bytes) -> list:
    """The ops of a `.tflite` file that compute in float, as `"OP (output tensor)"`.

    Args:
        model_bytes: the file's contents.

    Returns:
        One label per op whose non-constant inputs or outputs include a float32 tensor
        (a DEQUANTIZE of a constant excepted); empty for an integer-only file.

    Example:
    ```python
    float_ops(int8_uint8_io_bytes)   # []
    float_ops(kept_float_bytes)      # ['DEQUANTIZE (...)', 'CONV_2D (m/conv1/Relu)', ...]
    ```
    """
    found = []
    for op, name, inputs, outputs in _ops(model_bytes):
        activations = [dtype for dtype, is_constant in inputs if not is_constant] + outputs
        if op == "DEQUANTIZE" and all(is_constant for _, is_constant in inputs):
            continue  # weights dequantized at load time: their reader is the float op
        if "FLOAT32" in activations:
            found.append(_label(op, name))
    return found


def npu_fallbacks(model_bytes: bytes) -> list:
    """The ops a typical NPU delegate would leave to the CPU, as `"OP (output tensor): why"`.

    The rule (see the module docstring for sources): float ops, custom ops, and ops with a
    16-bit activation input or output.

    Example:
    ```python
    npu_fallbacks(int8_integer_only_bytes)   # []
    ```
    """
    floats = set(float_ops(model_bytes))
    found = []
    for op, name, inputs, outputs in _ops(model_bytes):
        label = _label(op, name)
        activations = [dtype for dtype, is_constant in inputs if not is_constant] + outputs
        if label in floats:
            found.append(f"{label}: computes in float")
        elif op.startswith("CUSTOM"):
            found.append(f"{label}: custom op")
        elif "INT16" in activations:
            found.append(f"{label}: 16-bit activations")
    return found
