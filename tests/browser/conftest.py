"""The files the browser tests run: the suite's tiny trained UNet (32x32x3) exported as fp32
and int8 ONNX and int8 `.tflite` (calibrated on the shipped nuclei images), plus a float
`.tflite` stripped of its TFLite Metadata, which MediaPipe cannot normalize for.

Exports are made once per session. The browser itself needs Chromium (`apt-get install
chromium`), Playwright (the `test` extra) and the assets (`keras-unet web --install-assets`):
`.ci/run` installs all three, so these tests are never skipped there.
"""

import pytest


def strip_support_metadata(source, out):
    """A copy of the `.tflite` file `source` without its TFLITE_METADATA entry."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    data = source.read_bytes()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    model.metadata = [entry for entry in model.metadata
                      if (entry.name.decode() if isinstance(entry.name, bytes) else entry.name)
                      != "TFLITE_METADATA"]
    builder = flatbuffers.Builder(len(data))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out.write_bytes(bytes(builder.Output()))
    return out


@pytest.fixture(scope="session")
def browser_files(trained_unet_path, tmp_path_factory):
    """`{name: path}`: fp32_onnx, int8_onnx, int8_tflite, float_tflite_without_metadata."""
    from keras_unet.datasets import nuclei_path
    from keras_unet.export import export_onnx, export_tflite

    folder = tmp_path_factory.mktemp("browser_files")
    int8 = dict(quantize="int8", calibration_data=nuclei_path(), calibration_size=48,
                agreement_floor=0.8, progress=False)
    files = {"fp32_onnx": folder / "unet.onnx", "int8_onnx": folder / "unet_int8.onnx",
             "int8_tflite": folder / "unet_int8.tflite", "fp32_tflite": folder / "unet.tflite"}
    export_onnx(trained_unet_path, files["fp32_onnx"], progress=False)
    export_onnx(trained_unet_path, files["int8_onnx"], **int8)
    export_tflite(trained_unet_path, files["int8_tflite"], check_speed=False, **int8)
    export_tflite(trained_unet_path, files["fp32_tflite"], check_speed=False, progress=False)
    files["float_tflite_without_metadata"] = strip_support_metadata(
        files["fp32_tflite"], folder / "unet_no_tflite_metadata.tflite")
    return files
