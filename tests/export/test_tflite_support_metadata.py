"""keras_unet.export.tflite_support_metadata: the standard TFLite Metadata of every .tflite file.

Round trips on a minimal TFLite flatbuffer (no conversion, so none of this is slow): the
`TFLITE_METADATA` buffer is read back with the vendored schema and each field MediaPipe's
ImageSegmenter reads is checked, beside our own `keras_unet` entry. Also the class-names
rule a binary model follows everywhere (`[foreground]` or `[background, foreground]`).
Running the files in MediaPipe itself is tests/export/test_mediapipe.py.
"""

import argparse
import io
import zipfile

import numpy as np
import pytest

from keras_unet.export.metadata import validate_metadata
from keras_unet.export.tflite import embed_metadata
from keras_unet.export.tflite_support_metadata import (
    LABELS_FILE,
    TFLITE_METADATA,
    associated_files,
    build_support_metadata,
    pack_associated_files,
    read_support_metadata,
)
from keras_unet.runtime.metadata import read_tflite_metadata, tflite_metadata_entries


def minimal_tflite():
    """A valid TFLite flatbuffer with one empty subgraph and a converter-style entry."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version = 3
    empty, version = schema.BufferT(), schema.BufferT()
    version.data = np.frombuffer(b"1.5.0", dtype=np.uint8)
    model.buffers = [empty, version]
    model.subgraphs = [schema.SubGraphT()]
    entry = schema.MetadataT()
    entry.name, entry.buffer = "min_runtime_version", 1
    model.metadata = [entry]
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def keras_unet_metadata(**changes):
    """Our metadata of a float32 3-class file, with `changes`."""
    metadata = {
        "schema_version": 1, "keras_unet_version": "0.1.0", "format": "tflite",
        "quantization": "none", "input_size": [64, 96], "channels": 3, "input_dtype": "float32",
        "input_range": [0, 255], "input_quantization": None, "output_dtype": "float32",
        "output_quantization": None, "num_classes": 3, "class_names": ["sky", "road", "car"],
        "output_activation": "softmax", "threshold": None, "ignore_index": None,
        "mask_encoding": "index", "source_model": "street.keras",
    }
    metadata.update(changes)
    validate_metadata(metadata)
    return metadata


def round_trip(metadata):
    data = embed_metadata(minimal_tflite(), metadata)
    return data, read_support_metadata(data)


def test_multiclass_round_trip_has_what_mediapipe_reads():
    metadata = keras_unet_metadata()
    data, support = round_trip(metadata)
    assert support["name"] == "street" and support["author"] == "keras-unet-edge"
    assert support["version"] == "keras-unet 0.1.0" and support["min_parser_version"] == "1.5.0"
    assert "3 classes (sky, road, car)" in support["description"]
    # Input: RGB, raw pixel values (the model normalises inside).
    assert support["input"] == {"name": "image", "color_space": "RGB", "mean": [0.0] * 3,
                                "std": [1.0] * 3, "min": [0.0] * 3, "max": [255.0] * 3,
                                "label_file": None}
    assert support["output"]["label_file"] == LABELS_FILE
    assert support["output"]["color_space"] == "GRAYSCALE"
    assert support["labels"] == ["sky", "road", "car"]
    assert support["activation"] == "NONE"  # outputs are probabilities already
    # Our own entry and the converter's entry are still there, and read the same.
    entries = tflite_metadata_entries(data)
    assert set(entries) == {"min_runtime_version", "keras_unet", TFLITE_METADATA}
    assert entries[TFLITE_METADATA][4:8] == b"M001"
    assert read_tflite_metadata(data) == metadata
    # The labels are packed after the flatbuffer as a stored (uncompressed) zip entry.
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(LABELS_FILE)
        assert info.compress_type == zipfile.ZIP_STORED
        assert archive.read(LABELS_FILE) == b"sky\nroad\ncar\n"


@pytest.mark.parametrize("names", [["nucleus"], ["background", "nucleus"]])
def test_a_binary_model_has_one_label_the_foreground(names):
    metadata = keras_unet_metadata(num_classes=1, class_names=names, output_activation="sigmoid",
                                   threshold=0.5, mask_encoding="binary")
    _, support = round_trip(metadata)
    assert support["labels"] == ["nucleus"]  # category 0 of MediaPipe's mask
    assert support["activation"] == "NONE"
    assert "category mask is 0 for 'nucleus'" in support["description"]


@pytest.mark.parametrize("num_classes, activation", [(1, "SIGMOID"), (3, "SOFTMAX")])
def test_logits_get_the_activation_our_runners_apply(num_classes, activation):
    names = ["nucleus"] if num_classes == 1 else ["sky", "road", "car"]
    metadata = keras_unet_metadata(num_classes=num_classes, class_names=names,
                                   output_activation=None)
    assert round_trip(metadata)[1]["activation"] == activation


def test_grayscale_input_and_unnamed_classes():
    metadata = keras_unet_metadata(channels=1, class_names=None)
    data, support = round_trip(metadata)
    assert support["input"]["color_space"] == "GRAYSCALE"
    assert support["input"]["mean"] == [0.0] and support["input"]["std"] == [1.0]
    assert support["labels"] is None and support["output"]["label_file"] is None
    assert associated_files(data) == {}  # nothing appended without labels


def test_a_second_embed_replaces_the_metadata_and_the_labels():
    data = embed_metadata(minimal_tflite(), keras_unet_metadata())
    again = embed_metadata(data, keras_unet_metadata(class_names=["a", "b", "c"]))
    names = list(tflite_metadata_entries(again))
    assert names.count(TFLITE_METADATA) == 1 and names.count("keras_unet") == 1
    assert read_support_metadata(again)["labels"] == ["a", "b", "c"]
    assert list(associated_files(again)) == [LABELS_FILE]
    assert read_tflite_metadata(again)["class_names"] == ["a", "b", "c"]


def test_packing_is_deterministic_and_keeps_the_flatbuffer_first():
    model = minimal_tflite()
    files = {"labels.txt": b"cell\n"}
    packed = pack_associated_files(model, files)
    assert packed == pack_associated_files(model, files)
    assert packed.startswith(model) and associated_files(packed) == files
    assert pack_associated_files(model, {}) == model


def test_support_buffer_alone_parses_with_the_schema():
    from keras_unet.export.metadata_schemas import metadata_schema_py_generated as schema

    support = build_support_metadata(keras_unet_metadata())
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(support.buffer, 0)
    parsed = schema.ModelMetadata.GetRootAs(support.buffer, 0)
    assert parsed.SubgraphMetadataLength() == 1
    assert parsed.SubgraphMetadata(0).CustomMetadata(0).Name() == b"SEGMENTER_METADATA"
    assert support.files == {LABELS_FILE: b"sky\nroad\ncar\n"}


def test_a_file_without_support_metadata_reads_none():
    assert read_support_metadata(minimal_tflite()) is None


# The class-names rule of a binary model, the same in UNet, train and the metadata.

def test_binary_models_take_one_or_two_names_everywhere():
    pytest.importorskip("keras")
    import keras_unet
    from keras_unet.commands.train import _check_class_names
    from keras_unet.models.unet import check_class_names

    assert check_class_names(["background", "cell"], 1) == ["background", "cell"]
    validate_metadata(keras_unet_metadata(num_classes=1, class_names=["background", "cell"]))
    model = keras_unet.UNet((32, 32, 3), filters=4, depth=2, class_names=["background", "cell"])
    assert model.class_names == ["background", "cell"]
    for names in (["a", "b", "c"], []):
        with pytest.raises(ValueError, match="class_names"):
            check_class_names(names, 1)
        with pytest.raises(ValueError, match="class_names"):
            validate_metadata(keras_unet_metadata(num_classes=1, class_names=names))
    with pytest.raises(ValueError, match="class_names"):
        keras_unet.UNet((32, 32, 3), filters=4, depth=2, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="three names|3 names"):
        _check_class_names(argparse.Namespace(class_names=["a", "b"], num_classes=3))
    with pytest.raises(ValueError, match="one name .the foreground. or two"):
        _check_class_names(argparse.Namespace(class_names=["a", "b", "c"], num_classes=1))
    _check_class_names(argparse.Namespace(class_names=None, num_classes=1))


@pytest.mark.slow
def test_a_binary_model_with_two_names_exports(tmp_path):
    keras = pytest.importorskip("keras")
    import keras_unet
    from keras_unet.export.tflite import export_tflite

    keras.utils.set_random_seed(0)
    model = keras_unet.UNet((32, 32, 3), filters=4, depth=2, class_names=["background", "cell"])
    out = tmp_path / "two_names.tflite"
    result = export_tflite(model, out, progress=False, check_speed=False)
    assert result.metadata["class_names"] == ["background", "cell"]
    assert read_support_metadata(out.read_bytes())["labels"] == ["cell"]
