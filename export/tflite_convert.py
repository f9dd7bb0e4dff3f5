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


def convert(job: Any, options: TFLiteOptions) -> bytes:
    """The `.tflite` bytes of the job's model for `options`, as the TFLite converter writes
    them (the pipeline then applies `keras_unet.export.rewrites.TFLITE_REWRITES`; no metadata).

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


