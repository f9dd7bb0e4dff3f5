"""The int8 matrix on a multi-class folder: what `keras-unet bench` reports for K-class files,
worked out by hand, and the matrix's rows, targets and table built from it.

The folder (made here, 3 classes plus void 3) holds 32x32 images of three stripes: rows 0-15
red (class 0), rows 16-23 dim green (class 1), rows 24-31 blue (class 2), the last two rows
void in the masks. `reference` (hand-built ONNX, no TensorFlow) is softmax(rgb / 30): the
arg-max is the brightest channel, so it segments every stripe right. `shifted` adds 3 to
class 0's logit, enough to turn the dim green (logits 1.67, 4, 1.67) into class 0 but not the
blue (8.33 against 4.67). Per image, against the reference's masks (512 / 256 / 256 pixels):
pixel agreement 768 / 1024 = 0.75; IoU per class 512 / 768, 0, 1; frequency-weighted IoU
0.5 * 2/3 + 0.25 * 0 + 0.25 * 1 = 7/12; mean 5/9. Against the ground truth (void left out) the
reference scores mean IoU 1 and `shifted` 5/9, a drop of 4/9.
"""

import numpy as np
import pytest
from PIL import Image
from pixel_onnx import pixel_model

from keras_unet.benchmarks import int8_matrix, run_benchmark

SIZE = 32
VOID = 3


def _image_and_mask():
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[:16] = (200, 50, 50)
    image[16:24] = (50, 120, 50)
    image[24:] = (50, 50, 250)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:24], mask[24:] = 1, 2
    mask[30:] = VOID
    return image, mask


@pytest.fixture(scope="module")
def three_class_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("three_classes")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    image, mask = _image_and_mask()
    for index in range(2):
        Image.fromarray(image).save(root / "images" / f"scene{index}.png")
        Image.fromarray(mask).save(root / "masks" / f"scene{index}.png")
    return str(root)


def _softmax_model(path, bias):
    return pixel_model(path, SIZE, np.eye(3) / 30.0, bias, "Softmax")


@pytest.fixture(scope="module")
def bench_rows(three_class_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("three_class_models")
    reference = _softmax_model(root / "model.onnx", [0, 0, 0])
    shifted = _softmax_model(root / "int8.onnx", [3, 0, 0])
    report = run_benchmark([reference, shifted], data=three_class_folder, reference=reference,
                           ignore_index=VOID, mask_encoding="index", threads=1, warmup=0, runs=2,
                           progress=False)
    return [row.to_dict() for row in report.rows]


def test_bench_reports_the_multi_class_agreement_and_mean_iou_drop_by_hand(bench_rows):
    reference, shifted = bench_rows
    assert reference["num_classes"] == shifted["num_classes"] == 3
    assert reference["iou"] == pytest.approx(1.0) and reference["agreement_iou"] == 1.0
    assert shifted["pixel_agreement"] == pytest.approx(0.75)
    assert shifted["agreement_iou"] == pytest.approx(7 / 12)  # frequency-weighted
    assert shifted["agreement_mean_iou"] == pytest.approx(5 / 9)
    assert shifted["agreement_iou_per_class"] == pytest.approx([2 / 3, 0.0, 1.0])
    assert shifted["iou"] == pytest.approx(5 / 9) and shifted["iou_drop"] == pytest.approx(4 / 9)


def test_matrix_rows_of_a_multi_class_file_carry_its_figures_and_fail_its_targets(bench_rows):
    rows = int8_matrix.table_rows("vanilla_bn", bench_rows)
    assert [row["file"] for row in rows] == ["int8.tflite", "int8.onnx"]
    refused, measured = rows
    assert refused["error"] == "refused"
    assert measured["num_classes"] == 3 and measured["agreement_iou"] == pytest.approx(7 / 12)
    assert measured["pixel_agreement"] == pytest.approx(0.75)
    assert measured["iou_drop"] == pytest.approx(4 / 9) and measured["p50_ratio"] > 0
    assert int8_matrix.targets_of(measured) is int8_matrix.MULTI_CLASS_TARGETS
    assert not int8_matrix.meets_targets(measured)
    # p50 too, most likely (the two files are the same graph), but that is timing.
    assert int8_matrix.failed_targets(measured)[:3] == ["agreement_iou", "pixel_agreement", "iou_drop"]
    line = int8_matrix.format_table(rows).splitlines()[2]
    assert line.split()[2:7] == ["0.5833", "0.7500", "0.5556", "0.5556", "0.4444"]
    assert line.endswith("NO")


def _good(**changes):
    row = {"model": "resnet50", "file": "int8.tflite", "num_classes": 11, "agreement_iou": 0.99,
           "pixel_agreement": 0.995, "agreement_mean_iou": 0.9, "iou": 0.6, "iou_drop": 0.002,
           "p50_ratio": 0.25, "vs_fp32_tflite": 2.0, "kept_float": [], "error": None}
    row.update(changes)
    return row


@pytest.mark.parametrize("changes, meets", [
    ({}, True),
    ({"agreement_iou": 0.984}, False),     # frequency-weighted agreement: the gate
    ({"pixel_agreement": 0.989}, False),   # multi-class only
    ({"iou_drop": 0.006}, False),
    ({"p50_ratio": 0.31}, False),          # 0.30 for multi-class, 0.35 binary
    ({"pixel_agreement": None}, False),    # not measured is not met
    ({"agreement_mean_iou": 0.5}, True),   # informational, never gated
])
def test_multi_class_targets(changes, meets):
    assert int8_matrix.meets_targets(_good(**changes)) is meets
    assert (int8_matrix.failed_targets(_good(**changes)) == []) is meets


def test_binary_rows_keep_the_binary_targets():
    # no pixel agreement asked of a binary row
    assert int8_matrix.meets_targets(_good(num_classes=1, pixel_agreement=0.9, p50_ratio=0.29,
                                           agreement_iou=0.986))
    assert int8_matrix.meets_targets(_good(num_classes=None, pixel_agreement=0.9, p50_ratio=0.29,
                                           agreement_iou=0.986))
