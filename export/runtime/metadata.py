"""Read the keras_unet metadata stored in an exported file, with no TensorFlow.

`.tflite`: a metadata entry named `keras_unet` pointing at a buffer that holds JSON. It
is read by the few lines of flatbuffer walking below, so it works with ai-edge-litert
and with tflite-runtime (which ships no schema module) alike.
`.onnx`: the `metadata_props` entry `keras_unet`, read through onnxruntime's
`get_modelmeta()` (an edge device has onnxruntime but not necessarily `onnx`).

The schema is documented in docs/ARCHITECTURE.md.

Example:
```python
from export.runtime.metadata import read_metadata

read_metadata("unet_int8.tflite")["num_classes"]  # 1
```
"""

import json
import os
import struct

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
    """`{name: bytes}` of every metadata entry in a TFLite flatbuffer."""
    buf = memoryview(model_bytes)
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


def read_tflite_metadata(model_bytes):
    """The keras_unet metadata dict of a TFLite model's bytes, or None if it has none."""
    raw = tflite_metadata_entries(model_bytes).get(METADATA_KEY)
    return None if raw is None else json.loads(raw.decode("utf-8"))


def read_onnx_metadata(session):
    """The keras_unet metadata dict of an `onnxruntime.InferenceSession`, or None."""
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return None if raw is None else json.loads(raw)


def read_metadata(path):
    """The keras_unet metadata of a `.tflite` or `.onnx` file, or None if it has none.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the suffix is neither `.tflite` nor `.onnx`, or the file is not a
            valid model of that format.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model file at {path!r}.")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".tflite":
        with open(path, "rb") as f:
            data = f.read()
        try:
            return read_tflite_metadata(data)
        except (struct.error, IndexError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path!r} is not a valid TFLite model: {error}") from error
    if suffix == ".onnx":
        from export.runtime.onnx import create_session

        return read_onnx_metadata(create_session(path))
    raise ValueError(f"Expected a .tflite or .onnx file. Received: path={path!r}")
