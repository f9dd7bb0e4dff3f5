"""The keras_unet metadata a runner works from: read from the file, told by its tensors, merged.

Stored metadata (its fields are declared in `keras_unet.runtime.metadata_schema` and listed
in docs/metadata.md):

- `.tflite`: a metadata entry named `keras_unet` pointing at a buffer that holds JSON,
  read with the TFLite flatbuffer schema that ships in ai-edge-litert
  (`ai_edge_litert.schema_py_generated`, which needs `flatbuffers`, a dependency of
  ai-edge-litert). A device running the old `tflite-runtime` interpreter reads it the same
  way when ai-edge-litert's schema module can be imported; otherwise the runner warns and
  uses what the tensors tell, and `read_metadata` raises an `ImportError` naming the package.
- `.onnx`: the `metadata_props` entry `keras_unet`, read through onnxruntime's
  `get_modelmeta()` (an edge device has onnxruntime but not necessarily `onnx`).

A runner then checks the stored metadata against its tensors (`tensor_metadata`,
`merge_metadata`): the tensors are what the runtime computes with, so they win.

Example:
```python
from keras_unet.runtime.metadata import read_metadata

read_metadata("unet_int8.tflite")["num_classes"]  # 1
```
"""

from __future__ import annotations

import importlib
import json
import os
import struct
import warnings
from typing import Any, Optional

import numpy as np

from keras_unet.runtime.loaders import create_session
from keras_unet.runtime.metadata_schema import (  # noqa: F401  (read here by many callers)
    METADATA_KEY,
    SCHEMA_VERSION,
    class_name_counts,
    is_mask_output,
)
from keras_unet.runtime.notices import warn_once


def tflite_schema() -> Any:
    """The generated TFLite flatbuffer schema module (`ai_edge_litert.schema_py_generated`).

    Raises:
        ImportError: ai-edge-litert (or its dependency flatbuffers) is not installed.

    Example:
    ```python
    schema = tflite_schema()
    schema.Model.GetRootAs(open("m.tflite", "rb").read(), 0).MetadataLength()
    ```
    """
    try:
        schema = importlib.import_module("ai_edge_litert.schema_py_generated")
    except ImportError as error:
        raise ImportError(
            "Reading the keras_unet metadata of a .tflite file needs the TFLite schema that "
            f"ships in ai-edge-litert: `pip install ai-edge-litert` ({error})."
        ) from error
    return schema


def tflite_metadata_entries(model_bytes: Any) -> dict:
    """`{name: bytes}` of every metadata entry in a TFLite flatbuffer.

    Raises:
        ValueError: the bytes are not a TFLite flatbuffer (no `TFL3` identifier), or its
            metadata entries point outside the file.
        ImportError: see `tflite_schema`.

    Example:
    ```python
    tflite_metadata_entries(open("m.tflite", "rb").read()).keys()  # {'min_runtime_version', 'keras_unet'}
    ```
    """
    buf = model_bytes if isinstance(model_bytes, (bytes, bytearray)) else bytes(model_bytes)
    if len(buf) < 8 or bytes(buf[4:8]) != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (the file identifier 'TFL3' is missing)")
    schema = tflite_schema()
    try:
        model = schema.Model.GetRootAs(buf, 0)
        entries = {}
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            index = entry.Buffer()
            if index >= model.BuffersLength():
                raise ValueError(f"metadata entry {i} points at buffer {index} of {model.BuffersLength()}")
            buffer = model.Buffers(index)
            name = (entry.Name() or b"").decode("utf-8")
            if not buffer.DataIsNone():
                entries[name] = buffer.DataAsNumpy().tobytes()
                continue
            # Models over 2 GB keep buffers after the flatbuffer, addressed by offset/size.
            offset, size = buffer.Offset(), buffer.Size()
            entries[name] = bytes(buf[offset : offset + size]) if offset > 1 else b""
    except (struct.error, IndexError, TypeError, UnicodeDecodeError) as error:
        raise ValueError(f"a corrupt TFLite flatbuffer ({type(error).__name__}: {error})") from error
    return entries


def parse_metadata(raw: Any, where: str = "the model file") -> dict:
    """The metadata dict of the stored JSON text `raw` (bytes or str).

    Raises:
        ValueError: `raw` is not a JSON object, naming `where`.

    Example:
    ```python
    parse_metadata(b'{"num_classes": 1}')["num_classes"]  # 1
    ```
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        metadata = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"The {METADATA_KEY!r} metadata in {where} is not valid JSON: {error}") from error
    if not isinstance(metadata, dict):
        raise ValueError(
            f"The {METADATA_KEY!r} metadata in {where} must be a JSON object. Received: {metadata!r}"
        )
    version = metadata.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        warnings.warn(
            f"{where} has keras_unet metadata schema {version}; this runtime reads schema "
            f"{SCHEMA_VERSION}. Fields it does not know are ignored: upgrade keras-unet-edge.",
            stacklevel=3,
        )
    return metadata


def read_tflite_metadata(model_bytes: Any, where: str = "the TFLite model") -> Optional[dict]:
    """The keras_unet metadata dict of a TFLite model's bytes, or None if it has none.

    Example:
    ```python
    read_tflite_metadata(open("m.tflite", "rb").read())["quantization"]
    ```
    """
    raw = tflite_metadata_entries(model_bytes).get(METADATA_KEY)
    return None if raw is None else parse_metadata(raw, where)


def read_onnx_metadata(session: Any, where: str = "the ONNX model") -> Optional[dict]:
    """The keras_unet metadata dict of an `onnxruntime.InferenceSession`, or None.

    Example:
    ```python
    read_onnx_metadata(onnxruntime.InferenceSession("m.onnx"))["num_classes"]
    ```
    """
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return None if raw is None else parse_metadata(raw, where)


def read_metadata(path: Any) -> Optional[dict]:
    """The keras_unet metadata of a `.tflite` or `.onnx` file, or None if it has none.

    Needs no TensorFlow: `.tflite` files are read with ai-edge-litert's schema module,
    `.onnx` files through onnxruntime.

    Args:
        path: the model file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the suffix is neither `.tflite` nor `.onnx`, or the file is not a
            valid model of that format.
        ImportError: the package that reads this format is not installed (named).

    Example:
    ```python
    import keras_unet
    from keras_unet.export import export_onnx
    from keras_unet.runtime import read_metadata

    model = keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2)
    export_onnx(model, "unet.onnx", progress=False)
    read_metadata("unet.onnx")["output_activation"]  # 'sigmoid'
    ```
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model file at {path!r}.")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".tflite":
        with open(path, "rb") as f:
            data = f.read()
        try:
            entries = tflite_metadata_entries(data)
        except ValueError as error:
            raise ValueError(f"{path!r} is not a valid TFLite model: {error}") from error
        raw = entries.get(METADATA_KEY)
        return None if raw is None else parse_metadata(raw, repr(path))
    if suffix in (".onnx", ".ort"):
        # Reading metadata needs no graph optimization: skip it, loading is then faster.
        return read_onnx_metadata(create_session(path, optimize=False), repr(path))
    if suffix == ".xml":
        return _read_ir_metadata(path)
    raise ValueError(f"Expected a .tflite, .onnx or .ort file, or OpenVINO IR (.xml). "
                     f"Received: path={path!r}")


def _read_ir_metadata(path: str) -> Optional[dict]:
    """The keras_unet metadata in an OpenVINO IR file's rt_info: the key the exporter writes,
    else what OpenVINO kept of an ONNX file's `metadata_props` (as the OpenVINO runner reads it)."""
    from keras_unet.runtime.loaders import openvino_core

    weights = os.path.splitext(path)[0] + ".bin"
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{path!r} is OpenVINO IR, whose weights file {weights!r} is missing.")
    try:
        model = openvino_core().read_model(path)
    except RuntimeError as error:  # OpenVINO's parse errors
        raise ValueError(f"{path!r} is not a valid OpenVINO IR model: "
                         f"{str(error).splitlines()[0]}") from error
    return rt_info_metadata(model, repr(path))


def rt_info_metadata(model: Any, where: str) -> Optional[dict]:
    """The keras_unet metadata of a read `openvino.Model`: its rt_info key `keras_unet` (what the
    exporter writes), else `framework/keras_unet` (what OpenVINO keeps of an ONNX file's
    `metadata_props`); None when it has neither. `where` names the file in errors."""
    for key in ([METADATA_KEY], ["framework", METADATA_KEY]):
        if model.has_rt_info(key):
            return parse_metadata(model.get_rt_info(key).astype(str), where)
    return None


def tensor_metadata(fmt: str, input_size: Any, channels: int, num_classes: int, input_dtype: Any,
                    output_dtype: Any, input_quantization: Optional[dict] = None,
                    output_quantization: Optional[dict] = None,
                    quantization: Optional[str] = None) -> dict:
    """The metadata a file's tensors tell, with defaults for what they cannot.

    Args:
        fmt: `"tflite"` / `"onnx"` / `"keras"`.
        input_size: `(H, W)`, None for a free dimension.
        channels, num_classes: from the input's and output's last dimension.
        input_dtype, output_dtype: numpy dtypes of the tensors.
        input_quantization, output_quantization: `{"scale", "zero_point"}` or None.
        quantization: the quantization mode if known, else guessed from the input dtype.

    Example:
    ```python
    tensor_metadata("onnx", (128, 128), 3, 1, np.float32, np.float32)
    ```
    """
    num_classes = int(num_classes)
    if quantization is None:
        quantization = "int8" if np.issubdtype(np.dtype(input_dtype), np.integer) else "none"
    return {
        "schema_version": None,
        "format": fmt,
        "quantization": quantization,
        "input_size": [None if s is None else int(s) for s in input_size],
        "channels": int(channels),
        "input_dtype": str(np.dtype(input_dtype)),
        "input_range": [0, 255],
        "input_quantization": input_quantization,
        "output_dtype": str(np.dtype(output_dtype)),
        "output_quantization": output_quantization,
        "num_classes": num_classes,
        "class_names": None,
        "output_activation": "sigmoid" if num_classes == 1 else "softmax",
        "threshold": 0.5 if num_classes == 1 else None,
        "ignore_index": None,
        "mask_encoding": "binary" if num_classes == 1 else "index",
    }


def merge_metadata(stored: Optional[dict], derived: dict, path: Any) -> dict:
    """The file's stored metadata, checked against (and completed from) its tensors.

    The tensors are what the runtime will actually do, so where the two disagree on a
    shape, dtype or quantization parameter, the tensors win and a warning names the field.

    Args:
        stored: metadata read from the file, or None.
        derived: `tensor_metadata(...)` of the same file.
        path: the file, for messages.

    Example:
    ```python
    metadata = merge_metadata(read_metadata("m.tflite"), tensor_metadata(...), "m.tflite")
    ```
    """
    if stored is None:
        warn_once(
            ("no-metadata", str(path)),
            f"{path}: no keras_unet metadata in this file; assuming images in [0, 255] and "
            f"{derived['output_activation']} probabilities at the output "
            f"({derived['num_classes']} class(es), read from the output tensor).",
        )
        return dict(derived)
    merged = {**derived, **stored}
    checked: tuple = ("channels", "num_classes", "input_dtype", "input_quantization",
                      "output_quantization", "input_size")
    if is_mask_output(stored):
        # A mask output (N, H, W) has no class axis: the classes are the metadata's.
        checked = tuple(k for k in checked if k not in ("num_classes", "output_quantization"))
        merged["output_quantization"] = None
    for key in checked:
        told, actual = stored.get(key), derived.get(key)
        if key == "input_size" and told is not None:
            # A free dimension in the file is free whatever the metadata says.
            if all(a is None or t == a for t, a in zip(told, actual or ())):
                continue
        if key in stored and not _same(told, actual):
            warn_once(
                ("mismatch", str(path), key),
                f"{path}: the keras_unet metadata says {key}={told!r} but the model's tensors "
                f"say {actual!r}; using {actual!r}.",
            )
            merged[key] = actual
    return merged


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return bool(int(a["zero_point"]) == int(b["zero_point"])
                    and np.isclose(float(a["scale"]), float(b["scale"]), rtol=1e-6))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b
