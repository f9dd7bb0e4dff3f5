"""keras_unet.runtime.metadata_schema: one declaration of the metadata a file carries, used by
the writer, the reader, validation and docs/metadata.md; files of schema version 1 still read."""

from pathlib import Path

import numpy as np
import pytest

from keras_unet.runtime import metadata_schema as schema
from keras_unet.runtime.metadata import read_metadata

DATA = Path(__file__).parent / "data"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "metadata.md"
V1_FILES = [DATA / "schema_v1.tflite", DATA / "schema_v1.onnx"]


def _names(fields):
    return {field.name for field in fields}


@pytest.mark.parametrize("path", V1_FILES, ids=lambda p: p.suffix)
def test_a_version_1_file_still_reads_validates_and_runs(path):
    from keras_unet.runtime import load_runner

    metadata = read_metadata(path)
    assert metadata["schema_version"] == 1 < schema.SCHEMA_VERSION
    assert set(metadata) <= _names(schema.FIELDS)  # every stored field is declared
    schema.validate_metadata(metadata)
    with load_runner(path) as runner:
        assert runner.num_classes == 1 and runner.metadata["threshold"] == 0.5
        masks = runner.predict_masks(np.zeros((2, 8, 8, 3), np.uint8))
    assert np.asarray(masks).shape == (2, 8, 8)


def test_the_docs_list_every_field_as_the_schema_declares_it():
    text = DOCS.read_text()
    start = text.index("(markdown_table) -->\n") + len("(markdown_table) -->\n")
    end = text.index("<!-- end of fields -->")
    assert text[start:end] == schema.markdown_table(), (
        "docs/metadata.md is out of date: paste markdown_table() between its markers")
    for _, fields in schema.SECTIONS:
        for field in fields:
            assert f"| `{field.name}` |" in text


def _valid():
    return {"schema_version": 3, "keras_unet_version": "0.1.0", "format": "tflite",
            "quantization": "int8", "input_size": [32, None], "channels": 3,
            "input_dtype": "uint8", "input_range": [0, 255],
            "input_quantization": {"scale": 1.0, "zero_point": 0}, "output_dtype": "uint8",
            "output_quantization": {"scale": 1 / 255.75, "zero_point": 0}, "num_classes": 1,
            "class_names": ["cell"], "output_activation": "sigmoid", "threshold": 0.5,
            "ignore_index": None, "mask_encoding": "binary", "source_model": "m.keras",
            "int8": {"calibration": "minmax", "kept_float": ["conv"], "activation_type": "uint8",
                     "activation_type_ms": {"uint8": 1.0, "int8": 1.2},
                     "activation_type_float_ops": {"uint8": 0, "int8": 2},
                     "kept_float_latency_ms": {"all_int8": 1.0, "this_file": 1.1},
                     "kept_int16": ["conv_1"]},
            "output": "mask", "mask_head_pixel_agreement": 1.0, "integer_only": True}


def test_every_field_is_checked():
    schema.validate_metadata(_valid())
    bad = {"schema_version": 0, "keras_unet_version": 1, "input_size": [0, 4], "channels": 0,
           "input_dtype": None, "input_range": [0, 1], "input_quantization": {"scale": 1.0},
           "output_dtype": 8, "output_quantization": {"scale": -1.0, "zero_point": 0},
           "class_names": "cell", "threshold": "half", "ignore_index": 2.5,
           "mask_encoding": "rle", "source_model": 3, "int8": [], "output": "logits",
           "mask_head_pixel_agreement": 1.5, "format": "pt", "quantization": "int4",
           "num_classes": 0, "output_activation": "relu", "integer_only": False}
    assert set(bad) == _names(schema.FIELDS) | _names(schema.OUTPUT_FIELDS)
    for name, value in bad.items():
        with pytest.raises(ValueError, match=f"{name}="):
            schema.validate_metadata({**_valid(), name: value})
    bad_int8 = {"calibration": None, "kept_float": "conv", "activation_type": "fp16",
                "activation_type_ms": {"uint8": "fast"}, "activation_type_float_ops": {"int8": 1.5},
                "kept_float_latency_ms": {"all_int8": -1.0}, "kept_int16": [3]}
    assert set(bad_int8) == _names(schema.INT8_FIELDS)
    for name, value in bad_int8.items():
        with pytest.raises(ValueError, match=f"{name}="):
            schema.validate_metadata({**_valid(), "int8": {**_valid()["int8"], name: value}})


def test_required_fields_are_named_when_missing():
    for field in schema.FIELDS + schema.INT8_FIELDS:
        metadata = _valid()
        section = metadata["int8"] if field in schema.INT8_FIELDS else metadata
        del section[field.name]
        if field.required:
            with pytest.raises(ValueError, match=f"lacks the field '{field.name}'"):
                schema.validate_metadata(metadata)
        else:
            schema.validate_metadata(metadata)


def test_mask_output_is_read_from_one_place():
    assert schema.is_mask_output({"output": "mask"})
    assert not schema.is_mask_output({"output": "probabilities"})
    assert not schema.is_mask_output({}) and not schema.is_mask_output(None)
