"""The pixel shuffle of an int8 ONNX graph in a form onnxruntime keeps in NHWC.

`decoder_form` writes each 2x2 up-convolution as a 1x1 `Conv` and a `DepthToSpace`
(onnxruntime has no integer `ConvTranspose`). onnxruntime's CPU provider runs its integer
convolutions in NHWC and has no NHWC `DepthToSpace`, so its layout transformer wraps every
`DepthToSpace` in transposes back to NCHW, and the decoder's `Concat` after it, and every
skip connection feeding that `Concat`, move to NCHW with it, a transpose on every side.
The same shuffle written as NHWC reshapes and one 6-d `Transpose` between a transpose into
NHWC and one back out lets the transformer cancel those outer transposes against its own:
the `Concat`s run in NHWC, with the same numbers out.

The rewrite moves values only, so it is exact; `Transpose` and `Reshape` are ops
onnxruntime's QDQ quantizer keeps in int8 with their input's scale. With a static height and
width the reshapes take constant shapes; with free ones (a `--dynamic-size` export) the
merged shape is computed from the tensor's own (`Shape`, `Slice`, `Mul`, `Concat` on
int64, which the quantizer leaves alone).

Why: see docs/notes/2026-11-27-onnx-decoder-form-and-layout.md.

Example:
```python
import onnx
from keras_unet.export.onnx_layout import nhwc_pixel_shuffle

graph = nhwc_pixel_shuffle(onnx.load("prepared.onnx"))
```
"""

from typing import Any

# Where NHWC channel (i * 2 + j) * C + c (DCR) or c * 4 + i * 2 + j (CRD) lands in
# (N, H, i, W, j, C), from the reshaped (N, H, W, a, b, c) order of each mode.
_SHUFFLE_PERM = {"DCR": (0, 1, 3, 2, 4, 5), "CRD": (0, 1, 4, 2, 5, 3)}


def nhwc_pixel_shuffle(model) -> Any:
    """`model` (an `onnx.ModelProto`) with each `DepthToSpace` written as NHWC reshapes.

    Returns a new `ModelProto`; `model` is not changed.
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {info.name: _dims(info) for info in (*inferred.graph.value_info, *inferred.graph.input)}
    result = onnx.ModelProto()
    result.CopyFrom(model)
    nodes, constants = [], []
    for node in model.graph.node:
        rewritten = _rewrite(node, shapes.get(node.input[0]) if node.input else None)
        if rewritten is None:
            nodes.append(node)
            continue
        new_nodes, new_constants = rewritten
        nodes.extend(new_nodes)
        constants.extend(new_constants)
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    result.graph.initializer.extend(constants)
    return result


def _dims(info):
    shape = info.type.tensor_type.shape
    return [dim.dim_value if dim.HasField("dim_value") else None for dim in shape.dim]


def _rewrite(node, shape):
    """Nodes and constants replacing one `DepthToSpace` NCHW node, or None to keep it."""
    import numpy as np
    from onnx import helper, numpy_helper

    if node.op_type != "DepthToSpace" or node.domain not in ("", "ai.onnx"):
        return None
    attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
    block = attributes.get("blocksize")
    mode = attributes.get("mode", b"DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if not shape or len(shape) != 4 or mode not in _SHUFFLE_PERM or not block:
        return None
    _, depth, height, width = shape
    if depth is None:
        return None
    channels = depth // (block * block)
    split = (block, block, channels) if mode == "DCR" else (channels, block, block)
    name = node.name or node.output[0]
    constants, nodes = [], []

    def constant(label, values):
        constants.append(numpy_helper.from_array(np.array(values, np.int64), f"{name}/{label}"))
        return constants[-1].name

    # 0 keeps that dimension of the input as it is (Reshape's default `allowzero=0`).
    split_shape = constant("split_shape", (0, 0, 0, *split))
    if height is not None and width is not None:
        merge_shape = constant("merge_shape", (0, height * block, width * block, channels))
    else:  # free size: (N, H, W, C') -> [0, H * block, W * block, channels]
        merge_shape = f"{name}/merge_shape"
        nodes += [
            helper.make_node("Shape", [f"{name}/nhwc"], [f"{name}/nhwc_shape"], name=f"{name}/shape"),
            helper.make_node("Slice", [f"{name}/nhwc_shape", constant("hw_start", [1]),
                                       constant("hw_end", [3])], [f"{name}/hw"], name=f"{name}/hw"),
            helper.make_node("Mul", [f"{name}/hw", constant("block", [block])], [f"{name}/hw_out"],
                             name=f"{name}/hw_out"),
            helper.make_node("Concat", [constant("keep_batch", [0]), f"{name}/hw_out",
                                        constant("channels", [channels])], [merge_shape], axis=0,
                             name=f"{name}/merge_shape"),
        ]
    nodes = [
        helper.make_node("Transpose", [node.input[0]], [f"{name}/nhwc"], perm=[0, 2, 3, 1],
                         name=f"{name}/to_nhwc"),
        *nodes,
        helper.make_node("Reshape", [f"{name}/nhwc", split_shape], [f"{name}/split"],
                         name=f"{name}/split"),
        helper.make_node("Transpose", [f"{name}/split"], [f"{name}/shuffled"],
                         perm=list(_SHUFFLE_PERM[mode]), name=f"{name}/shuffle"),
        helper.make_node("Reshape", [f"{name}/shuffled", merge_shape], [f"{name}/merged"],
                         name=f"{name}/merge"),
        helper.make_node("Transpose", [f"{name}/merged"], list(node.output), perm=[0, 3, 1, 2],
                         name=f"{name}/to_nchw"),
    ]
    return nodes, constants


def shapes_read_quantized(model) -> int:
    """`model` (a quantized QDQ `ModelProto`) with each `Shape` that reads a
    `DequantizeLinear`'s output reading its quantized input instead (same shape).

    The free-size shuffle reads its tensor's shape; after quantization that tensor is a
    `DequantizeLinear` output, and a dequantize with a second reader is one onnxruntime
    cannot fuse into the reshape's integer form: it then dequantized the whole tensor to
    learn its shape. Changed in place; returns the number of `Shape` nodes rewired.
    """
    producers = {output: node for node in model.graph.node for output in node.output}
    rewired = 0
    for node in model.graph.node:
        if node.op_type != "Shape" or not node.input:
            continue
        source = producers.get(node.input[0])
        if source is not None and source.op_type == "DequantizeLinear":
            node.input[0] = source.input[0]
            rewired += 1
    return rewired
