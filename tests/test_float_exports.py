"""Every float32 export matches Keras: each format times each model variant, one check.

The file is written by the exporter, run in its own runtime (`keras_unet.runtime`, what a
device uses) and compared with Keras within 1e-4 (`export_testing.run_export_test`, which
also reads the metadata back and checks the export's own verification). Variants: the
session's tiny trained UNet (binary, RGB, the shipped nuclei images it never saw) and an
untrained gray three-class UNet with every block option (batch norm, attention, residual,
nearest upsampling), whose float32 outputs need no training to be compared. All of it
converts models: `slow`.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from export_testing import FP32_ATOL, run_export_test  # noqa: E402

SIZE = (32, 32)

# format: (exporter arguments, what the file's input shape must be for a (32, 32, C) model)
FORMATS = {
    "tflite": ({}, lambda c: (1, *SIZE, c)),
    "onnx": (dict(dynamic_batch=True, opset=13), lambda c: (None, *SIZE, c)),
    "ort": ({}, lambda c: (1, *SIZE, c)),
}


@pytest.fixture(scope="module", params=["trained_binary_rgb", "untrained_gray_three_classes"])
def variant(request):
    """`(model, images)`: a Keras model and the real images it is compared on."""
    if request.param == "trained_binary_rgb":
        model = keras.saving.load_model(request.getfixturevalue("trained_unet_path"))
        return model, request.getfixturevalue("held_out_images")

    import keras_unet
    from keras_unet.datasets import nuclei_path
    from keras_unet.export.calibration import load_images

    keras.utils.set_random_seed(0)
    model = keras_unet.UNet((*SIZE, 1), num_classes=3, filters=4, depth=2, use_batchnorm=True,
                            use_attention=True, residual=True, upsample="nearest",
                            class_names=["background", "nucleus", "edge"])
    return model, load_images(nuclei_path(), SIZE, 1, limit=8, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_float32_export_matches_keras_within_1e_4(variant, fmt, tmp_path):
    model, images = variant
    options, input_shape = FORMATS[fmt]
    result = run_export_test(model, tmp_path, fmt, "none", images, atol=FP32_ATOL, **options)
    assert result.verification.n_images == len(images)
    assert result.verification.max_abs_diff <= FP32_ATOL
    channels = int(model.inputs[0].shape[-1])
    assert tuple(result.input_shape) == input_shape(channels)
    # Nothing but the file is left beside it (no .onnx or temporary of an .ort export).
    assert [p.name for p in tmp_path.iterdir()] == [result.path.rsplit("/", 1)[-1]]
    if fmt == "onnx":
        import onnx
        import onnxruntime as ort

        assert {o.domain: o.version for o in onnx.load(result.path).opset_import}[""] == 13
        session = ort.InferenceSession(result.path, providers=["CPUExecutionProvider"])
        batch = np.asarray(images[:5], np.float32)  # five images in one call: the batch is free
        outputs = session.run(None, {session.get_inputs()[0].name: batch})[0]
        np.testing.assert_allclose(outputs, model.predict(batch, verbose=0), atol=FP32_ATOL)
