"""Full-int8 TFLite and QDQ ONNX bytes of a quantize-aware (QAT) model, from its learned ranges.

A model from `keras_unet.quantization.quantize_aware`, fine-tuned, carries everything
int8 needs: weights on their int8 grid and a frozen range for every tensor an int8 kernel
writes. Both converters start from `float_copy(model)`, where each kernel is stored as
its fake-quantized values (float32 numbers on the int8 grid): a per-channel symmetric
quantizer reading them (TFLite's and onnxruntime's `QInt8` are both `max|w| / 127` per
channel) recovers exactly the int8 weights QAT trained with. The activation ranges go in
as follows:

- **TFLite** (`qat_tflite_bytes`): the graph keeps the activation quantizers, which are
  `tf.quantization.fake_quant_with_min_max_vars` ops with constant ranges; the converter
  turns each into its tensor's scale and zero point (no representative dataset). The
  kernels carry no per-channel fake-quant op: the converter cannot carry a per-channel
  range through the transposes in front of TRANSPOSE_CONV ("mismatched quantized axes"),
  and from the grid values its own weight quantizer gives the same int8 numbers. The file
  is refused if any op stayed in float.
- **ONNX** (`qat_onnx_bytes`): the float graph (`model.export(format="onnx")`, as for
  every ONNX export) is quantized by `onnxruntime.quantization.quantize_static` in QDQ
  format with `TensorQuantOverrides`: each quantizer's scale and zero point, on the ONNX
  tensor that holds the values it quantized. tf2onnx renames and re-lays-out tensors
  (NCHW), so those tensors are found by value: the Keras float copy and the ONNX graph
  run on the same two images, and an ONNX tensor is a quantizer's when its sorted values
  equal the quantized tensor's (layout does not change them). A quantized tensor no
  quantizer matched gets a range from calibration; `qat_onnx_bytes` refuses that unless
  `allow_calibrated=True`.

Example:
```python
import keras
from keras_unet.export.qat import qat_onnx_bytes, qat_tflite_bytes

qat = keras.models.load_model("runs/nuclei_qat/model.keras")
open("model_int8.tflite", "wb").write(qat_tflite_bytes(qat))
open("model_int8.onnx", "wb").write(qat_onnx_bytes(qat))
```
"""

import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

IO_DTYPES = ("uint8", "int8", "float32")
ACTIVATION_TYPES = ("uint8", "int8")
# Ops a full-int8 file may compute in float: the I/O conversions at its ends.
IO_CONVERSIONS = ("QUANTIZE", "DEQUANTIZE")
# Two noise images suffice to tell tensors apart by value (matching needs no real data).
PROBE_IMAGES = 2


def _check_model(model):
    from keras_unet.quantization import check_ranges, is_quantize_aware

    if not is_quantize_aware(model):
        raise ValueError(
            "`model` must be quantize-aware (keras_unet.quantization.quantize_aware, then "
            "fine-tuned); for a float model use export_tflite/export_onnx with quantize='int8'. "
            f"Received: model={getattr(model, 'name', model)!r}")
    check_ranges(model)


def _static_graph(model, input_size, keep_activation_quantizers):
    """The export graph of `model` at a fixed `(1, H, W, C)` input."""
    from keras_unet.export.source import resolve_input_size, static_model
    from keras_unet.quantization import float_copy

    size = resolve_input_size(model, input_size)
    graph = float_copy(model, keep_activation_quantizers=keep_activation_quantizers)
    return static_model(graph, size)


def tflite_float_ops(model_bytes) -> list:
    """Names of the ops of a `.tflite` file that compute in float, I/O conversions aside.

    Example:
    ```python
    tflite_float_ops(model_bytes)   # [] for a full-int8 file
    ```
    """
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(model_bytes, 0)
    graph = model.Subgraphs(0)
    found = []
    for index in range(graph.OperatorsLength()):
        operator = graph.Operators(index)
        code = model.OperatorCodes(operator.OpcodeIndex())
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        outputs = [graph.Tensors(t).Type() for t in operator.OutputsAsNumpy()]
        if name not in IO_CONVERSIONS and schema.TensorType.FLOAT32 in outputs:
            found.append(name)
    return found


def qat_tflite_bytes(model: Any, io_dtype: str = "uint8", input_size: Optional[tuple] = None) -> bytes:
    """Full-int8 `.tflite` bytes of a QAT model, with the ranges it learned.

    Args:
        model: a fine-tuned quantize-aware model.
        io_dtype: `"uint8"` (pixels in, as the other int8 exports), `"int8"` or
            `"float32"` input and output.
        input_size: `(height, width)` for a model built with a free size.

    Returns:
        The file's bytes (batch 1, no metadata yet), every op int8.

    Raises:
        ValueError: not a QAT model, ranges never trained, a bad `io_dtype`.
        RuntimeError: an op stayed in float (names it).

    Example:
    ```python
    model_bytes = qat_tflite_bytes(qat)
    ```
    """
    from keras_unet.export.converter import apply_rewrites
    from keras_unet.export.rewrites import TFLITE_REWRITES

    return apply_rewrites(TFLITE_REWRITES, converted_qat_tflite(model, io_dtype, input_size), "int8")


def converted_qat_tflite(model: Any, io_dtype: str = "uint8", input_size: Optional[tuple] = None) -> bytes:
    """`qat_tflite_bytes` as the TFLite converter writes it, before the format's rewrites
    (`keras_unet.export.rewrites.TFLITE_REWRITES`)."""
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"`io_dtype` must be one of {list(IO_DTYPES)}. Received: io_dtype={io_dtype!r}")
    _check_model(model)
    import tensorflow as tf

    from keras_unet.export.tflite_convert import custom_ops, raise_unsupported, write_saved_model

    static = _static_graph(model, input_size, keep_activation_quantizers=True)
    with tempfile.TemporaryDirectory(prefix="keras_unet_qat_") as folder:
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(write_saved_model(static, Path(folder) / "saved_model")))
        # TFLITE_BUILTINS, not _INT8: with the latter TensorFlow 2.21 asks for a
        # representative dataset before it has read the graph's fake-quant ops. Whether
        # every op came out int8 is checked on the file instead.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if io_dtype != "float32":
            converter.inference_input_type = tf.as_dtype(io_dtype)
            converter.inference_output_type = tf.as_dtype(io_dtype)
        model_bytes = converter.convert()
    if custom_ops(model_bytes):
        raise_unsupported(custom_ops(model_bytes), model.name)
    left = tflite_float_ops(model_bytes)
    if left:
        raise RuntimeError(
            f"The QAT TFLite file of '{model.name}' computes {len(left)} op(s) in float: "
            f"{', '.join(sorted(set(left)))}; a tensor there has no learned range. This is a gap "
            "in keras_unet.quantization.registry for this model; export with post-training "
            "int8 (quantize='int8' on the float model) meanwhile.")
    return model_bytes


def activation_quant_params(low, high, activation_type="uint8") -> tuple:
    """`(scale, zero_point)` of a fake-quant range, nudged exactly as TensorFlow does.

    The range is first widened to include 0.0, as every int8 runtime requires; then, as in
    TensorFlow's FakeQuant, moved so that 0.0 falls on a code. The TFLite file uses the
    moved range, so the ONNX overrides must too.

    Example:
    ```python
    activation_quant_params(0.0, 255.0)   # (array(1., dtype=float32), array(0, dtype=uint8))
    ```
    """
    low, high = np.float32(min(low, 0.0)), np.float32(max(high, 0.0))
    scale = np.float32((high - low) / np.float32(255.0))
    from_min = np.float32(0.0) - low / scale
    zero_point = int(np.clip(np.floor(from_min + np.float32(0.5)), 0, 255))
    # 0-d arrays: onnxruntime's overrides take numpy arrays, not numpy scalars.
    if activation_type == "int8":
        return np.array(scale, "float32"), np.array(zero_point - 128, "int8")
    return np.array(scale, "float32"), np.array(zero_point, "uint8")


def _float_onnx(model, folder, input_size, opset):
    """The float ONNX graph of `model`'s float copy, and a Keras model of its probes."""
    import keras

    from keras_unet.export.decoder_form import subpixel_transposes
    from keras_unet.export.onnx_convert import INPUT_NAME, prepare_for_int8, quiet_logs
    from keras_unet.export.source import resolve_input_size
    from keras_unet.quantization import float_copy

    height, width = resolve_input_size(model, input_size)
    probes = {}
    graph = float_copy(model, probes=probes)
    channels = graph.inputs[0].shape[-1]
    spec = keras.InputSpec(shape=(1, height, width, channels), dtype="float32", name=INPUT_NAME)
    exported, prepared = Path(folder) / "float.onnx", Path(folder) / "prepared.onnx"
    # 2x2 up-convolutions as Conv + DepthToSpace, as the post-training export writes them:
    # onnxruntime has no int8 ConvTranspose. The probes read the same numbers from `graph`.
    onnx_graph = subpixel_transposes(graph)
    with quiet_logs():
        onnx_graph.export(str(exported), format="onnx", verbose=False, input_signature=[spec],
                          opset_version=opset)
    prepare_for_int8(exported, prepared)
    probe_model = keras.Model(graph.inputs, [tensor for tensor, _ in probes.values()])
    return prepared, probe_model, [quantizer for _, quantizer in probes.values()], (height, width, channels)


def qat_onnx_bytes(model: Any, input_size: Optional[tuple] = None, opset: int = 17,
                   activation_type: str = "uint8", calibration_images: Any = None,
                   allow_calibrated: bool = False) -> bytes:
    """QDQ int8 `.onnx` bytes of a QAT model, with its learned scales and zero points.

    Args:
        model: a fine-tuned quantize-aware model.
        input_size: `(height, width)` for a model built with a free size.
        opset: ONNX opset (>= 13).
        activation_type: `"uint8"` (default of the int8 exports) or `"int8"` activations;
            weights are int8 per channel either way.
        calibration_images: images `(N, H, W, C)` in [0, 255] for tensors no quantizer
            covers (only with `allow_calibrated=True`).
        allow_calibrated: accept a file in which onnxruntime quantized a tensor that has
            no learned range (it then takes its range from `calibration_images`).

    Returns:
        The file's bytes (no metadata yet).

    Raises:
        ValueError: not a QAT model, ranges never trained, bad arguments, or a quantized
            tensor without a learned range (names it) when `allow_calibrated` is False.

    Example:
    ```python
    model_bytes = qat_onnx_bytes(qat)
    ```
    """
    from keras_unet.export.converter import apply_rewrites
    from keras_unet.export.rewrites import ONNX_REWRITES

    converted = converted_qat_onnx(model, input_size, opset, activation_type, calibration_images,
                                   allow_calibrated)
    return apply_rewrites(ONNX_REWRITES, converted, "int8")


def converted_qat_onnx(model: Any, input_size: Optional[tuple] = None, opset: int = 17,
                       activation_type: str = "uint8", calibration_images: Any = None,
                       allow_calibrated: bool = False) -> bytes:
    """`qat_onnx_bytes` as `quantize_static` writes it, before the format's rewrites
    (`keras_unet.export.rewrites.ONNX_REWRITES`)."""
    if activation_type not in ACTIVATION_TYPES:
        raise ValueError(f"`activation_type` must be one of {list(ACTIVATION_TYPES)}. "
                         f"Received: activation_type={activation_type!r}")
    _check_model(model)
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from keras_unet.export.calibration import onnx_calibration_reader
    from keras_unet.export.onnx_convert import INPUT_NAME, depth_to_space_quantized, quiet_logs
    from keras_unet.export.qat_ranges import tensor_ranges

    with tempfile.TemporaryDirectory(prefix="keras_unet_qat_") as folder:
        prepared, probe_model, quantizers, shape = _float_onnx(model, folder, input_size, opset)
        images = np.random.default_rng(0).uniform(0, 255, (PROBE_IMAGES, *shape)).astype("float32")
        ranges, _ = tensor_ranges(prepared, probe_model, quantizers, images, INPUT_NAME)
        overrides = {}
        for name, (low, high) in ranges.items():
            scale, zero_point = activation_quant_params(low, high, activation_type)
            overrides[name] = [{"scale": scale, "zero_point": zero_point}]
        out = Path(folder) / "int8.onnx"
        data = images if calibration_images is None else np.asarray(calibration_images, "float32")
        with quiet_logs(), depth_to_space_quantized(activation_type == "uint8"):
            quantize_static(
                str(prepared), str(out), onnx_calibration_reader(data, INPUT_NAME, progress=False),
                quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                activation_type=QuantType.QInt8 if activation_type == "int8" else QuantType.QUInt8,
                extra_options={"TensorQuantOverrides": overrides})
        missing = calibrated_tensors(out, overrides)
        if missing and not allow_calibrated:
            raise ValueError(
                f"onnxruntime quantized {len(missing)} tensor(s) of '{model.name}' that no QAT "
                f"quantizer covers: {', '.join(missing)}; their ranges would come from "
                "calibration, not training. Pass allow_calibrated=True with calibration_images, "
                "or export with post-training int8. Received: allow_calibrated=False")
        return out.read_bytes()


def calibrated_tensors(path, overrides) -> list:
    """Activation tensors of a QDQ file quantized without an override (by calibration).

    Example:
    ```python
    calibrated_tensors("int8.onnx", overrides)   # [] when training set every range
    ```
    """
    import onnx

    proto = onnx.load(str(path))
    constants = {init.name for init in proto.graph.initializer}
    # onnxruntime renames a graph output it quantizes to "<name>_QuantizeLinear_Input".
    suffix = "_QuantizeLinear_Input"
    return sorted({node.input[0] for node in proto.graph.node
                   if node.op_type == "QuantizeLinear" and node.input[0] not in constants
                   and node.input[0] not in overrides
                   and node.input[0].removesuffix(suffix) not in overrides})
