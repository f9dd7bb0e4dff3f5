"""The results pages are what their JSON renders, and the renderer refuses incomplete JSON."""

import json

import pytest

from keras_unet.benchmarks import results_pages


def test_committed_pages_match_their_json():
    stale = results_pages.stale_pages()
    assert stale == [], f"stale results pages {stale}: run python -m keras_unet.benchmarks.results_pages"


def test_every_page_states_machine_versions_date_and_command():
    for name, text in results_pages.render_all().items():
        if name == "index.md":
            continue
        for label in ("**Machine:**", "**Versions:**", "**Date:**", "**Command:**"):
            assert label in text, f"{name} lacks {label}"


def test_a_changed_figure_makes_the_page_stale(tmp_path):
    results, pages = tmp_path / "results", tmp_path / "pages"
    results.mkdir()
    data = json.loads((results_pages.RESULTS_DIR / "demo.json").read_text())
    (results / "demo.json").write_text(json.dumps(data))
    results_pages.write_pages(results, pages)
    assert results_pages.stale_pages(results, pages) == []
    data["report"]["rows"][2]["latency_p50_ms"] = 2.8
    (results / "demo.json").write_text(json.dumps(data))
    assert results_pages.stale_pages(results, pages) == ["demo.md"]
    assert "| TFLite int8 | 2.0 | 2.8 |" in results_pages.render_all(results)["demo.md"]


def test_missing_provenance_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"title": "x", "machine": "m", "versions": "v", "date": "2026-01-01"}))
    with pytest.raises(ValueError, match=r"bad\.json.*missing command"):
        results_pages.load_result(path)


def test_projection_is_computed_from_the_parameter_count():
    rows = results_pages.projection_rows({"parameters": 31031745, "bytes_per_parameter": 4, "hosts": 8,
                                          "efficiency": 0.8, "compute_s": [{"seconds": 4.2}, {"seconds": 0.1}]})
    assert round(rows[0]["gradient_mb"], 1) == 124.1
    assert round(rows[0]["per_host_mb"], 1) == 217.2
    assert rows[0]["link"] == "1.7 Gbit/s" and rows[1]["link"] == "70 Gbit/s"


def test_format_value():
    assert results_pages.format_value(None) == "–"
    assert results_pages.format_value(0.0567, ".1%") == "5.7%"
    assert results_pages.format_value(5.02, ".2f", "x") == "5.02x"
    assert results_pages.format_value("stem + 4 ops", ".3f") == "stem + 4 ops"


def test_a_report_of_every_runtime_shows_the_runtime_and_marks_the_fastest():
    rows = [{"name": "m.onnx", "runtime": "onnxruntime", "latency_p50_ms": 5.0, "fastest_runtime": True},
            {"name": "m.onnx", "runtime": "browser", "latency_p50_ms": 40.0, "fastest_runtime": False}]
    table = results_pages.report_table({"settings": {"runtime": "all"}, "rows": rows}).splitlines()
    assert table[0].startswith("| model | runtime |") and table[0].endswith("| fastest keeping agreement |")
    assert table[2].startswith("| m.onnx | onnxruntime |") and table[2].endswith("| yes |")
    assert table[3].startswith("| m.onnx | browser |") and not table[3].endswith("| yes |")
    plain = results_pages.report_table({"settings": {}, "rows": rows}).splitlines()
    assert "runtime" not in plain[0]
