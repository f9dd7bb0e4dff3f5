"""The int8 matrix's other quantized files (`--modes`): which files each mode exports, the
targets each is held to, and the p50 of a 16x8 file against the int8 file of its format."""

import pytest

from keras_unet.benchmarks import int8_matrix


def test_each_mode_adds_its_two_files_beside_fp32():
    assert int8_matrix.files_of(["int8"]) == ["int8.tflite", "int8.onnx", "fp32.tflite"]
    assert int8_matrix.files_of(["int16x8", "integer_only"]) == [
        "fp32.tflite", "int16x8.tflite", "int16x8.onnx", "int8_integer_only.tflite",
        "int8_integer_only.onnx"]
    assert int8_matrix.EXPORTS["int8_integer_only.onnx"][-1] == "--integer-only"


@pytest.mark.parametrize("mode, classes, agreement", [
    ("int16x8", 1, 0.995), ("int16x8", 11, 0.995), ("integer_only", 1, 0.98), ("integer_only", 11, 0.97)])
def test_the_other_modes_are_held_to_their_agreement_and_the_iou_drop(mode, classes, agreement):
    targets = int8_matrix.targets_of({"mode": mode, "num_classes": classes})
    assert targets == {"agreement_iou": agreement, "iou_drop": 0.005}
    row = {"mode": mode, "num_classes": classes, "agreement_iou": agreement - 0.001, "iou_drop": 0.0}
    assert int8_matrix.failed_targets(row) == ["agreement_iou"]


def _bench_row(file, p50, agreement=0.99):
    return {"model": f"runs/m/{file}", "latency_p50_ms": p50, "agreement_iou": agreement,
            "pixel_agreement": 0.99, "iou": 0.8, "iou_drop": 0.0, "num_classes": 1,
            "speedup_vs_reference": 2.0}


def test_a_16x8_row_reads_its_p50_against_the_int8_file_of_its_format():
    rows = [_bench_row("int8.tflite", 4.0), _bench_row("int16x8.tflite", 100.0, 0.997),
            _bench_row("fp32.tflite", 40.0), _bench_row("int8.onnx", 5.0), _bench_row("int16x8.onnx", 60.0)]
    exported = {"int16x8.tflite": {"report": {"kept_float": [], "kept_int16": []}}}
    table = int8_matrix.table_rows("seed", rows, exported, modes=("int8", "int16x8"))
    by_file = {row["file"]: row for row in table}
    assert by_file["int16x8.tflite"]["vs_int8"] == pytest.approx(25.0)
    assert by_file["int16x8.onnx"]["vs_int8"] == pytest.approx(12.0)
    assert by_file["int8.tflite"]["vs_int8"] is None and by_file["int16x8.tflite"]["mode"] == "int16x8"
    assert by_file["int16x8.tflite"]["vs_fp32_tflite"] == pytest.approx(0.4)
    assert int8_matrix.meets_targets(by_file["int16x8.tflite"])
