"""Activation ranges of a calibrated TFLite model, measured again where TFLite's own are wrong.

`TFLiteConverter` calibrates by running the float model and logging each tensor's min and
max. An op that works in place (an ADD, SUB or MUL whose input is used by nothing else)
overwrites its input's buffer before that input's range is logged, so the input gets the
range of the op's output as well (TF 2.21). Seen here:

- `InputNormalization("caffe")` written as reversal then SUB: the REVERSE_V2 output took
  the SUB's range, [-124, 255] instead of [0, 255], and since the REVERSE_V2 kernel does
  not rescale, every value came out shifted (rmse 61 steps);
- a convolution feeding an ADD of a large constant: range [0, 1000] recorded for an
  output that never exceeds 0.25, so the whole tensor quantized to 0;
- every residual ADD (ResNet50), attention gate and squeeze-excite MUL widens the range
  of the tensor before it, a coarser step than the data needs.

`measure_ranges` runs the calibrated model (float, with the calibrator's min/max
slots) on the calibration images without buffer sharing and without delegates, and
`set_ranges` writes those min/max back; quantizing that model then uses the true ranges.
Tensors calibration got right come out the same.

Example:
```python
from keras_unet.export.quantization.tflite_ranges import measure_ranges, set_ranges, widened_ranges

ranges = measure_ranges(calibrated_model, calibration_images)
widened_ranges(calibrated_model, ranges)   # [('m/conv1/Relu;m/conv1/convolution', 4100.0)]
fixed = set_ranges(calibrated_model, ranges)
```
"""

import warnings

import numpy as np

# The axis of each activation's channel means (bias_correction reads them): TFLite tensors are NHWC.
CHANNEL_AXIS = -1


def recorded_ranges(model_bytes):
    """`{tensor name: (min, max)}` of the per-tensor ranges stored in a calibrated model.

    Example:
    ```python
    recorded_ranges(calibrated_model)["serving_default_image:0"]  # (0.0, 255.0)
    ```
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    ranges = {}
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            q = tensor.quantization
            if q is not None and q.min is not None and q.max is not None and len(q.min) == 1:
                ranges[tensor.name.decode()] = (float(q.min[0]), float(q.max[0]))
    return ranges


def measure_ranges(model_bytes, images):
    """Min and max of every float tensor over `images`, no buffer shared between tensors.

    Args:
        model_bytes: a float `.tflite` model, e.g. `TFLiteQuantizer.calibrated_model`.
        images: the calibration images `(N, H, W, C)` the converter saw (pinned range
            included), or an iterable of input lists as a `representative_dataset` yields.

    Example:
    ```python
    measure_ranges(calibrated_model, pin_input_range(images))
    ```
    """
    return sample_tensors(model_bytes, images).min_max()


def sample_tensors(model_bytes, images):
    """A `ranges.RangeSampler` of every float tensor over `images` (min, max, tails).

    Runs without buffer sharing and without delegates, so each tensor is read as the op
    that produced it left it.

    Example:
    ```python
    sample_tensors(calibrated_model, pin_input_range(images)).ranges(99.99)
    ```
    """
    from keras_unet.export.quantization.ranges import RangeSampler
    from keras_unet.export.quantization.softmax_range import SoftmaxLogits

    images = list(images)  # a representative dataset is a generator; the tails need the count
    sampler = RangeSampler(expected_images=len(images), channel_axis=CHANNEL_AXIS)
    # A TFLite softmax runs over the last axis.
    sampler.softmax_logits = {name: SoftmaxLogits(axis=-1, expected_images=len(images))
                              for name in softmax_inputs(model_bytes)}
    for values in tensor_values(model_bytes, images):
        sampler.add(values)
    if not sampler.images:
        raise ValueError("`images` is empty: pass the calibration images. Received: no images")
    return sampler


def tensor_values(model_bytes, images, names=None):
    """Yield, per image, `{tensor name: value}` of the model's float tensors (those in `names`
    only, when given), run without buffer sharing and without delegates.

    Args:
        model_bytes: a float `.tflite` model.
        images: `(N, H, W, C)` images, or input lists as a `representative_dataset` yields.
        names: tensor names to read, or None for every float tensor.

    Example:
    ```python
    next(tensor_values(calibrated_model, images, names=["conv1"]))["conv1"].shape
    ```
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with warnings.catch_warnings():  # "preserve_all_tensors ... for debugging": it is
        warnings.filterwarnings("ignore", message=r".*experimental_preserve_all_tensors.*")
        interpreter = Interpreter(
            model_content=bytes(model_bytes), experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    tensors = [(d["index"], d["name"]) for d in interpreter.get_tensor_details()
               if np.dtype(d["dtype"]) == np.float32 and d["name"]
               and (names is None or d["name"] in names)]
    for sample in images:
        if isinstance(sample, (list, tuple)):
            sample = sample[0]
        sample = np.asarray(sample, dtype=np.float32)
        if sample.ndim == len(detail["shape"]) - 1:
            sample = sample[None]
        interpreter.set_tensor(detail["index"], sample)
        interpreter.invoke()
        values = {}
        for index, name in tensors:
            try:
                values[name] = interpreter.get_tensor(index)
            except ValueError:  # constants folded away, tensors without data
                continue
        yield values


def softmax_inputs(model_bytes) -> list:
    """Names of the tensors a SOFTMAX op of a `.tflite` file reads (its logits)."""
    from keras_unet.export.quantization.tflite_graph import tensor_consumers, tensor_ops

    ops, _ = tensor_ops(model_bytes)
    softmax = {name for name, op in ops.items() if op == "SOFTMAX"}
    return [tensor for tensor, readers in tensor_consumers(model_bytes).items()
            if softmax.intersection(readers)]


def widened_ranges(model_bytes, ranges, factor=1.5):
    """Tensors whose recorded range is more than `factor` times wider than measured.

    Returns:
        list of `(tensor name, recorded width / measured width)`, widest first.

    Example:
    ```python
    widened_ranges(calibrated_model, measure_ranges(calibrated_model, images))
    ```
    """
    found = []
    for name, (lo, hi) in recorded_ranges(model_bytes).items():
        if name not in ranges:
            continue
        m_lo, m_hi = ranges[name]
        ratio = (hi - lo) / max(m_hi - m_lo, 1e-12)
        if ratio > factor:
            found.append((name, float(ratio)))
    return sorted(found, key=lambda item: -item[1])


def set_ranges(model_bytes, ranges):
    """Copy of a calibrated model with the recorded min/max replaced by `ranges`.

    Only tensors that already carry a per-tensor range (the ones calibration logged) and
    appear in `ranges` change.

    Example:
    ```python
    fixed = set_ranges(calibrated_model, measure_ranges(calibrated_model, images))
    ```
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            q = tensor.quantization
            name = tensor.name.decode()
            if (q is None or q.min is None or q.max is None or len(q.min) != 1
                    or name not in ranges):
                continue
            lo, hi = ranges[name]
            q.min, q.max = [float(lo)], [float(hi)]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
