"""Keras -> ONNX: float32, float16, or int8 QDQ static quantization for onnxruntime.

float32 goes through `model.export(format="onnx")` (tf2onnx underneath; with Keras 3,
`tf2onnx.convert.from_keras` breaks without an explicit `input_signature`, while
`model.export` builds one). The input is called `image`; batch and spatial size are
static unless `dynamic_batch` / `dynamic_size` ask otherwise.

int8 runs `onnxruntime.quantization.quant_pre_process` (shape inference and graph
clean-up) and then `quantize_static` in QDQ format with the same real calibration
images as TFLite:

- **uint8 activations, int8 per-channel weights** by default. On the project's AMD
  AVX-512-VNNI CPU this ran the seed model 1.6x faster than onnxruntime's default int8/int8:
  the u8 x s8 product maps straight onto VNNI, while s8 activations need an extra
  shift. `activation_type="int8"` is available for runtimes that want symmetric
  activations.
- **Ops left in float**: onnxruntime's CPU provider has no int8 kernel for
  `ConvTranspose`, so Q/DQ pairs around it run as dequantize -> float ConvTranspose
  -> quantize; on a MobileNetV2 U-Net the int8 file was then slower than fp32. The export
  reads back the graph onnxruntime actually runs and reports the compute ops still in
  float (`ExportResult.float_ops_left`), with a warning. `upsample="bilinear"` or
  `"nearest"` avoid it.
- Symbolic shape inference cannot follow dynamic spatial sizes through a UNet's
  skip connections; it is skipped then (ONNX's own shape inference still runs).

float16 uses `onnxruntime.transformers.float16.convert_float_to_float16` with float32
input/output (`keep_io_types`): half the file size; the CPU provider computes many ops
through casts, so it is for size or for GPU providers, not CPU speed.

Example:
```python
from keras_unet.export.onnx import export_onnx

result = export_onnx("model.keras", "model_int8.onnx", quantize="int8",
                     calibration_data="data/val")
print(result.summary())
```
"""

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path


from keras_unet.runtime.files import atomic_output
from keras_unet.export.result import ExportResult
from keras_unet.export.tflite import check_options
from keras_unet.export.verify import DEFAULT_AGREEMENT_FLOOR

QUANTIZE_MODES = ("none", "fp16", "int8")
INPUT_NAME = "image"
DEFAULT_OPSET = 17
# Compute-heavy op types; any of these left outside QLinear*/integer kernels in the
# graph onnxruntime runs is float work inside an "int8" model.
HEAVY_OPS = ("Conv", "ConvTranspose", "FusedConv", "MatMul", "Gemm", "FusedMatMul", "FusedGemm")


@contextlib.contextmanager
def _quiet_and_inside(folder):
    """Run in `folder` with tf2onnx/onnxruntime logs muted.

    `quant_pre_process` dumps `sym_shape_infer_temp.onnx` into the working directory
    when symbolic shape inference fails, so it runs inside a temporary folder.
    """
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "onnxruntime")]
    levels = [logger.level for logger in loggers]
    previous = os.getcwd()
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _export_float(model, path, batch, size, channels, opset):
    import keras

    spec = keras.InputSpec(shape=(batch, size[0], size[1], channels), dtype="float32",
                           name=INPUT_NAME)
    try:
        model.export(str(path), format="onnx", verbose=False, input_signature=[spec],
                     opset_version=opset)
    except Exception as error:  # tf2onnx raises many types; name the cause
        raise RuntimeError(
            f"ONNX conversion (tf2onnx, opset {opset}) failed: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        ) from error


def _quantize_int8(float_path, out_path, work, images, activation_type, dynamic, progress):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from keras_unet.export.calibration import onnx_calibration_reader, pin_input_range

    prepared = Path(work) / "prepared.onnx"
    try:
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=dynamic)
    except Exception:  # symbolic inference gives up on some graphs; ONNX's own still runs
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared), str(out_path),
        onnx_calibration_reader(pin_input_range(images), INPUT_NAME, progress=progress),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8 if activation_type == "uint8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )


def _to_fp16(float_path, out_path):
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(float_path)), keep_io_types=True),
              str(out_path))


def float_ops_left(path, work):
    """Compute-heavy ops onnxruntime's CPU provider runs in float for `path`, by type.

    Reads the graph after onnxruntime's own optimizations (QDQ fusion into QLinearConv
    etc.), which is what actually runs.

    Example:
    ```python
    float_ops_left("model_int8.onnx", "/tmp")  # {'ConvTranspose': 4}
    ```
    """
    import onnx
    import onnxruntime as ort

    optimized = Path(work) / "optimized.onnx"
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(optimized)
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    counts = {}
    for node in onnx.load(str(optimized)).graph.node:
        if node.op_type in HEAVY_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _io_info(path):
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(value):
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        return dims, onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name

    input_shape, input_dtype = describe(graph.input[0])
    _, output_dtype = describe(graph.output[0])
    return input_shape, input_dtype, output_dtype


def _warn(result_warnings, message):
    result_warnings.append(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def export_onnx(model_or_path, out, quantize="none", opset=DEFAULT_OPSET, dynamic_batch=False,
                dynamic_size=False, calibration_data=None, calibration_size=100,
                input_size=None, io_dtype=None, activation_type="uint8", verify=True,
                agreement_floor=DEFAULT_AGREEMENT_FLOOR, verification_data=None,
                verification_size=16, progress=True):
    """Convert a Keras segmentation model to a verified `.onnx` file.

    Args:
        model_or_path: a `keras.Model` or the path of a `.keras` file.
        out: the `.onnx` file to write (replaced only once the new file verified).
        quantize: `"none"` (float32), `"fp16"` (float16 weights and compute, float32
            I/O) or `"int8"` (QDQ static quantization; needs calibration images).
        opset: ONNX opset (13 or newer; QDQ per-channel needs 13).
        dynamic_batch: leave the batch dimension free (default: batch 1).
        dynamic_size: leave height and width free (default: static).
        calibration_data: real images for `"int8"`: a folder, a list of image paths or
            an array `(N, H, W, C)` in [0, 255].
        calibration_size: at most this many calibration images.
        input_size: `(height, width)`; required for a model that accepts any size
            unless `dynamic_size`. Also the size verification runs at.
        io_dtype: only `"float32"` (or None): ONNX QDQ models keep float I/O.
        activation_type: `"uint8"` (default, faster on x86 VNNI) or `"int8"`.
        verify: run the file against the Keras model and raise `VerificationError` when
            it does not match (float32: max_abs_diff <= 1e-4; quantized: mask IoU >=
            `agreement_floor`).
        agreement_floor: lowest mask agreement IoU accepted for a quantized file.
        verification_data: images to verify on (default: the calibration images, else
            the nuclei sample shipped with keras_unet).
        verification_size: at most this many verification images.
        progress: show progress bars.

    Returns:
        `keras_unet.export.result.ExportResult`.

    Example:
    ```python
    import keras_unet
    from keras_unet.export.onnx import export_onnx

    model = keras_unet.UNet((64, 64, 3), filters=8, depth=3)
    result = export_onnx(model, "unet.onnx", dynamic_batch=True)
    result.input_shape  # (None, 64, 64, 3)
    ```
    """
    from keras_unet.export.calibration import load_images, require_calibration
    from keras_unet.export.source import (
        DEFAULT_VERIFY_SIZE,
        load_source_model,
        model_facts,
        resolve_input_size,
    )
    from keras_unet.export.verify import select_verification_images, verify_export

    if quantize == "dynamic":
        raise ValueError(
            "quantize='dynamic' is not supported for ONNX: use 'int8' (static QDQ, "
            "fastest on onnxruntime) or 'fp16', or export dynamic-range to TFLite. "
            "Received: quantize='dynamic'"
        )
    if io_dtype not in (None, "float32"):
        raise ValueError(
            "ONNX exports keep float32 input and output (QDQ quantizes inside the graph). "
            f"Received: io_dtype={io_dtype!r}"
        )
    check_options(out, quantize, None, suffix=".onnx", modes=QUANTIZE_MODES, fmt="onnx")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 13:
        raise ValueError(f"`opset` must be an integer >= 13. Received: opset={opset!r}")
    if activation_type not in ("uint8", "int8"):
        raise ValueError(
            f"`activation_type` must be 'uint8' or 'int8'. Received: activation_type={activation_type!r}"
        )
    if quantize == "int8":
        require_calibration(calibration_data, quantize, "api")
    model, source = load_source_model(model_or_path)
    facts = model_facts(model)
    size = resolve_input_size(model, input_size, source, required=not dynamic_size)
    export_size = (None, None) if dynamic_size else size
    if size == (None, None):
        size = DEFAULT_VERIFY_SIZE
    batch = None if dynamic_batch else 1

    calibration = None
    if quantize == "int8":
        calibration = load_images(calibration_data, size, facts["channels"], calibration_size,
                                  progress=progress)

    from keras_unet.export.metadata import build_metadata, embed_onnx_metadata

    result_warnings, float_ops = [], {}
    report = None
    with tempfile.TemporaryDirectory(prefix="keras_unet_onnx_") as work, \
            atomic_output(out) as tmp:
        float_path = Path(work) / "float.onnx"
        with _quiet_and_inside(work):
            _export_float(model, float_path, batch, export_size, facts["channels"], opset)
            if quantize == "int8":
                _quantize_int8(float_path, tmp, work, calibration, activation_type,
                               dynamic_size or dynamic_batch, progress)
            elif quantize == "fp16":
                _to_fp16(float_path, tmp)
            else:
                shutil.copyfile(float_path, tmp)
        if quantize == "int8":
            float_ops = float_ops_left(tmp, work)
            if float_ops:
                _warn(result_warnings,
                      f"onnxruntime's CPU provider runs {sum(float_ops.values())} compute "
                      f"op(s) of this int8 model in float ({float_ops}), each between a "
                      "dequantize and a quantize; the int8 file may be slower than float32. "
                      + ("ConvTranspose has no int8 CPU kernel: build the UNet with "
                         "upsample='bilinear' or 'nearest' for a fully integer decoder."
                         if "ConvTranspose" in float_ops else ""))
        if quantize == "fp16":
            _warn(result_warnings,
                  "float16 ONNX halves the file size, but onnxruntime's CPU provider "
                  "computes many float16 ops through casts: expect it to be slower than "
                  "float32 on CPU. Use it for GPU providers or size.")
        input_shape, input_dtype, output_dtype = _io_info(tmp)
        metadata = build_metadata(
            model, format="onnx", quantization=quantize,
            input_size=None if dynamic_size else size, input_dtype=input_dtype,
            input_quantization=None, output_dtype=output_dtype, output_quantization=None,
            source_model=source,
        )
        embed_onnx_metadata(tmp, metadata)
        if verify:
            images, image_source = select_verification_images(
                size, facts["channels"], verification_data, calibration, verification_size,
                progress)
            report = verify_export(model, tmp, images, quantize,
                                   threshold=metadata.get("threshold") or 0.5,
                                   agreement_floor=agreement_floor, source=image_source)
    return ExportResult(
        path=str(out), format="onnx", quantization=quantize,
        size_bytes=Path(out).stat().st_size, input_shape=input_shape,
        input_dtype=input_dtype, output_dtype=output_dtype, verification=report,
        warnings=result_warnings, float_ops_left=float_ops, metadata=metadata,
    )
