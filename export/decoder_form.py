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
docs/notes/2026-12-07-caffe-normalisation-as-conv.md.

Example:
```python
from keras_unet import UNet
from keras_unet.export.decoder_form import export_form

model = UNet((128, 128, 3), filters=16)
same = export_form(model)                              # float TFLite
same_onnx = export_form(model, normalization_as_conv=True)     # ONNX
same_int8 = export_form(model, separate_skip_scales=True)   # full-integer TFLite
```
"""

import functools
from typing import Any

import numpy as np


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

        def _upsample(self, below):
            if not self.subpixel:
                return super()._upsample(below)
            return subpixel_upsample(self.up, below)

        def _join(self, upsampled, skip):
            if self.separate_skip_scale:
                channels = skip.shape[-1]
                identity = ops.convert_to_tensor(np.ones((1, 1, channels, 1), "float32"),
                                                 dtype=skip.dtype)
                skip = ops.depthwise_conv(skip, identity, strides=1, padding="valid")
            return super()._join(upsampled, skip)

    return ExportDecoderBlock


def subpixel_upsample(transposed, x) -> Any:
    """What the 2x2 stride-2 `Conv2DTranspose` `transposed` computes on `x`, as a 1x1
    convolution to `4 * filters` channels and `depth_to_space(2)`."""
    from keras import ops

    dtype = transposed.compute_dtype  # what Conv2DTranspose computes in (mixed precision)
    kernel = ops.cast(transposed.kernel, dtype)  # (2, 2, filters, channels in)
    filters, channels_in = kernel.shape[2], kernel.shape[3]
    # Output channel (i * 2 + j) * filters + c of the 1x1 conv is kernel tap (i, j) of
    # channel c: the order depth_to_space (NHWC, DCR) reads it in.
    pointwise = ops.reshape(ops.transpose(kernel, (3, 0, 1, 2)), (1, 1, channels_in, 4 * filters))
    x = ops.conv(ops.cast(x, dtype), pointwise, strides=1, padding="valid")
    if transposed.use_bias:
        x = x + ops.tile(ops.cast(transposed.bias, dtype), (4,))
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


def _export_copy(block, subpixel, separate_skip_scale):
    twin = _twin(block, export_decoder_block_type())
    twin.subpixel, twin.separate_skip_scale = subpixel, separate_skip_scale
    return twin


def export_form(model, separate_skip_scales=False, normalization_as_conv=False) -> Any:
    """`model` with its `DecoderBlock`s (and, asked, its caffe normalisation) computed in the
    export form.

    2x2 up-convolutions become 1x1 convolutions plus a pixel shuffle; with
    `separate_skip_scales`, every skip connection also passes a per-channel identity (for
    full-integer TFLite); with `normalization_as_conv`, `InputNormalization("caffe")` and
    `InputNormalization("symmetric")` become a 1x1 convolution (for ONNX). Returns `model` itself when nothing changes (no such layer, or a
    quantization-aware model whose blocks were flattened). Other layers, and their weights,
    are shared with `model`; the rewritten layers hold copies of theirs.

    Args:
        model: a functional Keras model (a `keras_unet.UNet`, or any graph of its layers).
        separate_skip_scales: give each skip connection its own int8 scale.
        normalization_as_conv: compute caffe and symmetric normalisation as a 1x1 convolution.

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
        if subpixel or separate:
            swaps[id(layer)] = _export_copy(layer, subpixel, separate)
    return _with_swaps(model, swaps)
