"""Build the keras_unet metadata of an export and store it inside the file.

The fields are declared once in `keras_unet.runtime.metadata_schema` (listed in
docs/metadata.md); the read side, which runs without TensorFlow, is
`keras_unet.runtime.metadata`.

- TFLite: the JSON goes into a new buffer, and a `metadata` entry named `keras_unet`
  points at it. Written with the flatbuffer object API that ai-edge-litert ships
  (`ai_edge_litert.schema_py_generated`), so no TensorFlow is needed for this step
  either. The interpreter ignores metadata it does not know, so the file still loads in
  ai-edge-litert and tflite-runtime. The standard TFLite Metadata that MediaPipe reads
  (`TFLITE_METADATA`) is built by `keras_unet.export.tflite_support_metadata` and stored
  in the same pass (`entries=`).
- ONNX: a `metadata_props` entry `keras_unet`. `embed_onnx_metadata` takes either an
  `onnx.ModelProto` (returned modified) or a path (rewritten in place, atomically).

Example:
```python
from keras_unet.export.metadata import build_metadata, embed_tflite_metadata

metadata = build_metadata(model, format="tflite", quantization="int8", input_size=(128, 128),
                          input_dtype="uint8", input_quantization={"scale": 1.0, "zero_point": 0},
                          output_dtype="uint8", output_quantization={"scale": 1 / 256, "zero_point": 0})
tflite_bytes = embed_tflite_metadata(tflite_bytes, metadata)
```
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from keras_unet.runtime.describe import describe_model
from keras_unet.runtime.files import atomic_output
from keras_unet.runtime.metadata_schema import (  # noqa: F401  (validate_metadata: public here)
    METADATA_KEY,
    SCHEMA_VERSION,
    validate_metadata,
)
from keras_unet.version import __version__


def build_metadata(model: Any, format: str, quantization: str, input_size: Any, input_dtype: Any,
                   input_quantization: Optional[dict] = None, output_dtype: Any = "float32",
                   output_quantization: Optional[dict] = None, source_model: Any = None,
                   class_names: Optional[list] = None, threshold: Optional[float] = 0.5,
                   ignore_index: Optional[int] = None, mask_encoding: Optional[str] = None,
                   channels: Optional[int] = None, int8: Optional[dict] = None,
                   integer_only: bool = False) -> dict:
    """The metadata dict (`keras_unet.runtime.metadata_schema`) of `model` exported as described.

    Facts about the model (`num_classes`, `output_activation`, `channels`) come from
    `keras_unet.runtime.describe.describe_model`, the description the `.keras` runner
    gives too; `class_names`, `ignore_index` and `mask_encoding` default to the model's
    (its attributes of the same names when it has them; else no names, no ignored label,
    and `"binary"` for one class, `"index"` for more).

    Args:
        model: the Keras model that was exported.
        format: `"tflite"` or `"onnx"`.
        quantization: `"none"`, `"fp16"`, `"dynamic"`, `"int8"` or `"int16x8"`.
        input_size: `(H, W)` of the exported input, or None / `(None, None)` for any size.
        input_dtype, output_dtype: dtype names of the file's input and output tensors.
        input_quantization, output_quantization: `{"scale", "zero_point"}` of an integer
            tensor, else None.
        source_model: path of the `.keras` file exported, if any.
        class_names: one name per class, or None; a binary model takes one name (the
            foreground) or two (`[background, foreground]`).
        threshold: probability threshold of a binary model (ignored when `K > 1`).
        ignore_index: label ignored in masks, or None.
        mask_encoding: `"binary"`, `"index"` or `"trimap"`; default from `num_classes`.
        channels: channels of the file's input when it differs from the model's (a
            1-channel model exported to take RGB and convert it inside); default: the
            model's.
        int8: the `"int8"` section of an int8 or int16x8 file (`metadata_schema.INT8_FIELDS`),
            or None.
        integer_only: the file has no float op (recorded only when True).

    Returns:
        dict, JSON-serializable.

    Example:
    ```python
    metadata = build_metadata(model, format="onnx", quantization="none", input_size=(128, 128),
                              input_dtype="float32")
    ```
    """
    facts = describe_model(model)
    num_classes = facts["num_classes"]
    class_names = class_names or facts["class_names"]
    if ignore_index is None:
        ignore_index = facts["ignore_index"]
    metadata = {
        "schema_version": SCHEMA_VERSION,
        "keras_unet_version": __version__,
        "format": format,
        "quantization": quantization,
        "input_size": _size(input_size),
        "channels": int(channels) if channels is not None else facts["channels"],
        "input_dtype": str(input_dtype),
        "input_range": [0, 255],
        "input_quantization": _quant(input_quantization, "input_quantization"),
        "output_dtype": str(output_dtype),
        "output_quantization": _quant(output_quantization, "output_quantization"),
        "num_classes": num_classes,
        "class_names": [str(name) for name in class_names] if class_names else None,
        "output_activation": facts["output_activation"],
        "threshold": float(threshold) if num_classes == 1 and threshold is not None else None,
        "ignore_index": None if ignore_index is None else int(ignore_index),
        "mask_encoding": mask_encoding or facts["mask_encoding"],
        "source_model": None if source_model is None else os.path.basename(str(source_model)),
    }
    if int8 is not None:
        metadata["int8"] = dict(int8)
    if integer_only:
        metadata["integer_only"] = True
    validate_metadata(metadata)
    return metadata


def _size(input_size: Any) -> list:
    if input_size is None:
        return [None, None]
    return [int(s) if s else None for s in input_size]


def _quant(value: Any, name: str) -> Optional[dict]:
    if value is None:
        return None
    try:
        return {"scale": float(value["scale"]), "zero_point": int(value["zero_point"])}
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"`{name}` must be None or {{'scale': float, 'zero_point': int}}. Received: {name}={value!r}"
        ) from error


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays (tensor details hand those out) are not JSON by themselves.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"metadata value {value!r} of type {type(value).__name__} is not JSON")


def metadata_json(metadata: dict) -> str:
    """The JSON text stored in a file for `metadata` (keys sorted, numpy values converted).

    Example:
    ```python
    metadata_json({"num_classes": 1})  # '{"num_classes": 1}'
    ```
    """
    return json.dumps(metadata, sort_keys=True, default=_json_default)


def embed_tflite_metadata(model_bytes: bytes, metadata: dict,
                          entries: Optional[dict] = None) -> bytes:
    """A copy of the TFLite flatbuffer `model_bytes` with `metadata` stored under `keras_unet`.

    An earlier entry of the same name is replaced (its buffer emptied); other metadata
    entries (`min_runtime_version`, signature runners' data) are kept. Files packed after
    the flatbuffer (TFLite Metadata's associated files) are not carried over: append them
    again (`keras_unet.export.tflite_support_metadata.pack_associated_files`).

    Args:
        model_bytes: the `.tflite` file contents.
        metadata: the metadata dict (see `build_metadata`).
        entries: more metadata entries to store in the same pass, `{name: bytes}` (the
            standard `TFLITE_METADATA` buffer), or None.

    Returns:
        bytes of the new model.

    Example:
    ```python
    data = embed_tflite_metadata(Path("m.tflite").read_bytes(), metadata)
    ```
    """
    import flatbuffers
    import numpy as np

    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as error:
        raise ImportError("Writing TFLite metadata needs `pip install ai-edge-litert`.") from error

    payloads = {METADATA_KEY: metadata_json(metadata).encode("utf-8"), **(entries or {})}
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    except Exception as error:
        raise ValueError(f"`model_bytes` is not a TFLite flatbuffer: {error}") from error
    model.buffers = model.buffers or []
    kept = []
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name in payloads:
            # Buffer indices are referenced by tensors, so the old buffer is emptied, not removed.
            model.buffers[entry.buffer].data = None
        else:
            kept.append(entry)
    for name, payload in payloads.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(bytes(payload), dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        kept.append(entry)
    model.metadata = kept
    size = sum(len(payload) for payload in payloads.values())
    builder = flatbuffers.Builder(len(model_bytes) + size + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def embed_onnx_metadata(model_or_path: Any, metadata: dict) -> Any:
    """Stores `metadata` as the ONNX `metadata_props` entry `keras_unet`.

    Args:
        model_or_path: an `onnx.ModelProto` (modified and returned), or the path of a
            `.onnx` file (rewritten through `keras_unet.runtime.files.atomic_output`; the
            path is returned).
        metadata: the metadata dict (see `build_metadata`).

    Example:
    ```python
    embed_onnx_metadata("unet.onnx", metadata)
    ```
    """
    try:
        import onnx
    except ImportError as error:
        raise ImportError("Writing ONNX metadata needs `pip install onnx`.") from error

    payload = metadata_json(metadata)
    if isinstance(model_or_path, onnx.ModelProto):
        _set_prop(model_or_path, payload)
        return model_or_path
    path = os.fspath(model_or_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No ONNX file at {path!r}.")
    try:
        model = onnx.load(path)
    except Exception as error:
        raise ValueError(f"{path!r} is not a valid ONNX model: {error}") from error
    _set_prop(model, payload)
    with atomic_output(path) as tmp:
        onnx.save(model, str(tmp))
        os.chmod(tmp, os.stat(path).st_mode & 0o777)  # keep the file's permissions
    return model_or_path


def _set_prop(model: Any, payload: str) -> None:
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    model.metadata_props.add(key=METADATA_KEY, value=payload)
