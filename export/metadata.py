"""Build the keras_unet metadata of an export and store it inside the file.

The read side, which must run without TensorFlow, is `export.runtime.metadata`.

Example:
```python
from export.metadata import build_metadata, embed_tflite_metadata

metadata = build_metadata(model, format="tflite", quantization="int8", input_size=(128, 128),
                          input_dtype="uint8", input_quantization={"scale": 1.0, "zero_point": 0},
                          output_dtype="uint8", output_quantization={"scale": 1 / 256, "zero_point": 0})
tflite_bytes = embed_tflite_metadata(tflite_bytes, metadata)
```
"""

import json

from export.runtime.metadata import METADATA_KEY, SCHEMA_VERSION


def build_metadata(model, format, quantization, input_size, input_dtype, input_quantization=None,
                   output_dtype="float32", output_quantization=None, source_model=None,
                   class_names=None, threshold=0.5, ignore_index=None, mask_encoding=None):
    """The metadata dict (schema in docs/ARCHITECTURE.md) of `model` exported as described.

    `class_names`, `ignore_index` and `mask_encoding` default to the model's attributes of
    the same names when it has them (a `keras_unet.UNet` carries `class_names`).
    """
    from export.source import model_facts
    from keras_unet.version import __version__

    facts = model_facts(model)
    num_classes = facts["num_classes"]
    class_names = class_names or getattr(model, "class_names", None)
    if ignore_index is None:
        ignore_index = getattr(model, "ignore_index", None)
    return {
        "schema_version": SCHEMA_VERSION,
        "keras_unet_version": __version__,
        "format": format,
        "quantization": quantization,
        "input_size": None if input_size is None else [int(s) if s else None for s in input_size],
        "channels": facts["channels"],
        "input_dtype": str(input_dtype),
        "input_range": [0, 255],
        "input_quantization": input_quantization,
        "output_dtype": str(output_dtype),
        "output_quantization": output_quantization,
        "num_classes": num_classes,
        "class_names": list(class_names) if class_names else None,
        "output_activation": facts["output_activation"],
        "threshold": threshold if num_classes == 1 else None,
        "ignore_index": ignore_index,
        "mask_encoding": mask_encoding or ("binary" if num_classes == 1 else "index"),
        "source_model": None if source_model is None else str(source_model),
    }


def _payload(metadata):
    return json.dumps(metadata, sort_keys=True).encode("utf-8")


def embed_tflite_metadata(model_bytes, metadata):
    """A copy of the TFLite flatbuffer `model_bytes` with `metadata` stored under `keras_unet`.

    An earlier `keras_unet` entry is replaced. Uses the flatbuffer object API that
    ai-edge-litert ships (`schema_py_generated`).
    """
    import flatbuffers
    import numpy as np

    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as error:  # pragma: no cover - ai-edge-litert is a dependency
        raise ImportError("Writing TFLite metadata needs `pip install ai-edge-litert`.") from error

    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    model.buffers = model.buffers or []
    kept = []
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name != METADATA_KEY:
            kept.append(entry)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(_payload(metadata), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata = kept + [entry]
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def embed_onnx_metadata(path, metadata):
    """Stores `metadata` in the ONNX file at `path` (in place) as `metadata_props['keras_unet']`."""
    import onnx

    model = onnx.load(str(path))
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    model.metadata_props.add(key=METADATA_KEY, value=_payload(metadata).decode("utf-8"))
    onnx.save(model, str(path))
