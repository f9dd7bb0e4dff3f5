"""The rewrites of a converted file, declared once per format (`Converter.rewrites`).

Each takes a file's bytes and gives a file with the same float numbers in a form the int8
runtimes compute better; a file it does not apply to comes back unchanged. The pipeline
applies them, in this order, to every file a format converts (`Converter.rewrite`), and so
do the int8 sessions to each file they quantize (`Int8Session.quantize`).

- TFLite (every mode): int8 requantizations the built-in kernels compute exactly
  (`keras_unet.export.quantization.requantize`); a binary int8 file's logit range clipped
  to the sigmoid's [-8, 8] (`keras_unet.export.quantization.logit_range`); its uint8 output
  off 0.5 (`binary_output_off_half`).
- ONNX (int8): the free-size pixel shuffle's `Shape` nodes reading quantized tensors
  (`keras_unet.export.onnx_layout.shapes_read_quantized`); the logit range clipped as for
  TFLite.

Two rewrites act before conversion, on the graph rather than the file, each in one place:
the decoder form (`keras_unet.export.decoder_form.export_form`, in the job's static copy
and the ONNX float graph) and the NHWC pixel shuffle (`keras_unet.export.onnx_layout`, in
the graph ONNX quantizes, `keras_unet.export.onnx_convert.prepare_for_int8`).

Example:
```python
from keras_unet.export.converter import apply_rewrites
from keras_unet.export.rewrites import TFLITE_REWRITES

model_bytes = apply_rewrites(TFLITE_REWRITES, converted, "int8")
```
"""

from __future__ import annotations

import numpy as np

from keras_unet.export.converter import Rewrite

# A uint8 probability output has scale 1/256: 0.5 is the code 128, where keras-unet's
# `p >= 0.5` and MediaPipe's `p > 0.5` disagree. With 1/255.75 the QUANTIZE op still
# gives every code it gave (q * 255.75/256 is within 0.25 of q for q <= 255), 128 reads
# 0.50049 and no code reads 0.5.
UINT8_PROBABILITY_SCALE = 1.0 / 255.75


def binary_output_off_half(model_bytes: bytes) -> bytes:
    """A binary file's uint8 output scale set to 1/255.75, so that no value is exactly 0.5.

    A full-int8 file ends in a QUANTIZE op (int8 -> uint8, or float -> uint8 when the last
    layers stayed float) whose output scale is 1/256: the probability 0.5 is the code 128,
    which keras-unet's masks (`p >= 0.5`) call foreground and MediaPipe's category mask
    (`p > 0.5`) background. The QUANTIZE op takes any output scale; with 1/255.75 it
    writes the same codes as before (so the masks and the agreement with Keras do not
    change), and they read at most 0.001 higher: the code 128 reads 0.50049, foreground
    for both rules, and the two agree on every pixel. (Scale 1/255 would also take 0.5
    off the grid, but it turns the code 128 into 127, background for both: on models whose
    probabilities sit near 0.5 that costs agreement with Keras.) Other files are returned
    unchanged.

    Example:
    ```python
    model_bytes = binary_output_off_half(model_bytes)
    ```
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(model_bytes, 0)
    graph = model.Subgraphs(0)
    if model.SubgraphsLength() != 1 or graph.OutputsLength() != 1:
        return model_bytes
    output = graph.Outputs(0)
    tensor = graph.Tensors(output)
    quant = tensor.Quantization()
    if (tensor.Type() != schema.TensorType.UINT8 or tensor.ShapeAsNumpy()[-1] != 1
            or quant is None or quant.ScaleLength() != 1
            or not np.isclose(quant.Scale(0), 1 / 256, rtol=1e-6) or quant.ZeroPoint(0) != 0):
        return model_bytes
    producers = [graph.Operators(i) for i in range(graph.OperatorsLength())
                 if output in graph.Operators(i).OutputsAsNumpy()]
    if len(producers) != 1:
        return model_bytes
    code = model.OperatorCodes(producers[0].OpcodeIndex())
    if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) != schema.BuiltinOperator.QUANTIZE:
        return model_bytes
    unpacked = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    unpacked.subgraphs[0].tensors[output].quantization.scale = [UINT8_PROBABILITY_SCALE]
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(unpacked.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _precise_requantize(model_bytes: bytes) -> bytes:
    from keras_unet.export.quantization.requantize import precise_requantize

    return precise_requantize(model_bytes)


def _tflite_logit_range(model_bytes: bytes) -> bytes:
    from keras_unet.export.quantization.logit_range import tflite_clip_logit_range

    return tflite_clip_logit_range(model_bytes)


def _onnx_logit_range(model_bytes: bytes) -> bytes:
    from keras_unet.export.quantization.logit_range import onnx_clip_logit_range

    return onnx_clip_logit_range(model_bytes)


def _shapes_read_quantized(model_bytes: bytes) -> bytes:
    """The free-size shuffle's `Shape` nodes reading quantized tensors; nothing to do in a
    static-size graph."""
    import onnx

    from keras_unet.export.onnx_layout import shapes_read_quantized

    model = onnx.load_from_string(model_bytes)
    return model.SerializeToString() if shapes_read_quantized(model) else model_bytes


TFLITE_REWRITES = (
    Rewrite("int8 requantizations as the built-in kernels compute them exactly", _precise_requantize),
    Rewrite("a binary file's logit range clipped to the sigmoid's [-8, 8]", _tflite_logit_range),
    Rewrite("a binary uint8 output off 0.5", binary_output_off_half),
)
ONNX_REWRITES = (
    Rewrite("the free-size pixel shuffle's Shape nodes read quantized tensors",
            _shapes_read_quantized, modes=("int8",)),
    Rewrite("a binary file's logit range clipped to the sigmoid's [-8, 8]", _onnx_logit_range,
            modes=("int8",)),
)
