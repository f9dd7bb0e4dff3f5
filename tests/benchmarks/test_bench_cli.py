"""`keras-unet bench` / `run_benchmark` end to end.

The fast tests run hand-built ONNX models (conftest `onnx_models`, no TensorFlow); the test
over every format converts a Keras model and is marked slow.
"""

import csv
import importlib.util
import json
import subprocess
import sys

import pytest

from keras_unet.benchmarks import MeasureOptions, run_benchmark
from keras_unet.benchmarks.cli import main

FAST = ["--threads", "1", "--warmup", "1", "--runs", "5", "--rounds", "2", "--quiet"]
AGREEMENT = ("pixel_agreement", "agreement_iou", "agreement_mean_iou")


def _ordered(row):
    keys = ["latency_min_ms", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms"]
    values = [row[key] for key in keys]
    return values == sorted(values) and values[0] > 0


def _csv_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_one_failed_model_makes_the_exit_code_one_and_keeps_every_row(
    onnx_models, corrupted_model, data_dir, hand_scores, empty_vs_bright_agreement, tmp_path, capsys
):
    out = tmp_path / "results"
    out.mkdir()  # a file option's folder must exist (test_bad_input checks the refusal)
    code = main(
        [onnx_models["bright"], corrupted_model, onnx_models["empty"], "--reference", onnx_models["bright"],
         "--data", data_dir, "--json", str(out / "r.json"), "--csv", str(out / "r.csv")] + FAST
    )
    assert code == 1
    captured = capsys.readouterr()
    assert "1 of 3 models failed (broken.tflite)" in captured.err
    assert "error in broken.tflite" in captured.out

    rows = {row["name"]: row for row in json.loads((out / "r.json").read_text())["rows"]}
    assert list(rows) == ["bright.onnx", "broken.tflite", "empty.onnx"]
    assert rows["broken.tflite"]["error"] and rows["broken.tflite"]["latency_p50_ms"] is None
    bright, empty = rows["bright.onnx"], rows["empty.onnx"]
    assert bright["is_reference"] and bright["error"] is None and empty["error"] is None
    assert bright["iou"] == pytest.approx(hand_scores["iou"]) and bright["dice"] == pytest.approx(hand_scores["dice"])
    assert all(bright[key] == 1.0 for key in AGREEMENT)
    # Hand-worked in conftest: the three agreement figures of an all-background model differ.
    for key, value in empty_vs_bright_agreement.items():
        assert empty[key] == pytest.approx(value), key
    assert empty["iou"] == 0.0 and empty["iou_drop"] == pytest.approx(hand_scores["iou"])
    assert _ordered(bright) and len(bright["latency_runs_ms"]) == bright["runs"] == 5

    lines = {line["name"]: line for line in _csv_rows(out / "r.csv")}
    assert list(lines) == list(rows)
    assert lines["broken.tflite"]["error"] == rows["broken.tflite"]["error"]
    for key, value in empty_vs_bright_agreement.items():
        assert float(lines["empty.onnx"][key]) == pytest.approx(value)

    table = captured.out.splitlines()
    assert table[0].split()[-6:] == ["agree", "IoU", "agree", "px", "agree", "mIoU"]
    empty_line = next(line for line in table if line.startswith("empty.onnx"))
    assert empty_line.split()[-3:] == ["0.0000", "0.7500", "0.3750"]


def test_exit_code_is_zero_when_every_model_ran(onnx_models, data_dir, hand_scores, capsys):
    assert main([onnx_models["bright"], onnx_models["empty"], "--data", data_dir] + FAST) == 0
    printed = capsys.readouterr()
    assert "bright.onnx" in printed.out and "failed" not in printed.err


def test_exit_code_is_one_when_every_model_fails_on_every_entry_point(corrupted_model, capsys):
    from keras_unet.cli import main as keras_unet_main

    assert main([corrupted_model] + FAST) == 1
    assert "error in broken.tflite" in capsys.readouterr().out
    assert keras_unet_main(["bench", corrupted_model] + FAST) == 1
    done = subprocess.run([sys.executable, "-m", "keras_unet.benchmarks", corrupted_model] + FAST,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "error in broken.tflite" in done.stdout, done.stderr


def test_isolated_runs_bring_back_rows_masks_and_errors(
    onnx_models, corrupted_model, data_dir, hand_scores, empty_vs_bright_agreement
):
    report = run_benchmark(
        [onnx_models["empty"], corrupted_model, str(data_dir) + "/missing.onnx"],
        data=data_dir,
        reference=onnx_models["bright"],
        threads=1,
        warmup=1,
        runs=3,
        isolate=True,
        progress=False,
    )
    reference, empty, broken, missing = report.rows
    assert reference.is_reference and reference.error is None and reference.iou == pytest.approx(hand_scores["iou"])
    assert reference.memory_method in ("vmhwm", "sampled", "ru_maxrss") and reference.peak_rss_mb > 0
    # The agreement needs both children's masks: they come back through masks.npz.
    for key, value in empty_vs_bright_agreement.items():
        assert getattr(empty, key) == pytest.approx(value)
    assert broken.error and not broken.is_reference and broken.format == "tflite"
    assert "not found" in missing.error
    assert report.failed == [broken, missing] and report.settings["isolate"] is True


def test_latency_only_without_data(onnx_models):
    report = run_benchmark(onnx_models["bright"], threads=1, warmup=0, runs=2, progress=False)
    (row,) = report.rows
    assert row.error is None and row.iou is None and row.agreement_iou is None
    assert row.latency_p50_ms > 0 and row.input_size == "32x32" and row.runs == 2
    assert report.settings["runs"] == 2 and report.settings["quality_images"] == 0


def test_options_are_checked_before_any_model_runs(onnx_models):
    with pytest.raises(TypeError, match="thread.*Valid options.*threads"):
        run_benchmark(onnx_models["bright"], thread=2, progress=False)
    with pytest.raises(ValueError, match="batch_size=0"):
        run_benchmark(onnx_models["bright"], batch_size=0, progress=False)
    with pytest.raises(ValueError, match="not both"):
        MeasureOptions(runs=3, seconds=1.0)


@pytest.mark.slow
def test_cli_reports_every_format_and_records_a_corrupted_file(
    tiny_models, corrupted_model, data_dir, hand_scores, tmp_path, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    code = main(
        [tiny_models["keras"], tiny_models["tflite"], corrupted_model, tiny_models["onnx"], "--data", data_dir]
        + FAST
        + ["--json", str(out / "r.json"), "--csv", str(out / "r.csv"), "--plot", str(out / "r.png")]
    )
    assert code == 1  # the corrupted file failed; its row is kept
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
        assert all(row[key] == 1.0 for key in AGREEMENT) and row["iou_drop"] == pytest.approx(0.0)
        assert row["speedup_vs_reference"] == pytest.approx(
            rows["tiny.keras"]["latency_p50_ms"] / row["latency_p50_ms"])
        assert row["model_size_mb"] > 0 and row["load_time_s"] > 0 and row["peak_rss_mb"] > 0
        assert row["model_rss_delta_mb"] >= 0 and row["runtime"] and row["execution_provider"]
    assert rows["tiny.keras"]["is_reference"] and rows["tiny.keras"]["speedup_vs_reference"] == 1.0
    assert rows["tiny.tflite"]["runtime"] in ("ai-edge-litert", "tflite-runtime")
    assert rows["tiny.onnx"]["runtime"] == "onnxruntime"
    tflite = rows["tiny.tflite"]
    assert tflite["harness_overhead"] == pytest.approx(tflite["latency_p50_ms"] / tflite["bare_latency_p50_ms"])
    if sys.platform.startswith("linux"):  # other work measured while it was timed
        assert tflite["other_load_cores"] >= 0.0
    for key in ("cpu", "date", "python", "threads", "versions"):
        assert key in report["environment"]
    assert report["environment"]["threads"] == 1

    lines = _csv_rows(out / "r.csv")
    assert [line["name"] for line in lines] == list(rows)
    for line in lines:
        row = rows[line["name"]]
        for key in ("latency_p50_ms", "latency_p90_ms", "iou", "model_size_mb") + AGREEMENT:
            assert (line[key] == "") if row[key] is None else float(line[key]) == pytest.approx(row[key])
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "r.png").stat().st_size > 1000
