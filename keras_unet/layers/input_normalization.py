"""Maps images in [0, 255] to the range an encoder was trained on, inside the model.

Keeping this in the graph means an exported .tflite/.onnx file takes raw pixels and
needs no hidden preprocessing on the device.

**Int8.** Every mode is written so that full-integer TFLite and ONNX files lose nothing
here beyond the rounding of the layer's own output:

- `"caffe"` subtracts the means in RGB order and reverses the channels afterwards
  (`flip(x - mean_rgb)`), the same float32 numbers as `flip(x) - mean_bgr` element for
  element. Reversing first would make TFLite's calibrator log the reversal's output range
  after the in-place SUB has overwritten that buffer, and the quantizer would give the
  reversal a wrong scale. Why: see docs/notes/2026-11-27-caffe-normalisation-order.md.
- `"unit"` (`x / 255`): one MUL, or none when the converter folds it into the first
  convolution.
- `"symmetric"` (`x / 127.5 - 1`): a MUL and a SUB. Its outputs are odd multiples of
  1/255 while the int8 grid over [-1, 1] holds the even ones, so every value is half a
  step (1/255, half a grey level) off; no float-identical form avoids that.
"""

import keras
from keras import ops

from keras_unet.layers._validation import check_choice

# Caffe-style ImageNet means in BGR order, as keras.applications.resnet50.preprocess_input.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# The same means in the input's RGB order: subtracted before the channels are reversed.
CAFFE_RGB_MEAN = CAFFE_BGR_MEAN[::-1]
NORMALIZATION_MODES = ("unit", "symmetric", "caffe", "none")


@keras.saving.register_keras_serializable(package="keras_unet")
class InputNormalization(keras.layers.Layer):
    """Rescales images given in [0, 255].

    Modes:
        `"unit"`: `x / 255` -> [0, 1] (the plain U-Net).
        `"symmetric"`: `x / 127.5 - 1` -> [-1, 1] (MobileNetV2).
        `"caffe"`: RGB -> BGR, minus the ImageNet channel means (ResNet50); needs 3 channels.
        `"none"`: identity (MobileNetV3 rescales inside the application itself).

    Args:
        mode: one of the modes above. Defaults to `"unit"`.
        **kwargs: standard layer arguments.

    Example:
    ```python
    import numpy as np
    from keras_unet.layers import InputNormalization

    y = InputNormalization("symmetric")(np.full((1, 4, 4, 3), 255.0, "float32"))  # all 1.0
    ```
    """

    def __init__(self, mode="unit", **kwargs):
        super().__init__(**kwargs)
        self.mode = check_choice("mode", mode, NORMALIZATION_MODES)

    def build(self, input_shape):
        if self.mode == "caffe" and input_shape[-1] != 3:
            raise ValueError(
                "InputNormalization(mode='caffe') needs RGB images with 3 channels. "
                f"Received: input_shape={tuple(input_shape)}"
            )

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "symmetric":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            # Mean first, reversal second: see the module docstring (int8).
            centred = x - ops.convert_to_tensor(CAFFE_RGB_MEAN, dtype=self.compute_dtype)
            return ops.flip(centred, axis=-1)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config
