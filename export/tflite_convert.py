"""Keras -> `.tflite` bytes: the TFLite converter of an export job, and what a file is.

The format's own steps for `keras_unet.export.tflite` (why this route and the traps it
handles are told there): a SavedModel written once per job, a `tf.lite.TFLiteConverter`
configured per mode (`make_converter`), built-in ops only, and the file's tensors
(`describe`) and speed (`time_ms`).

Example:
```python
from keras_unet.export.tflite_convert import TFLiteOptions, convert, describe

model_bytes = convert(job, TFLiteOptions(quantize="fp16"))
describe(model_bytes)["input_dtype"]  # 'float32'
```
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

import numpy as np

from keras_unet.export.tflite_ops import float_ops, npu_fallbacks  # noqa: F401  (the format's names)

QUANTIZE_MODES = ("none", "fp16", "dynamic", "int8", "int16x8")
IO_DTYPES = ("float32", "uint8", "int8", "int16")
# The integer input/output types each full-integer mode can have.
INTEGER_IO = {"int8": ("uint8", "int8"), "int16x8": ("int16",)}


class UnsupportedOpsError(ValueError):
    """The model needs TensorFlow ops that TFLite built-ins do not have."""


@dataclasses.dataclass(frozen=True)
class TFLiteOptions:
    """How `convert` turns the job's model into a `.tflite` file.

    Args:
        quantize: `"none"`, `"fp16"`, `"dynamic"`, `"int8"` or `"int16x8"` (8-bit weights,
            16-bit activations on every op).
        io_dtype: `"float32"`; `"uint8"`/`"int8"` input and output with `"int8"`,
            `"int16"` with `"int16x8"`.
        check_speed: for `"dynamic"` and `"int8"`, `diagnose` times the file against a
            float32 conversion and warns when it gains too little (int8: < 1.5x).
        threads: interpreter threads for those timings.
        integer_only: no op computes in float: integer input and output, and no float
            fallback for an op the quantizer cannot quantize (conversion fails instead).

    Example:
    ```python
    TFLiteOptions(quantize="int8", io_dtype="uint8")
    TFLiteOptions(quantize="int16x8", io_dtype="int16", integer_only=True)
    ```
    """

    quantize: str = "none"
    io_dtype: str = "float32"
    check_speed: bool = True
    threads: int = 2
    integer_only: bool = False

    def __post_init__(self):
        if self.io_dtype not in IO_DTYPES:
            raise ValueError(
                f"`io_dtype` must be one of {list(IO_DTYPES)}. Received: io_dtype={self.io_dtype!r}"
            )
        if self.io_dtype != "float32" and self.io_dtype not in INTEGER_IO.get(self.quantize, ()):
            raise ValueError(
                "Integer input/output needs full-integer quantization: uint8 or int8 with "
                "quantize='int8', int16 with quantize='int16x8'. "
                f"Received: io_dtype={self.io_dtype!r}, quantize={self.quantize!r}"
            )
        if self.integer_only and self.io_dtype == "float32":
            raise ValueError(
                "An integer-only TFLite file has integer input and output: io_dtype "
                f"{' or '.join(INTEGER_IO.get(self.quantize, ('uint8', 'int8', 'int16')))} with "
                f"quantize='int8' or 'int16x8'. Received: io_dtype={self.io_dtype!r}, "
                f"quantize={self.quantize!r}"
            )


def write_saved_model(model: Any, folder: Any) -> Any:
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


def make_converter(job: Any, options: TFLiteOptions) -> Any:
    """A `tf.lite.TFLiteConverter` for the job's model, configured for `options`.

    Built-in ops only; `"int8"` and `"int16x8"` calibrate on `job.calibration` with the
    input range pinned to [0, 255]. `"int16x8"` targets
    `EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`, with `TFLITE_BUILTINS`
    beside it (float fallback) unless `integer_only`. This is the object
    `tf.lite.experimental.QuantizationDebugger` and `TFLiteQuantizer` take.

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
    if options.quantize == "int16x8":
        converter.representative_dataset = tflite_representative_dataset(
            pin_input_range(job.calibration), job.progress)
        int16 = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        converter.target_spec.supported_ops = (
            [int16] if options.integer_only else [int16, tf.lite.OpsSet.TFLITE_BUILTINS])
        converter.inference_input_type = tf.as_dtype(options.io_dtype)
        converter.inference_output_type = tf.as_dtype(options.io_dtype)
    return converter


def convert(job: Any, options: TFLiteOptions) -> bytes:
    """The `.tflite` bytes of the job's model for `options`, as the TFLite converter writes
    them (the pipeline then applies `keras_unet.export.rewrites.TFLITE_REWRITES`; no metadata).

    Example:
    ```python
    model_bytes = convert(job, TFLiteOptions(quantize="fp16"))
    ```
    """
    try:
        if options.quantize == "int16x8":
            model_bytes = quantize_int16x8(job, options)
        else:
            model_bytes = make_converter(job, options).convert()
    except Exception as error:  # ConverterError and friends; re-raised with the cause
        message = str(error)
        flex = r"'tf\.(\w+)' op is neither a custom op nor a flex op"
        ops = sorted(set(re.findall(flex, message)))
        ops += sorted(set(re.findall(r"Custom ops: ([\w, ]+)", message)) - set(ops))
        if ops:
            raise_unsupported(ops, job.source)
        lines = [line for line in message.splitlines() if "error" in line.lower()]
        raise RuntimeError(
            f"TFLite conversion of '{job.source}' with quantize='{options.quantize}' failed: "
            + ("; ".join(lines[:5]) or message[-1000:])
        ) from error
    custom = custom_ops(model_bytes)
    if custom:
        raise_unsupported(custom, job.source)
    return model_bytes


def quantize_int16x8(job: Any, options: TFLiteOptions, variant: str = "minmax") -> bytes:
    """The 16x8 file of the job's model: calibrated once, quantized from `variant`'s ranges.

    `TFLiteConverter.convert()` cannot write it for our models: its 16x8 quantizer has no
    DEPTH_TO_SPACE (the decoder's pixel shuffle), so `TFLiteQuantizer` writes that op as
    RESHAPE/TRANSPOSE/RESHAPE first (`quantization.tflite_depth_to_space`).

    Example:
    ```python
    model_bytes = quantize_int16x8(job, TFLiteOptions(quantize="int16x8"))
    ```
    """
    from keras_unet.export.quantization import TFLiteQuantizer

    return TFLiteQuantizer(make_converter(job, options)).quantize(variant=variant)


def custom_ops(model_bytes: bytes) -> list:
    """Names of the custom (incl. Flex) ops in a `.tflite` file's contents."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(model_bytes, 0)
    names = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == schema.BuiltinOperator.CUSTOM:
            names.append((code.CustomCode() or b"?").decode())
    return names


def raise_unsupported(ops: list, source: str) -> None:
    raise UnsupportedOpsError(
        f"'{source}' needs TensorFlow ops that are not TFLite built-ins: {', '.join(ops)}. "
        "Exports use built-in ops only, because Select TF (Flex) ops are missing from "
        "ai_edge_litert / tflite_runtime on devices. Replace the layer that uses them "
        "(e.g. a Lambda calling tf.* functions) with Keras layers or keras.ops that "
        "TFLite supports."
    )


def _interpreter(model_bytes: bytes, **kwargs: Any) -> Any:
    from keras_unet.runtime.tflite import interpreter_class

    interpreter = interpreter_class()(model_content=model_bytes, **kwargs)
    interpreter.allocate_tensors()
    return interpreter


def describe(model_bytes: bytes) -> dict:
    """Shape, dtypes and quantization of the input and output tensors of a `.tflite` file.

    Read without delegates: the tensors' details need no XNNPack, and a file XNNPack refuses
    to prepare (the int8 step tries such files) aborted the process now and then when
    prepared once here and once more by the verification.
    """
    from ai_edge_litert.interpreter import OpResolverType

    interpreter = _interpreter(
        model_bytes, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
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


def time_ms(model_bytes: bytes, repeats: int = 5, threads: int = 2) -> float:
    """Median milliseconds of one `invoke()` after a warm-up call (XNNPACK packs weights then),
    timed by `keras_unet.runtime.timing.median_ms`."""
    from keras_unet.runtime.timing import median_ms

    interpreter = _interpreter(model_bytes, num_threads=threads)
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    return median_ms(interpreter.invoke, warmup=1, runs=repeats)


