"""The U-Net in the form int8 runtimes compute best, with the same float32 numbers.

Two rewrites of `DecoderBlock` and one of `InputNormalization`, applied to a copy of the model
at export (`keras_unet.export.source.static_model`, and the ONNX graph) and checked against the
model:

**2x2 up-convolution as 1x1 convolution + pixel shuffle** (every runtime, every mode). A
`Conv2DTranspose` with a 2x2 kernel and stride 2 (`upsample="transpose"`, the original U-Net)
writes every output pixel from exactly one input pixel: output `(2h + i, 2w + j, c)` is
`sum_k x[h, w, k] * kernel[i, j, c, k] + bias[c]`. That is a 1x1 convolution to
`4 * filters` channels followed by `depth_to_space(2)`: the same products over the same
inputs. onnxruntime has no integer `ConvTranspose` kernel on CPU (microsoft/onnxruntime#8988;
a QDQ `ConvTranspose` runs in float between a dequantize and a quantize), while a 1x1 `Conv`
is an integer kernel and `DepthToSpace` moves bytes.

**A skip connection with its own int8 scale** (full-integer TFLite). TFLite's int8
`CONCATENATION` and `MAX_POOL_2D` require their inputs and output to share one scale and zero
point, so the converter gives one scale to the whole chain: an encoder block's output, its max
pool, the decoder's concatenation and the upsampled tensor beside it. The upsampled tensor is
signed (no ReLU after it), so an encoder feature map that is never negative is stored with a
zero point for negative values and up to 40% of its 256 levels unused, in the encoder path as
well as in the skip. A per-channel identity (a 1x1 depthwise convolution with weights 1) on the
skip before the concatenation is a requantization in int8: the encoder keeps its own tight
scale. ONNX does not need it (`QLinearConcat` requantizes each input).

**Skip connections equalized with the tensor beside them** (int8, TFLite and ONNX). A
per-tensor int8 scale is shared by the whole concatenation a decoder block's first
convolution reads, so channels far below the tensor's range (an encoder's fine-detail
features beside a wide upsampled tensor) keep a few of its 256 levels. `skip_equalization`
measures each channel's largest magnitude over the calibration images and gives each a factor
`s_k = min(sqrt(max / max_k), EQUALIZATION_CAP)` (never below 1): skip channels through a 1x1
depthwise convolution with weights `s_k` (TFLite already has one there), upsampled channels
folded into the 1x1 convolution of the pixel shuffle, and the convolution after the
concatenation reading channel k with its kernel divided by `s_k`. The float numbers are the
same up to rounding; the int8 file keeps more levels for those channels. The square root
splits the gap between the channel's activations and its weights, whose rows shrink inside
each output channel's int8 scale: scaling all the way to the largest channel cost the
batch-norm models as much as it gained the others. Upsampled channels
stay unscaled after other upsampling and where an attention gate reads them; a residual
`ConvBlock` (whose shortcut also reads the concatenation) gets no factors.

**Caffe normalisation as a 1x1 convolution** (ONNX). `InputNormalization("caffe")` reverses
the channels and subtracts the ImageNet means; tf2onnx writes that as `Sub`, `Transpose`,
`ReverseSequence` and `Reshape`, which onnxruntime's quantizer leaves in float, so a ResNet50
file could not be integer-only. A 1x1 convolution with the channel-reversing permutation as
kernel and `-mean` (BGR) as bias computes the same float32 numbers (each output is one input
times 1 plus zeros, then the same subtraction) and quantizes like any other `Conv`: its uint8
input over [0, 255] has scale 1, so integer pixels enter it exactly. TFLite quantizes the
original ops (`SUB`, `REVERSE_V2`) itself and keeps them. `InputNormalization("symmetric")`
(`x / 127.5 - 1`, MobileNetV2) ends in a `Sub` onnxruntime leaves in float too; it becomes a
1x1 convolution with kernel `I / 127.5` and bias -1, which differs from the division by at
most one float32 rounding.

Why: see docs/notes/2026-11-27-onnx-decoder-form-and-layout.md,
docs/notes/2026-11-28-requantization-and-skip-scales.md and
docs/notes/2026-12-07-caffe-normalisation-as-conv.md and
docs/notes/2026-12-07-skip-equalization.md.

Example:
```python
from keras_unet import UNet
from keras_unet.export.decoder_form import export_form

model = UNet((128, 128, 3), filters=16)
same = export_form(model)                              # float TFLite
same_onnx = export_form(model, normalization_as_conv=True)     # ONNX
same_int8 = export_form(model, separate_skip_scales=True)   # full-integer TFLite
scales = skip_equalization(model, calibration_images)          # int8
equalized = export_form(model, separate_skip_scales=True, join_scales=scales)
```
"""

import functools
from typing import Any, Optional

import numpy as np

# The largest factor a channel is scaled up by: each doubling gives its activations one bit
# and can take one from its weights in the convolution after the join (their rows shrink
# inside a per-output-channel scale). See docs/notes/2026-12-07-skip-equalization.md.
EQUALIZATION_CAP = 8.0


@functools.lru_cache(maxsize=None)
def export_decoder_block_type() -> Any:
    """`ExportDecoderBlock`: a `DecoderBlock` computed in the export form.

    Export-only: same config and weights as the `DecoderBlock` it copies, never saved;
    `subpixel` and `separate_skip_scale` are set by `export_form`. Built on first use, so
    importing this module does not import Keras.
    """
    from keras import ops

    from keras_unet.layers import DecoderBlock

    class ExportDecoderBlock(DecoderBlock):
        subpixel = False
        separate_skip_scale = False
        up_scales: Optional[np.ndarray] = None    # folded into the pixel shuffle's 1x1 conv
        skip_scales: Optional[np.ndarray] = None  # the skip's 1x1 depthwise weights

        def _upsample(self, below):
            if not self.subpixel:
                return super()._upsample(below)
            return subpixel_upsample(self.up, below, self.up_scales)

        def _join(self, upsampled, skip):
            if self.separate_skip_scale or self.skip_scales is not None:
                channels = skip.shape[-1]
                weights = (np.ones(channels, "float32") if self.skip_scales is None
                           else self.skip_scales.astype("float32"))
                kernel = ops.convert_to_tensor(weights.reshape(1, 1, channels, 1),
                                               dtype=skip.dtype)
                skip = ops.depthwise_conv(skip, kernel, strides=1, padding="valid")
            return super()._join(upsampled, skip)

    return ExportDecoderBlock


def subpixel_upsample(transposed, x, scales=None) -> Any:
    """What the 2x2 stride-2 `Conv2DTranspose` `transposed` computes on `x`, as a 1x1
    convolution to `4 * filters` channels and `depth_to_space(2)`; with `scales`
    (`filters` factors), output channel c multiplied by `scales[c]`, folded into the 1x1
    convolution's kernel and bias."""
    from keras import ops

    dtype = transposed.compute_dtype  # what Conv2DTranspose computes in (mixed precision)
    kernel = ops.cast(transposed.kernel, dtype)  # (2, 2, filters, channels in)
    filters, channels_in = kernel.shape[2], kernel.shape[3]
    # Output channel (i * 2 + j) * filters + c of the 1x1 conv is kernel tap (i, j) of
    # channel c: the order depth_to_space (NHWC, DCR) reads it in.
    pointwise = ops.reshape(ops.transpose(kernel, (3, 0, 1, 2)), (1, 1, channels_in, 4 * filters))
    tiled = None if scales is None else ops.convert_to_tensor(
        np.tile(np.asarray(scales, "float32"), 4), dtype=dtype)
    if tiled is not None:
        pointwise = pointwise * tiled
    x = ops.conv(ops.cast(x, dtype), pointwise, strides=1, padding="valid")
    if transposed.use_bias:
        bias = ops.tile(ops.cast(transposed.bias, dtype), (4,))
        x = x + (bias if tiled is None else bias * tiled)
    return ops.depth_to_space(x, 2)


@functools.lru_cache(maxsize=None)
def subpixel_transpose_type() -> Any:
    """`SubpixelConv2DTranspose`: a 2x2 stride-2 `Conv2DTranspose` computed by
    `subpixel_upsample` (export-only; built on first use)."""
    import keras

    class SubpixelConv2DTranspose(keras.layers.Conv2DTranspose):
        def call(self, inputs):
            return subpixel_upsample(self, inputs)

    return SubpixelConv2DTranspose


@functools.lru_cache(maxsize=None)
def conv_normalization_type() -> Any:
    """`ConvInputNormalization`: an `InputNormalization` whose `"caffe"` mode is computed as a
    1x1 convolution (channel reversal as kernel, `-mean` in BGR order as bias), and its
    `"symmetric"` mode too (`I / 127.5` as kernel, -1 as bias). Export-only; other modes
    compute as `InputNormalization` does. Built on first use."""
    from keras import ops

    from keras_unet.layers import InputNormalization
    from keras_unet.layers.input_normalization import CAFFE_BGR_MEAN

    class ConvInputNormalization(InputNormalization):
        def call(self, inputs):
            if self.mode not in CONV_NORMALIZATION_MODES:
                return super().call(inputs)
            x = ops.cast(inputs, self.compute_dtype)
            if self.mode == "caffe":
                # Output channel c reads input channel 2 - c: RGB -> BGR.
                kernel = np.eye(3, dtype="float32")[::-1]
                bias = -np.asarray(CAFFE_BGR_MEAN, "float32")
            else:  # symmetric: x / 127.5 - 1
                channels = int(inputs.shape[-1])
                kernel = np.eye(channels, dtype="float32") / np.float32(127.5)
                bias = -np.ones(channels, "float32")
            kernel = ops.convert_to_tensor(kernel[None, None], dtype=self.compute_dtype)
            bias = ops.convert_to_tensor(bias, dtype=self.compute_dtype)
            return ops.conv(x, kernel, strides=1, padding="valid") + bias

    return ConvInputNormalization


# The InputNormalization modes whose ops onnxruntime's quantizer would leave in float.
CONV_NORMALIZATION_MODES = ("caffe", "symmetric")


def _is_conv_normalization(layer):
    from keras_unet.layers import InputNormalization

    return type(layer) is InputNormalization and layer.mode in CONV_NORMALIZATION_MODES


def _is_subpixel_transpose(layer):
    import keras

    return (isinstance(layer, keras.layers.Conv2DTranspose)
            and tuple(layer.kernel_size) == (2, 2) and tuple(layer.strides) == (2, 2)
            and tuple(layer.dilation_rate) == (1, 1) and layer.padding == "same"
            and layer.data_format == "channels_last" and layer.activation.__name__ == "linear")


def subpixel_transposes(model) -> Any:
    """`model` with every 2x2 stride-2 `Conv2DTranspose` layer of its graph computed as 1x1
    conv + pixel shuffle: the flat graphs `DecoderBlock` rewriting cannot reach (a
    quantization-aware model's float copy). Returns `model` itself when it has none.

    Example:
    ```python
    onnx_ready = subpixel_transposes(float_copy(qat_model))
    ```
    """
    swaps = {id(layer): _twin(layer, subpixel_transpose_type())
             for layer in getattr(model, "layers", [])
             if _is_subpixel_transpose(layer) and layer.built}
    return _with_swaps(model, swaps)


def _twin(layer, layer_type):
    """A built `layer_type` with `layer`'s config and a copy of its weights."""
    twin = layer_type.from_config(layer.get_config())
    twin.build(_input_shape(layer))
    twin.set_weights(layer.get_weights())
    return twin


def _with_swaps(model, swaps):
    """`model`'s graph with the layers in `swaps` (`id(layer)` -> twin) replaced; `model`
    itself when there is nothing to replace or it is not a functional graph."""
    import keras

    if not swaps or not hasattr(model, "_run_through_graph"):
        return model
    return keras.models.clone_model(
        model, clone_function=lambda layer: swaps.get(id(layer), layer))


def _is_decoder_block(layer):
    from keras_unet.layers import DecoderBlock

    return type(layer) is DecoderBlock


def is_subpixel_candidate(layer) -> bool:
    """True for a `DecoderBlock` whose upsampling is a 2x2 stride-2 `Conv2DTranspose`."""
    return (_is_decoder_block(layer) and layer.upsample == "transpose"
            and _is_subpixel_transpose(layer.up))


def _input_shape(layer):
    return (layer._build_shapes_dict or {}).get("input_shape")


def _has_skip(block):
    shape = _input_shape(block)
    return isinstance(shape, (list, tuple)) and len(shape) == 2 and \
        isinstance(shape[0], (list, tuple))


def _export_copy(block, subpixel, separate_skip_scale, scales=None):
    twin = _twin(block, export_decoder_block_type())
    twin.subpixel, twin.separate_skip_scale = subpixel, separate_skip_scale
    if scales is not None:
        up_scales, skip_scales = scales
        up_channels = int(twin.up.compute_output_shape(_input_shape(block)[0])[-1])
        joined = np.concatenate([np.ones(up_channels) if up_scales is None else up_scales,
                                 skip_scales]).astype("float32")
        # The copy's own kernel (`_twin` copied the weights): channel k of the join is read
        # with weights / s_k, so the equalized join gives the same sums.
        conv = twin.block.conv1
        conv.kernel.assign(np.asarray(conv.kernel) / joined[None, None, :, None])
        twin.up_scales = None if up_scales is None else np.asarray(up_scales, "float32")
        twin.skip_scales = np.asarray(skip_scales, "float32")
    return twin


def _can_equalize(block) -> bool:
    """Only `conv1` reads the join of `block` (no residual shortcut), so its kernel can take
    the factors back."""
    return _has_skip(block) and not block.block.residual


def export_form(model, separate_skip_scales=False, normalization_as_conv=False,
                join_scales=None) -> Any:
    """`model` with its `DecoderBlock`s (and, asked, its caffe normalisation) computed in the
    export form.

    2x2 up-convolutions become 1x1 convolutions plus a pixel shuffle; with
    `separate_skip_scales`, every skip connection also passes a per-channel identity (for
    full-integer TFLite); with `normalization_as_conv`, `InputNormalization("caffe")` and
    `InputNormalization("symmetric")` become a 1x1 convolution (for ONNX); with
    `join_scales` (from `skip_equalization`), the named blocks' joins are equalized. Returns `model` itself when nothing changes (no such layer, or a
    quantization-aware model whose blocks were flattened). Other layers, and their weights,
    are shared with `model`; the rewritten layers hold copies of theirs.

    Args:
        model: a functional Keras model (a `keras_unet.UNet`, or any graph of its layers).
        separate_skip_scales: give each skip connection its own int8 scale.
        normalization_as_conv: compute caffe and symmetric normalisation as a 1x1 convolution.
        join_scales: `{block name: (upsampled factors or None, skip factors)}`.

    Example:
    ```python
    exported = export_form(model, separate_skip_scales=True)
    ```
    """
    swaps = {}
    for layer in getattr(model, "layers", []):
        if normalization_as_conv and _is_conv_normalization(layer) and layer.built:
            swaps[id(layer)] = _twin(layer, conv_normalization_type())
        if not _is_decoder_block(layer) or not layer.built:
            continue
        subpixel = is_subpixel_candidate(layer)
        separate = bool(separate_skip_scales) and _has_skip(layer)
        scales = (join_scales or {}).get(layer.name) if _can_equalize(layer) else None
        if subpixel or separate or scales is not None:
            swaps[id(layer)] = _export_copy(layer, subpixel, separate, scales)
    return _with_swaps(model, swaps)


def join_ranges(model, images, batch_size=16) -> dict:
    """`{block name: (upsampled, skip)}`: the largest magnitude of every channel of each
    decoder block's join in `model` (a functional graph of `DecoderBlock`s) over `images`.

    The blocks' inputs come from one compiled sub-model of `model` (`predict`, in batches of
    `batch_size`); each block's upsampling (and attention gate) then runs on them eagerly.
    """
    import keras

    blocks = [layer for layer in getattr(model, "layers", [])
              if _is_decoder_block(layer) and layer.built and _has_skip(layer)]
    if not blocks:
        return {}
    try:
        taps = keras.Model(model.inputs, [tensor for block in blocks for tensor in block.input])
    except (AttributeError, ValueError):  # a block called more than once has no one input
        return {}
    ranges: dict = {}
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], "float32")
        outputs = taps.predict(batch, batch_size=batch_size, verbose=0)
        for index, block in enumerate(blocks):
            below, skip = outputs[2 * index], outputs[2 * index + 1]
            upsampled = block._upsample(below)
            if block.gate is not None:
                skip = block.gate([skip, upsampled])
            maxima = [np.abs(np.asarray(t, "float32")).reshape(-1, t.shape[-1]).max(axis=0)
                      for t in (upsampled, skip)]
            if block.name in ranges:
                maxima = [np.maximum(old, new) for old, new in zip(ranges[block.name], maxima)]
            ranges[block.name] = maxima
    return {name: tuple(pair) for name, pair in ranges.items()}


def equalizing_factors(up_range, skip_range, scale_upsampled, cap=EQUALIZATION_CAP) -> tuple:
    """`(upsampled factors or None, skip factors)` that bring every channel of a join toward
    its largest channel: `sqrt(max / max_k)`, at least 1 and at most `cap`; a channel that is
    always 0 keeps 1. `scale_upsampled` False leaves the upsampled channels as they are.

    Example:
    ```python
    equalizing_factors([4.0, 1.0], [0.25], True)   # (array([1., 2.]), array([4.]))
    ```
    """
    top = float(max(np.max(up_range), np.max(skip_range)))

    def factors(ranges):
        ranges = np.asarray(ranges, "float64")
        safe = np.where(ranges > 0, ranges, top if top > 0 else 1.0)
        return np.clip(np.sqrt(top / safe), 1.0, cap).astype("float32")

    return (factors(up_range) if scale_upsampled else None), factors(skip_range)


def skip_equalization(model, images, cap=EQUALIZATION_CAP) -> dict:
    """`join_scales` for `export_form`: the factors of every decoder block of `model` that
    can take them, from the joins it computes on `images` (calibration images at the model's
    input: float32 in [0, 255], its channels).

    Upsampled channels are scaled only when they come from a 2x2 up-convolution (the factors
    fold into its 1x1 form) and no attention gate reads them; a block whose `ConvBlock` is
    residual gets none.

    Example:
    ```python
    scales = skip_equalization(model, calibration_images)
    equalized = export_form(model, separate_skip_scales=True, join_scales=scales)
    ```
    """
    blocks = {layer.name: layer for layer in getattr(model, "layers", [])
              if _is_decoder_block(layer) and layer.built and _can_equalize(layer)}
    if not blocks:
        return {}
    scales = {}
    for name, (up_range, skip_range) in join_ranges(model, images).items():
        if name in blocks:
            # An attention gate reads the upsampled tensor too: it must see it unscaled.
            block = blocks[name]
            scale_upsampled = is_subpixel_candidate(block) and not block.use_attention
            scales[name] = equalizing_factors(up_range, skip_range, scale_upsampled, cap)
    return scales
