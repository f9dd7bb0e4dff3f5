"""What of a QDQ `.onnx` file computes in float, and what an NPU would not take.

Two questions, answered from the file alone:

- `float_ops`: the compute nodes of the file that are not quantized, whatever runtime runs
  it. In a QDQ file an op is quantized when every float tensor it reads comes out of a
  DequantizeLinear and every float tensor it writes goes only into QuantizeLinear nodes (a
  "QDQ node unit", the form integer runtimes and NPU execution providers fuse into one
  integer op). An integer-only file has none. The DequantizeLinear in front of the float
  output and the QuantizeLinear after the float input are the I/O conversions, not compute.
- `npu_fallbacks`: the nodes a typical NPU execution provider would leave to the CPU, as
  far as a tool can tell without the device. The rule, for onnxruntime's QNN execution
  provider (Qualcomm HTP), is: every node of `float_ops` (the HTP's quantized backend runs
  QDQ node units; a float op runs there only where the chip has fp16, else on the CPU),
  and every node whose op type has no QNN op builder (`QNN_OP_TYPES`). Whether the chip's
  HTP has a kernel for each op at int16 is not known without it: Qualcomm's "QNN HTP Op
  Support Revision History" adds 16-bit variants op by op (Conv2d, DepthWiseConv2d,
  TransposeConv2d, element-wise, pooling, Concat, Resize are all listed at 16 bits).

This is not `onnx_convert.float_ops_left`, which reads the graph onnxruntime's CPU provider
runs after its own fusions and counts the heavy ops it runs in float: a speed question on
this CPU. An int16x8 file has no float op here, yet the CPU provider, which has no int16
convolution kernel, runs every one of its convolutions as DequantizeLinear -> float Conv ->
QuantizeLinear.

Why: see docs/notes/2026-12-06-onnx-int16x8.md.

Example:
```python
from keras_unet.export.onnx_integer import float_ops, npu_fallbacks

float_ops(Path("model_int8.onnx").read_bytes())      # ['Conv unet_1/head_1/convolution']
npu_fallbacks(Path("model_int8.onnx").read_bytes())  # the same, plus ops QNN lacks
```
"""

from __future__ import annotations

from typing import Any

FLOAT_TYPES = (1, 10, 11, 16)  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Nodes that only name a value: nothing computes.
NO_COMPUTE = ("Constant", "Identity")
# The ONNX op types onnxruntime's QNN execution provider builds QNN ops for:
# microsoft/onnxruntime, onnxruntime/core/providers/qnn/builder/op_builder_factory.cc
# (commit 00cd7c6df0a66cd628a5ab7e682cb870134a27ee).
QNN_OP_TYPES = frozenset("""
    Add Asin Atan Mul Abs And Ceil Cos Sign Div Equal Exp Floor Greater GreaterOrEqual LeakyRelu
    Less LessOrEqual Log Max Min Neg Not Or Pow PRelu Relu Gelu Elu Round Where ScatterND Sigmoid
    Sin Sqrt Sub Sum Tanh Concat QuantizeLinear DequantizeLinear HardSwish HardSigmoid
    DepthToSpace SpaceToDepth GridSample LpNormalization ScatterElements Softmax LogSoftmax Cast
    ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceL2 Conv ConvTranspose
    GlobalAveragePool AveragePool MaxPool GlobalMaxPool Reshape Flatten Squeeze Unsqueeze Gemm
    Gather GatherElements ArgMax ArgMin Clip Slice Split Resize Upsample TopK Tile
    InstanceNormalization BatchNormalization LayerNormalization RMSNormalization LRN Transpose
    Reciprocal Pad Expand Einsum MatMul Mean LSTM CumSum RandomUniformLike GatherND Mod
    ThresholdedRelu STFT Inverse FusedMatMul
""".split())


def _label(node: Any) -> str:
    return f"{node.op_type} {node.name or node.output[0]}"


def _float_tensors(model: Any) -> set:
    """Names of the float tensors of `model` (after ONNX shape inference)."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(model).graph
    values = list(graph.value_info) + list(graph.input) + list(graph.output)
    names = {v.name for v in values if v.type.tensor_type.elem_type in FLOAT_TYPES}
    return names | {t.name for t in graph.initializer if t.data_type in FLOAT_TYPES}


def float_ops(model_bytes: bytes) -> list:
    """The compute nodes of a `.onnx` file that are not quantized, as `"OpType name"`.

    A node is quantized when each float tensor it reads comes from a DequantizeLinear and
    each float tensor it writes is read only by QuantizeLinear nodes (and is no graph
    output). Q/DQ nodes, `Constant`, `Identity` and nodes that touch no float tensor (the
    int64 shape arithmetic of a free-size graph) are not compute. Empty for a file whose
    every op is int8 or int16.

    Example:
    ```python
    float_ops(Path("model_int8.onnx").read_bytes())  # [] for an integer-only file
    ```
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    floats = _float_tensors(model)
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    readers: dict = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {value.name for value in graph.output}
    found = []
    for node in graph.node:
        if node.op_type in QDQ_OPS + NO_COMPUTE:
            continue
        inputs = [name for name in node.input if name and name in floats]
        written = [name for name in node.output if name and name in floats]
        if not inputs and not written:
            continue
        quantized_in = all(getattr(producers.get(name), "op_type", None) == "DequantizeLinear"
                           for name in inputs)
        quantized_out = all(name not in outputs and readers.get(name)
                            and all(r.op_type == "QuantizeLinear" for r in readers[name])
                            for name in written)
        if not (quantized_in and quantized_out):
            found.append(_label(node))
    return found


def npu_fallbacks(model_bytes: bytes) -> list:
    """The nodes a typical NPU execution provider (onnxruntime's QNN on a Qualcomm HTP)
    would leave to the CPU, as `"OpType name"`: the `float_ops`, and the nodes whose op
    type QNN has no builder for (`QNN_OP_TYPES`). Without the device nothing is known of
    its kernels at int16 (see the module's docstring).

    Example:
    ```python
    npu_fallbacks(Path("model_int16x8.onnx").read_bytes())  # ['Shape ...'] for a free size
    ```
    """
    import onnx

    found = float_ops(model_bytes)
    for node in onnx.load_from_string(model_bytes).graph.node:
        if node.op_type not in QNN_OP_TYPES and node.op_type not in NO_COMPUTE:
            label = _label(node)
            if label not in found:
                found.append(label)
    return found
