import csv
import json

import pytest

from keras_unet.benchmarks import run_benchmark
from keras_unet.benchmarks.cli import main

FAST = ["--threads", "1", "--warmup", "1", "--runs", "5", "--rounds", "2", "--quiet"]


def _ordered(row):
    keys = ["latency_min_ms", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms"]
    values = [row[key] for key in keys]
    return values == sorted(values) and values[0] > 0


def test_cli_reports_every_format_and_records_a_corrupted_file(
    tiny_models, corrupted_model, data_dir, hand_scores, tmp_path, capsys
):
    out = tmp_path / "out"
    code = main(
        [tiny_models["keras"], tiny_models["tflite"], corrupted_model, tiny_models["onnx"], "--data", data_dir]
        + FAST
        + ["--json", str(out / "r.json"), "--csv", str(out / "r.csv"), "--plot", str(out / "r.png")]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "tiny.keras (ref)" in printed and "error in broken.tflite" in printed

    report = json.loads((out / "r.json").read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == ["tiny.keras", "tiny.tflite", "broken.tflite", "tiny.onnx"]
    assert rows["broken.tflite"]["error"] and rows["broken.tflite"]["latency_p50_ms"] is None
    for name in ("tiny.keras", "tiny.tflite", "tiny.onnx"):
        row = rows[name]
        assert row["error"] is None, row["error"]
        assert _ordered(row) and len(row["latency_runs_ms"]) == row["runs"] == 5
        # The fixture's masks were worked out by hand: IoU 0.6, Dice 0.75 for every format.
        assert row["iou"] == pytest.approx(hand_scores["iou"]) and row["dice"] == pytest.approx(hand_scores["dice"])
        assert row["quality_images"] == 3 and row["input_size"] == "32x32"
        # Every export reproduces the reference masks exactly here.
        assert row["agreement_iou"] == 1.0 and row["iou_drop"] == pytest.approx(0.0)
        assert row["speedup_vs_reference"] == pytest.approx(
            rows["tiny.keras"]["latency_p50_ms"] / row["latency_p50_ms"])
        assert row["model_size_mb"] > 0 and row["load_time_s"] > 0 and row["peak_rss_mb"] > 0
        assert row["model_rss_delta_mb"] >= 0 and row["runtime"] and row["execution_provider"]
    assert rows["tiny.keras"]["is_reference"] and rows["tiny.keras"]["speedup_vs_reference"] == 1.0
    assert rows["tiny.tflite"]["runtime"] in ("ai-edge-litert", "tflite-runtime")
    assert rows["tiny.onnx"]["runtime"] == "onnxruntime"
    tflite = rows["tiny.tflite"]
    assert tflite["harness_overhead"] == pytest.approx(tflite["latency_p50_ms"] / tflite["bare_latency_p50_ms"])
    for key in ("cpu", "date", "python", "threads", "versions"):
        assert key in report["environment"]
    assert report["environment"]["threads"] == 1

    with open(out / "r.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    assert [line["name"] for line in lines] == list(rows)
    for line in lines:
        row = rows[line["name"]]
        for key in ("latency_p50_ms", "latency_p90_ms", "iou", "agreement_iou", "model_size_mb"):
            assert (line[key] == "") if row[key] is None else float(line[key]) == pytest.approx(row[key])
    assert (out / "r.png").stat().st_size > 1000


def test_self_agreement_and_isolated_runs(tiny_models, corrupted_model, data_dir, hand_scores):
    report = run_benchmark(
        [tiny_models["tflite"], corrupted_model, str(data_dir) + "/missing.onnx"],
        data=data_dir,
        reference=tiny_models["tflite"],
        threads=1,
        warmup=1,
        runs=3,
        isolate=True,
        progress=False,
    )
    reference, broken, missing = report.rows
    assert reference.is_reference and reference.error is None
    assert reference.agreement_iou == 1.0 and reference.iou == pytest.approx(hand_scores["iou"])
    assert reference.memory_method in ("vmhwm", "sampled", "ru_maxrss") and reference.peak_rss_mb > 0
    assert broken.error and not broken.is_reference
    assert "not found" in missing.error


def test_exit_code_is_one_when_every_model_fails(corrupted_model, capsys):
    assert main([corrupted_model] + FAST) == 1
    assert "error in broken.tflite" in capsys.readouterr().out


def test_latency_only_without_data(tiny_models):
    report = run_benchmark(tiny_models["onnx"], threads=1, warmup=0, runs=2, progress=False)
    (row,) = report.rows
    assert row.error is None and row.iou is None and row.latency_p50_ms > 0 and row.input_size == "32x32"
