"""Latency against IoU, one point per model, the Pareto front marked.

A point is on the front when no other model is at least as fast *and* at least as accurate
(and strictly better in one). Matplotlib is optional (the `[plot]` extra) and imported inside
`plot_latency_vs_iou` only: without it the plot is skipped with a printed note saying why.

Example:
```python
from keras_unet.benchmarks.plot import plot_latency_vs_iou

plot_latency_vs_iou(report, "bench.png")
```
"""

import math

from keras_unet.benchmarks.report import output_path
from keras_unet.runtime.files import atomic_output

INSTALL_HINT = 'pip install "keras-unet-edge[plot]" (or pip install matplotlib)'


def pareto_front(points):
    """Indices of the points no other point dominates (lower latency, higher IoU is better).

    Args:
        points: list of `(latency, iou)` pairs.

    Returns:
        sorted list of indices on the front.

    Example:
    ```python
    pareto_front([(10, 0.8), (5, 0.7), (12, 0.75)])  # [0, 1]
    ```
    """
    front = []
    for i, (lat_i, iou_i) in enumerate(points):
        dominated = any(
            lat_j <= lat_i and iou_j >= iou_i and (lat_j < lat_i or iou_j > iou_i)
            for j, (lat_j, iou_j) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _plottable(report):
    rows = []
    for row in report.rows:
        if row.error is None and row.latency_p50_ms is not None and row.iou is not None:
            if math.isfinite(row.latency_p50_ms) and math.isfinite(row.iou):
                rows.append(row)
    return rows


def plot_latency_vs_iou(report, path, title=None):
    """Save a scatter plot of p50 latency (x, log scale) against IoU (y).

    Each point is labelled with its file name and quantization; the spread from the fastest run to
    p90 is a horizontal bar; the Pareto front is joined by a line; the reference is a star.

    Args:
        report: a `BenchmarkReport`.
        path: where to write the image (`.png`, `.svg`, `.pdf`).
        title: plot title, or None for one naming the CPU and threads.

    Returns:
        the path written, or None when matplotlib is missing or no row has both numbers
        (a note is printed then).

    Example:
    ```python
    plot_latency_vs_iou(report, "bench.png")
    ```
    """
    rows = _plottable(report)
    if not rows:
        print(f"Note: no model has both a latency and an IoU; plot {path} not written.")
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print(f"Note: plot {path} skipped: matplotlib is not installed ({INSTALL_HINT}).")
        return None

    points = [(row.latency_p50_ms, row.iou) for row in rows]
    front = pareto_front(points)
    colors = {"keras": "tab:gray", "tflite": "tab:blue", "onnx": "tab:orange"}
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    for index, row in enumerate(rows):
        color = colors.get(row.format, "tab:green")
        low, high = row.latency_p50_ms, row.latency_p90_ms or row.latency_p50_ms
        ax.plot([row.latency_min_ms or low, high], [row.iou, row.iou], color=color, alpha=0.35, lw=3)
        ax.scatter(
            row.latency_p50_ms,
            row.iou,
            s=160 if row.is_reference else 70,
            marker="*" if row.is_reference else "o",
            color=color,
            edgecolor="black" if index in front else "none",
            linewidth=1.2,
            zorder=3,
        )
        label = f"{row.name}\n{row.quantization or ''}".strip()
        ax.annotate(label, (row.latency_p50_ms, row.iou), textcoords="offset points", xytext=(6, 6), fontsize=7)
    front_points = sorted(points[i] for i in front)
    if len(front_points) > 1:
        ax.step(
            [p[0] for p in front_points],
            [p[1] for p in front_points],
            where="post",
            color="black",
            lw=1,
            ls="--",
            label="Pareto front",
        )
    for fmt, color in colors.items():
        if any(row.format == fmt for row in rows):
            ax.scatter([], [], color=color, label=fmt)
    ax.set_xscale("log")
    # Plain numbers on the log axis ("2", "10"), not "2x10^0".
    formatter = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(formatter)
    ax.xaxis.set_minor_formatter(formatter)
    ax.margins(x=0.2, y=0.15)
    ax.set_xlabel("latency p50 per batch (ms, log scale; bar: min to p90)")
    ax.set_ylabel("IoU against ground truth (up and left is better)")
    env = report.environment or {}
    ax.set_title(title or f"Speed vs quality - {env.get('cpu', '')}, threads={env.get('threads')}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.6)
    fig.tight_layout()

    try:
        # The temporary name keeps the suffix, from which matplotlib picks the image format.
        with atomic_output(output_path(path)) as temporary:
            fig.savefig(temporary)
    finally:
        plt.close(fig)
    return str(path)
