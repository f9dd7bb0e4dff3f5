"""The latency-against-IoU plot: the Pareto front, the dodging of close points, and a figure whose
texts neither overlap nor leave the canvas even when several exports share IoU and latency."""

import itertools

import numpy as np
import pytest

from keras_unet.benchmarks.plot import dodge, latency_vs_iou_figure, pareto_front, plot_latency_vs_iou
from keras_unet.benchmarks.report import BenchmarkReport, BenchmarkRow

ENVIRONMENT = {"cpu": "Test CPU", "cpu_count": 2, "threads": 2, "date": "2026-01-01"}


def _report():
    rows = [
        BenchmarkRow(model="/m/ref.keras", format="keras", quantization="none", is_reference=True,
                     latency_min_ms=9.0, latency_p50_ms=10.0, latency_p90_ms=11.0, iou=0.8),
        BenchmarkRow(model="/m/int8.tflite", format="tflite", quantization="int8", latency_min_ms=2.0,
                     latency_p50_ms=2.5, latency_p90_ms=3.0, iou=0.78),
        BenchmarkRow(model="/m/slow.onnx", format="onnx", quantization="none", latency_p50_ms=20.0,
                     latency_p90_ms=21.0, iou=0.7, iou_drop=float("nan")),
        BenchmarkRow(model="/m/broken.tflite", format="tflite", error="ValueError: Could not open 'broken.tflite'"),
    ]
    return BenchmarkReport(environment=ENVIRONMENT, rows=rows, settings={"runs": 3})


# One model in every format: all at IoU 0.8 within a few ms, fp32.tflite and fp16.tflite identical.
CROWD = [
    ("model.keras", "keras", "none", 9.0, 10.0, 11.5, 0.8),
    ("fp32.tflite", "tflite", "none", 8.8, 9.8, 11.0, 0.8),
    ("fp16.tflite", "tflite", "fp16", 8.8, 9.8, 11.0, 0.8),
    ("int8.tflite", "tflite", "int8", 9.0, 9.6, 10.5, 0.7995),
    ("fp32.onnx", "onnx", "none", 8.5, 9.9, 12.0, 0.8),
    ("int8.onnx", "onnx", "int8", 9.1, 9.7, 10.8, 0.7998),
    ("dynamic.tflite", "tflite", "dynamic", 8.9, 10.1, 11.2, 0.8001),
]


def _crowded_report():
    rows = [BenchmarkRow(model=f"/m/{name}", format=fmt, quantization=quant, is_reference=name == "model.keras",
                         latency_min_ms=low, latency_p50_ms=p50, latency_p90_ms=p90, iou=iou)
            for name, fmt, quant, low, p50, p90, iou in CROWD]
    return BenchmarkReport(environment=ENVIRONMENT, rows=rows)


def _wide_report():
    """Latencies over four decades and a file name far longer than the others."""
    report = _report()
    report.rows += [
        BenchmarkRow(model="/m/unet_mobilenetv2_256x256_int8_full_integer_quant_calibrated_v2.tflite",
                     format="tflite", quantization="int8", latency_min_ms=0.3, latency_p50_ms=0.4,
                     latency_p90_ms=0.5, iou=0.3),
        BenchmarkRow(model="/m/big.onnx", format="onnx", quantization="none", latency_p50_ms=800.0, iou=0.81),
    ]
    return report


def _drawn_texts(figure):
    """Every non-empty text the figure draws: title, axis and tick labels, point numbers, key rows."""
    figure.canvas.draw()
    (ax,) = figure.axes
    texts = [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
    for legend in figure.legends:
        texts += legend.get_texts()
    for axis, view in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        # Tick objects are reused and some lie outside the view: only those inside are drawn.
        for tick in axis.get_major_ticks() + axis.get_minor_ticks():
            if min(view) <= tick.get_loc() <= max(view):
                texts.append(tick.label1)
    return [text for text in texts if text.get_visible() and text.get_text().strip()]


def _by_gid(figure, gid):
    (artist,) = figure.findobj(lambda artist: artist.get_gid() == gid)
    return artist


def _overlap(a, b, slack=0.5):
    """Whether two display boxes share more than `slack` pixels each way."""
    return a.x0 + slack < b.x1 and b.x0 + slack < a.x1 and a.y0 + slack < b.y1 and b.y0 + slack < a.y1


def test_pareto_front_marks_non_dominated_points():
    points = [(10.0, 0.8), (2.5, 0.78), (20.0, 0.7), (2.5, 0.6), (1.0, 0.5)]
    assert pareto_front(points) == [0, 1, 4]
    assert pareto_front([(1.0, 0.5), (1.0, 0.5)]) == [0, 1]


def test_dodge_stacks_equal_boxes_and_leaves_apart_ones_alone():
    assert dodge([(0, 0, 4, 2), (1, 0, 5, 2), (10, 0, 14, 2)], gap=1) == [0.0, 3.0, 0.0]
    # Three equal boxes: one stays, one goes up, one down, each by the least that clears.
    assert dodge([(0, 0, 4, 2)] * 3, gap=1) == [0.0, 3.0, -3.0]
    # A box already clear of the others is not moved.
    assert dodge([(0, 0, 4, 2), (0, 5, 4, 7)], gap=1) == [0.0, 0.0]


def test_dodged_boxes_never_overlap():
    rng = np.random.default_rng(0)
    for _ in range(50):
        starts = rng.uniform(0, 20, size=(12, 2))
        boxes = [(x, y, x + rng.uniform(1, 8), y + 2) for x, y in starts]
        shifts = dodge(boxes, gap=0.5)
        placed = [(x0, y0 + s, x1, y1 + s) for (x0, y0, x1, y1), s in zip(boxes, shifts)]
        for a, b in itertools.combinations(placed, 2):
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] - 0.49 and b[1] < a[3] - 0.49), (a, b)


@pytest.mark.parametrize("make_report", [_crowded_report, _report, _wide_report])
def test_no_text_overlaps_or_leaves_the_figure(make_report):
    pytest.importorskip("matplotlib")
    figure = latency_vs_iou_figure(make_report(), title="crowded")
    renderer = figure.canvas.get_renderer()
    texts = _drawn_texts(figure)
    boxes = [text.get_window_extent(renderer) for text in texts]
    for (text_a, a), (text_b, b) in itertools.combinations(zip(texts, boxes), 2):
        assert not _overlap(a, b), (text_a.get_text(), text_b.get_text())
    canvas = figure.bbox
    for text, box in zip(texts, boxes):
        assert canvas.x0 <= box.x0 and box.x1 <= canvas.x1 and canvas.y0 <= box.y0 and box.y1 <= canvas.y1, \
            text.get_text()
    shown = "\n".join(text.get_text() for text in texts)
    for row in make_report().rows:
        if row.error is None:
            assert row.name in shown


def test_crowded_points_keep_their_bars_and_numbers_apart():
    pytest.importorskip("matplotlib")
    figure = latency_vs_iou_figure(_crowded_report())
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    (ax,) = figure.axes
    frame = ax.get_window_extent(renderer)
    bars, numbers, dots = [], [], []
    for n in range(1, len(CROWD) + 1):
        bar = _by_gid(figure, f"bar-{n}")
        bars.append(bar.get_transform().transform(bar.get_xydata()))
        numbers.append(_by_gid(figure, f"number-{n}").get_window_extent(renderer))
        dot = _by_gid(figure, f"point-{n}")
        dots.append(dot.get_transform().transform(dot.get_xydata())[0])
    # fp32.tflite and fp16.tflite (2 and 3) have identical numbers: their bars lie on distinct lines,
    # at least a bar's width (2.5 points) plus a gap apart, and so does every other pair whose bars
    # share some latency range.
    bar_pixels = 2.5 * figure.dpi / 72
    assert abs(bars[1][0, 1] - bars[2][0, 1]) > 2 * bar_pixels
    for a, b in itertools.combinations(bars, 2):
        if a[0, 0] < b[1, 0] and b[0, 0] < a[1, 0]:
            assert abs(a[0, 1] - b[0, 1]) > 2 * bar_pixels
    # A point's number sits on no other point's marker, and every marker and number is inside the axes.
    marker_half = 7 * figure.dpi / 72 / 2
    for i, number in enumerate(numbers):
        assert frame.x0 <= number.x0 and number.x1 <= frame.x1 and frame.y0 <= number.y0 and number.y1 <= frame.y1
        for j, (x, y) in enumerate(dots):
            inside = number.x0 < x + marker_half and x - marker_half < number.x1
            assert j == i or not (inside and number.y0 < y + marker_half and y - marker_half < number.y1)
    for x, y in dots:
        assert frame.x0 < x < frame.x1 and frame.y0 < y < frame.y1


def test_figure_is_what_gets_saved(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_latency_vs_iou(_crowded_report(), tmp_path / "a" / "plot.png")
    assert path == str(tmp_path / "a" / "plot.png")
    from PIL import Image

    image = np.asarray(Image.open(path))
    figure = latency_vs_iou_figure(_crowded_report())
    # savefig rounds the canvas down to whole pixels.
    assert np.allclose(image.shape[:2], (figure.bbox.height, figure.bbox.width), atol=1)
    assert image.std() > 0  # not a blank canvas
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["plot.png"]  # no temporary left


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_latency_vs_iou(_report(), tmp_path / "plot.png")
    assert path is not None
    from PIL import Image

    image = np.asarray(Image.open(path))
    assert image.shape[0] > 100 and image.std() > 0  # not a blank canvas


def test_plot_without_matplotlib_is_skipped_with_a_note(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
    assert plot_latency_vs_iou(_report(), tmp_path / "plot.png") is None
    note = capsys.readouterr().out
    assert "plot.png skipped: matplotlib is not installed" in note and "keras-unet-edge[plot]" in note
    assert not (tmp_path / "plot.png").exists()


def test_plot_without_iou_is_skipped_with_a_note(tmp_path, capsys):
    report = BenchmarkReport(environment={}, rows=[BenchmarkRow(model="m.onnx", latency_p50_ms=2.0)])
    assert plot_latency_vs_iou(report, tmp_path / "plot.png") is None
    assert latency_vs_iou_figure(report) is None
    assert "no model has both a latency and an IoU" in capsys.readouterr().out
    assert not (tmp_path / "plot.png").exists()
