"""Generated flatbuffer code for the TFLite Metadata schemas, vendored (Apache-2.0).

- `metadata_schema_py_generated`: the TFLite Metadata schema (`M001`, schema 1.5.0), the
  `TFLITE_METADATA` buffer that MediaPipe Tasks and the TFLite Task Library read
  (`ModelMetadata`, `TensorMetadata`, `ImageProperties`, `NormalizationOptions`,
  `AssociatedFile`, `CustomMetadata` ...).
- `image_segmenter_metadata_schema_py_generated`: MediaPipe's `ImageSegmenterOptions`
  (`V001`), stored as the custom metadata `SEGMENTER_METADATA`; it says which activation
  MediaPipe's ImageSegmenter applies to the output.

Both are the files flatc generated from `mediapipe/tasks/metadata/*.fbs` in
https://github.com/google-ai-edge/mediapipe, copied unchanged from the mediapipe 1.2.3 wheel
with the license header and a note of their origin added (see the head of each file). They
need only the `flatbuffers` package, which TensorFlow and ai-edge-litert already depend on.

Why vendored rather than imported: the same modules ship in `mediapipe` (a 50 MB wheel with
OpenCV, which exports should not need) and in `tflite-support` (pins protobuf<4, which
TensorFlow 2.16+ cannot share an environment with); the schema is stable (the `M001`
identifier has not changed since 2020, new fields only append). To update, copy the two
`*_py_generated.py` files from a newer mediapipe wheel and keep the header.

Example:
```python
from keras_unet.export.metadata_schemas import metadata_schema_py_generated as schema

schema.ModelMetadataT().name = "unet"
```
"""
