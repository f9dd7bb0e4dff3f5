"""Verification numbers, calibration image loading and atomic writes (no conversion here)."""

import numpy as np
import pytest
from PIL import Image

from keras_unet.runtime.files import atomic_output, write_bytes_atomic
from keras_unet.export.calibration import (
    list_image_files,
    load_images,
    looks_like_noise,
    pin_input_range,
    require_calibration,
    shipped_sample_dir,
)
from keras_unet.export.verify import compare_predictions, select_verification_images


def blobs(n, size=32, channels=3, seed=0):
    """Smooth images with bright discs on a dark gradient: real-image statistics."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = []
    for _ in range(n):
        image = np.round(20.0 + 30.0 * xx / size)
        for _ in range(3):
            cy, cx, r = rng.uniform(4, size - 4), rng.uniform(4, size - 4), rng.uniform(3, 7)
            image = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r**2, 200.0, image)
        images.append(np.repeat(image[..., None], channels, axis=-1))
    return np.stack(images).astype("float32")


def write_pngs(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image.astype("uint8")).save(folder / f"img_{i:02d}.png")


# --- compare_predictions -------------------------------------------------------------


def test_identical_predictions_pass_with_zero_difference():
    probs = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 1)).astype("float32")
    report = compare_predictions(probs, probs.copy())
    assert report.passed
    assert report.max_abs_diff == 0.0 and report.mean_abs_diff == 0.0
    assert report.n_images == 2
    assert report.agreement_iou == report.agreement_mean_iou == report.pixel_agreement == 1.0


def test_float32_criterion_is_1e_4():
    probs = np.full((1, 4, 4, 1), 0.3, "float32")
    assert compare_predictions(probs, probs + 5e-5).passed
    report = compare_predictions(probs, probs + 2e-4)
    assert not report.passed
    assert report.max_abs_diff == pytest.approx(2e-4, rel=1e-3)
    assert "1e-04" in report.criterion or "0.0001" in report.criterion


def test_quantized_criterion_uses_agreement_iou_floor():
    reference = np.zeros((1, 10, 10, 1), "float32")
    reference[0, :4, :5] = 0.9  # 20 foreground pixels
    candidate = reference.copy()
    candidate[0, 0, :2] = 0.1  # 2 of them lost: IoU 18/20
    report = compare_predictions(reference, candidate, "int8", agreement_floor=0.95)
    assert report.agreement_iou == pytest.approx(0.9)
    assert report.pixel_agreement == pytest.approx(0.98)
    # background IoU 80/82, foreground 18/20
    assert report.agreement_mean_iou == pytest.approx((80 / 82 + 0.9) / 2)
    assert not report.passed and report.criterion == "agreement_iou >= 0.95"
    assert compare_predictions(reference, candidate, "int8", agreement_floor=0.85).passed
    assert "FAILED" in report.summary() and "agreement_iou=0.9000" in report.summary()
    assert report.to_dict()["agreement_iou"] == pytest.approx(0.9)


def test_a_quantized_report_says_how_noisy_its_agreement_is():
    reference = np.zeros((4, 10, 10, 1), "float32")
    reference[:, :4, :5] = 0.9
    candidate = reference.copy()
    candidate[0, 0, :4] = 0.1  # one image of four disagrees
    report = compare_predictions(reference, candidate, "int8")
    assert 0.01 < report.agreement_se < 0.1
    assert f"(SE {report.agreement_se:.4f})" in report.summary()
    assert report.to_dict()["agreement_se"] == report.agreement_se
    assert compare_predictions(reference, candidate, "none").agreement_se == 0.0


def test_threshold_rule_is_p_greater_or_equal_like_predict():
    at_threshold = np.full((1, 4, 4, 1), 0.5, "float32")
    # p == threshold is foreground: just below it, every pixel flips and nothing agrees.
    report = compare_predictions(at_threshold, at_threshold - 0.01, "int8")
    assert report.agreement_iou == 0.0 and report.pixel_agreement == 0.0
    assert not report.passed
    report = compare_predictions(at_threshold, at_threshold, "int8", threshold=0.5)
    assert report.agreement_iou == 1.0


def test_empty_masks_agree_fully():
    probs = np.full((1, 4, 4, 1), 0.1, "float32")
    assert compare_predictions(probs, probs * 2, "int8").agreement_iou == 1.0


def test_multiclass_gate_is_frequency_weighted_iou():
    reference = np.array([[0, 1], [2, 2]])
    candidate = np.array([[0, 1], [2, 1]])
    onehot = np.eye(3, dtype="float32")
    report = compare_predictions(onehot[reference][None], onehot[candidate][None], "int8")
    # Per class IoU 1, 1/2, 1/2; Keras pixel shares 1/4, 1/4, 2/4.
    assert report.agreement_iou == pytest.approx(0.25 * 1 + 0.25 * 0.5 + 0.5 * 0.5)
    assert report.agreement_mean_iou == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert report.pixel_agreement == pytest.approx(0.75)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="different shape"):
        compare_predictions(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 4, 2)))


# --- calibration images ----------------------------------------------------------------


def test_load_images_from_dataset_folder_resizes_and_subsets(tmp_path):
    write_pngs(tmp_path / "data" / "images", blobs(6, size=40))
    images = load_images(tmp_path / "data", size=(32, 32), channels=3, limit=4, progress=False)
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 255
    again = load_images(tmp_path / "data", size=(32, 32), channels=3, limit=4, progress=False)
    np.testing.assert_array_equal(images, again)  # the subset is seeded


def test_load_images_from_plain_folder_list_and_array(tmp_path):
    source = blobs(3, size=32, channels=1)
    write_pngs(tmp_path / "flat", source[..., 0])
    from_folder = load_images(tmp_path / "flat", channels=1, progress=False)
    np.testing.assert_array_equal(from_folder, source)
    from_list = load_images(list_image_files(tmp_path / "flat"), channels=3, progress=False)
    assert from_list.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(from_list[..., 1], source[..., 0])
    from_array = load_images(source, size=(16, 16), channels=1, progress=False)
    assert from_array.shape == (3, 16, 16, 1)


def test_missing_and_empty_calibration_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="calibration_data.*not found"):
        load_images(tmp_path / "nope", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_images(tmp_path / "empty", progress=False)


def test_calibration_listing_is_the_runtime_listing(tmp_path):
    from keras_unet.runtime.listing import list_images

    write_pngs(tmp_path / "data" / "images", blobs(2))
    (tmp_path / "data" / "images" / ".hidden.png").write_bytes(b"not an image")
    (tmp_path / "data" / "images" / "notes.txt").write_text("not an image")
    files = list_image_files(tmp_path / "data")
    assert files == list_images(tmp_path / "data" / "images")
    assert [p.name for p in files] == ["img_00.png", "img_01.png"]
    with pytest.raises(ValueError, match="must be a folder.*calibration_data="):
        load_images(files[0], progress=False)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_images([files[0], tmp_path / "missing.png"], progress=False)


def test_noise_and_unit_range_arrays_are_rejected():
    noise = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3))
    assert looks_like_noise(noise)
    assert not looks_like_noise(blobs(4))
    with pytest.raises(ValueError, match="random noise"):
        load_images(noise, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_images(blobs(2) / 255.0, progress=False)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        load_images(blobs(2, channels=1), channels=3, progress=False)


def test_int8_without_calibration_explains_why():
    with pytest.raises(ValueError, match="real calibration images.*noise"):
        require_calibration(None, "int8", "api")
    with pytest.raises(ValueError, match="--calibration-data"):
        require_calibration(None, "int8", "cli")


def test_pin_input_range_spans_0_255_without_touching_the_input():
    images = blobs(2)
    pinned = pin_input_range(images)
    assert pinned.min() == 0 and pinned.max() == 255
    assert images.min() > 0  # the caller's array is unchanged
    assert (pinned != images).sum() <= 6  # two pixels of the first image


def test_verification_defaults_to_the_shipped_nuclei_sample():
    assert shipped_sample_dir() is not None
    images, source = select_verification_images((32, 32), 1, limit=3, progress=False)
    assert images.shape == (3, 32, 32, 1) and "nuclei" in source
    calibration = blobs(5)
    images, source = select_verification_images((32, 32), 3, calibration_images=calibration,
                                                 limit=4)
    np.testing.assert_array_equal(images, calibration[:4])


# --- atomic writes -------------------------------------------------------------------------


def test_atomic_output_keeps_the_old_file_on_failure(tmp_path):
    out = tmp_path / "model.tflite"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(out) as tmp:
            assert tmp.suffix == ".tflite" and tmp.parent == out.parent
            tmp.write_bytes(b"half-written")
            raise RuntimeError("boom")
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]
    write_bytes_atomic(out, b"new")
    assert out.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


def test_atomic_output_needs_an_existing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="output folder"):
        with atomic_output(tmp_path / "missing" / "m.onnx"):
            pass
