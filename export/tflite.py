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
  SavedModel is written once per job. Tiny UNet (32x32, filters=4): 1.4-1.7 s per
  `model.export` call, 0.8 s per conversion from the written SavedModel.

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
  fly. It is where the dynamic batch hurts most: on the seed model (128x128, 2 threads)
  dynamic-range took 1520 ms per image with a `None` batch and 84 ms with batch 1
  (float32: 484 and 420 ms); a 128x128 UNet with filters=16 went from 56 to 7.4 ms. The
  export still times the dynamic-range file against a float32 conversion and warns if it
  is slower; prefer `int8` for speed or `fp16` for size.
- **Full int8**: the input range is pinned to [0, 255]
  (`keras_unet.export.calibration.pin_input_range`) so uint8 I/O passes raw pixels (scale
  1, zero point 0). TRANSPOSE_CONV is quantized too (per-channel int8 weights); with the
  static batch its output shape is a constant and XNNPACK takes it (128x128 UNet,
  filters=16: 8.6 ms with a `None` batch, 6.3 ms with batch 1). A binary file's uint8
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

Example:
```python
from keras_unet.export.tflite import export_tflite

result = export_tflite("model.keras", "model_int8.tflite", quantize="int8",
                       calibration_data="data/val")
print(result.summary())
```
"""

import dataclasses
import functools
import re
import time

import numpy as np

from keras_unet.export.mask_head import tflite_with_mask_head
from keras_unet.export.metadata import embed_tflite_metadata
from keras_unet.export.pipeline import Converter, Diagnosis, check_output, run_export
from keras_unet.export.tflite_support_metadata import (
    TFLITE_METADATA,
    build_support_metadata,
    pack_associated_files,
)
from keras_unet.export.verify import DEFAULT_AGREEMENT_FLOOR

QUANTIZE_MODES = ("none", "fp16", "dynamic", "int8")
IO_DTYPES = ("float32", "uint8", "int8")


class UnsupportedOpsError(ValueError):
    """The model needs TensorFlow ops that TFLite built-ins do not have."""


@dataclasses.dataclass(frozen=True)
class TFLiteOptions:
    """How `convert` turns the job's model into a `.tflite` file.

    Args:
        quantize: `"none"`, `"fp16"`, `"dynamic"` or `"int8"`.
        io_dtype: `"float32"`, or `"uint8"`/`"int8"` input and output with `"int8"`.
        check_speed: for `"dynamic"` and `"int8"`, `diagnose` times the file against a
            float32 conversion and warns when it gains too little (int8: < 1.5x).
        threads: interpreter threads for those timings.

    Example:
    ```python
    TFLiteOptions(quantize="int8", io_dtype="uint8")
    ```
    """

    quantize: str = "none"
    io_dtype: str = "float32"
    check_speed: bool = True
    threads: int = 2

    def __post_init__(self):
        if self.io_dtype not in IO_DTYPES:
            raise ValueError(
                f"`io_dtype` must be one of {list(IO_DTYPES)}. Received: io_dtype={self.io_dtype!r}"
            )
        if self.io_dtype != "float32" and self.quantize != "int8":
            raise ValueError(
                "Integer input/output needs full-integer quantization (quantize='int8'). "
                f"Received: io_dtype={self.io_dtype!r}, quantize={self.quantize!r}"
            )


def write_saved_model(model, folder):
    """Write `model` (static input) as a SavedModel whose one signature takes `image`.

    `TFLiteConverter.from_keras_model` writes this same SavedModel for Keras 3, but when
    that fails it swallows the error and falls back to a Keras 2 path that dies with
    "'NoneType' object is not callable"; writing it here lets the real error through.

    Example:
    ```python
    write_saved_model(job.static, job.work / "saved_model")
    ```
    """
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    signature = [tf.TensorSpec(x.shape, dtype=x.dtype, name="image") for x in model.inputs]
    archive.add_endpoint("serve", functools.partial(model.__call__, training=False), signature)
    archive.write_out(str(folder), verbose=False)
    return folder


def make_converter(job, options):
    """A `tf.lite.TFLiteConverter` for the job's model, configured for `options`.

    Built-in ops only; `"int8"` calibrates on `job.calibration` with the input range
    pinned to [0, 255]. This is the object `tf.lite.experimental.QuantizationDebugger`
    takes.

    Example:
    ```python
    converter = make_converter(job, TFLiteOptions(quantize="int8", io_dtype="uint8"))
    ```
    """
    import tensorflow as tf

    from keras_unet.export.calibration import pin_input_range, tflite_representative_dataset

    saved_model = job.cached("tflite_saved_model",
                             lambda: write_saved_model(job.static, job.work / "saved_model"))
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if options.quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if options.quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if options.quantize == "int8":
        converter.representative_dataset = tflite_representative_dataset(
            pin_input_range(job.calibration), job.progress)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.as_dtype(options.io_dtype)
        converter.inference_output_type = tf.as_dtype(options.io_dtype)
    return converter


def convert(job, options):
    """The `.tflite` bytes (no metadata yet) of the job's model for `options`.

    Example:
    ```python
    model_bytes = convert(job, TFLiteOptions(quantize="fp16"))
    ```
    """
    try:
        model_bytes = make_converter(job, options).convert()
    except Exception as error:  # ConverterError and friends; re-raised with the cause
        message = str(error)
        flex = r"'tf\.(\w+)' op is neither a custom op nor a flex op"
        ops = sorted(set(re.findall(flex, message)))
        ops += sorted(set(re.findall(r"Custom ops: ([\w, ]+)", message)) - set(ops))
        if ops:
            _raise_unsupported(ops, job.source)
        lines = [line for line in message.splitlines() if "error" in line.lower()]
        raise RuntimeError(
            f"TFLite conversion of '{job.source}' with quantize='{options.quantize}' failed: "
            + ("; ".join(lines[:5]) or message[-1000:])
        ) from error
    custom = custom_ops(model_bytes)
    if custom:
        _raise_unsupported(custom, job.source)
    return finish_converted(model_bytes)


# A uint8 probability output has scale 1/256: 0.5 is the code 128, where keras-unet's
# `p >= 0.5` and MediaPipe's `p > 0.5` disagree. With 1/255.75 the QUANTIZE op still
# gives every code it gave (q * 255.75/256 is within 0.25 of q for q <= 255), 128 reads
# 0.50049 and no code reads 0.5.
UINT8_PROBABILITY_SCALE = 1.0 / 255.75


def binary_output_off_half(model_bytes):
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


def finish_converted(model_bytes):
    """A converted file as it is written: int8 requantizations the built-in kernels compute
    exactly (`keras_unet.export.quantization.requantize`), a binary int8 file's logit range
    clipped to the sigmoid's [-8, 8] (`keras_unet.export.quantization.logit_range`), then
    its uint8 output off 0.5 (`binary_output_off_half`); each step leaves a file it does
    not apply to as it was."""
    from keras_unet.export.quantization.logit_range import tflite_clip_logit_range
    from keras_unet.export.quantization.requantize import precise_requantize

    return binary_output_off_half(tflite_clip_logit_range(precise_requantize(model_bytes)))


def custom_ops(model_bytes):
    """Names of the custom (incl. Flex) ops in a `.tflite` file's contents."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(model_bytes, 0)
    names = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == schema.BuiltinOperator.CUSTOM:
            names.append((code.CustomCode() or b"?").decode())
    return names


def _raise_unsupported(ops, source):
    raise UnsupportedOpsError(
        f"'{source}' needs TensorFlow ops that are not TFLite built-ins: {', '.join(ops)}. "
        "Exports use built-in ops only, because Select TF (Flex) ops are missing from "
        "ai_edge_litert / tflite_runtime on devices. Replace the layer that uses them "
        "(e.g. a Lambda calling tf.* functions) with Keras layers or keras.ops that "
        "TFLite supports."
    )


def embed_metadata(model_bytes, metadata):
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
    if metadata.get("output") == "mask":
        # A uint8 class-id mask is not the confidence tensor the TFLite Metadata describes
        # (MediaPipe would read it as probabilities): the file carries our entry only.
        return embed_tflite_metadata(model_bytes, metadata)
    support = build_support_metadata(metadata)
    packed = embed_tflite_metadata(model_bytes, metadata, entries={TFLITE_METADATA: support.buffer})
    return pack_associated_files(packed, support.files)


def _interpreter(model_bytes, **kwargs):
    from keras_unet.runtime.tflite import interpreter_class

    interpreter = interpreter_class()(model_content=model_bytes, **kwargs)
    interpreter.allocate_tensors()
    return interpreter


def describe(model_bytes):
    """Shape, dtypes and quantization of the input and output tensors of a `.tflite` file."""
    interpreter = _interpreter(model_bytes)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def quant(detail):
        scale, zero_point = detail["quantization"]
        if np.dtype(detail["dtype"]).kind == "f" or scale == 0:
            return None
        return {"scale": float(scale), "zero_point": int(zero_point)}

    return {
        "input_shape": tuple(int(d) for d in inp["shape"]),
        "input_dtype": np.dtype(inp["dtype"]).name,
        "output_dtype": np.dtype(out["dtype"]).name,
        "input_quantization": quant(inp),
        "output_quantization": quant(out),
    }


def time_ms(model_bytes, repeats=5, threads=2):
    """Median milliseconds of one `invoke()` after a warm-up call (XNNPACK packs weights then)."""
    interpreter = _interpreter(model_bytes, num_threads=threads)
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.invoke()
        runs.append(time.perf_counter() - start)
    return float(np.median(runs)) * 1e3


# An int8 file that gains less than this over float32 is reported: the model's ops do
# not map onto fast integer kernels (MobileNetV3-small: 0.47 vs 0.57 of Keras' time).
MIN_INT8_SPEEDUP = 1.5


def mediapipe_notes(channels, io_dtype):
    """Why MediaPipe's ImageSegmenter would refuse a file with this input, if it would.

    MediaPipe takes 3-channel (or 4-channel) images and uint8 or float32 tensors.

    Example:
    ```python
    mediapipe_notes(1, "uint8")   # ['... export with input_channels=3 ...']
    ```
    """
    notes = []
    if io_dtype == "int8":
        notes.append(
            "This file has int8 input and output, which MediaPipe's ImageSegmenter refuses "
            "(it needs uint8 or float32 I/O); keras-unet's runners and the TFLite interpreter "
            "run it. For MediaPipe, export with io_dtype='uint8' (--io uint8, the default).")
    if channels not in (3, 4):
        notes.append(
            f"This file takes {channels}-channel images; MediaPipe's ImageSegmenter needs 3 "
            "(RGB). For MediaPipe, export with input_channels=3 (--input-channels 3): the "
            "file then takes RGB and converts it to gray inside.")
    return notes


def diagnose(job, options, model_bytes):
    """MediaPipe's input requirements; time a dynamic-range or int8 file against float32."""
    notes = mediapipe_notes(job.input_channels, options.io_dtype)
    if options.quantize not in ("dynamic", "int8") or not options.check_speed:
        return Diagnosis(warnings=notes)
    float_bytes = job.cached("tflite_float32", lambda: convert(
        job, dataclasses.replace(options, quantize="none", io_dtype="float32")))
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
    return Diagnosis(warnings=notes + found, timings_ms=timings)


class Int8Session:
    """The int8 quantizer of one job for `keras_unet.export.int8.quantize_verified`.

    Calibrates once (`TFLiteQuantizer`: the calibrator's ranges measured again where
    TFLite widened them), then quantizes from either calibration variant (`"percentile"`:
    ranges clipped at the 99.99th percentile, see `keras_unet.export.quantization.ranges`;
    `"minmax"`) with any set of ops kept in float
    (`denylisted_nodes`, uint8/int8 I/O kept) and reports per layer.

    Example:
    ```python
    session = Int8Session(job, TFLiteOptions(quantize="int8", io_dtype="uint8"))
    model_bytes = session.quantize([], "minmax")
    ```
    """

    # Percentile first: it agreed better on every model of the int8 matrix (first is what
    # repair=False uses).
    variants = ("percentile", "minmax")

    def __init__(self, job, options):
        from keras_unet.export.quantization import TFLiteQuantizer

        self.job = job
        self.options = options
        self.quantizer = TFLiteQuantizer(make_converter(job, options))

    def quantize(self, keep_float, variant):
        model_bytes = self.quantizer.quantize(keep_float=keep_float, variant=variant)
        custom = custom_ops(model_bytes)
        if custom:
            _raise_unsupported(custom, self.job.source)
        return finish_converted(model_bytes)

    def expand(self, nodes):
        return self.quantizer.with_consumers(nodes)

    def time_ms(self, model_bytes):
        """Latency of `model_bytes` here, or None when speed checks are off."""
        if not self.options.check_speed:
            return None
        return time_ms(model_bytes, threads=self.options.threads)

    def leading_nodes(self):
        return self.quantizer.leading_ops()

    def report(self, images, keep_float, variant):
        return self.quantizer.report(images, keep_float=keep_float, model=self.job.model,
                                     variant=variant)


CONVERTER = Converter(format="tflite", suffix=".tflite", quantize_modes=QUANTIZE_MODES,
                      convert=convert, describe=describe, embed_metadata=embed_metadata,
                      diagnose=diagnose, int8_session=Int8Session,
                      mask_head=tflite_with_mask_head)


def export_tflite(model_or_path, out, quantize="none", calibration_data=None,
                  calibration_size=100, io_dtype=None, input_size=None, verify=True,
                  agreement_floor=DEFAULT_AGREEMENT_FLOOR, verification_data=None,
                  verification_size=32, check_speed=True, progress=True, repair=None,
                  layer_report=False, threads=2, verbose=False, input_channels=None,
                  output="probabilities"):
    """Convert a Keras segmentation model to a verified `.tflite` file.

    The file carries our `keras_unet` metadata and the standard TFLite Metadata
    (`keras_unet.export.tflite_support_metadata`), so MediaPipe's `ImageSegmenter` runs it
    as it is when its input is uint8 or float32 with 3 channels.

    Args:
        model_or_path: a `keras.Model` or the path of a `.keras` file.
        out: the `.tflite` file to write (replaced only once the new file verified).
        quantize: `"none"` (float32), `"fp16"` (float16 weights), `"dynamic"` (int8
            weights, float compute) or `"int8"` (full integer, needs calibration images).
        calibration_data: real images for `"int8"`: a folder (`DIR/images/*` or images
            in `DIR`), a list of image paths, or an array `(N, H, W, C)` in [0, 255].
        calibration_size: at most this many calibration images.
        io_dtype: `"uint8"` (default for int8), `"int8"` or `"float32"` (default
            otherwise) for the input and output tensors.
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

    Returns:
        `keras_unet.export.result.ExportResult`.

    Example:
    ```python
    import keras_unet
    from keras_unet.export.tflite import export_tflite

    model = keras_unet.UNet((64, 64, 3), filters=8, depth=3)
    result = export_tflite(model, "unet.tflite")
    result.verification.max_abs_diff  # ~1e-6
    ```
    """
    check_output(CONVERTER, out, quantize)
    if io_dtype is None:
        io_dtype = "uint8" if quantize == "int8" else "float32"
    options = TFLiteOptions(quantize=quantize, io_dtype=io_dtype, check_speed=check_speed,
                            threads=threads)
    return run_export(
        CONVERTER, options, model_or_path, out, calibration_data=calibration_data,
        calibration_size=calibration_size, input_size=input_size, batch=1, verify=verify,
        agreement_floor=agreement_floor, verification_data=verification_data,
        verification_size=verification_size, progress=progress, repair=repair,
        layer_report=layer_report, verbose=verbose, input_channels=input_channels, output=output,
    )
