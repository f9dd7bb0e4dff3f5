"""The int8 matrix's results file, built from a work folder (bench.json, export reports,
config.json written here by hand) and rendered by `results_pages`."""

import json

import pytest

from keras_unet.benchmarks import int8_matrix_page, results_pages

NAMES = ["sky", "road", "car"]


def _bench_row(name, **fields):
    row = {"model": f"/runs/vanilla_bn/{name}", "num_classes": 3, "latency_p50_ms": 10.0, "iou": 0.6,
           "is_reference": name == "model.keras"}
    row.update(fields)
    return row


@pytest.fixture()
def work(tmp_path):
    folder = tmp_path / "vanilla_bn"
    (folder / "run").mkdir(parents=True)
    (folder / "run" / "config.json").write_text(json.dumps({"epochs_completed": 10, "finished": True}))
    (folder / "int8.onnx.report.json").write_text(json.dumps({"agreement_iou": 0.96, "kept_float": ["a", "b"],
                                                              "calibration_method": "minmax+bias"}))
    rows = [
        _bench_row("model.keras"),
        _bench_row("int8.tflite", agreement_iou=0.99, pixel_agreement=0.995, agreement_mean_iou=0.9,
                   agreement_iou_per_class=[0.99, 0.98, 0.5], iou_drop=0.001, latency_p50_ms=2.0,
                   speedup_vs_reference=5.0),
        _bench_row("int8.onnx", agreement_iou=0.97, pixel_agreement=0.98, agreement_mean_iou=0.8,
                   agreement_iou_per_class=[0.9, 0.9, None], iou_drop=0.01, latency_p50_ms=3.0,
                   speedup_vs_reference=10 / 3, other_load_cores=1.2),
    ]
    environment = {"date": "2026-12-07T00:40:00+00:00", "cpu": "AMD EPYC", "cpu_count": 2, "threads": 2,
                   "gpu": None, "versions": {"onnxruntime": "1.32.0", "openvino": None}}
    (folder / "bench.json").write_text(json.dumps({"environment": environment, "rows": rows}))
    (tmp_path / "resnet50").mkdir()  # trained, not yet benched: left out
    return tmp_path


def test_the_page_holds_each_int8_file_with_its_verdict(work):
    page = int8_matrix_page.build_page(work, "CamVid", "python -m ...", ["10 epochs"], NAMES)
    main, classes = page["tables"]
    tflite, onnx = main["rows"]
    assert (tflite["runtime"], tflite["agreement_iou"], tflite["p50_ms"], tflite["reference_iou"]) == (
        "TFLite (LiteRT)", 0.99, 2.0, 0.6)
    assert tflite["p50_ratio"] == pytest.approx(0.2) and tflite["verdict"] == "met"
    assert onnx["verdict"] == "missed: agreement_iou, pixel_agreement, iou_drop" and onnx["float_ops"] == 2
    assert (tflite["calibration"], onnx["calibration"]) == (None, "minmax+bias")  # from the reports
    assert [column["label"] for column in classes["columns"]][2:] == NAMES
    assert classes["rows"][1]["class_2"] is None and classes["rows"][0]["class_2"] == 0.5
    assert page["date"] == "2026-12-07" and "onnxruntime 1.32.0" in page["versions"]
    assert "openvino" not in page["versions"] and "GPU: none" in page["machine"]
    assert "Epochs trained: vanilla_bn 10." in page["notes"] and "10 epochs" in page["notes"]
    assert "agreement_iou >= 0.985" in page["notes"][0] and "p50_ratio <= 0.3" in page["notes"][0]
    # The ONNX file was timed beside other work: the page says its latency is not comparable.
    busy = [note for note in page["notes"] if note.startswith("Timed while other processes")]
    assert len(busy) == 1 and busy[0].endswith(": vanilla_bn int8.onnx (1.2).")


def test_the_written_file_renders_as_a_results_page(work, tmp_path, capsys):
    out = tmp_path / "results" / "int8_matrix_camvid.json"
    out.parent.mkdir()
    assert int8_matrix_page.main(["--work", str(work), "--out", str(out), "--title", "CamVid",
                                  "--command", "python -m keras_unet.benchmarks.int8_matrix",
                                  "--class-names", *NAMES]) == 0
    markdown = results_pages.render_page("int8_matrix_camvid", results_pages.load_result(out))
    assert ("| vanilla_bn | TFLite (LiteRT) | 0.990 | 0.995 | 0.900 | 0.600 | 0.001 | 2.0 | 0.20 | – | – | 0 | 0 "
            "| – | met |" in markdown)
    assert "| 2 | 0 | minmax+bias | missed: agreement_iou, pixel_agreement, iou_drop |" in markdown
    assert "| vanilla_bn | ONNX Runtime | 0.90 | 0.90 | – |" in markdown


def test_a_work_folder_without_benchmarks_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        int8_matrix_page.main(["--work", str(tmp_path), "--out", str(tmp_path / "x.json"), "--title", "t",
                               "--command", "c"])
    assert stopped.value.code == 2 and "found none" in capsys.readouterr().err


def test_rows_of_models_not_benchmarked_again_are_kept_from_the_earlier_file(work, tmp_path, capsys):
    earlier = int8_matrix_page.build_page(work, "CamVid", "python -m ...", [], NAMES)
    assert {row["measured"] for row in earlier["tables"][0]["rows"]} == {"2026-12-07"}
    # The earlier file also held a ResNet50 row (before vanilla_bn in the matrix's order) that
    # met an older, looser target, and a MobileNetV2 row kept there from a file of 2026-11-30,
    # written before rows carried their date; this work folder benchmarked vanilla_bn again only.
    resnet = dict(earlier["tables"][0]["rows"][0], model="resnet50", agreement_iou=0.98,
                  verdict="met", measured="2026-12-01", versions="keras-unet-edge 0.0.9")
    older = {key: value for key, value in resnet.items() if key not in ("measured", "versions")}
    earlier["tables"][0]["rows"] += [resnet, dict(older, model="mobilenet_v2")]
    earlier["tables"][1]["rows"].append(dict(earlier["tables"][1]["rows"][0], model="resnet50"))
    earlier["notes"][1] = "Epochs trained: vanilla_bn 3, resnet50 20, mobilenet_v2 5."
    earlier["date"], earlier["versions"] = "2026-12-03", "keras-unet-edge 0.1.0"
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(earlier))
    out = tmp_path / "now.json"
    assert int8_matrix_page.main(["--work", str(work), "--out", str(out), "--title", "CamVid",
                                  "--command", "c", "--class-names", *NAMES,
                                  "--keep-rows-from", str(path)]) == 0
    page = json.loads(out.read_text())
    main, classes = page["tables"]
    assert [row["model"] for row in main["rows"]] == ["vanilla_bn", "vanilla_bn", "mobilenet_v2", "resnet50"]
    assert [row["model"] for row in classes["rows"]] == ["vanilla_bn", "vanilla_bn", "resnet50"]
    assert main["rows"][3]["verdict"].startswith("missed: agreement_iou")  # judged again
    assert "Epochs trained: vanilla_bn 10, mobilenet_v2 5, resnet50 20." in page["notes"]
    # Each kept row keeps the date it was measured on; one without gets its file's date.
    assert [row["measured"] for row in main["rows"]] == ["2026-12-07", "2026-12-07", "2026-12-03",
                                                         "2026-12-01"]
    kept = [note for note in page["notes"] if note.startswith("Rows of")]
    assert kept == [
        "Rows of mobilenet_v2 are kept from the results of 2026-12-03 (keras-unet-edge 0.1.0): "
        "those models were not trained, exported or benchmarked again for this page.",
        "Rows of resnet50 are kept from the results of 2026-12-01 (keras-unet-edge 0.0.9): "
        "those models were not trained, exported or benchmarked again for this page."]
    # Merged again into a later file, the kept rows still name the day they were measured.
    again = tmp_path / "again.json"
    assert int8_matrix_page.main(["--work", str(work), "--out", str(again), "--title", "CamVid",
                                  "--command", "c", "--class-names", *NAMES,
                                  "--keep-rows-from", str(out)]) == 0
    assert [note for note in json.loads(again.read_text())["notes"] if note.startswith("Rows of")] == kept


def test_an_unreadable_earlier_results_file_is_refused(work, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit) as stopped:
        int8_matrix_page.main(["--work", str(work), "--out", str(tmp_path / "x.json"), "--title", "t",
                               "--command", "c", "--keep-rows-from", str(bad)])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2 and "--keep-rows-from" in error and "bad.json" in error


def test_a_kept_row_without_a_date_takes_the_one_the_earlier_files_note_gave_it(work, tmp_path):
    # An earlier file written before rows carried their date: its own date is that of its
    # newest rows, and its note says which rows it had kept, from when.
    earlier = int8_matrix_page.build_page(work, "CamVid", "python -m ...", [], NAMES)
    older = {key: value for key, value in earlier["tables"][0]["rows"][0].items()
             if key not in ("measured", "versions")}
    earlier["tables"][0]["rows"] = [dict(older, model="resnet50"), dict(older, model="attention")]
    earlier["tables"].pop()
    earlier["date"], earlier["versions"] = "2026-12-08", "keras-unet-edge 0.1.0, keras 3.15.1"
    earlier["notes"].append("Rows of resnet50 are kept from the results of 2026-12-05 (keras-unet-edge "
                            "0.1.0, keras 3.14.0): those models were not trained, exported or "
                            "benchmarked again for this page.")
    page = int8_matrix_page.build_page(work, "CamVid", "c", [], NAMES, previous=earlier)
    dates = {row["model"]: (row["measured"], row["versions"]) for row in page["tables"][0]["rows"]}
    assert dates["resnet50"] == ("2026-12-05", "keras-unet-edge 0.1.0, keras 3.14.0")
    assert dates["attention"] == ("2026-12-08", "keras-unet-edge 0.1.0, keras 3.15.1")
