"""`output="mask"`: the file ends with threshold/arg-max and gives `predict_masks` exactly."""

import numpy as np
import pytest

import keras_unet
from keras_unet.export.mask_head import threshold_code
from keras_unet.runtime.metadata_schema import validate_metadata
from keras_unet.runtime import load_runner
from keras_unet.runtime.metadata import read_metadata


def test_threshold_code_is_the_first_code_at_or_above_the_threshold():
    for scale, zero_point in ((1 / 256, 0), (1 / 255.75, 0), (0.02, 10)):
        for threshold in (0.0, 0.25, 0.5, 0.731):
            code = threshold_code(threshold, scale, zero_point)
            assert (code - zero_point) * scale >= threshold
            assert (code - 1 - zero_point) * scale < threshold


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(6)]


def _exporter(fmt):
    from keras_unet.export import export_onnx, export_tflite

    return export_tflite if fmt == "tflite" else export_onnx


@pytest.mark.slow
@pytest.mark.parametrize("fmt, num_classes, quantize", [
    ("tflite", 1, "int8"), ("tflite", 3, "none"), ("onnx", 1, "int8"), ("onnx", 3, "none"),
])  # each head (threshold in codes / in float, arg-max) on each format, in the suite's time
def test_a_mask_file_gives_the_probability_file_s_masks(tmp_path, images, fmt, num_classes, quantize):
    from keras_unet.datasets import nuclei_path

    model = keras_unet.UNet(input_shape=(32, 32, 3), num_classes=num_classes, filters=4, depth=2,
                            use_batchnorm=True)
    kwargs = dict(quantize=quantize, progress=False, agreement_floor=0.0)
    if quantize == "int8":
        kwargs.update(calibration_data=nuclei_path(), calibration_size=40, repair=False)
    exporter = _exporter(fmt)
    exporter(model, tmp_path / f"p.{fmt}", **kwargs)
    result = exporter(model, tmp_path / f"m.{fmt}", output="mask", **kwargs)
    assert result.output_dtype == "uint8" and result.metadata["output"] == "mask"
    assert read_metadata(tmp_path / f"m.{fmt}")["output"] == "mask"
    validate_metadata(result.metadata)  # every field it carries is declared and valid
    with load_runner(tmp_path / f"p.{fmt}") as probabilities, load_runner(tmp_path / f"m.{fmt}") as masks:
        raw = masks.run(masks.prepare(images))
        assert raw.dtype == np.uint8 and raw.shape == (len(images), 32, 32)
        expected = np.asarray(probabilities.predict_masks(images))
        got = np.asarray(masks.predict_masks(images))
        np.testing.assert_array_equal(raw, got)
        if fmt == "onnx" and quantize == "int8":
            # onnxruntime fuses the two graphs' quantize/dequantize pairs differently, so a
            # probability a rounding step from the threshold may flip (see MASK_HEAD_AGREEMENT).
            assert np.mean(got == expected) >= 0.999
        else:
            np.testing.assert_array_equal(got, expected)
