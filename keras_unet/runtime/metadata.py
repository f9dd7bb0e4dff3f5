"""Read the keras_unet metadata stored in an exported file, with no TensorFlow.

`.tflite`: a metadata entry named `keras_unet` pointing at a buffer that holds JSON. It
is read by the few lines of flatbuffer walking below, so it works with ai-edge-litert
and with tflite-runtime (which ships no schema module) alike.
`.onnx`: the `metadata_props` entry `keras_unet`, read through onnxruntime's
`get_modelmeta()` (an edge device has onnxruntime but not necessarily `onnx`).

The schema is documented in docs/ARCHITECTURE.md.

Example:
```python
from keras_unet.runtime.metadata import read_metadata

read_metadata("unet_int8.tflite")["num_classes"]  # 1
```
"""

import json
import os
import struct
import warnings

METADATA_KEY = "keras_unet"
SCHEMA_VERSION = 1

# Field numbers in the TFLite flatbuffer schema (tensorflow/compiler/mlir/lite/schema/schema.fbs).
_MODEL_BUFFERS, _MODEL_METADATA = 4, 6
_METADATA_NAME, _METADATA_BUFFER = 0, 1
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2


class _Table:
    """Just enough of flatbuffers to follow offsets in a TFLite file."""

    def __init__(self, buf, pos):
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_size = struct.unpack_from("<H", buf, self.vtable)[0]

    def _field(self, number):
        entry = 4 + 2 * number
        if entry >= self.vtable_size:
            return None
        offset = struct.unpack_from("<H", self.buf, self.vtable + entry)[0]
        return self.pos + offset if offset else None

    def scalar(self, number, fmt, default=0):
        at = self._field(number)
        return default if at is None else struct.unpack_from(fmt, self.buf, at)[0]

    def _indirect(self, at):
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def vector(self, number):
        """(start, length) of a vector field, or (None, 0)."""
        at = self._field(number)
        if at is None:
            return None, 0
        vec = self._indirect(at)
        return vec + 4, struct.unpack_from("<I", self.buf, vec)[0]

    def tables(self, number):
        start, length = self.vector(number)
        return [_Table(self.buf, self._indirect(start + 4 * i)) for i in range(length)]

    def string(self, number):
        start, length = self.vector(number)
        return None if start is None else bytes(self.buf[start : start + length]).decode("utf-8")


def tflite_metadata_entries(model_bytes):
    """`{name: bytes}` of every metadata entry in a TFLite flatbuffer.

    Raises:
        ValueError: the bytes are not a TFLite flatbuffer (no `TFL3` identifier).

    Example:
    ```python
    tflite_metadata_entries(open("m.tflite", "rb").read()).keys()  # {'min_runtime_version', 'keras_unet'}
    ```
    """
    buf = memoryview(model_bytes)
    if len(buf) < 8 or bytes(buf[4:8]) != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (the file identifier 'TFL3' is missing)")
    model = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
    buffers = model.tables(_MODEL_BUFFERS)
    entries = {}
    for entry in model.tables(_MODEL_METADATA):
        name = entry.string(_METADATA_NAME)
        buffer = buffers[entry.scalar(_METADATA_BUFFER, "<I")]
        start, length = buffer.vector(_BUFFER_DATA)
        if start is not None:
            entries[name] = bytes(buf[start : start + length])
            continue
        # Models over 2 GB keep buffers after the flatbuffer, addressed by offset/size.
        offset = buffer.scalar(_BUFFER_OFFSET, "<Q")
        size = buffer.scalar(_BUFFER_SIZE, "<Q")
        entries[name] = bytes(buf[offset : offset + size]) if offset > 1 else b""
    return entries


def parse_metadata(raw, where="the model file"):
    """The metadata dict of the stored JSON text `raw` (bytes or str).

    Raises:
        ValueError: `raw` is not a JSON object, naming `where`.
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


def read_tflite_metadata(model_bytes, where="the TFLite model"):
    """The keras_unet metadata dict of a TFLite model's bytes, or None if it has none.

    Example:
    ```python
    read_tflite_metadata(open("m.tflite", "rb").read())["quantization"]
    ```
    """
    raw = tflite_metadata_entries(model_bytes).get(METADATA_KEY)
    return None if raw is None else parse_metadata(raw, where)


def read_onnx_metadata(session, where="the ONNX model"):
    """The keras_unet metadata dict of an `onnxruntime.InferenceSession`, or None.

    Example:
    ```python
    read_onnx_metadata(onnxruntime.InferenceSession("m.onnx"))["num_classes"]
    ```
    """
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return None if raw is None else parse_metadata(raw, where)


def read_metadata(path):
    """The keras_unet metadata of a `.tflite` or `.onnx` file, or None if it has none.

    Needs no TensorFlow: `.tflite` files are read by the flatbuffer walker above,
    `.onnx` files through onnxruntime.

    Args:
        path: the model file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the suffix is neither `.tflite` nor `.onnx`, or the file is not a
            valid model of that format.

    Example:
    ```python
    read_metadata("unet.onnx")["output_activation"]  # "sigmoid"
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
        except (struct.error, IndexError, UnicodeDecodeError, ValueError) as error:
            raise ValueError(f"{path!r} is not a valid TFLite model: {error}") from error
        raw = entries.get(METADATA_KEY)
        return None if raw is None else parse_metadata(raw, repr(path))
    if suffix == ".onnx":
        from keras_unet.runtime.onnx import create_session

        # Reading metadata needs no graph optimization: skip it, loading is then faster.
        return read_onnx_metadata(create_session(path, optimize=False), repr(path))
    raise ValueError(f"Expected a .tflite or .onnx file. Received: path={path!r}")
