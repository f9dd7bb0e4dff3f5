"""Mixed precision in one QDQ file: chosen nodes at int16 activations, the rest int8.

`quantize_static` takes a per-tensor `quant_type` in its `TensorQuantOverrides`, and a
`convert` entry that gives some readers of a tensor another type: onnxruntime writes a
second QuantizeLinear/DequantizeLinear pair there (a requantization between the two
regions). onnxruntime's `MixedPrecisionTensorQuantOverridesFixer` (used by
`get_qnn_qdq_config`) derives these entries from a tensor's type, and so widens the region
to every reader of a 16-bit tensor; here the region is exactly the nodes asked for:

- a tensor a kept node writes is int16, converted back to int8 for readers that are not kept;
- a tensor an int8 node (or the graph input) writes stays int8, converted to int16 for the
  kept nodes that read it.

Each entry keeps the calibration range it had (`rmin`/`rmax` of the percentile ranges),
for the tensor and for its converted copy.

Example:
```python
overrides = int16_overrides(graph, ["conv1", "relu1"], QuantType.QUInt8, QuantType.QInt16,
                            percentile_ranges)
quantize_static(..., extra_options={"TensorQuantOverrides": overrides})
```
"""

from __future__ import annotations

from typing import Any

FLOAT_TYPES = (1, 10)  # onnx.TensorProto.FLOAT, FLOAT16: what the quantizer quantizes


def activation_tensors(graph: Any) -> set:
    """Names of the float tensors of `graph` that are not weights or constants."""
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    values = list(graph.value_info) + list(graph.input) + list(graph.output)
    return {value.name for value in values
            if value.type.tensor_type.elem_type in FLOAT_TYPES and value.name not in constants}


def int16_overrides(graph: Any, nodes: list, default_type: Any, int16_type: Any,
                    ranges: dict) -> dict:
    """`TensorQuantOverrides` writing `nodes` with `int16_type` activations, the rest with
    `default_type`.

    Args:
        graph: the float `onnx.GraphProto` `quantize_static` reads, with value_info (shape
            inference has run).
        nodes: names of its nodes to keep at 16 bits.
        default_type: the file's activation `QuantType` (QUInt8 or QInt8).
        int16_type: the kept nodes' activation `QuantType` (QInt16).
        ranges: overrides already chosen (`{"tensor": [{"rmin": ..., "rmax": ...}]}`), kept.

    Returns:
        a new overrides dict; `ranges` is not changed.
    """
    kept = set(nodes)
    unknown = kept - {node.name for node in graph.node}
    if unknown:
        raise ValueError(f"`keep_int16` names nodes the graph does not have. Received: {sorted(unknown)[:3]}")
    tensors = activation_tensors(graph)
    producers = {out: node.name for node in graph.node for out in node.output}
    readers: dict = {}
    for node in graph.node:
        for name in node.input:
            if name in tensors:
                readers.setdefault(name, set()).add(node.name)
    overrides = {name: [dict(entry) for entry in entries] for name, entries in ranges.items()}
    for name in sorted(tensors):
        produced = producers.get(name) in kept
        wide = readers.get(name, set()) & kept
        narrow = readers.get(name, set()) - kept
        if not produced and not wide:
            continue
        own, other, converted = ((int16_type, default_type, narrow) if produced
                                 else (default_type, int16_type, wide))
        entry = overrides.setdefault(name, [{}])[0]
        entry["quant_type"] = own
        if converted:
            entry["convert"] = {"quant_type": other, "recv_nodes": set(converted),
                                **{key: entry[key] for key in ("rmin", "rmax") if key in entry}}
    return overrides
