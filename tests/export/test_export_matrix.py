"""Every encoder, upsample mode, attention, batch norm, multi-class, and the seed-sized model
export to TFLite and ONNX (float32 and int8) and run. All of it converts models: `slow`.

Each file goes through `export_testing.run_export_test`: it runs in its runtime against
Keras, and its metadata is read back. Float32 files must match Keras within 1e-4. The
models here are untrained (training each variant would not fit CI's time), so their
probabilities sit near 0.5 and int8 rounding flips many pixels: mask agreement is lower
than for a trained model, and differs by variant. Each variant therefore has its own
agreement floor, set about 0.05-0.1 below the lowest `agreement_iou` measured over both
formats (seed 0, 16 calibration and 8 verification nuclei images, onnxruntime 1.32 /
ai-edge-litert 2.3 on x86): a broken calibration or input scale gives masks unrelated to
Keras' (about 0.5 for a binary model, 0.33 for three classes). The probabilities are
bounded as well: mean absolute difference <= 0.05 (the largest seen is 0.021, ResNet50
TFLite; a broken calibration gives ~0.3). Mask agreement of trained models is tested in
test_tflite.py and test_onnx.py.
"""

import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from export_testing import run_export_test  # noqa: E402

import keras_unet  # noqa: E402
from keras_unet.datasets import nuclei_path  # noqa: E402
from keras_unet.export.calibration import load_images  # noqa: E402

INT8_MEAN_ABS_DIFF = 0.05

# variant: (UNet arguments, int8 agreement floor; measured lowest agreement_iou in the comment)
VARIANTS = {
    "mobilenet_v2": (dict(encoder="mobilenet_v2"), 0.85),  # 0.903 TFLite
    "mobilenet_v3_small": (dict(encoder="mobilenet_v3_small"), 0.9),  # 0.966 ONNX
    "mobilenet_v3_large": (dict(encoder="mobilenet_v3_large"), 0.75),  # 0.819 TFLite
    "resnet50": (dict(encoder="resnet50"), 0.75),  # 0.842 ONNX
    "bilinear_attention": (dict(upsample="bilinear", use_attention=True), 0.9),  # 0.944 ONNX
    "nearest_batchnorm_3_classes": (
        dict(upsample="nearest", use_batchnorm=True, num_classes=3), 0.6),  # 0.699 ONNX
    "transpose_attention_batchnorm_residual": (
        dict(use_attention=True, use_batchnorm=True, residual=True), 0.85),  # 0.909 TFLite
}


@pytest.fixture(scope="module")
def calibration():
    """The 16 calibration images; int8 exports verify on their first 8 (as measured above)."""
    return load_images(nuclei_path(), (32, 32), 3, limit=16, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_exports_in_both_formats(variant, calibration, tmp_path):
    arguments, floor = VARIANTS[variant]
    keras.utils.set_random_seed(0)
    model = keras_unet.UNet((32, 32, 3), filters=4, depth=2, **arguments)
    common = dict(calibration_data=nuclei_path(), calibration_size=16)
    images = calibration[:8]
    results = {}
    for fmt in ("tflite", "onnx"):
        # float32 within 1e-4, int8 at the variant's floor; metadata checked by the helper
        results[fmt] = run_export_test(model, tmp_path, fmt, "none", images, **common)
        # The floors were measured on the plain conversion (uint8 activations for ONNX);
        # repair would keep layers in float instead of failing (tested in test_int8_repair).
        plain = {"activation_type": "uint8"} if fmt == "onnx" else {}
        results[f"{fmt}_int8"] = run_export_test(model, tmp_path, fmt, "int8", images,
                                                 agreement_floor=floor, repair=False,
                                                 **plain, **common)
    for name, result in results.items():
        report = result.verification
        assert report.n_images == 8, (name, report.summary())
        if result.quantization != "none":
            assert report.mean_abs_diff <= INT8_MEAN_ABS_DIFF, (name, report.summary())
    assert results["tflite_int8"].input_dtype == "uint8"
    # Every convolution integer in onnxruntime, 2x2 up-convolutions included (decoder_form).
    assert results["onnx_int8"].float_ops_left == {}


@pytest.mark.slow
@pytest.mark.parametrize("fmt, n_images", [("tflite", 4), ("onnx", 2)])
def test_seed_sized_default_model_exports(fmt, n_images, tmp_path):
    model = keras_unet.UNet((128, 128, 3))  # the original U-Net, 31M parameters
    # The images the export verifies on by default: the shipped nuclei sample.
    images = load_images(nuclei_path(), (128, 128), 3, limit=n_images, progress=False)
    result = run_export_test(model, tmp_path, fmt, "none", images)
    assert result.verification.n_images == n_images
    assert result.input_shape == (1, 128, 128, 3)
    assert result.size_bytes > 4 * 31_000_000  # float32 weights are all there
