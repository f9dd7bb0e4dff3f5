"""Keras -> TFLite (LiteRT) with float16, dynamic-range or full-integer quantization.

Conversion writes a static-shape copy of the model (batch 1, fixed height and width) as
a SavedModel through `keras.export.ExportArchive` and runs `tf.lite.TFLiteConverter`
on it, which gives full control over the quantization options
(`model.export(format="litert")` hides them).

Known traps, handled here:

- **`None` spatial size**: a model converted with `None` height/width gets a `1x1`
  input and every runtime must resize the input tensor first. We fix the size
  (`input_size`, or the model's own) and fail with a message naming `--input-size` if
  there is none.
- **Dynamic batch + `Conv2DTranspose`**: with a `None` batch every transposed conv
  computes its output shape at run time (SHAPE/STRIDED_SLICE/PACK ops) and XNNPACK
  leaves TRANSPOSE_CONV to slower kernels. So the batch is fixed to 1.
- **Dynamic-range quantization** stores int8 weights and quantizes activations on the
  fly. It is where the dynamic batch hurts most: on the seed model (128x128, 2 threads,
  same busy machine, same run) dynamic-range took 1520 ms per image with a `None` batch
  and 84 ms with batch 1 (float32: 484 and 420 ms); a 128x128 UNet with filters=16 went
  from 56 to 7.4 ms. The export still times the dynamic-range file against a float32
  conversion and warns if it is slower; prefer `int8` for speed or `fp16` for size.
- **Full int8**: the input range is pinned to [0, 255] (see
  `keras_unet.export.calibration.pin_input_range`) so uint8 I/O passes raw pixels (scale 1,
  zero point 0). TRANSPOSE_CONV is quantized too (per-channel int8 weights); with the
  static batch its output shape is a constant and XNNPACK takes it (128x128 UNet,
  filters=16: 8.6 ms with a `None` batch, 6.3 ms with batch 1).
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

import contextlib
import functools
import io
import re
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from keras_unet.runtime.files import atomic_output
from keras_unet.export.result import ExportResult
from keras_unet.export.verify import DEFAULT_AGREEMENT_FLOOR

QUANTIZE_MODES = ("none", "fp16", "dynamic", "int8")
IO_DTYPES = ("float32", "uint8", "int8")


class UnsupportedOpsError(ValueError):
    """The model needs TensorFlow ops that TFLite built-ins do not have."""


def check_options(out, quantize, io_dtype, suffix=".tflite", modes=QUANTIZE_MODES, fmt="tflite"):
    """Validate `out`, `quantize` and `io_dtype`; return the resolved `io_dtype`."""
    if quantize not in modes:
        raise ValueError(
            f"`quantize` must be one of {list(modes)} for format '{fmt}'. "
            f"Received: quantize={quantize!r}"
        )
    if Path(str(out)).suffix.lower() != suffix:
        raise ValueError(
            f"The output file of a {fmt} export must end in '{suffix}'. Received: out='{out}'"
        )
    if io_dtype is None:
        return "uint8" if quantize == "int8" else "float32"
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"`io_dtype` must be one of {list(IO_DTYPES)}. Received: io_dtype={io_dtype!r}")
    if io_dtype != "float32" and quantize != "int8":
        raise ValueError(
            f"Integer input/output needs full-integer quantization (quantize='int8'). "
            f"Received: io_dtype={io_dtype!r}, quantize={quantize!r}"
        )
    return io_dtype


def interpreter_class():
    """`Interpreter` of ai_edge_litert, else tflite_runtime, else tf.lite."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
    return Interpreter


def _tensor_info(model_bytes):
    interpreter = interpreter_class()(model_content=model_bytes)
    interpreter.allocate_tensors()
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


def _custom_ops(model_bytes):
    """Names of the custom (incl. Flex) ops in a converted model."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(model_bytes, 0)
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


def _convert(model, quantize, io_dtype, calibration_images, source, progress):
    import keras
    import tensorflow as tf

    # `from_keras_model` writes this same SavedModel for Keras 3, but if that fails it
    # swallows the error and falls back to a Keras 2 path that dies with "'NoneType'
    # object is not callable". Writing it here lets the real error through.
    with tempfile.TemporaryDirectory(prefix="keras_unet_tflite_") as saved_model:
        archive = keras.export.ExportArchive()
        archive.track(model)
        signature = [tf.TensorSpec(x.shape, dtype=x.dtype, name="image") for x in model.inputs]
        archive.add_endpoint("serve", functools.partial(model.__call__, training=False),
                             signature)
        with contextlib.redirect_stdout(io.StringIO()):  # "Saved artifact at ..." listing
            archive.write_out(saved_model)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        return _run_converter(converter, tf, quantize, io_dtype, calibration_images, source,
                              progress)


def _run_converter(converter, tf, quantize, io_dtype, calibration_images, source, progress):
    from keras_unet.export.calibration import pin_input_range, tflite_representative_dataset

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = tflite_representative_dataset(
            pin_input_range(calibration_images), progress
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.as_dtype(io_dtype)
        converter.inference_output_type = tf.as_dtype(io_dtype)
    try:
        model_bytes = converter.convert()
    except Exception as error:  # ConverterError and friends; re-raised with the cause
        message = str(error)
        ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message)))
        ops += sorted(set(re.findall(r"Custom ops: ([\w, ]+)", message)) - set(ops))
        if ops:
            _raise_unsupported(ops, source)
        lines = [line for line in message.splitlines() if "error" in line.lower()]
        raise RuntimeError(
            f"TFLite conversion of '{source}' with quantize='{quantize}' failed: "
            + ("; ".join(lines[:5]) or message[-1000:])
        ) from error
    custom = _custom_ops(model_bytes)
    if custom:
        _raise_unsupported(custom, source)
    return model_bytes


def _time_ms(model_bytes, repeats=3, threads=2):
    interpreter = interpreter_class()(model_content=model_bytes, num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()  # warm-up: XNNPACK packs weights on the first call
    start = time.perf_counter()
    for _ in range(repeats):
        interpreter.invoke()
    return (time.perf_counter() - start) / repeats * 1e3


def _warn(result_warnings, message):
    result_warnings.append(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def export_tflite(model_or_path, out, quantize="none", calibration_data=None,
                  calibration_size=100, io_dtype=None, input_size=None, verify=True,
                  agreement_floor=DEFAULT_AGREEMENT_FLOOR, verification_data=None,
                  verification_size=16, check_speed=True, progress=True):
    """Convert a Keras segmentation model to a verified `.tflite` file.

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
            it does not match (float32: max_abs_diff <= 1e-4; quantized: mask IoU >=
            `agreement_floor`).
        agreement_floor: lowest mask agreement IoU accepted for a quantized file.
        verification_data: images to verify on (default: the calibration images, else
            the nuclei sample shipped with keras_unet).
        verification_size: at most this many verification images.
        check_speed: for `"dynamic"`, time the file against a float32 conversion and
            warn when it is slower.
        progress: show progress bars.

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
    from keras_unet.export.calibration import load_images, require_calibration
    from keras_unet.export.source import load_source_model, model_facts, resolve_input_size, static_model
    from keras_unet.export.verify import select_verification_images, verify_export

    io_dtype = check_options(out, quantize, io_dtype)
    if quantize == "int8":
        require_calibration(calibration_data, quantize, "api")
    model, source = load_source_model(model_or_path)
    size = resolve_input_size(model, input_size, source)
    facts = model_facts(model)
    fixed = static_model(model, size)

    calibration = None
    if quantize == "int8":
        calibration = load_images(calibration_data, size, facts["channels"], calibration_size,
                                  progress=progress)
    model_bytes = _convert(fixed, quantize, io_dtype, calibration, source, progress)
    info = _tensor_info(model_bytes)

    result_warnings, timings = [], {}
    if quantize == "dynamic" and check_speed:
        float_bytes = _convert(fixed, "none", "float32", None, source, progress)
        timings = {"float32": _time_ms(float_bytes), "dynamic": _time_ms(model_bytes)}
        # Below a millisecond (tiny models) the two differ by timer noise, not kernels.
        if timings["dynamic"] > 1.2 * timings["float32"] and timings["dynamic"] > 1.0:
            _warn(result_warnings,
                  f"Dynamic-range TFLite ran {timings['dynamic'] / timings['float32']:.1f}x "
                  f"slower than float32 here ({timings['dynamic']:.1f} vs "
                  f"{timings['float32']:.1f} ms per image): it computes in float and "
                  "dequantizes weights on the fly outside XNNPACK's fast paths. Use "
                  "quantize='int8' for speed or 'fp16' for size.")

    from keras_unet.export.metadata import build_metadata, embed_tflite_metadata

    metadata = build_metadata(
        model, format="tflite", quantization=quantize, input_size=size,
        input_dtype=info["input_dtype"], input_quantization=info["input_quantization"],
        output_dtype=info["output_dtype"], output_quantization=info["output_quantization"],
        source_model=source,
    )
    model_bytes = embed_tflite_metadata(model_bytes, metadata)

    report = None
    with atomic_output(out) as tmp:
        tmp.write_bytes(model_bytes)
        if verify:
            images, image_source = select_verification_images(
                size, facts["channels"], verification_data, calibration, verification_size,
                progress)
            report = verify_export(fixed, tmp, images, quantize,
                                   threshold=metadata.get("threshold") or 0.5,
                                   agreement_floor=agreement_floor, source=image_source)
    return ExportResult(
        path=str(out), format="tflite", quantization=quantize,
        size_bytes=Path(out).stat().st_size, input_shape=info["input_shape"],
        input_dtype=info["input_dtype"], output_dtype=info["output_dtype"],
        verification=report, warnings=result_warnings, metadata=metadata, timings_ms=timings,
    )
