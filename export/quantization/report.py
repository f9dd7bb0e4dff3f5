"""Rows of a per-layer quantization report, shared by the TFLite and ONNX reports.

One row per quantized tensor of the int8 file, compared with the float value the same
op gives on the same (quantized) input, so that each row measures the error that tensor
adds itself, not what earlier layers passed on:

- `name`: the Keras layer the tensor comes from (`model.get_layer(name)`; layers fused
  into one op, such as a convolution and the activation after it, are joined by `+`),
  else the tensor name.
- `op`: the TFLite op (`CONV_2D`) or the ONNX op type (`Conv`) that produces it.
- `sqnr_db`: signal-to-quantization-noise ratio, `10 log10(sum(float**2) / sum(error**2))`
  over all verification images (onnxruntime's `compute_signal_to_quantization_noice_ratio`;
  `MAX_SQNR_DB` when there is no error).
- `rmse_over_scale`: root mean square error in quantization steps (`sqrt(mse) / scale`);
  plain rounding gives ~0.29, a kernel that misreads its input's scale gives tens.
- `max_abs_error`: the largest absolute error in an image, averaged over the images
  (TFLite's `QuantizationDebugger` definition; the ONNX report follows it).
- `mean_error`: the mean signed error; far from 0 means a shifted tensor.
- `kept_float`: the tensor's op was left in float (no error figures then).
- `node`: what the format's repair step takes to keep that op in float: the TFLite
  tensor name for `denylisted_nodes`, the ONNX node name for `nodes_to_exclude`.

Rows are ordered worst first by `sqnr_db`, then by `rmse_over_scale`; rows kept in float
come last. SQNR leads because it also sees range problems: a tensor whose range was
stretched by outliers (seen in calibration, rare in use) gets a coarse step, and its
error is small in steps (`rmse_over_scale` ~0.3) but large next to the signal. Neither
figure sees a range stretched by one channel that carries most of the power: the other
channels lose their precision while the tensor's SQNR stays high (per-channel figures
would be needed for that).

Example:
```python
from keras_unet.export.quantization.report import format_worst_layers, make_row, sort_rows

rows = sort_rows([
    make_row("conv1", "CONV_2D", "m/conv1/Relu", sqnr_db=38.0, rmse_over_scale=0.3),
    make_row("normalization", "SUB", "m/normalization/sub", sqnr_db=2.0, rmse_over_scale=44.0),
])
print(format_worst_layers(rows, n=5))
```
"""

import math
import re
from typing import Any, Optional

COLUMNS = ("name", "op", "sqnr_db", "rmse_over_scale", "max_abs_error", "mean_error",
           "kept_float", "node")
_EPSILON = float.fromhex("0x1p-52")  # numpy.finfo(float).eps, as onnxruntime's SQNR uses
MAX_SQNR_DB = 200.0  # reported for a tensor without any error
_SCOPE_SUFFIX = re.compile(r"_\d+$")


def make_row(name, op, node, sqnr_db=None, rmse_over_scale=None, max_abs_error=None,
             mean_error=None, kept_float=False) -> dict:
    """One report row with every column of `COLUMNS`; figures as plain floats or None.

    Example:
    ```python
    make_row("head", "CONV_2D", "unet/head/BiasAdd", sqnr_db=31.5, rmse_over_scale=0.29)
    ```
    """
    def number(value):  # JSON has no NaN or infinity
        return None if value is None or not math.isfinite(float(value)) else float(value)

    return {
        "name": str(name), "op": str(op), "sqnr_db": number(sqnr_db),
        "rmse_over_scale": number(rmse_over_scale), "max_abs_error": number(max_abs_error),
        "mean_error": number(mean_error), "kept_float": bool(kept_float), "node": str(node),
    }


def sqnr_db(signal_power, noise_power) -> float:
    """`10 log10(signal_power / noise_power)`, both floored at machine epsilon (finite).

    No error at all gives `MAX_SQNR_DB`: onnxruntime's formula gives 0 dB to a tensor
    that is zero in both models, which would rank it with the worst.

    Example:
    ```python
    sqnr_db(1.0, 0.01)  # 20.0
    ```
    """
    if float(noise_power) <= 0.0:
        return MAX_SQNR_DB
    ratio = max(float(signal_power), _EPSILON) / max(float(noise_power), _EPSILON)
    return min(10.0 * math.log10(ratio), MAX_SQNR_DB)


def sort_rows(rows) -> list:
    """Rows worst first: lowest `sqnr_db`, then highest `rmse_over_scale`; kept-float last.

    Example:
    ```python
    sort_rows(rows)[0]["name"]  # the layer int8 hurts most
    ```
    """
    def key(row):
        if row["kept_float"] or row["sqnr_db"] is None:
            return (1, 0.0, 0.0)
        return (0, row["sqnr_db"], -(row["rmse_over_scale"] or 0.0))

    return sorted(rows, key=key)


def worst_nodes(rows, n=1, skip=()) -> list:
    """The `node` of the `n` worst quantized rows, for the format's keep-in-float option.

    Args:
        rows: report rows (any order).
        n: how many.
        skip: nodes already kept in float or not to be offered.

    Example:
    ```python
    keep = worst_nodes(tflite_layer_report(converter, images), n=2)
    ```
    """
    skip = set(skip)
    chosen = []
    for row in sort_rows(rows):
        if not row["kept_float"] and row["node"] not in skip and row["node"] not in chosen:
            chosen.append(row["node"])
        if len(chosen) == n:
            break
    return chosen


def leading_nodes(ops, compute_ops) -> list:
    """The stem: the first convolution, the ops it depends on, and the ops after it that
    read only what the stem computes (its activation), in execution order.

    The stem's error reaches every later layer, which the per-layer figures, each measured
    on its own input, do not show; and it is cheap to keep in float (it reads the image's
    few channels). MobileNetV3's stem (a 3x3 convolution, batch norm folded, then
    hard-swish, whose output reaches 14 where most values are below 1) cost 1.2-1.8
    points of agreement on both runtimes.

    Args:
        ops: `(node, op type, input tensor names, output tensor names)` in execution order;
            weights are tensors no op produces.
        compute_ops: the op types that count as convolutions.

    Example:
    ```python
    leading_nodes([("mul", "MUL", ["image"], ["a"]), ("conv", "CONV_2D", ["a"], ["b"]),
                   ("act", "HARD_SWISH", ["b"], ["c"]), ("dw", "DEPTHWISE_CONV_2D", ["c"], ["d"])],
                  {"CONV_2D", "DEPTHWISE_CONV_2D"})
    # ['mul', 'conv', 'act']
    ```
    """
    ops = list(ops)
    first = next((i for i, op in enumerate(ops) if op[1] in compute_ops), None)
    if first is None:
        return []
    producer = {tensor: i for i, op in enumerate(ops) for tensor in op[3]}
    stem, pending = {first}, [first]
    while pending:  # what the first convolution depends on
        for tensor in ops[pending.pop()][2]:
            i = producer.get(tensor)
            if i is not None and i not in stem:
                stem.add(i)
                pending.append(i)
    for i in range(first + 1, len(ops)):  # what reads only the stem, up to a convolution
        node, op, inputs, _ = ops[i]
        made = [producer[t] for t in inputs if t in producer]
        if op not in compute_ops and made and all(j in stem for j in made):
            stem.add(i)
    return [ops[i][0] for i in sorted(stem)]


def trailing_nodes(ops, compute_ops) -> list:
    """The head: the last convolution (the classifier), every op after it (its softmax or
    sigmoid), and the ops it reads back to and including the convolutions before it, in
    execution order.

    The classifier decides each pixel's class from small differences between its logits, so
    the error of the features it reads and of the logits it writes moves pixels across a
    class boundary, which the per-layer figures do not weigh: on a ResNet50 U-Net trained on
    CamVid (11 classes), keeping these three ops in float raised agreement from 0.978 to
    0.983 while no row of the report stood out. It is cheap: one or two convolutions at the
    output's resolution with few channels. Why: see docs/notes/2026-12-07-softmax-logit-range.md.

    Args:
        ops: `(node, op type, input tensor names, output tensor names)` in execution order;
            weights are tensors no op produces.
        compute_ops: the op types that count as convolutions.

    Example:
    ```python
    trailing_nodes([("c1", "CONV_2D", ["x"], ["a"]), ("c2", "CONV_2D", ["a"], ["b"]),
                    ("head", "CONV_2D", ["b"], ["c"]), ("p", "SOFTMAX", ["c"], ["d"])],
                   {"CONV_2D"})
    # ['c2', 'head', 'p']
    ```
    """
    ops = list(ops)
    last = max((i for i, op in enumerate(ops) if op[1] in compute_ops), default=None)
    if last is None:
        return []
    producer = {tensor: i for i, op in enumerate(ops) for tensor in op[3]}
    tail, pending = set(range(last, len(ops))), [last]
    while pending:  # what the classifier reads, back to the convolutions that compute it
        for tensor in ops[pending.pop()][2]:
            i = producer.get(tensor)
            if i is None or i in tail:
                continue
            tail.add(i)
            if ops[i][1] not in compute_ops:
                pending.append(i)
    return [ops[i][0] for i in sorted(tail)]


def layer_names(model) -> Optional[set]:
    """The names `keras_layer_name` resolves against, from a Keras model or an iterable.

    Example:
    ```python
    layer_names(model)  # {'image', 'normalization', 'conv1_conv', ..., 'head'}
    ```
    """
    if model is None:
        return None
    layers = getattr(model, "layers", None)
    if layers is not None:
        return {layer.name for layer in layers}
    return {str(name) for name in model}


def output_layer_names(model) -> list:
    """Names of the layers that produce a Keras model's outputs ([] for a list of names).

    The converters name the output tensors after the signature
    (`StatefulPartitionedCall_1:0`), not after a layer; the reports use these instead.

    Example:
    ```python
    output_layer_names(keras_unet.UNet((64, 64, 3), filters=8))  # ['probabilities']
    ```
    """
    names = []
    for tensor in getattr(model, "outputs", None) or []:
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            names.append(history[0].name)
    return names


def _layer_in_path(path, names):
    # TF name scopes repeat the model scope and usually add "_1" to each layer's name
    # ("unet_1/unet_1/conv1_conv_1/convolution"); the stripped form is tried first, so
    # a scope "conv2d_1" resolves to the layer "conv2d" when both exist.
    for component in path.split("/")[:-1]:
        for candidate in (_SCOPE_SUFFIX.sub("", component), component):
            if candidate in names:
                return candidate
    return None


def keras_layer_name(tensor_name, names) -> Any:
    """The Keras layer(s) a TFLite tensor or ONNX node name comes from.

    Fused ops list their parts with `;`, output op first; the layers come back in
    computation order joined by `+`. Falls back to `tensor_name` when no part names a
    layer of `names` (or `names` is None).

    Args:
        tensor_name: a TFLite tensor name or an ONNX node name.
        names: a set of Keras layer names (see `layer_names`), or None.

    Example:
    ```python
    keras_layer_name("unet_1/unet_1/conv1_relu_1/Relu;unet_1/unet_1/conv1_conv_1/convolution",
                     {"conv1_conv", "conv1_relu"})  # 'conv1_conv+conv1_relu'
    ```
    """
    if not names:
        return tensor_name
    found = []
    for part in reversed(str(tensor_name).split(";")):
        layer = _layer_in_path(part, names)
        if layer is not None and layer not in found:
            found.append(layer)
    return "+".join(found) if found else tensor_name


def _cell(value, digits):
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def format_worst_layers(rows, n=10) -> str:
    """A short text table of the `n` worst rows, plus a line for the layers kept in float.

    Example:
    ```python
    print(format_worst_layers(rows, n=5))
    #  #  layer                   op          SQNR dB  rmse/step  max|err|  mean err
    #  1  normalization           SUB            2.1      44.19    167.3     34.40
    ```
    """
    ordered = sort_rows(rows)
    quantized = [row for row in ordered if not row["kept_float"]][:n]
    kept = [f"{row['name']} ({row['op']})" for row in ordered if row["kept_float"]]
    width = max([len("layer")] + [len(row["name"]) for row in quantized])
    width = min(width, 48)
    lines = [f"{'#':>3}  {'layer':<{width}}  {'op':<16}{'SQNR dB':>8}{'rmse/step':>11}"
             f"{'max|err|':>10}{'mean err':>10}"]
    for rank, row in enumerate(quantized, 1):
        name = row["name"] if len(row["name"]) <= width else row["name"][:width - 3] + "..."
        lines.append(
            f"{rank:>3}  {name:<{width}}  {row['op'][:15]:<16}{_cell(row['sqnr_db'], 1):>8}"
            f"{_cell(row['rmse_over_scale'], 2):>11}{_cell(row['max_abs_error'], 4):>10}"
            f"{_cell(row['mean_error'], 4):>10}"
        )
    if not quantized:
        lines.append("  (no quantized tensors)")
    if kept:
        lines.append(f"kept in float ({len(kept)}): {', '.join(kept)}")
    return "\n".join(lines)
