"""Percentile activation ranges of a float ONNX graph, for `quantize_static`'s overrides.

onnxruntime's `CalibrationMethod.Percentile` takes its histograms over |x|, which suits
symmetric int8 activations but gives our asymmetric uint8 ones wrong bounds (a ReLU
output's range no longer starts at 0; see `ranges`). Here every intermediate tensor of the
float graph is made a graph output (`qdq_loss_debug.modify_model_output_intermediate_tensors`
does the same for its report), the graph runs on the calibration images, and
`ranges.RangeSampler` gives each tensor's range clipped at the 99.99th percentile. They
reach `quantize_static` as `extra_options={"TensorQuantOverrides": ...}` with `rmin`/`rmax`,
and onnxruntime computes scale and zero point from them as it does from min/max.

The graph's input and outputs keep their min/max ranges: the input is pinned to [0, 255]
(`calibration.pin_input_range`) and clipping an output would saturate probabilities.

Example:
```python
overrides = percentile_overrides("prepared.onnx", calibration_images, input_name="image")
quantize_static(..., calibrate_method=CalibrationMethod.MinMax,
                extra_options={"TensorQuantOverrides": overrides})
```
"""

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from keras_unet.export.quantization.ranges import DEFAULT_PERCENTILE, RangeSampler
from keras_unet.export.quantization.softmax_range import SoftmaxLogits, softmax_ranges

# The axis of each activation's channel means (bias_correction reads them): ONNX tensors are NCHW.
CHANNEL_AXIS = 1


def sample_activations(float_path, images, input_name="image") -> Any:
    """A `RangeSampler` of every float intermediate tensor of `float_path` over `images`.

    Example:
    ```python
    sample_activations("prepared.onnx", images).min_max()["conv1"]  # (0.0, 7.3)
    ```
    """
    import onnx

    images = np.asarray(images, dtype=np.float32)
    sampler = RangeSampler(expected_images=len(images), channel_axis=CHANNEL_AXIS)
    model = onnx.load(str(float_path))
    sampler.softmax_logits = {node.input[0]: SoftmaxLogits(axis=axis, expected_images=len(images))
                              for node, axis in _softmax_axes(model)}
    for values in intermediate_values(model, images, input_name):
        sampler.add(values)
    if not sampler.images:
        raise ValueError("`images` is empty: pass the calibration images. Received: no images")
    return sampler


def intermediate_values(model, images, input_name="image", names=None):
    """Yield, per image, `{tensor name: value}` of a float ONNX graph's intermediate tensors
    (those in `names` only, when given), read as graph outputs with fusion off.

    Args:
        model: a `ModelProto` (not changed) or the path of one.
        images: `(N, H, W, C)` float images.
        names: tensor names to read, or None for every node output but constants.

    Example:
    ```python
    next(intermediate_values("prepared.onnx", images, names=["conv1"]))["conv1"].shape
    ```
    """
    import onnx
    import onnxruntime

    if isinstance(model, onnx.ModelProto):
        augmented = onnx.ModelProto()
        augmented.CopyFrom(model)
    else:
        augmented = onnx.load(str(model))
    graph = augmented.graph
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    outputs = {output.name for output in graph.output}
    for node in graph.node:
        for name in node.output:
            if (name and name not in constants and name not in outputs
                    and (names is None or name in names)):
                graph.output.append(onnx.ValueInfoProto(name=name))
                outputs.add(name)
    options = onnxruntime.SessionOptions()
    # No fusion: every tensor read is the one quantize_static will put a Q/DQ pair on.
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    with tempfile.TemporaryDirectory(prefix="keras_unet_ranges_") as work:
        path = Path(work) / "augmented.onnx"
        onnx.save(augmented, str(path))
        session = onnxruntime.InferenceSession(str(path), sess_options=options,
                                               providers=["CPUExecutionProvider"])
    output_names = [output.name for output in session.get_outputs()]
    for image in np.asarray(images, dtype=np.float32):
        yield dict(zip(output_names, session.run(None, {input_name: image[None]})))


def percentile_overrides(float_path, images, input_name="image", percentile=DEFAULT_PERCENTILE,
                         sampler=None) -> dict:
    """`TensorQuantOverrides` for `quantize_static`: each intermediate tensor's range
    clipped at `percentile` on each side (graph input and outputs left to min/max).

    Args:
        sampler: the `sample_activations` of `float_path` over `images`, when already taken.

    Example:
    ```python
    percentile_overrides("prepared.onnx", images)["conv1"]  # [{'rmin': 0.0, 'rmax': 5.2}]
    ```
    """
    import onnx

    graph = onnx.load(str(float_path), load_external_data=False).graph
    ends = {value.name for value in graph.input} | {value.name for value in graph.output}
    sampler = sampler or sample_activations(float_path, images, input_name)
    return {name: _override(low, high) for name, (low, high) in sampler.ranges(percentile).items()
            if name not in ends}


def min_max_overrides(sampler) -> dict:
    """`TensorQuantOverrides` with every sampled tensor's full range: what onnxruntime's
    MinMax calibration computes over the same images, without holding every image's
    tensors in memory at once (it does: 100 images of the seed-size U-Net took 15 GB).

    Example:
    ```python
    min_max_overrides(sample_activations("prepared.onnx", images))["conv1"]
    ```
    """
    return {name: _override(low, high) for name, (low, high) in sampler.min_max().items()}


def softmax_overrides(sampler, percentile=DEFAULT_PERCENTILE) -> dict:
    """`TensorQuantOverrides` of each softmax input the sampler measured, its range narrowed
    to what the softmax can show at 8 bits (`softmax_range`), at `percentile` (100: from
    min/max).

    Example:
    ```python
    overrides.update(softmax_overrides(sample_activations("prepared.onnx", images)))
    ```
    """
    ranges = sampler.min_max() if percentile >= 100.0 else sampler.ranges(percentile)
    return {name: _override(low, high)
            for name, (low, high) in softmax_ranges(sampler.softmax_logits, ranges,
                                                    percentile).items()}


def _softmax_axes(model) -> list:
    """`(node, class axis)` of each Softmax: its `axis` (default -1). Before opset 13 a
    Softmax flattens every axis from `axis` on into one, which is no per-pixel softmax: none
    is listed then."""
    opset = max((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")),
                default=13)
    if opset < 13:
        return []
    return [(node, next((int(a.i) for a in node.attribute if a.name == "axis"), -1))
            for node in model.graph.node if node.op_type == "Softmax"]


def bytes_per_image(sampler) -> int:
    """The float32 bytes of every sampled tensor of one image: what a calibrator that keeps
    all outputs (onnxruntime's MinMax and Entropy) holds per calibration image."""
    return int(4 * sum(sampler.values_per_image().values()))


def _override(low, high):
    return [{"rmin": np.array(low, dtype=np.float32), "rmax": np.array(high, dtype=np.float32)}]
