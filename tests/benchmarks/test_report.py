import csv
import json

import pytest

from keras_unet.benchmarks.report import CSV_FIELDS, BenchmarkReport, BenchmarkRow


def _report():
    rows = [
        BenchmarkRow(model="/m/ref.keras", format="keras", quantization="none", is_reference=True,
                     model_size_mb=1.5, latency_min_ms=9.0, latency_p50_ms=10.0, latency_p90_ms=11.0,
                     latency_p99_ms=12.0, iou=0.8, iou_per_class=[0.9, 0.8], speedup_vs_reference=1.0,
                     iou_drop=0.0, pixel_agreement=1.0, agreement_iou=1.0, agreement_mean_iou=1.0,
                     latency_runs_ms=[9.0, 10.0, 12.0]),
        BenchmarkRow(model="/m/int8.tflite", format="tflite", quantization="int8", model_size_mb=0.4,
                     latency_min_ms=2.0, latency_p50_ms=2.5, latency_p90_ms=3.0, latency_p99_ms=3.5,
                     iou=0.78, speedup_vs_reference=4.0, iou_drop=0.02, pixel_agreement=0.99,
                     agreement_iou=0.95, agreement_mean_iou=0.875,
                     bare_latency_p50_ms=2.45, harness_overhead=2.5 / 2.45),
        BenchmarkRow(model="/m/slow.onnx", format="onnx", quantization="none", latency_p50_ms=20.0,
                     latency_p90_ms=21.0, latency_p99_ms=22.0, iou=0.7, iou_drop=float("nan")),
        BenchmarkRow(model="/m/broken.tflite", format="tflite", error="ValueError: Could not open 'broken.tflite'"),
    ]
    return BenchmarkReport(environment={"cpu": "Test CPU", "cpu_count": 2, "threads": 2, "date": "2026-01-01"},
                           rows=rows, settings={"runs": 3})


def test_json_and_csv_hold_the_same_numbers(tmp_path):
    report = _report()
    report.to_json(tmp_path / "r.json")
    report.to_csv(tmp_path / "r.csv")
    data = json.loads((tmp_path / "r.json").read_text())
    with open(tmp_path / "r.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    assert [r["name"] for r in data["rows"]] == [r["name"] for r in lines] == [
        "ref.keras", "int8.tflite", "slow.onnx", "broken.tflite"]
    assert list(lines[0].keys()) == CSV_FIELDS and "latency_runs_ms" not in CSV_FIELDS
    assert float(lines[1]["agreement_mean_iou"]) == 0.875 and lines[2]["pixel_agreement"] == ""
    for from_json, from_csv in zip(data["rows"], lines):
        for key in ("latency_p50_ms", "latency_p99_ms", "model_size_mb", "iou", "iou_drop",
                    "pixel_agreement", "agreement_iou", "agreement_mean_iou"):
            if from_json[key] is None:
                assert from_csv[key] == ""
            else:
                assert float(from_csv[key]) == pytest.approx(from_json[key])
    assert data["rows"][0]["latency_runs_ms"] == [9.0, 10.0, 12.0]
    assert json.loads(lines[0]["iou_per_class"]) == [0.9, 0.8]
    assert data["rows"][2]["iou_drop"] is None  # NaN is not JSON
    assert data["rows"][3]["error"].startswith("ValueError")
    assert BenchmarkReport.from_dict(data).rows[1].harness_overhead == pytest.approx(2.5 / 2.45)


def test_report_files_go_to_a_new_folder_with_no_temporary_left(tmp_path):
    report = _report()
    folder = tmp_path / "a" / "b"
    assert report.to_json(folder / "r.json") == str(folder / "r.json")
    report.to_csv(folder / "r.csv")
    assert sorted(p.name for p in folder.iterdir()) == ["r.csv", "r.json"]
    assert [row.name for row in report.failed] == ["broken.tflite"]


def test_table_has_one_line_per_model_and_the_error():
    table = _report().format_table()
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["model", "format", "quant", "size"]
    assert lines[0].split()[-6:] == ["agree", "IoU", "agree", "px", "agree", "mIoU"]
    assert any(line.startswith("ref.keras (ref)") and "1.00x" in line for line in lines)
    int8 = next(line for line in lines if line.startswith("int8.tflite"))
    assert int8.split()[-6:] == ["4.00x", "0.7800", "+0.0200", "0.9500", "0.9900", "0.8750"]
    assert "error in broken.tflite: ValueError" in table
    assert "harness overhead int8.tflite" in table
