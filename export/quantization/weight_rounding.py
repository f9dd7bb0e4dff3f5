"""Weight rounding against the data (GPTQ): int8 weights chosen for the layer's output.

Both quantizers round each convolution weight to the nearest step of its output channel's
grid (`scale = max |w| / 127`, symmetric; see `bias_correction`). Nearest is best for each
weight alone, not for the output: the errors of the weights an output sums add up. GPTQ
(Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", 2022; the OBQ rule of Frantar and Alistarh, 2022) rounds one input position
of the kernel at a time and moves the weights not yet rounded to cancel the error, through
the inverse of `H = E[p p^T]`, the second moment of the layer's input patches `p` over the
calibration images. It minimises `E |(Q(W) - W) p|^2`, each output channel's error on the
data, the mean shift included (that is what `bias_correction` removes alone).

The rounded weights are written into the float model on the same grid, so the quantizer
that reads them rounds them to exactly those steps: each channel's largest weight keeps its
nearest step (+-127, which sets the scale), the others stay within [-127, 127].

It is a calibration variant of its own (`"percentile+gptq"`, see `variants`): the int8 step
tries it on the best calibration when that one falls short of the target and keeps it when
it verifies better. CONV_2D and DEPTHWISE_CONV_2D (TFLite) and `Conv` (ONNX, any `group`)
are rounded; transposed convolutions and ops kept in float are left as they are. Why, and
the measurements: docs/notes/2026-12-07-gptq-weight-rounding.md.

Example:
```python
from keras_unet.export.quantization.weight_rounding import ConvGeometry, InputMoments, gptq_round

moments = InputMoments(ConvGeometry(input="x", kernel=(3, 3)), expected_images=len(images))
for image in images:
    moments.add(image[None])          # (1, H, W, C), the convolution's input
rounded = gptq_round(kernel, moments.matrix())   # kernel (out, kh, kw, in), same layout
```
"""

import dataclasses
import math
from typing import Any, Optional

import numpy as np

WEIGHT_QMAX = 127
# Patches sampled per convolution over all calibration images (fewer where the images hold
# fewer positions: ResNet50's 3x3x512 kernels saw 20 per image, 4608 inputs, and still
# reached the ninth bit in the simulation). The moments pass costs samples x K^2.
SAMPLES = 8192
# GPTQ's damping, a share of H's mean diagonal added to it: the inverse stays well posed
# where inputs are (nearly) constant or fewer patches than inputs were seen.
DAMPING = 0.01
_BLOCK = 128  # columns rounded between two matrix updates (GPTQ's lazy batch)
_FLUSH_SAMPLES = 2048  # patches buffered before they are added to the moments' sum


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """How a convolution reads its input: what `InputMoments` extracts patches with.

    Args:
        input: the name of the input tensor.
        kernel: `(kh, kw)`.
        strides, dilations: `(h, w)`.
        pads: `(top, left, bottom, right)`, or `"same"` (TF's: computed from the input size)
            or `"valid"`.
        groups: input channel groups (the input channels for a depthwise convolution).
        channels_first: the tensor is NCHW (ONNX), else NHWC (TFLite).
    """

    input: str
    kernel: tuple
    strides: tuple = (1, 1)
    dilations: tuple = (1, 1)
    pads: Any = "valid"
    groups: int = 1
    channels_first: bool = False

    def padding(self, height: int, width: int) -> tuple:
        """`(top, left, bottom, right)` for an input of `height` x `width`."""
        if self.pads == "valid":
            return (0, 0, 0, 0)
        if self.pads == "same":
            total = [max((math.ceil(size / stride) - 1) * stride + (k - 1) * d + 1 - size, 0)
                     for size, stride, k, d in zip((height, width), self.strides, self.kernel,
                                                   self.dilations)]
            return (total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2)
        return tuple(int(p) for p in self.pads)


class InputMoments:
    """Running `E[p p^T]` of a convolution's input patches, per channel group.

    Args:
        geometry: the convolution's `ConvGeometry`.
        expected_images: how many images will be added: each contributes about
            `samples / expected_images` patches at random output positions (seeded).
        samples: patches to sample over all images.
    """

    def __init__(self, geometry: ConvGeometry, expected_images: int = 100, samples: int = SAMPLES):
        self.geometry = geometry
        self.per_image = max(1, math.ceil(samples / max(1, int(expected_images))))
        self._sum: Any = None
        self._summed = 0  # patches in the sum
        self._pending: list = []  # (S, kh, kw, C) patches not yet in the sum
        self._rng = np.random.default_rng(0)

    def add(self, value: Any) -> None:
        """Add one input tensor `(N, H, W, C)` (or NCHW with `channels_first`)."""
        value = np.asarray(value, np.float32)
        if value.ndim != 4:
            return
        if self.geometry.channels_first:
            value = value.transpose(0, 2, 3, 1)
        self._pending.append(self._patches(value))
        if self.count - self._summed >= _FLUSH_SAMPLES:
            self._flush()

    def _flush(self) -> None:
        """Add the buffered patches' products to the running sum.

        Patches are buffered over images (about `samples / expected_images` each, 82 at
        the defaults) and multiplied together: the product of one image's few patches costs
        no fewer flops, but adding a `(K, K)` float64 sum per image took most of the pass
        (a 3x3x256 kernel's is 42 MB, 100 times per calibration)."""
        if not self._pending:
            return
        patches = np.concatenate(self._pending)
        self._pending = []
        groups = self.geometry.groups
        samples = len(patches)
        grouped = patches.reshape(samples, -1, groups, patches.shape[-1] // groups)
        grouped = grouped.transpose(2, 0, 1, 3).reshape(groups, samples, -1)
        # (G, K, S) @ (G, S, K) in float32 BLAS (np.einsum would not use BLAS, float64 would
        # take twice as long), summed over flushes in float64.
        product = np.matmul(grouped.transpose(0, 2, 1), grouped)
        if self._sum is None:
            self._sum = np.zeros(product.shape, np.float64)
        self._sum += product  # in place: a 3x3x512 kernel's sum is 170 MB
        self._summed += samples

    @property
    def count(self) -> int:
        """Patches added so far."""
        return self._summed + sum(len(patches) for patches in self._pending)

    def _patches(self, value: np.ndarray) -> np.ndarray:
        g = self.geometry
        images, height, width, _ = value.shape
        top, left, bottom, right = g.padding(height, width)
        padded = np.pad(value, ((0, 0), (top, bottom), (left, right), (0, 0)))
        (kh, kw), (sh, sw), (dh, dw) = g.kernel, g.strides, g.dilations
        out_h = (padded.shape[1] - (kh - 1) * dh - 1) // sh + 1
        out_w = (padded.shape[2] - (kw - 1) * dw - 1) // sw + 1
        positions = images * out_h * out_w
        if out_h < 1 or out_w < 1:
            return np.zeros((0, kh, kw, value.shape[-1]), np.float32)
        count = min(positions, self.per_image * images)
        picked = self._rng.choice(positions, count, replace=False)
        n, rest = np.divmod(picked, out_h * out_w)
        y, x = np.divmod(rest, out_w)
        rows = (y * sh)[:, None] + np.arange(kh) * dh  # (S, kh)
        cols = (x * sw)[:, None] + np.arange(kw) * dw  # (S, kw)
        return padded[n[:, None, None], rows[:, :, None], cols[:, None, :], :]

    def matrix(self) -> Optional[np.ndarray]:
        """`(groups, K, K)` mean second moment (K = kh * kw * in / groups), or None if empty."""
        self._flush()
        if not self._summed:
            return None
        return self._sum / self._summed


def nearest_round(weights: Any) -> np.ndarray:
    """`weights` `(out, ...)` rounded to the nearest step of each output channel's grid."""
    weights = np.asarray(weights, np.float64)
    flat = weights.reshape(len(weights), -1)
    scale = _scales(flat)[:, None]
    return (np.clip(np.round(flat / scale), -WEIGHT_QMAX, WEIGHT_QMAX) * scale).reshape(weights.shape)


def _scales(flat: np.ndarray) -> np.ndarray:
    scale = np.abs(flat).max(axis=1) / WEIGHT_QMAX
    return np.where(scale > 0, scale, 1.0)


def gptq_round(kernel: Any, moments: Any, groups: int = 1) -> np.ndarray:
    """A kernel `(out, kh, kw, in / groups)` rounded by GPTQ against its input's moments.

    Args:
        kernel: float weights; output channel `o` belongs to group `o // (out / groups)`.
        moments: `(groups, K, K)`, `InputMoments.matrix()` (K = kh * kw * in / groups,
            in the kernel's `(kh, kw, in)` order).
        groups: channel groups (`moments`' first axis).

    Returns:
        float32 weights of the kernel's shape, each on its channel's int8 grid (the grid of
        the kernel given: each channel's largest weight keeps its step).
    """
    kernel = np.asarray(kernel, np.float64)
    outputs = kernel.shape[0]
    flat = kernel.reshape(groups, outputs // groups, -1)  # (G, O, K)
    hessian = np.array(moments, np.float64)
    if hessian.shape != (groups, flat.shape[2], flat.shape[2]):
        raise ValueError(f"`moments` must have shape {(groups, flat.shape[2], flat.shape[2])} for a "
                         f"kernel {kernel.shape} in {groups} group(s). Received: {hessian.shape}")
    scale = _scales(flat.reshape(outputs, -1)).reshape(groups, -1, 1)
    upper = _inverse_cholesky(hessian)
    if upper is None:  # not positive definite even damped: nearest rounding
        return nearest_round(kernel).astype(np.float32)
    work = flat.copy()
    steps = np.zeros_like(flat)
    size = flat.shape[2]
    for start in range(0, size, _BLOCK):
        stop = min(start + _BLOCK, size)
        block = work[:, :, start:stop].copy()
        errors = np.zeros_like(block)
        inverse = upper[:, start:stop, start:stop]
        for j in range(stop - start):
            column = block[:, :, j]
            rounded = np.clip(np.round(column / scale[:, :, 0]), -WEIGHT_QMAX, WEIGHT_QMAX)
            steps[:, :, start + j] = rounded
            error = (column - rounded * scale[:, :, 0]) / inverse[:, j, j][:, None]
            block[:, :, j:] -= error[:, :, None] * inverse[:, None, j, j:]
            errors[:, :, j] = error
        work[:, :, stop:] -= np.einsum("gok,gkl->gol", errors, upper[:, start:stop, stop:])
    # The channel's largest weight keeps its nearest step, so the grid (its scale) is kept.
    steps = steps.reshape(outputs, -1)
    original = flat.reshape(outputs, -1)
    largest = np.abs(original).argmax(axis=1)
    rows = np.arange(outputs)
    scale = scale.reshape(outputs)
    steps[rows, largest] = np.clip(np.round(original[rows, largest] / scale), -WEIGHT_QMAX, WEIGHT_QMAX)
    return (steps * scale[:, None]).reshape(kernel.shape).astype(np.float32)


def rounded_once(memo: Optional[dict], name: str, kernel: np.ndarray, moments: Any,
                 groups: int) -> np.ndarray:
    """`gptq_round(kernel, moments, groups)`, remembered in `memo` (None: not remembered).

    Repair quantizes the file again for every set of ops it keeps in float, and a kernel's
    rounding depends only on that kernel and its input's moments, not on what else is kept:
    over a repair search the GPTQ solve (an inverse and a Cholesky per kernel) ran 9 times
    per kernel, most of a 32x32 ONNX export's time. The key holds the kernel's bytes, so a
    kernel changed in between is rounded anew.
    """
    if memo is None:
        return gptq_round(kernel, moments, groups)
    import hashlib

    key = (name, groups, hashlib.sha1(np.ascontiguousarray(kernel).tobytes()).hexdigest())
    if key not in memo:
        memo[key] = gptq_round(kernel, moments, groups)
    return memo[key]


def _inverse_cholesky(hessian: np.ndarray) -> Optional[np.ndarray]:
    """Upper Cholesky factor of each damped `H^-1` (GPTQ's), or None if not positive definite."""
    size = hessian.shape[-1]
    diagonal = np.einsum("gkk->gk", hessian).copy()
    dead = diagonal <= 0  # an input that is always 0: its weight's error costs nothing
    diagonal[dead] = 1.0
    damping = DAMPING * diagonal.mean(axis=1, keepdims=True)
    for _ in range(3):
        damped = hessian.copy()
        index = np.arange(size)
        damped[:, index, index] = diagonal + damping
        try:
            lower = np.linalg.cholesky(np.linalg.inv(damped))
        except np.linalg.LinAlgError:
            damping = damping * 10
            continue
        return np.swapaxes(lower, -1, -2)
    return None


# TFLite ---------------------------------------------------------------------------------

def _tflite_convs(model, keep=()) -> list:
    """`(op, kind, output name)` of each CONV_2D / DEPTHWISE_CONV_2D with a float constant
    kernel, except those whose output is named in `keep`."""
    from ai_edge_litert import schema_py_generated as schema

    from keras_unet.export.quantization.tflite_graph import builtin_codes, float_constant

    graph = model.subgraphs[0]
    codes = builtin_codes(model)
    kinds = {schema.BuiltinOperator.CONV_2D: "conv",
             schema.BuiltinOperator.DEPTHWISE_CONV_2D: "depthwise"}
    found = []
    for op in graph.operators or []:
        kind = kinds.get(codes[op.opcodeIndex])
        inputs = list(op.inputs)
        if kind is None or len(inputs) < 2 or min(inputs[:2]) < 0:
            continue
        name = graph.tensors[op.outputs[0]].name.decode()
        if name in keep or float_constant(model, graph.tensors[inputs[1]]) is None:
            continue
        found.append((op, kind, name))
    return found


def _tflite_geometry(graph, op, kind) -> ConvGeometry:
    from ai_edge_litert import schema_py_generated as schema

    options = op.builtinOptions
    source = graph.tensors[op.inputs[0]]
    kernel = graph.tensors[op.inputs[1]]
    channels = int(source.shape[-1])
    if kind == "conv":  # (out, kh, kw, in / groups)
        size, groups = tuple(kernel.shape[1:3]), max(1, channels // int(kernel.shape[-1]))
    else:  # (1, kh, kw, out)
        size, groups = tuple(kernel.shape[1:3]), channels
    same = options.padding == schema.Padding.SAME
    return ConvGeometry(
        input=source.name.decode(), kernel=tuple(int(k) for k in size),
        strides=(options.strideH, options.strideW),
        dilations=(options.dilationHFactor or 1, options.dilationWFactor or 1),
        pads="same" if same else "valid", groups=groups)


def _tflite_layout(weights, kind) -> np.ndarray:
    """A TFLite kernel as `(out, kh, kw, in / groups)`."""
    return weights if kind == "conv" else weights.transpose(3, 1, 2, 0)


def tflite_input_moments(model_bytes: Any, images: Any, progress: bool = False) -> dict:
    """`{conv output name: (groups, K, K) input moments}` of each convolution of a float
    `.tflite` model (`_tflite_convs`), over `images` (`tflite_ranges.tensor_values`)."""
    from tensorflow.lite.tools import flatbuffer_utils

    from keras_unet.export.quantization.tflite_ranges import tensor_values

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    graph = model.subgraphs[0]
    images = list(images)
    moments = {name: InputMoments(_tflite_geometry(graph, op, kind), expected_images=len(images))
               for op, kind, name in _tflite_convs(model)}
    inputs = {m.geometry.input for m in moments.values()}
    for values in _progress(tensor_values(model_bytes, images, names=inputs), len(images), progress):
        for entry in moments.values():
            if entry.geometry.input in values:
                entry.add(values[entry.geometry.input])
    return {name: entry.matrix() for name, entry in moments.items() if entry.count}


def tflite_round_weights(model_bytes: Any, moments: dict, keep: Any = (),
                         memo: Optional[dict] = None) -> bytes:
    """A float (calibrated) `.tflite` model with each convolution's kernel rounded by GPTQ
    (`gptq_round`) on its int8 grid; ops named in `keep` (kept in float) and ops without
    moments are left as they are.

    Args:
        model_bytes: a float `.tflite` model, e.g. `TFLiteQuantizer.calibrated_model`.
        moments: `tflite_input_moments` of that model.
        keep: output tensor names of ops left as they are.
        memo: a dict kept across calls with the same `moments` (`rounded_once`).
    """
    from tensorflow.lite.tools import flatbuffer_utils

    from keras_unet.export.quantization.tflite_graph import float_constant

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    graph = model.subgraphs[0]
    buffer_users: dict = {}
    for tensor in graph.tensors:
        buffer_users[tensor.buffer] = buffer_users.get(tensor.buffer, 0) + 1
    for op, kind, name in _tflite_convs(model, set(keep)):
        matrix = moments.get(name)
        if matrix is None:
            continue
        geometry = _tflite_geometry(graph, op, kind)
        kernel = graph.tensors[op.inputs[1]]
        weights = float_constant(model, kernel)
        layout = _tflite_layout(weights, kind)
        if matrix.shape[0] != geometry.groups or len(layout) % geometry.groups:
            continue
        rounded = rounded_once(memo, name, layout, matrix, geometry.groups)
        rounded = rounded if kind == "conv" else rounded.transpose(3, 1, 2, 0)
        if buffer_users[kernel.buffer] > 1:  # shared with another tensor: a buffer of its own
            buffer_users[kernel.buffer] -= 1
            model.buffers.append(type(model.buffers[kernel.buffer])())
            kernel.buffer = len(model.buffers) - 1
            buffer_users[kernel.buffer] = 1
        model.buffers[kernel.buffer].data = np.frombuffer(rounded.astype(np.float32).tobytes(), np.uint8)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


# ONNX -----------------------------------------------------------------------------------

def _onnx_convs(model, exclude=()) -> list:
    """`(node, kernel initializer)` of each `Conv` with a float 4-D initializer kernel, except
    the nodes named in `exclude`."""
    import onnx

    inits = {init.name: init for init in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name in exclude or len(node.input) < 2:
            continue
        kernel = inits.get(node.input[1])
        if kernel is None or kernel.data_type != onnx.TensorProto.FLOAT or len(kernel.dims) != 4:
            continue
        found.append((node, kernel))
    return found


def _onnx_geometry(node, kernel) -> ConvGeometry:
    attrs = {attr.name: attr for attr in node.attribute}
    ints = lambda name, default: tuple(attrs[name].ints) if name in attrs else default  # noqa: E731
    auto_pad = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
    size = tuple(int(k) for k in kernel.dims[2:])
    pads: Any = ints("pads", (0, 0, 0, 0))
    if auto_pad == "VALID":
        pads = "valid"
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = "same"  # SAME_LOWER puts the odd pad first: not written by tf2onnx; close enough
    return ConvGeometry(input=node.input[0], kernel=size, strides=ints("strides", (1, 1)),
                        dilations=ints("dilations", (1, 1)), pads=pads,
                        groups=int(attrs["group"].i) if "group" in attrs else 1,
                        channels_first=True)


def onnx_input_moments(model: Any, images: Any, input_name: str = "image", progress: bool = False) -> dict:
    """`{Conv node name: (groups, K, K) input moments}` of each Conv of a float ONNX graph
    (`_onnx_convs`) over `images` (`onnx_ranges.intermediate_values`)."""
    import onnx

    from keras_unet.export.quantization.onnx_ranges import intermediate_values

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    images = np.asarray(images, np.float32)
    moments = {node.name: InputMoments(_onnx_geometry(node, kernel), expected_images=len(images))
               for node, kernel in _onnx_convs(model)}
    inputs = {m.geometry.input for m in moments.values()}
    values_per_image = intermediate_values(model, images, input_name, names=inputs)
    for values in _progress(values_per_image, len(images), progress):
        for entry in moments.values():
            if entry.geometry.input in values:
                entry.add(values[entry.geometry.input])
    return {name: entry.matrix() for name, entry in moments.items() if entry.count}


def onnx_round_weights(model: Any, moments: dict, exclude: Any = (),
                       memo: Optional[dict] = None) -> Any:
    """A copy of a float ONNX `ModelProto` with each Conv's kernel rounded by GPTQ on its
    int8 grid; nodes named in `exclude` (kept in float) and Convs without moments are left
    as they are.

    Args:
        model: the float graph `quantize_static` reads (after `quant_pre_process`).
        moments: `onnx_input_moments` of that graph.
        exclude: node names left as they are.
        memo: a dict kept across calls with the same `moments` (`rounded_once`).
    """
    import onnx
    from onnx import numpy_helper

    rounded_model = onnx.ModelProto()
    rounded_model.CopyFrom(model)
    graph = rounded_model.graph
    readers: dict = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    for node, kernel in _onnx_convs(rounded_model, set(exclude)):
        matrix = moments.get(node.name)
        geometry = _onnx_geometry(node, kernel)
        if matrix is None or matrix.shape[0] != geometry.groups or kernel.dims[0] % geometry.groups:
            continue
        layout = numpy_helper.to_array(kernel).transpose(0, 2, 3, 1)  # (out, kh, kw, in / groups)
        rounded = rounded_once(memo, node.name, layout, matrix, geometry.groups).transpose(0, 3, 1, 2)
        if readers[node.input[1]] > 1:  # shared with another node: an initializer of its own
            name = f"{node.name}_weights_rounded"
            graph.initializer.append(numpy_helper.from_array(rounded, name))
            node.input[1] = name
        else:
            kernel.CopyFrom(numpy_helper.from_array(rounded, kernel.name))
    return rounded_model


def _progress(items, total, enabled):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc="rounding weights", leave=False)
