"""Keras -> TFLite (LiteRT): float32, float16, dynamic-range or full-integer quantization.

The TFLite converter on top of `keras_unet.export.pipeline`. It writes the job's
static-shape copy of the model (batch 1, fixed height and width) as a SavedModel through
`keras.export.ExportArchive` once per job and runs a `tf.lite.TFLiteConverter` on it for
every conversion.

**Why not `model.export(path, format="litert")`.** Keras 3.15's LiteRT exporter takes the
same route (ExportArchive -> SavedModel -> `TFLiteConverter.from_saved_model`) and passes
its keyword arguments to the converter as attributes, so every option used here is
reachable through it: `target_spec={"supported_ops": [TFLITE_BUILTINS_INT8]}` (it
defaults to allowing Flex ops, which the dict overrides), `optimizations`,
`representative_dataset`, `inference_input_type`/`inference_output_type=tf.uint8`,
`target_spec={"supported_types": [tf.float16]}`; all four modes convert that way. Two
things it cannot give the pipeline:

- **The converter object.** `model.export` builds the `TFLiteConverter`, converts and
  drops it. Keeping some layers in float (the quantization repair step) goes through
  `tf.lite.experimental.QuantizationDebugger(converter=...)`, which needs that object
  (it calibrates once and re-quantizes with `denylisted_nodes`); `make_converter` returns
  it, configured exactly as `convert` uses it.
- **One SavedModel for several conversions.** `model.export` traces the model and writes a
  SavedModel on every call. One export converts more than once (the dynamic-range speed
  check converts float32 too; a repair loop converts until the floor holds); here the
  SavedModel is written once per job, and each conversion costs about half of a
  `model.export` call.

It also writes to a path while the pipeline embeds metadata into the bytes first; that
alone would not decide it.

Known traps, handled here:

- **`None` spatial size**: a model converted with `None` height/width gets a `1x1`
  input and every runtime must resize the input tensor first. The pipeline fixes the
  size (`input_size`, or the model's own) and fails with a message naming
  `--input-size` if there is none.
- **Dynamic batch + `Conv2DTranspose`**: with a `None` batch every transposed conv
  computes its output shape at run time (SHAPE/STRIDED_SLICE/PACK ops) and XNNPACK
  leaves TRANSPOSE_CONV to slower kernels. So the batch is fixed to 1.
- **Dynamic-range quantization** stores int8 weights and quantizes activations on the
  fly. It is where the dynamic batch hurts most (an order of magnitude slower with a
  `None` batch). The export times the dynamic-range file against a float32 conversion and
  warns if it is slower; prefer `int8` for speed or `fp16` for size.
- **Full int8**: the input range is pinned to [0, 255]
  (`keras_unet.export.calibration.pin_input_range`) so uint8 I/O passes raw pixels (scale
  1, zero point 0). TRANSPOSE_CONV is quantized too (per-channel int8 weights); with the
  static batch its output shape is a constant and XNNPACK takes it. A binary file's uint8
  output gets scale 1/255.75 instead of 1/256 (`binary_output_off_half`: the same codes),
  so that no output is exactly 0.5, where our `p >= 0.5` and MediaPipe's `p > 0.5` would
  disagree.
- **MediaPipe** reads the standard TFLite Metadata stored beside ours
  (`embed_metadata`), takes uint8 or float32 input with 3 channels, and refuses int8 I/O:
  `diagnose` says so for a file it would refuse. A 1-channel model runs there when
  exported with `input_channels=3`.
- **Flex (Select TF) ops** are never allowed: the edge runtimes ship without them.
  Conversion uses `TFLITE_BUILTINS` (or `TFLITE_BUILTINS_INT8`) only, and an op outside
  them fails with its name and what to change.

- **16x8** (`quantize="int16x8"`: 8-bit weights, 16-bit activations on every op): float32
  I/O by default, int16 when integer-only; written from the int8 calibration by TFLite's
  16x8 quantizer (`keras_unet.export.quantization.tflite_int16`). XNNPack has no int16
  kernels: such a file runs on TFLite's built-in reference/optimized int16 kernels.
- **Integer-only** (`integer_only=True`): integer I/O (uint8 for int8 unless `io_dtype`
  says int8; int16 for int16x8) and no float fallback; `float_ops` and `npu_fallbacks`
  (`keras_unet.export.tflite_ops`) read a file's float ops and what an NPU would not run.

Why: see docs/notes/2026-11-24-xnnpack-batch-and-activation-types.md (the batch, the
dynamic-range and the conversion timings), docs/notes/2026-11-28-logit-clip.md (the
binary output scale) and docs/notes/2026-12-06-tflite-int16x8.md (16x8 and integer-only).

Example:
```python
from keras_unet.export.tflite import export_tflite

result = export_tflite("model.keras", "model_int8.tflite", quantize="int8",
                       calibration_data="data/val")
print(result.summary())
```
"""

from __future__ import annotations

from typing import Any, Optional

from keras_unet.export.converter import Converter, Diagnosis, apply_rewrites, check_output
from keras_unet.export.mask_head import tflite_with_mask_head
from keras_unet.export.metadata import embed_tflite_metadata
from keras_unet.export.options import (CALIBRATION_SIZE, DEFAULT_AGREEMENT_FLOOR,
                                       DEFAULT_THREADS, VERIFICATION_SIZE, ExportOptions)
from keras_unet.export.pipeline import run_export
from keras_unet.export.result import ExportResult
from keras_unet.export.rewrites import TFLITE_REWRITES, binary_output_off_half  # noqa: F401
from keras_unet.export.tflite_convert import (  # noqa: F401  (the format's public names)
    IO_DTYPES,
    QUANTIZE_MODES,
    TFLiteOptions,
    UnsupportedOpsError,
    convert,
    custom_ops,
    describe,
    float_ops,
    make_converter,
    npu_fallbacks,
    time_ms,
    write_saved_model,
)
from keras_unet.export.tflite_int8 import TFLiteQATSession, TFLiteSession
from keras_unet.export.tflite_support_metadata import (
    TFLITE_METADATA,
    build_support_metadata,
    pack_associated_files,
)
from keras_unet.runtime.metadata_schema import is_mask_output


def embed_metadata(model_bytes: bytes, metadata: dict) -> bytes:
    """`model_bytes` with our `keras_unet` entry and the standard TFLite Metadata.

    Both metadata buffers are stored in one rewrite of the flatbuffer
    (`keras_unet.export.metadata.embed_tflite_metadata`); the TFLite Metadata's associated
    files (the labels) are then appended as a zip (`keras_unet.export.tflite_support_metadata`),
    which is what MediaPipe's ImageSegmenter reads.

    Example:
    ```python
    data = embed_metadata(model_bytes, metadata)
    ```
    """
    if is_mask_output(metadata):
        # A uint8 class-id mask is not the confidence tensor the TFLite Metadata describes
        # (MediaPipe would read it as probabilities): the file carries our entry only.
        return embed_tflite_metadata(model_bytes, metadata)
    support = build_support_metadata(metadata)
    packed = embed_tflite_metadata(model_bytes, metadata, entries={TFLITE_METADATA: support.buffer})
    return pack_associated_files(packed, support.files)


# An int8 file that gains less than this over float32 is reported: the model's ops do
# not map onto fast integer kernels (MobileNetV3-small: 0.47 vs 0.57 of Keras' time).
MIN_INT8_SPEEDUP = 1.5


def mediapipe_notes(channels: int, io_dtype: str) -> list:
    """Why MediaPipe's ImageSegmenter would refuse a file with this input, if it would.

    MediaPipe takes 3-channel (or 4-channel) images and uint8 or float32 tensors.

    Example:
    ```python
    mediapipe_notes(1, "uint8")   # ['... export with input_channels=3 ...']
    ```
    """
    notes = []
    if io_dtype in ("int8", "int16"):
        notes.append(
            f"This file has {io_dtype} input and output, which MediaPipe's ImageSegmenter refuses "
            "(it needs uint8 or float32 I/O); keras-unet's runners and the TFLite interpreter "
            "run it. For MediaPipe, export with io_dtype='uint8' (--io uint8, the default).")
    if channels not in (3, 4):
        notes.append(
            f"This file takes {channels}-channel images; MediaPipe's ImageSegmenter needs 3 "
            "(RGB). For MediaPipe, export with input_channels=3 (--input-channels 3): the "
            "file then takes RGB and converts it to gray inside.")
    return notes


def diagnose(job: Any, options: TFLiteOptions, model_bytes: bytes) -> Diagnosis:
    """MediaPipe's input requirements; time a dynamic-range, int8 or 16x8 file against
    float32. (What an NPU delegate would not run is the pipeline's: `Converter.npu_fallbacks`.)

    Nothing for a quantize-aware job: its float graph holds the fake-quant ops, so there is
    no float32 conversion to time it against.
    """
    if job.quantize_aware:
        return Diagnosis()
    notes = mediapipe_notes(job.input_channels, options.io_dtype)
    if options.quantize not in ("dynamic", "int8", "int16x8") or not options.check_speed:
        return Diagnosis(warnings=notes)
    float_options = TFLiteOptions(quantize="none", io_dtype="float32",
                                  check_speed=options.check_speed, threads=options.threads)
    float_bytes = job.cached("tflite_float32", lambda: apply_rewrites(
        TFLITE_REWRITES, convert(job, float_options), "none"))
    mode = options.quantize
    timings = {"float32": time_ms(float_bytes, threads=options.threads),
               mode: time_ms(model_bytes, threads=options.threads)}
    found = []
    # Below a millisecond (tiny models) the two differ by timer noise, not kernels.
    if mode == "dynamic" and timings[mode] > 1.2 * timings["float32"] and timings[mode] > 1.0:
        found.append(
            f"Dynamic-range TFLite ran {timings[mode] / timings['float32']:.1f}x "
            f"slower than float32 here ({timings[mode]:.1f} vs {timings['float32']:.1f} "
            "ms per image): it computes in float and dequantizes weights on the fly outside "
            "XNNPACK's fast paths. Use quantize='int8' for speed or 'fp16' for size.")
    speedup = timings["float32"] / timings[mode] if timings[mode] > 0 else float("inf")
    if mode == "int8" and speedup < MIN_INT8_SPEEDUP and timings["float32"] > 1.0:
        found.append(
            f"This int8 file ran only {speedup:.2f}x faster than float32 TFLite here "
            f"({timings[mode]:.1f} vs {timings['float32']:.1f} ms per image, "
            f"{options.threads} thread(s)); below {MIN_INT8_SPEEDUP}x the model's ops map "
            "poorly onto integer kernels (depthwise convolutions, hard-swish and "
            "squeeze-excitation in MobileNetV3 do), or layers were kept in float. Measure on "
            "the target device with `keras-unet bench` before choosing it.")
    if mode == "int16x8" and timings[mode] > 1.2 * timings["float32"] and timings[mode] > 1.0:
        found.append(
            f"This 16x8 file ran {timings[mode] / timings['float32']:.1f}x slower than float32 "
            f"TFLite here ({timings[mode]:.1f} vs {timings['float32']:.1f} ms per image): "
            "XNNPACK has no int16 kernels, so it runs on TFLite's reference-speed int16 "
            "kernels. 16-bit activations pay off on accelerators that run them (e.g. "
            "Qualcomm HTP w8a16); on a CPU use int8, or float32 for full accuracy.")
    return Diagnosis(warnings=notes + found, timings_ms=timings)


def conversion_options(options: ExportOptions) -> TFLiteOptions:
    """The `TFLiteOptions` of an export.

    io_dtype by default: uint8 for int8; for int16x8 float32, or int16 when integer-only;
    float32 otherwise. `integer_only` also means no float fallback in the converter.

    Example:
    ```python
    conversion_options(ExportOptions(quantize="int16x8", integer_only=True)).io_dtype  # 'int16'
    ```
    """
    io_dtype = options.io_dtype
    if io_dtype is None:
        if options.quantize == "int8":
            io_dtype = "uint8"
        elif options.quantize == "int16x8" and options.integer_only:
            io_dtype = "int16"
        else:
            io_dtype = "float32"
    return TFLiteOptions(quantize=options.quantize, io_dtype=io_dtype,
                         check_speed=options.check_speed, threads=options.threads,
                         integer_only=options.integer_only)


CONVERTER = Converter(format="tflite", suffix=".tflite", quantize_modes=QUANTIZE_MODES,
                      conversion_options=conversion_options, convert=convert, describe=describe,
                      embed_metadata=embed_metadata, int8_session=TFLiteSession,
                      qat_session=TFLiteQATSession, rewrites=TFLITE_REWRITES, diagnose=diagnose,
                      mask_head=tflite_with_mask_head, float_ops=float_ops,
                      npu_fallbacks=npu_fallbacks)


def export_tflite(model_or_path: Any, out: Any, quantize: str = "none",
                  calibration_data: Any = None, calibration_size: int = CALIBRATION_SIZE,
                  io_dtype: Optional[str] = None, input_size: Optional[tuple] = None,
                  verify: bool = True, agreement_floor: float = DEFAULT_AGREEMENT_FLOOR,
                  verification_data: Any = None, verification_size: int = VERIFICATION_SIZE,
                  check_speed: bool = True, progress: bool = True, repair: Optional[bool] = None,
                  layer_report: bool = False, threads: int = DEFAULT_THREADS, verbose: bool = False,
                  input_channels: Optional[int] = None,
                  output: str = "probabilities", integer_only: bool = False) -> ExportResult:
    """Convert a Keras segmentation model to a verified `.tflite` file.

    The file carries our `keras_unet` metadata and the standard TFLite Metadata
    (`keras_unet.export.tflite_support_metadata`), so MediaPipe's `ImageSegmenter` runs it
    as it is when its input is uint8 or float32 with 3 channels.

    Args:
        model_or_path: a `keras.Model` or the path of a `.keras` file.
        out: the `.tflite` file to write (replaced only once the new file verified).
        quantize: `"none"` (float32), `"fp16"` (float16 weights), `"dynamic"` (int8
            weights, float compute), `"int8"` (full integer, needs calibration images) or
            `"int16x8"` (8-bit weights, 16-bit activations on every op, calibrated like int8).
        calibration_data: real images for `"int8"`: a folder (`DIR/images/*` or images
            in `DIR`), a list of image paths, or an array `(N, H, W, C)` in [0, 255].
        calibration_size: at most this many calibration images.
        io_dtype: `"uint8"` (default for int8), `"int8"`, `"int16"` (int16x8; its
            default when integer-only) or `"float32"` (default otherwise) for the input and
            output tensors.
        input_size: `(height, width)` to export at; required when the model accepts
            any size.
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
        check_speed: for `"dynamic"` and `"int8"`, time the file against a float32
            conversion and warn when it is slower (dynamic) or less than 1.5x faster (int8).
        progress: show progress bars.
        repair: int8: when the file misses `agreement_floor`, keep its worst layers in
            float until it meets it (default on for int8; `False` for pure int8 or a
            refusal). See `keras_unet.export.int8`.
        layer_report: int8: also build the per-layer report (`result.layer_report`) when
            the file passes at once.
        threads: threads for the speed checks during export.
        verbose: also show TensorFlow's, the converter's and the runtimes' own log lines
            (silenced by default, for the duration of the call only).
        output: `"probabilities"` (default) or `"mask"`: the file outputs a `(N, H, W)`
            uint8 class-id mask (threshold or arg-max inside), so a device does no
            post-processing; checked against the probability file's masks.
        input_channels: channels the file takes; `3` for a 1-channel model makes the file
            take RGB and convert it to gray inside (ITU-R 601 luma, as
            `keras_unet.runtime.imageio` converts files), which MediaPipe needs. Default:
            the model's own.
        integer_only: int8 or int16x8: no op computes in float (integer input and output,
            no float fallback), for NPUs and integer-only accelerators.

    Returns:
        `keras_unet.export.result.ExportResult`.

    Example:
    ```python
    import keras_unet
    from keras_unet.datasets import nuclei_path
    from keras_unet.export import export_tflite

    model = keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2)
    result = export_tflite(model, "unet.tflite", progress=False)
    result.verification.max_abs_diff  # ~1e-6; over 1e-4 the export fails
    small = export_tflite(model, "unet_fp16.tflite", quantize="fp16", progress=False)
    ```
    """
    check_output(CONVERTER, out, quantize)
    options = ExportOptions(
        quantize=quantize, calibration_data=calibration_data, calibration_size=calibration_size,
        io_dtype=io_dtype, input_size=input_size, verify=verify, agreement_floor=agreement_floor,
        verification_data=verification_data, verification_size=verification_size,
        check_speed=check_speed, progress=progress, repair=repair, layer_report=layer_report,
        threads=threads, verbose=verbose, input_channels=input_channels, output=output,
        integer_only=integer_only)
    return run_export(CONVERTER, options, model_or_path, out)
