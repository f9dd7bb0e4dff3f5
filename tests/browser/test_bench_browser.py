"""`keras-unet bench --runtime browser` and `--runtime all`: rows measured in headless Chromium,
scored like every other row (IoU against the ground truth, agreement with the reference)."""

import json

import numpy as np
import pytest
from PIL import Image

from keras_unet.benchmarks import cli

pytestmark = pytest.mark.slow


def _write_pairs(folder, images, masks):
    """A labelled data folder: `images` with `masks` (0/1) as their ground truth."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for index, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image).save(folder / "images" / f"{index}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(folder / "masks" / f"{index}.png")


def test_browser_rows_are_scored_like_native_rows(browser_files, trained_unet_path, held_out_images,
                                                  tmp_path, capsys):
    from keras_unet.runtime import load_runner

    images = held_out_images[:8].astype(np.uint8)
    with load_runner(browser_files["int8_onnx"]) as runner:
        native_masks = runner.predict_masks(images)
    folder = tmp_path / "data"
    _write_pairs(folder, images, native_masks)  # ground truth = the Python int8 masks
    report_path = tmp_path / "bench.json"
    status = cli.main([str(browser_files["int8_onnx"]), "--reference", str(trained_unet_path),
                       "--data", str(folder), "--runtime", "browser", "--runs", "5", "--warmup", "1",
                       "--threads", "1", "--json", str(report_path), "--quiet"])
    assert status == 0, capsys.readouterr().err
    rows = json.loads(report_path.read_text())["rows"]
    browser = next(row for row in rows if not row["is_reference"])
    assert browser["runtime"] == "browser" and browser["runtime_version"].startswith("chromium ")
    assert "onnxruntime-web" in browser["execution_provider"]
    assert browser["runs"] == 5 and browser["latency_p50_ms"] > 0
    # The page's masks equal the Python runtime's on the same file (the truth here): IoU 1.
    assert browser["iou"] == pytest.approx(1.0)
    assert browser["agreement_iou"] is not None and browser["speedup_vs_reference"] > 0


def test_every_runtime_includes_the_browser_and_marks_one_fastest(browser_files, trained_unet_path,
                                                                  tmp_path, capsys):
    report_path = tmp_path / "all.json"
    status = cli.main([str(browser_files["int8_onnx"]), "--reference", str(trained_unet_path),
                       "--runtime", "all", "--runs", "5", "--warmup", "1", "--threads", "1",
                       "--json", str(report_path), "--quiet"])
    assert status == 0, capsys.readouterr().err
    rows = [row for row in json.loads(report_path.read_text())["rows"] if not row["is_reference"]]
    assert {"onnxruntime", "browser"} <= {row["runtime"] for row in rows}
    assert sum(bool(row["fastest_runtime"]) for row in rows) <= 1


def test_no_chromium_is_one_line_saying_how_to_install_it(browser_files, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_UNET_CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("PATH", "/nonexistent")
    status = cli.main([str(browser_files["int8_onnx"]), "--runtime", "browser", "--quiet"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 1 and len(err) == 1 and "chromium" in err[0].lower(), err
