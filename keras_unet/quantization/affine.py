"""The image normalizations split into the elementwise ops that int8 kernels run one by one.

`InputNormalization("symmetric")` computes `x / 127.5 - 1` in one layer, but lowers to two
ops (MUL, SUB); TFLite quantizes each op's output, and with no range between them the
converter leaves both in float (a DEQUANTIZE/QUANTIZE pair around them). So the QAT graph
computes these layers as their ops, with a quantizer after each op, giving the same float
numbers as the layer. Even the channel reversal, which keeps its input's values, gets one:
the converter does not carry a range through REVERSE_V2 (without it, ResNet50's reversal
and first convolution stayed float); it learns the range of the subtraction before it.

| layer | ops (quantized after each) |
|---|---|
| `InputNormalization("unit")` | `x / 255` |
| `InputNormalization("symmetric")` | `x / 127.5`, `- 1` |
| `InputNormalization("caffe")` | `- mean (RGB)`, reverse channels |
| `Rescaling(scale, offset)` | `* scale`, `+ offset` (when not 0) |

Example:
```python
from keras_unet.layers import InputNormalization
from keras_unet.quantization.affine import affine_ops

len(affine_ops(InputNormalization("caffe")))   # 2: subtract the means, reverse the channels
```
"""

import numpy as np
from keras import ops

from keras_unet.layers.input_normalization import CAFFE_RGB_MEAN


def affine_ops(layer):
    """The functions of one tensor that compute `layer` in turn, each requantized after.

    Args:
        layer: an `InputNormalization` (any mode but "none") or a `keras.layers.Rescaling`.

    Example:
    ```python
    x = keras.Input((32, 32, 3))
    for op in affine_ops(InputNormalization("symmetric")):
        x = op(x)
    ```
    """
    if type(layer).__name__ == "Rescaling":
        scale = np.asarray(layer.scale, "float32")
        offset = np.asarray(layer.offset, "float32")
        steps = [lambda x: x * scale]
        if np.any(offset != 0):
            steps.append(lambda x: x + offset)
        return steps
    if layer.mode == "unit":
        return [lambda x: x / 255.0]
    if layer.mode == "symmetric":
        return [lambda x: x / 127.5, lambda x: x - 1.0]
    if layer.mode == "caffe":
        # Mean first, reversal second, as InputNormalization computes it (its docstring).
        mean = np.asarray(CAFFE_RGB_MEAN, "float32")
        return [lambda x: x - mean, lambda x: ops.flip(x, axis=-1)]
    raise ValueError(
        f"InputNormalization mode {layer.mode!r} is not an affine map. Received: layer={layer.name!r}")
