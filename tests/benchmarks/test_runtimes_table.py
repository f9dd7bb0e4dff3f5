"""One file on every runtime: `bench --runtime all` / `run_benchmark(..., runtime="all")`.

Each file gets one row per installed runtime that runs it, and per file exactly one row is
marked `fastest_runtime`: the lowest p50 among the rows whose agreement with the reference
keeps the bench's target (`keras_unet.benchmarks.suite.AGREEMENT_TARGET`).
"""

import json

import pytest

from keras_unet import cli
from keras_unet.benchmarks import run_benchmark
from keras_unet.benchmarks.report import BenchmarkReport, BenchmarkRow, mark_fastest_runtimes
from keras_unet.benchmarks.suite import AGREEMENT_TARGET

TARGET = 0.985


def _row(model, runtime, p50, agreement, error=None):
    return BenchmarkRow(model=model, format=runtime, runtime=runtime, latency_p50_ms=p50,
                        agreement_iou=agreement, error=error)


def test_the_target_is_what_the_export_repairs_toward():
    from keras_unet.export.int8 import AGREEMENT_TARGET as REPAIR_TARGET

    assert AGREEMENT_TARGET == REPAIR_TARGET == TARGET


def test_fastest_is_the_quickest_row_keeping_agreement():
    rows = [
        _row("/m/a.onnx", "onnxruntime", 1.0, 0.97),  # quickest, but below the target
        _row("/m/a.onnx", "openvino", 2.0, 0.99),
        _row("/m/a.onnx", "openvino", None, None, error="ValueError: broken"),
        _row("/m/b.tflite", "tflite", 0.5, 1.0),  # one runtime: nothing to compare
        _row("/m/c.onnx", "onnxruntime", 1.0, None),  # no agreement measured
        _row("/m/c.onnx", "openvino", 0.8, None),
    ]
    marked = mark_fastest_runtimes(rows, TARGET)
    assert [row.fastest_runtime for row in rows] == [False, True, False, None, False, False]
    assert marked == {"/m/a.onnx": rows[1], "/m/c.onnx": None}
    table = BenchmarkReport(environment={}, rows=rows, settings={"agreement_target": TARGET}).format_table()
    assert table.count("(fastest)") == 1
    assert ("runtimes of a.onnx: onnxruntime 1.00 ms (0.50x), openvino 2.00 ms (1.00x); "
            "fastest keeping agreement IoU >= 0.985: openvino") in table
    assert "runtimes of c.onnx: openvino 0.8 ms (1.00x), onnxruntime 1.00 ms (1.25x); agreement not measured" in table
    assert "runtimes of b.tflite" not in table


def test_no_row_is_marked_when_none_keeps_agreement():
    rows = [_row("/m/a.onnx", "onnxruntime", 1.0, 0.5), _row("/m/a.onnx", "openvino", 2.0, 0.9)]
    assert mark_fastest_runtimes(rows, TARGET) == {"/m/a.onnx": None}
    table = BenchmarkReport(environment={}, rows=rows, settings={"agreement_target": TARGET}).format_table()
    assert "(fastest)" not in table and "none keeps agreement IoU >= 0.985: none marked" in table


def test_bench_puts_an_onnx_file_on_every_runtime(onnx_models, data_dir, tmp_path, capsys, monkeypatch):
    pytest.importorskip("openvino")
    # The native runtimes only: the browser's rows are tests/browser/test_bench_browser.py's.
    monkeypatch.setattr("keras_unet.benchmarks.browser.bench_row.browser_ready", lambda: False)
    out = tmp_path / "bench.json"
    code = cli.main(["bench", onnx_models["bright"], onnx_models["empty"], "--data", data_dir,
                     "--reference", onnx_models["bright"], "--runtime", "all", "--runs", "5",
                     "--warmup", "1", "--threads", "1", "--quiet", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    report = json.loads(out.read_text())
    assert report["settings"]["runtime"] == "all" and report["settings"]["agreement_target"] == TARGET
    assert report["environment"]["versions"]["openvino"]
    rows = [(row["name"], row["runtime"], row["is_reference"], row["fastest_runtime"]) for row in report["rows"]]
    bright = [row for row in report["rows"] if row["name"] == "bright.onnx"]
    assert [row[:3] for row in rows] == [("bright.onnx", "onnxruntime", True), ("bright.onnx", "openvino", False),
                                         ("empty.onnx", "onnxruntime", False), ("empty.onnx", "openvino", False)]
    # bright agrees with itself on both runtimes: the quicker one is marked, and only it.
    assert sum(row["fastest_runtime"] for row in bright) == 1
    fastest = next(row for row in bright if row["fastest_runtime"])
    assert fastest["latency_p50_ms"] == min(row["latency_p50_ms"] for row in bright)
    assert all(row["agreement_iou"] == 1.0 for row in bright)
    # empty predicts no foreground: agreement IoU 0, so none of its rows is marked.
    assert [row[3] for row in rows if row[0] == "empty.onnx"] == [False, False]
    assert printed.count("(fastest)") == 1 and "runtimes of empty.onnx" in printed


def test_a_named_runtime_runs_the_models_and_not_the_reference(onnx_models, data_dir):
    pytest.importorskip("openvino")
    report = run_benchmark([onnx_models["empty"]], data=data_dir, reference=onnx_models["bright"],
                           runtime="openvino", runs=3, warmup=0, progress=False)
    assert [(row.name, row.runtime) for row in report.rows] == [("bright.onnx", "onnxruntime"),
                                                               ("empty.onnx", "openvino")]
    assert all(row.fastest_runtime is None for row in report.rows)
    with pytest.raises(ValueError, match="runtime"):
        run_benchmark([onnx_models["empty"]], runtime="every", progress=False)


@pytest.mark.slow
def test_bench_marks_one_fastest_row_per_converted_file(tiny_models, data_dir):
    pytest.importorskip("openvino")
    report = run_benchmark([tiny_models["tflite"], tiny_models["onnx"]], data=data_dir,
                           reference=tiny_models["keras"], runtime="all", runs=5, warmup=1,
                           threads=1, progress=False)
    from keras_unet.benchmarks.browser.bench_row import browser_ready

    assert not report.failed
    runtimes = {}
    for row in report.rows[1:]:
        runtimes.setdefault(row.name, []).append(row)
    # A float .tflite is not put in the browser (MediaPipe needs uint8 input or normalization
    # metadata); an .onnx file is, where Chromium and its assets are installed (CI installs them).
    onnx_runtimes = ["browser", "onnxruntime", "openvino"] if browser_ready() else ["onnxruntime", "openvino"]
    assert {name: sorted(row.runtime for row in rows) for name, rows in runtimes.items()} == {
        "tiny.tflite": ["ai-edge-litert", "openvino"], "tiny.onnx": onnx_runtimes}
    for rows in runtimes.values():
        assert sum(bool(row.fastest_runtime) for row in rows) == 1
        assert all(row.agreement_iou >= TARGET for row in rows)  # float32 files agree with Keras
        fastest = next(row for row in rows if row.fastest_runtime)
        assert fastest.latency_p50_ms == min(row.latency_p50_ms for row in rows)
    assert report.format_table().count("(fastest)") == 2
