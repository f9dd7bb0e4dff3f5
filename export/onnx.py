"""Keras -> ONNX: float32, float16, or int8 QDQ static quantization for onnxruntime.

The ONNX converter on top of `keras_unet.export.pipeline`. The float32 graph comes from
`model.export(format="onnx")` (tf2onnx underneath; with Keras 3,
`tf2onnx.convert.from_keras` breaks without an explicit `input_signature`, while
`model.export` builds one), once per job and opset. The input is called `image`; batch and
spatial size are static unless `dynamic_batch` / `dynamic_size` ask otherwise.

int8 runs `onnxruntime.quantization.quant_pre_process` (graph clean-up and ONNX shape
inference) and then `quantize_static` in QDQ format with the same real calibration
images as TFLite:

- **uint8 activations, int8 per-channel weights** by default: the u8 x s8 product maps
  straight onto x86 VNNI instructions, while s8 activations need an extra shift.
  `activation_type="int8"` is available for runtimes that want symmetric activations.
- **Ops left in float**: onnxruntime's CPU provider has no int8 kernel for
  `ConvTranspose`, so Q/DQ pairs around it run as dequantize -> float ConvTranspose
  -> quantize, which can make the int8 file slower than fp32. A UNet's
  2x2 up-convolutions are therefore exported as 1x1 Conv + DepthToSpace
  (`keras_unet.export.decoder_form`), both integer here, the shuffle written as NHWC
  reshapes so onnxruntime keeps the decoder in its NHWC integer layout
  (`keras_unet.export.onnx_layout`). The export reads back the graph
  onnxruntime actually runs and reports the compute ops still in float
  (`ExportResult.float_ops_left`, e.g. another model's 3x3 ConvTranspose), with a warning.
  `ONNXOptions.nodes_to_exclude` keeps chosen nodes in float on purpose (the quantization
  repair step).
- **No symbolic shape inference.** `quant_pre_process` would run onnxruntime's
  `SymbolicShapeInference` first, which, when it cannot follow a graph, saves
  `sym_shape_infer_temp.onnx` and a uuid-named `.data` file into the process's working
  directory (avoidable only by `os.chdir`, which moves the whole process). It is skipped:
  ONNX's own shape inference, which still runs, finds every shape of a static CNN, so the
  quantized graphs of the UNet variants come out node for node the same without it.

int16x8 is the same `quantize_static` with int16 activations (`QuantType.QInt16`, opset 21
Q/DQ) and int8 per-channel weights; an int8 file can keep chosen nodes at int16
(`ONNXOptions.keep_int16`). onnxruntime's CPU provider has no int16 convolution: it runs
such files as dequantize -> float Conv -> quantize, so they are for NPU execution providers
(QNN's HTP runs 16-bit activations with 8-bit weights), not CPU speed. `integer_only`
leaves nothing in float; `float_ops` lists what a file leaves unquantized and
`npu_fallbacks` what an NPU provider would not take (`keras_unet.export.onnx_integer`).

float16 uses `onnxruntime.transformers.float16.convert_float_to_float16` with float32
input/output (`keep_io_types`): half the file size; the CPU provider computes many ops
through casts, so it is for size or for GPU providers, not CPU speed.

Why: see docs/notes/2026-11-24-xnnpack-batch-and-activation-types.md (the activation type)
and docs/notes/2026-11-27-onnx-decoder-form-and-layout.md (the decoder form, float16),
docs/notes/2026-12-06-onnx-int16x8.md (int16x8, int16 nodes, integer-only, measured).

Example:
```python
from keras_unet.export.onnx import export_onnx

result = export_onnx("model.keras", "model_int8.onnx", quantize="int8",
                     calibration_data="data/val")
print(result.summary())
```
"""

from __future__ import annotations

from typing import Any, Optional

from keras_unet.export.converter import Converter, Diagnosis
from keras_unet.export.mask_head import onnx_with_mask_head
from keras_unet.export.onnx_convert import (  # noqa: F401  (the format's public names)
    ACTIVATION_TYPES,
    CALIBRATE_METHODS,
    DEFAULT_OPSET,
    HEAVY_OPS,
    INPUT_NAME,
    MIN_INT8_SPEEDUP,
    QUANTIZE_MODES,
    ONNXOptions,
    convert,
    describe,
    float_model,
    float_ops,
    float_ops_left,
    npu_fallbacks,
    prepare_for_int8,
    runtime_graph,
    time_ms,
)
from keras_unet.export.onnx_int8 import ONNXQATSession, ONNXSession
from keras_unet.export.options import (CALIBRATION_SIZE, DEFAULT_AGREEMENT_FLOOR,
                                       DEFAULT_THREADS, VERIFICATION_SIZE, ExportOptions)
from keras_unet.export.pipeline import run_export
from keras_unet.export.result import ExportResult
from keras_unet.export.rewrites import ONNX_REWRITES


def embed_metadata(model_bytes: bytes, metadata: dict) -> bytes:
    """`model_bytes` with the keras_unet metadata stored in `metadata_props`."""
    import onnx

    from keras_unet.export.metadata import embed_onnx_metadata

    return embed_onnx_metadata(onnx.load_from_string(model_bytes), metadata).SerializeToString()


def diagnose(job: Any, options: ONNXOptions, model_bytes: bytes) -> Diagnosis:
    """Warn about compute ops an int8 file runs in float, about int8 that gains less than
    1.5x over float32 here, about the convolutions an int16x8 file runs in float on this
    CPU (onnxruntime has no int16 kernel for them), and about fp16 on CPU. (What an NPU
    provider would not take is the pipeline's: `Converter.npu_fallbacks`.)

    Nothing for a quantize-aware job: its float graph holds the fake-quant ops, so there is
    no float32 file to time it against.
    """
    if job.quantize_aware:
        return Diagnosis()
    found, float_ops, timings = [], {}, {}
    if options.quantize == "int8":
        path = job.new_path("diagnose", ".onnx")
        path.write_bytes(model_bytes)
        float_ops = float_ops_left(path, job.work)
        if float_ops:
            found.append(
                f"onnxruntime's CPU provider runs {sum(float_ops.values())} compute op(s) of "
                f"this int8 model in float ({float_ops}), each between a dequantize and a "
                "quantize; the int8 file may be slower than float32. "
                + ("ConvTranspose has no int8 CPU kernel (a UNet's 2x2 ones are exported "
                   "as Conv + DepthToSpace; other kernel sizes are not): upsampling with "
                   "UpSampling2D gives a fully integer decoder."
                   if "ConvTranspose" in float_ops else ""))
        timings = {"float32": time_ms(float_model(job, options.opset).read_bytes(),
                                      threads=options.threads, size=job.size),
                   "int8": time_ms(model_bytes, threads=options.threads, size=job.size)}
        speedup = timings["float32"] / timings["int8"] if timings["int8"] > 0 else float("inf")
        if speedup < MIN_INT8_SPEEDUP and timings["float32"] > 1.0:
            found.append(
                f"This int8 file ran only {speedup:.2f}x faster than float32 ONNX here "
                f"({timings['int8']:.1f} vs {timings['float32']:.1f} ms per image, "
                f"{options.threads} thread(s)): ops left in float and the dequantize/quantize "
                "pairs around them cost what int8 saves. Measure on the target device with "
                "`keras-unet bench` before choosing it.")
    if options.quantize == "int16x8":
        path = job.new_path("diagnose", ".onnx")
        path.write_bytes(model_bytes)
        float_ops = float_ops_left(path, job.work)
        timings = {"float32": time_ms(float_model(job, options.opset).read_bytes(),
                                      threads=options.threads, size=job.size),
                   "int16x8": time_ms(model_bytes, threads=options.threads, size=job.size)}
        if float_ops:
            found.append(
                f"onnxruntime's CPU provider has no int16 kernel for {sorted(float_ops)}: it runs "
                f"{sum(float_ops.values())} op(s) of this int16x8 file as dequantize -> float op -> "
                f"quantize ({timings['int16x8']:.1f} vs {timings['float32']:.1f} ms per image for "
                "float32 here). int16x8 is for NPU execution providers; on CPU use int8 or float32.")
    if options.quantize == "fp16":
        found.append("float16 ONNX halves the file size, but onnxruntime's CPU provider "
                     "computes many float16 ops through casts: expect it to be slower than "
                     "float32 on CPU. Use it for GPU providers or size.")
    return Diagnosis(warnings=found, float_ops_left=float_ops, timings_ms=timings)


def export_onnx(model_or_path: Any, out: Any, quantize: str = "none", opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = False, dynamic_size: bool = False,
                calibration_data: Any = None, calibration_size: int = CALIBRATION_SIZE,
                input_size: Optional[tuple] = None, io_dtype: Optional[str] = None,
                activation_type: str = "auto", verify: bool = True,
                agreement_floor: float = DEFAULT_AGREEMENT_FLOOR, verification_data: Any = None,
                verification_size: int = VERIFICATION_SIZE, progress: bool = True,
                repair: Optional[bool] = None, layer_report: bool = False, threads: int = DEFAULT_THREADS,
                verbose: bool = False, output: str = "probabilities",
                integer_only: bool = False) -> ExportResult:
    """Convert a Keras segmentation model to a verified `.onnx` file.

    Args:
        model_or_path: a `keras.Model` or the path of a `.keras` file.
        out: the `.onnx` file to write (replaced only once the new file verified).
        quantize: `"none"` (float32), `"fp16"` (float16 weights and compute, float32
            I/O), `"int8"` (QDQ static quantization; needs calibration images) or
            `"int16x8"` (int16 activations, int8 weights; for NPU providers, not CPU speed).
        opset: ONNX opset (13 or newer; QDQ per-channel needs 13).
        dynamic_batch: leave the batch dimension free (default: batch 1).
        dynamic_size: leave height and width free (default: static).
        calibration_data: real images for `"int8"`: a folder, a list of image paths or
            an array `(N, H, W, C)` in [0, 255].
        calibration_size: at most this many calibration images.
        input_size: `(height, width)`; required for a model that accepts any size
            unless `dynamic_size`. Also the size verification runs at.
        io_dtype: only `"float32"` (or None): ONNX QDQ models keep float I/O.
        activation_type: `"auto"` (default: quantize both, keep the faster here),
            `"uint8"` or `"int8"` activations.
        verify: run the file against the Keras model and raise `VerificationError` when
            it does not match (float32: max_abs_diff <= 1e-4; quantized: agreement_iou
            >= `agreement_floor`).
        agreement_floor: lowest mask `agreement_iou` accepted for a quantized file.
        verification_data: images to verify on. Default for int8: at least 32 images held
            out from `calibration_data` and not calibrated on (`keras_unet.export.holdout`);
            otherwise the nuclei sample shipped with keras_unet.
        verification_size: at most this many verification images (default 32); images
            held out from `calibration_data` are all used (at least 32, and those beyond
            `calibration_size`, up to half the set).
        progress: show progress bars.
        repair: int8: when the file misses `agreement_floor`, keep its worst layers in
            float until it meets it (default on for int8, trying Percentile and Entropy
            calibration too; `False` for pure int8 or a refusal). See `keras_unet.export.int8`.
        layer_report: int8: also build the per-layer report (`result.layer_report`) when
            the file passes at once.
        threads: threads for the speed checks during export.
        verbose: also show TensorFlow's, the converter's and the runtimes' own log lines
            (silenced by default, for the duration of the call only).
        output: `"probabilities"` (default) or `"mask"`: the file outputs a `(N, H, W)`
            uint8 class-id mask (threshold or arg-max inside), so a device does no
            post-processing; checked against the probability file's masks.
        integer_only: int8 / int16x8: every op quantized, none kept in float (for NPUs);
            the file keeps float input and output (QDQ).

    Returns:
        `keras_unet.export.result.ExportResult`.

    Example:
    ```python
    import keras_unet
    from keras_unet.export import export_onnx

    model = keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2)
    result = export_onnx(model, "unet.onnx", dynamic_batch=True, progress=False)
    result.input_shape  # (None, 32, 32, 3)
    ```
    """
    options = ExportOptions(
        quantize=quantize, opset=opset, dynamic_batch=dynamic_batch, dynamic_size=dynamic_size,
        calibration_data=calibration_data, calibration_size=calibration_size,
        input_size=input_size, io_dtype=io_dtype, activation_type=activation_type,
        verify=verify, agreement_floor=agreement_floor, verification_data=verification_data,
        verification_size=verification_size, progress=progress, repair=repair,
        layer_report=layer_report, threads=threads, verbose=verbose, output=output,
        integer_only=integer_only)
    return run_export(CONVERTER, options, model_or_path, out)


def check_onnx_options(options: ExportOptions) -> None:
    """Raise a `ValueError` for an option ONNX refuses."""
    if options.quantize == "dynamic":
        raise ValueError(
            "quantize='dynamic' is not supported for ONNX: use 'int8' (static QDQ, "
            "fastest on onnxruntime) or 'fp16', or export dynamic-range to TFLite. "
            "Received: quantize='dynamic'"
        )
    if options.quantize == "int16x8" and options.activation_type != "auto":
        raise ValueError("quantize='int16x8' has int16 activations; `activation_type` chooses "
                         "those of int8 files. Received: "
                         f"activation_type={options.activation_type!r}")
    if options.io_dtype not in (None, "float32"):
        raise ValueError(
            "ONNX exports keep float32 input and output (QDQ quantizes inside the graph). "
            f"Received: io_dtype={options.io_dtype!r}"
        )


def conversion_options(options: ExportOptions) -> ONNXOptions:
    """The `ONNXOptions` of an export. `integer_only` keeps every op quantized (QDQ files
    keep float input and output: the QuantizeLinear/DequantizeLinear at the ends are the
    I/O conversions)."""
    check_onnx_options(options)
    return ONNXOptions(quantize=options.quantize, opset=options.opset,
                       activation_type=options.activation_type, threads=options.threads,
                       integer_only=options.integer_only)


CONVERTER = Converter(format="onnx", suffix=".onnx", quantize_modes=QUANTIZE_MODES,
                      conversion_options=conversion_options, convert=convert, describe=describe,
                      embed_metadata=embed_metadata, int8_session=ONNXSession,
                      qat_session=ONNXQATSession, rewrites=ONNX_REWRITES, diagnose=diagnose,
                      mask_head=onnx_with_mask_head, float_ops=float_ops,
                      npu_fallbacks=npu_fallbacks)
