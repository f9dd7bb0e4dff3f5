"""Per-layer int8 error of an ONNX QDQ model, and what keeping a layer in float takes.

Built on `onnxruntime.quantization.qdq_loss_debug`: `modify_model_output_intermediate_tensors`
makes every float tensor of the QDQ model an output, and `create_activation_matching`
pairs each quantized activation before its QuantizeLinear with the same tensor after its
DequantizeLinear. The difference is the error quantizing that tensor adds (rounding and
clipping at its scale), measured on the same input, like the TFLite report's per-op
figures. `collect_activations` would keep every activation of every image in memory
(a ResNet50 U-Net at 128x128: ~60 MB an image); the same session loop here keeps running
sums instead. SQNR is onnxruntime's `compute_signal_to_quantization_noice_ratio`
formula over all images.

Example:
```python
from keras_unet.export.quantization import format_worst_layers, onnx_layer_report

rows = onnx_layer_report("prepared.onnx", "int8.onnx", images, input_name="image")
print(format_worst_layers(rows))
```
"""

import math
import tempfile
from pathlib import Path

import numpy as np

from keras_unet.export.quantization.report import (keras_layer_name, layer_names, make_row,
                                                   sort_rows, sqnr_db)

# Ops whose output onnxruntime's QDQ quantizer does not quantize on its own when they
# follow a Conv / MatMul: their output carries the Q/DQ pair and the report row.
FUSED_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish")
HEAVY_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


class _Stats:
    def __init__(self):
        self.signal = self.noise = self.error = self.max_error = 0.0
        self.count = self.images = 0

    def add(self, before, after, activation=None):
        before = np.asarray(before, dtype=np.float64)
        if activation is not None:
            before = activation(before)
        error = np.asarray(after, dtype=np.float64) - before
        self.signal += float(np.sum(before * before))
        self.noise += float(np.sum(error * error))
        self.error += float(np.sum(error))
        self.max_error += float(np.max(np.abs(error))) if error.size else 0.0
        self.count += error.size
        self.images += 1


def _producers(graph):
    return {output: node for node in graph.node for output in node.output}


def _constants(graph):
    from onnx import numpy_helper

    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attribute.t)
    return constants


def _activation_scales(graph):
    constants = _constants(graph)
    scales = {}
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[1] in constants:
            scale = np.asarray(constants[node.input[1]]).ravel()
            if scale.size == 1:
                scales[node.input[0]] = float(scale[0])
    return scales


def _trace(node, producers, names, steps=8):
    """The Keras layer of `node`; tf2onnx's own nodes (`Transpose__18`) take their input's."""
    name = keras_layer_name(node.name, names)
    while names and name == node.name and steps and node.input:
        before = producers.get(node.input[0])
        if before is None:
            break
        node, steps = before, steps - 1
        name = keras_layer_name(node.name, names)
    return name if name != node.name else None


def _removed_activation(node, constants):
    """`f(x)` for a Relu / Clip the QDQ quantizer removed (its Q/DQ clipping does the job)."""
    if node.op_type == "Relu":
        return lambda x: np.maximum(x, 0.0)
    low, high = -np.inf, np.inf
    for attribute in node.attribute:  # opset < 11 keeps the bounds as attributes
        if attribute.name == "min":
            low = attribute.f
        if attribute.name == "max":
            high = attribute.f
    bounds = list(node.input[1:3]) + ["", ""]
    if bounds[0] in constants:
        low = float(constants[bounds[0]])
    if bounds[1] in constants:
        high = float(constants[bounds[1]])
    return lambda x: np.clip(x, low, high)


def _session_outputs(augmented_path, images, input_name, batch_size):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # As collect_activations: no fusion, so every saved tensor is the one in the graph.
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(str(augmented_path), sess_options=options,
                                           providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        yield dict(zip(names, session.run(None, {input_name: batch})))


def onnx_layer_report(float_path, quantized_path, images, input_name="image", keep_float=(),
                      model=None, batch_size=1) -> list:
    """Per-tensor int8 error of a QDQ `.onnx` file on `images`, worst first.

    Args:
        float_path: the float model `quantize_static` quantized (after
            `quant_pre_process`, if that ran): rows name its nodes, the names
            `nodes_to_exclude` takes.
        quantized_path: the QDQ model `quantize_static` wrote.
        images: verification images `(N, H, W, C)` in [0, 255].
        input_name: the models' input name.
        keep_float: node names excluded from quantization; they get rows with
            `kept_float=True` and no figures.
        model: the Keras model (or its layer names), to name rows by Keras layer.
        batch_size: images per run (must suit the models' batch dimension);
            `max_abs_error` is then the largest error of a run, averaged over runs.

    Returns:
        list of row dicts, the columns of `keras_unet.export.quantization.report.COLUMNS`.

    Example:
    ```python
    rows = onnx_layer_report("prepared.onnx", "int8.onnx", images, model=model)
    rows[0]["node"]  # a name for quantize_static(nodes_to_exclude=[...])
    ```
    """
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    images = np.asarray(images, dtype="float32")
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            "`images` must be a non-empty array (N, H, W, C) of images in [0, 255]. "
            f"Received: images.shape={images.shape}"
        )
    float_model = onnx.load(str(float_path), load_external_data=False)
    node_names = {node.name: node for node in float_model.graph.node}
    keep_float = tuple(dict.fromkeys(str(node) for node in keep_float))
    unknown = [node for node in keep_float if node not in node_names]
    if unknown:
        raise ValueError(
            f"`keep_float` names nodes that '{Path(float_path).name}' does not have. "
            f"Received: {unknown[:3]}"
        )
    qdq_graph = onnx.load(str(quantized_path)).graph
    scales = _activation_scales(qdq_graph)
    producers, qdq_producers = _producers(float_model.graph), _producers(qdq_graph)
    constants = _constants(float_model.graph)
    # A Conv followed by a Relu / Clip becomes one Conv whose output carries the
    # activation's tensor name; the Q/DQ pair clips it instead. Its float value is the
    # activation of what the Conv gives, and the row names both nodes.
    removed = {}
    for tensor, node in producers.items():
        kept = qdq_producers.get(tensor)
        if node.op_type in ("Relu", "Clip") and kept is not None and kept.op_type != node.op_type:
            removed[tensor] = (_removed_activation(node, constants), kept)

    stats: dict = {}
    with tempfile.TemporaryDirectory(prefix="keras_unet_qdq_debug_") as work:
        augmented = Path(work) / "augmented.onnx"
        modify_model_output_intermediate_tensors(str(quantized_path), str(augmented))
        for outputs in _session_outputs(augmented, images, input_name, batch_size):
            # The augmented model saves tensor T as output T + "_ReshapedSavedOutput".
            saved = {name[:-len("_ReshapedSavedOutput")]: [value]
                     for name, value in outputs.items() if name.endswith("_ReshapedSavedOutput")}
            for name, pair in create_activation_matching(saved).items():
                activation = removed.get(name, (None, None))[0]
                stats.setdefault(name, _Stats()).add(pair["pre_qdq"][0], pair["post_qdq"][0],
                                                     activation)

    names = layer_names(model)
    rows = []
    for tensor, stat in stats.items():
        node = producers.get(tensor)
        if node is None:  # a graph input
            node_name, op, name = tensor, "Input", keras_layer_name(tensor, names)
        elif tensor in removed:
            fused_into = removed[tensor][1]
            node_name, op = node.name, f"{fused_into.op_type}+{node.op_type}"
            name = keras_layer_name(f"{node.name};{fused_into.name}", names)
        else:
            node_name, op = node.name, node.op_type
            name = _trace(node, producers, names) or node.name
        scale = scales.get(tensor, scales.get(tensor + "_QuantizeLinear_Input"))
        rows.append(make_row(
            name, op, node_name,
            sqnr_db=sqnr_db(stat.signal, stat.noise),
            rmse_over_scale=math.sqrt(stat.noise / stat.count) / scale if scale else None,
            max_abs_error=stat.max_error / stat.images, mean_error=stat.error / stat.count,
        ))
    for name in keep_float:
        rows.append(make_row(_trace(node_names[name], producers, names) or name,
                             node_names[name].op_type, name, kept_float=True))
    return sort_rows(rows)


def onnx_nodes_to_exclude(float_path, nodes) -> list:
    """`nodes` plus the nodes onnxruntime needs excluded with them to really run in float.

    A report row of a Conv followed by an activation names the activation (the QDQ
    quantizer puts no Q/DQ pair between the two), and onnxruntime's CPU provider fuses
    a float Conv that still sits between Q/DQ pairs back into a QLinearConv. So each
    activation brings the Conv / MatMul it follows, and each Conv / MatMul the
    activation that follows it.

    Args:
        float_path: the float model `quantize_static` quantizes.
        nodes: node names, e.g. the `node` of report rows.

    Returns:
        list of node names for `quantize_static(..., nodes_to_exclude=...)`.

    Example:
    ```python
    onnx_nodes_to_exclude("prepared.onnx", ["unet_1/conv1_relu_1/Relu"])
    # ['unet_1/conv1_relu_1/Relu', 'unet_1/conv1_conv_1/BiasAdd']
    ```
    """
    import onnx

    graph = onnx.load(str(float_path), load_external_data=False).graph
    producers = _producers(graph)
    consumers: dict = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    by_name = {node.name: node for node in graph.node}
    unknown = [name for name in nodes if name not in by_name]
    if unknown:
        raise ValueError(
            f"`nodes` names nodes that '{Path(float_path).name}' does not have. "
            f"Received: {unknown[:3]}"
        )
    chosen = []
    for name in nodes:
        node = by_name[name]
        chosen.append(name)
        if node.op_type in FUSED_ACTIVATIONS and node.input:
            before = producers.get(node.input[0])
            if before is not None and before.op_type in HEAVY_OPS:
                chosen.append(before.name)
        if node.op_type in HEAVY_OPS:
            after = consumers.get(node.output[0], [])
            if len(after) == 1 and after[0].op_type in FUSED_ACTIVATIONS:
                chosen.append(after[0].name)
    return list(dict.fromkeys(chosen))
