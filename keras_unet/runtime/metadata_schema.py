"""The keras_unet metadata schema: every field an exported file carries, declared once.

The writer (`keras_unet.export.metadata.build_metadata`), the reader
(`keras_unet.runtime.metadata`), validation (`validate_metadata`) and the docs
(`docs/metadata.md`, checked against `markdown_table()` by a test) all use these tables.
TF-free: only the standard library.

A file stores one JSON object under `METADATA_KEY` (TFLite: a metadata buffer of that name;
ONNX/ORT: a `metadata_props` entry). Its fields are `FIELDS`; two optional groups ride along:

- the `int8` section (`INT8_FIELDS`), in every int8 and int16x8 file: how it was quantized;
- the output fields (`OUTPUT_FIELDS`), in a file exported with `output="mask"`: it ends with
  the mask step and outputs a `(N, H, W)` uint8 class-id mask (`is_mask_output`).

Versions: 1 wrote the same top-level fields with the int8 section and the output fields
undeclared; 2 declares them; 3 adds the `int16x8` quantization, `integer_only` and the int8
section's `kept_int16`. Files of versions 1 and 2 read as they are (their fields mean the
same).

Example:
```python
from keras_unet.runtime.metadata_schema import SCHEMA_VERSION, validate_metadata

validate_metadata(metadata)   # raises ValueError naming the first bad field
```
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

METADATA_KEY = "keras_unet"
SCHEMA_VERSION = 3
# Versions this reader understands field for field.
READABLE_VERSIONS = (1, 2, 3)

FORMATS = ("tflite", "onnx", "keras")
QUANTIZATIONS = ("none", "fp16", "dynamic", "int8", "int16x8")
ACTIVATIONS = ("sigmoid", "softmax", None)
MASK_ENCODINGS = ("binary", "index", "trimap")
OUTPUTS = ("probabilities", "mask")
ACTIVATION_TYPES = ("uint8", "int8", "int16")


def class_name_counts(num_classes: int) -> tuple:
    """How many `class_names` a model with `num_classes` outputs may carry.

    One per class; a binary model (one output channel, the foreground) carries one name,
    the foreground's, or two, `[background, foreground]`: the last name is the
    foreground's either way. `keras_unet.UNet`, `keras-unet train` and the exporters
    all apply this one rule.

    Example:
    ```python
    class_name_counts(1)   # (1, 2)
    class_name_counts(3)   # (3,)
    ```
    """
    return (1, 2) if int(num_classes) == 1 else (int(num_classes),)


def _integer(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _quantization(value: Any) -> bool:
    return (isinstance(value, dict) and set(value) == {"scale", "zero_point"}
            and _number(value["scale"]) and value["scale"] > 0 and _integer(value["zero_point"], -128))


def _size(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 2
            and all(side is None or _integer(side, 1) for side in value))


def _strings(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(name, str) for name in value)


def _ms_by_name(value: Any) -> bool:
    return (isinstance(value, dict) and all(isinstance(k, str) and _number(v) and v >= 0
                                             for k, v in value.items()))


def _counts(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and _integer(v) for k, v in value.items())


@dataclasses.dataclass(frozen=True)
class Field:
    """One metadata field.

    Args:
        name: the JSON key.
        type: its JSON type, as the docs show it.
        meaning: what it says.
        check: `(value) -> bool`, whether a value is valid.
        required: every file of its group carries it.
    """

    name: str
    type: str
    meaning: str
    check: Callable[[Any], bool]
    required: bool = True


# The fields the runners rely on come first: a file missing one is named by it.
FIELDS = (
    Field("format", "str", f"one of {', '.join(FORMATS)}", lambda v: v in FORMATS),
    Field("quantization", "str", f"one of {', '.join(QUANTIZATIONS)}", lambda v: v in QUANTIZATIONS),
    Field("num_classes", "int", "output channels (1: binary, sigmoid)", lambda v: _integer(v, 1)),
    Field("channels", "int", "channels of the file's input", lambda v: _integer(v, 1)),
    Field("output_activation", "str or null",
          "sigmoid, softmax, or null for logits (the runner applies the activation)",
          lambda v: v in ACTIVATIONS),
    Field("input_size", "[int or null, int or null]",
          "the file's input height and width; null for a free dimension", _size),
    Field("schema_version", "int", f"the schema the file was written with ({SCHEMA_VERSION} now)",
          lambda v: _integer(v, 1)),
    Field("keras_unet_version", "str", "the keras-unet-edge version that wrote the file",
          lambda v: isinstance(v, str)),
    Field("input_dtype", "str", "dtype of the input tensor (numpy name)", lambda v: isinstance(v, str)),
    Field("input_range", "[0, 255]", "the pixel range the file takes", lambda v: list(v) == [0, 255]),
    Field("input_quantization", "{scale, zero_point} or null",
          "of an integer input tensor, else null", _optional(_quantization)),
    Field("output_dtype", "str", "dtype of the output tensor (numpy name)", lambda v: isinstance(v, str)),
    Field("output_quantization", "{scale, zero_point} or null",
          "of an integer probability output, else null", _optional(_quantization)),
    Field("class_names", "[str] or null",
          "one name per class; a binary model one (foreground) or two (background, foreground)",
          _optional(_strings)),
    Field("threshold", "float or null", "binary: foreground where p >= threshold; else null",
          _optional(_number)),
    Field("ignore_index", "int or null", "the label ignored in masks",
          _optional(lambda v: _integer(v, -(2 ** 31)))),
    Field("mask_encoding", "str", f"masks on disk: one of {', '.join(MASK_ENCODINGS)}",
          lambda v: v in MASK_ENCODINGS),
    Field("source_model", "str or null", "file name of the exported .keras model",
          _optional(lambda v: isinstance(v, str))),
    Field("int8", "object", "int8 and int16x8 files: the int8 section below",
          lambda v: isinstance(v, dict), required=False),
    Field("integer_only", "bool", "true: no op computes in float (for NPUs); absent: not checked",
          lambda v: v is True, required=False),
)

INT8_FIELDS = (
    Field("calibration", "str",
          "the ranges used: percentile, minmax, entropy (ONNX), or qat (learned in training); "
          "+bias: convolution biases corrected for the int8 weights; "
          "+gptq: convolution weights rounded against the calibration images",
          lambda v: isinstance(v, str)),
    Field("kept_float", "[str]", "Keras layers (else ops) left in float by the repair", _strings),
    Field("kept_int16", "[str]",
          "int8 files: Keras layers (else ops) the repair kept at 16-bit activations", _strings,
          required=False),
    Field("activation_type", "str", "ONNX: the activation type, uint8, int8 or int16",
          lambda v: v in ACTIVATION_TYPES, required=False),
    Field("activation_type_ms", "{uint8: ms, int8: ms}",
          "ONNX with activation_type auto: both timed on the export machine", _ms_by_name,
          required=False),
    Field("activation_type_float_ops", "{uint8: int, int8: int}",
          "ONNX with activation_type auto: compute ops each left in float", _counts,
          required=False),
    Field("kept_float_latency_ms", "{all_int8: ms, this_file: ms}",
          "with layers kept above the mode's precision: what they cost on the export machine "
          "(all_int8: the file with none kept)", _ms_by_name,
          required=False),
)

OUTPUT_FIELDS = (
    Field("output", "str", "mask: the file outputs a (N, H, W) uint8 class-id mask; absent: "
          "probabilities", lambda v: v in OUTPUTS, required=False),
    Field("mask_head_pixel_agreement", "float",
          "mask files: pixel agreement of the mask step with the probability file's masks",
          lambda v: _number(v) and 0.0 <= v <= 1.0, required=False),
)

SECTIONS = (("file", FIELDS), ("int8", INT8_FIELDS), ("output", OUTPUT_FIELDS))


def is_mask_output(metadata: Optional[dict]) -> bool:
    """Whether the file outputs a class-id mask (`output == "mask"`) rather than probabilities.

    Example:
    ```python
    is_mask_output({"output": "mask"})   # True
    ```
    """
    return metadata is not None and metadata.get("output") == "mask"


def _check_fields(metadata: dict, fields: tuple, where: str) -> None:
    for field in fields:
        if field.name not in metadata:
            if field.required:
                raise ValueError(f"`{where}` lacks the field {field.name!r}. "
                                 f"Received keys: {sorted(metadata)}")
            continue
        if not field.check(metadata[field.name]):
            raise ValueError(f"Invalid metadata field. Received: {field.name}={metadata[field.name]!r}")


def validate_metadata(metadata: Any) -> None:
    """Check every field of the schema; raise `ValueError` naming the first bad one.

    Unknown keys are allowed (a newer writer's fields); each known field must be valid, the
    required ones present, and `class_names` must fit `num_classes` (`class_name_counts`).

    Args:
        metadata: a metadata dict.

    Example:
    ```python
    validate_metadata({"num_classes": 1, "channels": 3, "format": "tflite", ...})
    ```
    """
    if not isinstance(metadata, dict):
        raise ValueError(f"`metadata` must be a dict. Received: metadata={metadata!r}")
    _check_fields(metadata, FIELDS, "metadata")
    _check_fields(metadata, OUTPUT_FIELDS, "metadata")
    if "int8" in metadata:
        _check_fields(metadata["int8"], INT8_FIELDS, "metadata['int8']")
    names = metadata.get("class_names")
    if names is not None and len(names) not in class_name_counts(metadata["num_classes"]):
        raise ValueError(
            f"`class_names` needs one name per class ({metadata['num_classes']})"
            f"{' or two, background and foreground' if metadata['num_classes'] == 1 else ''}. "
            f"Received: class_names={names!r}"
        )


def markdown_table() -> str:
    """The fields as the Markdown tables of `docs/metadata.md` (one per section).

    Example:
    ```python
    print(markdown_table())
    ```
    """
    titles = {"file": "Every file", "int8": "The `int8` section (int8 files)",
              "output": "The output fields (files exported with `output=\"mask\"`)"}
    blocks = []
    for section, fields in SECTIONS:
        rows = [f"### {titles[section]}", "", "| field | type | required | meaning |",
                "|---|---|---|---|"]
        rows += [f"| `{f.name}` | {f.type} | {'yes' if f.required else 'no'} | {f.meaning} |"
                 for f in fields]
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks) + "\n"
