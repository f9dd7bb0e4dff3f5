"""The standard TFLite Metadata of an export: what MediaPipe Tasks and the Task Library read.

Beside our own `keras_unet` JSON entry (`keras_unet.export.metadata`), every `.tflite` file
carries the TFLite Metadata of the TFLite Support schema: a `TFLITE_METADATA` buffer holding
a `ModelMetadata` flatbuffer (file identifier `M001`), plus associated files packed after
the model as a zip archive, the way the TFLite Support / MediaPipe metadata writers pack
them. With it, MediaPipe's `vision.ImageSegmenter` runs our files as they are. What it
writes, and why (read from `mediapipe/tasks/cc/vision/image_segmenter/` and
`mediapipe/tasks/cc/vision/utils/image_tensor_specs.cc` in google-ai-edge/mediapipe):

- **Model**: name (the source model's file stem), a description (what the output is, and
  how a binary model reads in MediaPipe), version (`keras-unet <version>`, the exporter:
  the model itself has no version), author.
- **Input** `image`: `ImageProperties` with color space RGB (GRAYSCALE for a 1-channel
  file, which MediaPipe refuses: export those with `input_channels=3`), and
  `NormalizationOptions` mean 0, std 1 per channel: our models take values in [0, 255] and
  normalise inside, so MediaPipe feeds raw pixel values (a float32 input without
  normalization options is refused by MediaPipe). A uint8 input takes the raw pixels as
  they are (the int8 input quantization is scale 1, zero point 0) and MediaPipe ignores the
  normalization for it. Stats: min 0, max 255.
- **Output** `segmentation_masks`: `ImageProperties` GRAYSCALE over dimensions 1..2 (the
  layout the segmentation writers use), and, when class names are known, the labels as a
  `TENSOR_AXIS_LABELS` associated file `labels.txt` (one name per output channel), which
  `ImageSegmenter.labels` returns.
- **`SEGMENTER_METADATA`** (custom metadata of the subgraph, MediaPipe's
  `ImageSegmenterOptions`, identifier `V001`): the activation MediaPipe applies to the
  output. NONE for our usual files, whose outputs are already probabilities; SIGMOID
  (one channel) or SOFTMAX (several) for a model exported with logits
  (`output_activation=None`), so MediaPipe computes what our runners compute.

**Binary models in MediaPipe.** A 1-channel output is one foreground probability map.
MediaPipe's category mask marks a pixel 0 (category 0, the foreground) when its
confidence is above 0.5 and 255 ("unlabeled": background) otherwise; the confidence mask
is the probability itself. So the labels file of a binary model holds one name, the
foreground's (`class_names[-1]`: a binary model may be named `[foreground]` or
`[background, foreground]`), and `segmenter.labels[0]` names category 0. keras-unet's
masks use `p >= threshold` (threshold 0.5): the two differ only on pixels whose
probability is exactly 0.5. Float outputs practically never are; a full-int8 file's uint8
output scale is 1/255.75 rather than 1/256 (the same codes, read at most 0.001 higher)
so that none is (`keras_unet.export.tflite.binary_output_off_half`); a binary model
exported with logits still differs where a logit is exactly 0. Foreground in keras-unet
(`mask == 1`) is `category_mask == 0` in MediaPipe, and `confidence_masks[0]` is the
foreground probability.

The schema's generated Python is vendored (`keras_unet.export.metadata_schemas`, from
MediaPipe, Apache-2.0), so writing needs only `flatbuffers`, which TensorFlow depends on.

Example:
```python
from keras_unet.export.tflite_support_metadata import build_support_metadata, read_support_metadata

support = build_support_metadata(metadata)       # metadata: our keras_unet dict
support.files                                    # {'labels.txt': b'sky\\nroad\\ncar\\n'}
read_support_metadata(open("unet.tflite", "rb").read())["labels"]   # ['sky', 'road', 'car']
```
"""

import dataclasses
import io
import os
import zipfile
from typing import Any, Optional

TFLITE_METADATA = "TFLITE_METADATA"
SEGMENTER_METADATA = "SEGMENTER_METADATA"
LABELS_FILE = "labels.txt"
# Custom metadata in a SubGraphMetadata came with schema 1.5.0; MediaPipe refuses a
# metadata buffer whose min_parser_version is above its parser's (1.5.0 in 1.2.x), and
# older parsers that cannot read custom metadata must see that they cannot.
MIN_PARSER_VERSION = "1.5.0"
SEGMENTER_OPTIONS_IDENTIFIER = b"V001"
METADATA_IDENTIFIER = b"M001"
# MediaPipe's ImageSegmenterOptions.Activation values.
ACTIVATIONS = ("NONE", "SIGMOID", "SOFTMAX")
# zip entries get a fixed timestamp, so the same export gives the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclasses.dataclass(frozen=True)
class SupportMetadata:
    """The TFLite Metadata of one file: the `M001` buffer and the files packed after the model.

    Args:
        buffer: the `ModelMetadata` flatbuffer, stored in the `TFLITE_METADATA` buffer.
        files: associated files, `{name: bytes}` (the labels file when names are known).
    """

    buffer: bytes
    files: dict


def _schemas():
    try:
        from keras_unet.export.metadata_schemas import (
            image_segmenter_metadata_schema_py_generated as segmenter,
        )
        from keras_unet.export.metadata_schemas import metadata_schema_py_generated as schema
    except ImportError as error:  # flatbuffers missing
        raise ImportError("Writing TFLite Metadata needs `pip install flatbuffers` "
                          f"(a dependency of tensorflow and ai-edge-litert): {error}") from error
    return schema, segmenter


def mediapipe_activation(metadata) -> Any:
    """The activation MediaPipe must apply to the output: `"NONE"`, `"SIGMOID"` or `"SOFTMAX"`.

    NONE when the model outputs probabilities (its `output_activation` is sigmoid or
    softmax); for logits, the activation our runners apply (`keras_unet.runtime.tensors.activate`).

    Example:
    ```python
    mediapipe_activation({"output_activation": None, "num_classes": 1})   # "SIGMOID"
    ```
    """
    if metadata.get("output_activation") is not None:
        return "NONE"
    return "SIGMOID" if int(metadata["num_classes"]) == 1 else "SOFTMAX"


def mediapipe_labels(metadata) -> Optional[list]:
    """The labels, one per output channel, or None when the classes have no names.

    A binary model has one output channel, the foreground: its one label is the
    foreground's name, the last of `class_names` (`[foreground]` or `[background, foreground]`).

    Example:
    ```python
    mediapipe_labels({"num_classes": 1, "class_names": ["background", "cell"]})   # ["cell"]
    ```
    """
    names = metadata.get("class_names")
    if not names:
        return None
    names = [" ".join(str(name).splitlines()) for name in names]  # one line per label
    return names[-1:] if int(metadata["num_classes"]) == 1 else names


def _description(metadata, labels):
    num_classes = int(metadata["num_classes"])
    height, width = metadata.get("input_size") or (None, None)
    size = f"{height}x{width}" if height and width else "any size"
    channels = int(metadata["channels"])
    image = {1: "grayscale", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels}-channel")
    text = (f"U-Net semantic segmentation exported by keras-unet "
            f"{metadata.get('keras_unet_version', '')} ({metadata.get('quantization', 'none')}). "
            f"Input: {image} image, {size}, pixel values 0..255 (normalised inside the model). ")
    if num_classes == 1:
        name = labels[0] if labels else "foreground"
        threshold = metadata.get("threshold")
        threshold = 0.5 if threshold is None else threshold
        text += (f"Output: the probability of '{name}' per pixel (one channel). MediaPipe's "
                 f"category mask is 0 for '{name}' (confidence > 0.5) and 255 for the "
                 f"background; keras-unet masks call p >= {threshold:g} foreground.")
    else:
        names = ", ".join(labels) if labels else "named by index"
        text += (f"Output: one probability per class and pixel, {num_classes} classes "
                 f"({names}); the category mask is the arg-max.")
    if metadata.get("output_activation") is None:
        text += " The model outputs logits; the activation is applied after it."
    return text


def _model_name(metadata):
    source = metadata.get("source_model")
    return os.path.splitext(os.path.basename(source))[0] if source else "keras_unet"


def build_support_metadata(metadata) -> Any:
    """The TFLite Metadata of a file whose keras_unet metadata is `metadata`.

    Args:
        metadata: the keras_unet metadata dict of the file (`build_metadata`).

    Returns:
        `SupportMetadata`: the `M001` buffer and the associated files.

    Example:
    ```python
    support = build_support_metadata(metadata)
    support.buffer[4:8]   # b'M001'
    ```
    """
    import flatbuffers

    schema, segmenter = _schemas()
    channels = int(metadata["channels"])
    labels = mediapipe_labels(metadata)

    image = schema.TensorMetadataT()
    image.name = "image"
    image.description = ("Image with pixel values in [0, 255] (uint8 or float32); "
                         "the model normalises it inside.")
    image.content = schema.ContentT()
    image.content.contentPropertiesType = schema.ContentProperties.ImageProperties
    image.content.contentProperties = schema.ImagePropertiesT()
    image.content.contentProperties.colorSpace = (
        schema.ColorSpaceType.GRAYSCALE if channels == 1 else schema.ColorSpaceType.RGB)
    normalization = schema.ProcessUnitT()
    normalization.optionsType = schema.ProcessUnitOptions.NormalizationOptions
    normalization.options = schema.NormalizationOptionsT()
    values = 1 if channels == 1 else 3  # MediaPipe takes 1 or 3 values
    normalization.options.mean = [0.0] * values
    normalization.options.std = [1.0] * values
    image.processUnits = [normalization]
    image.stats = schema.StatsT()
    image.stats.min = [0.0] * values
    image.stats.max = [255.0] * values

    masks = schema.TensorMetadataT()
    masks.name = "segmentation_masks"
    masks.description = ("Probability of each class per pixel, (1, H, W, K)"
                         if int(metadata["num_classes"]) > 1
                         else "Probability of the foreground per pixel, (1, H, W, 1)")
    masks.content = schema.ContentT()
    masks.content.contentPropertiesType = schema.ContentProperties.ImageProperties
    masks.content.contentProperties = schema.ImagePropertiesT()
    masks.content.contentProperties.colorSpace = schema.ColorSpaceType.GRAYSCALE
    masks.content.range = schema.ValueRangeT()
    masks.content.range.min, masks.content.range.max = 1, 2
    files = {}
    if labels:
        label_file = schema.AssociatedFileT()
        label_file.name = LABELS_FILE
        label_file.description = "Labels of the output channels, one per line."
        label_file.type = schema.AssociatedFileType.TENSOR_AXIS_LABELS
        masks.associatedFiles = [label_file]
        files[LABELS_FILE] = "".join(f"{label}\n" for label in labels).encode("utf-8")

    options = segmenter.ImageSegmenterOptionsT()
    options.activation = ACTIVATIONS.index(mediapipe_activation(metadata))
    builder = flatbuffers.Builder(64)
    builder.Finish(options.Pack(builder), SEGMENTER_OPTIONS_IDENTIFIER)
    custom = schema.CustomMetadataT()
    custom.name = SEGMENTER_METADATA
    custom.data = list(bytes(builder.Output()))

    subgraph = schema.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    subgraph.outputTensorMetadata = [masks]
    subgraph.customMetadata = [custom]

    model = schema.ModelMetadataT()
    model.name = _model_name(metadata)
    model.description = _description(metadata, labels)
    model.version = f"keras-unet {metadata.get('keras_unet_version', '')}".strip()
    model.author = "keras-unet-edge"
    model.subgraphMetadata = [subgraph]
    model.minParserVersion = MIN_PARSER_VERSION
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), METADATA_IDENTIFIER)
    return SupportMetadata(buffer=bytes(builder.Output()), files=files)


def pack_associated_files(model_bytes, files) -> bytes:
    """`model_bytes` with `files` appended as a zip archive (stored, not compressed).

    The layout the TFLite Support metadata populator writes: the model, then zip entries
    and a central directory whose offsets count from the start of the file, so the whole
    file is a valid zip and still a valid flatbuffer (readers ignore what follows it).
    MediaPipe reads the entries in place, which needs them uncompressed.

    Example:
    ```python
    data = pack_associated_files(model_bytes, {"labels.txt": b"cell\\n"})
    ```
    """
    if not files:
        return bytes(model_bytes)
    stream = io.BytesIO(bytes(model_bytes))
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            archive.writestr(info, data)
    return stream.getvalue()


def associated_files(model_bytes) -> dict:
    """`{name: bytes}` of the files packed after a `.tflite` model ({} when there are none).

    Example:
    ```python
    associated_files(open("unet.tflite", "rb").read())   # {'labels.txt': b'cell\\n'}
    ```
    """
    stream = io.BytesIO(bytes(model_bytes))
    if not zipfile.is_zipfile(stream):
        return {}
    with zipfile.ZipFile(stream) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def read_support_metadata(model_bytes) -> Any:
    """The TFLite Metadata of a `.tflite` file as a plain dict, or None when it has none.

    For checks and tests: the fields this module writes, read back with the schema.

    Returns:
        dict with `name`, `description`, `version`, `author`, `min_parser_version`,
        `input` (`name`, `color_space`, `mean`, `std`, `min`, `max`), `output` (`name`,
        `color_space`, `label_file`), `activation` (from `SEGMENTER_METADATA`, or None),
        and `labels` (the lines of the labels file, or None).

    Example:
    ```python
    read_support_metadata(data)["input"]["color_space"]   # "RGB"
    ```
    """
    from keras_unet.runtime.metadata import tflite_metadata_entries

    raw = tflite_metadata_entries(bytes(model_bytes)).get(TFLITE_METADATA)
    if raw is None:
        return None
    schema, segmenter = _schemas()
    if raw[4:8] != METADATA_IDENTIFIER:
        raise ValueError(f"The {TFLITE_METADATA} buffer is not TFLite Metadata "
                         f"(identifier {raw[4:8]!r}, expected {METADATA_IDENTIFIER!r}).")
    model = schema.ModelMetadataT.InitFromPackedBuf(bytearray(raw), 0)
    subgraph = model.subgraphMetadata[0]
    spaces = {v: k for k, v in vars(schema.ColorSpaceType).items() if not k.startswith("_")}

    def text(value):
        return value.decode("utf-8") if isinstance(value, bytes) else value

    def tensor(meta):
        props = meta.content.contentProperties if meta.content else None
        info = {"name": text(meta.name),
                "color_space": spaces.get(props.colorSpace) if props is not None else None}
        for unit in meta.processUnits or []:
            if unit.optionsType == schema.ProcessUnitOptions.NormalizationOptions:
                info["mean"] = [float(v) for v in unit.options.mean]
                info["std"] = [float(v) for v in unit.options.std]
        if meta.stats is not None and meta.stats.min is not None:
            info["min"] = [float(v) for v in meta.stats.min]
            info["max"] = [float(v) for v in meta.stats.max]
        files = [f for f in meta.associatedFiles or []
                 if f.type == schema.AssociatedFileType.TENSOR_AXIS_LABELS]
        info["label_file"] = text(files[0].name) if files else None
        return info

    activation = None
    for custom in subgraph.customMetadata or []:
        if text(custom.name) == SEGMENTER_METADATA:
            options = segmenter.ImageSegmenterOptionsT.InitFromPackedBuf(
                bytearray(bytes(bytearray(custom.data))), 0)
            activation = ACTIVATIONS[options.activation]
    output = tensor(subgraph.outputTensorMetadata[-1])
    labels = None
    if output["label_file"]:
        data = associated_files(model_bytes).get(output["label_file"])
        labels = None if data is None else data.decode("utf-8").splitlines()
    return {
        "name": text(model.name), "description": text(model.description),
        "version": text(model.version), "author": text(model.author),
        "min_parser_version": text(model.minParserVersion),
        "input": tensor(subgraph.inputTensorMetadata[0]), "output": output,
        "activation": activation, "labels": labels,
    }
