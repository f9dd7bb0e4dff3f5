"""Latency against IoU, one point per model, the Pareto front marked.

A point is on the front when no other model is at least as fast *and* at least as accurate
(and strictly better in one). Matplotlib is optional (the `[plot]` extra) and imported inside
`latency_vs_iou_figure` only: without it the plot is skipped with a printed note saying why.

Exports of one model often land at (nearly) the same IoU and latency, so names written next to
the points would pile up. Each point therefore carries a number only, and a key under the axes
names every model with its exact numbers; points whose marker, number or min-to-p90 bar would
touch are nudged apart vertically (`dodge`) by a few points, never hidden.

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

COLORS = {"keras": "tab:gray", "tflite": "tab:blue", "onnx": "tab:orange"}
MARKERS = {"none": "o", "fp16": "s", "dynamic": "^", "int8": "D"}
MARKER_SIZE = 7  # points; the reference star is drawn larger
STAR_SIZE = 13
KEY_FONT_SIZE = 7
NUMBER_FONT_SIZE = 7
BAR_WIDTH = 2.5  # points
CAP_SIZE = 6  # points, the ticks closing a bar
GAP = 2.0  # points kept free between two points' boxes


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


def dodge(boxes, gap=0.0):
    """Vertical shifts that keep boxes from touching, each as small as possible.

    Boxes are placed in the order given: the first stays where it is, each later one takes the
    smallest shift (up before down on a tie) at which it clears every box already placed by `gap`.

    Args:
        boxes: list of `(x0, y0, x1, y1)`, in any one unit (the plot uses display pixels).
        gap: free space to keep between two boxes, in the same unit.

    Returns:
        list of shifts, one per box, to add to its y.

    Example:
    ```python
    dodge([(0, 0, 4, 2), (1, 0, 5, 2), (10, 0, 14, 2)], gap=1)  # [0.0, 3.0, 0.0]
    ```
    """
    placed = []
    shifts = []
    for x0, y0, x1, y1 in boxes:
        # Only boxes that share some x range can collide; the best shift either leaves the box
        # where it is or sets it just above or just below one of them.
        columns = [(b0, b1) for a0, b0, a1, b1 in placed if x0 < a1 + gap and a0 < x1 + gap]
        candidates = [0.0]
        for b0, b1 in columns:
            candidates += [b1 + gap - y0, b0 - gap - y1]
        candidates.sort(key=lambda shift: (abs(shift), -shift))
        shift = next(
            s for s in candidates
            if all(y1 + s <= b0 - gap + 1e-9 or y0 + s >= b1 + gap - 1e-9 for b0, b1 in columns)
        )
        placed.append((x0, y0 + shift, x1, y1 + shift))
        shifts.append(shift)
    return shifts


def _plottable(report):
    rows = []
    for row in report.rows:
        if row.error is None and row.latency_p50_ms is not None and row.iou is not None:
            # A log axis cannot show a latency of 0 (a broken timing, not a fast model).
            if math.isfinite(row.latency_p50_ms) and row.latency_p50_ms > 0 and math.isfinite(row.iou):
                rows.append(row)
    return rows


def _finite(value, fallback):
    return value if value is not None and math.isfinite(value) and value > 0 else fallback


def _spread(row):
    """(min, p90) latency of a row, each falling back to p50 when missing."""
    return _finite(row.latency_min_ms, row.latency_p50_ms), _finite(row.latency_p90_ms, row.latency_p50_ms)


def _key_lines(rows, front):
    """The key's fixed-width lines: a header, one per model (number, name, quantization, p50, p90,
    IoU, on the front), and the line explaining the front and the nudging."""
    names = [f"{row.name}{' (ref)' if row.is_reference else ''}" for row in rows]
    quants = [row.quantization or "-" for row in rows]
    name_w = max(len("model"), *map(len, names))
    quant_w = max(len("quant"), *map(len, quants))
    lines = [f"{'#':>2}  {'model':<{name_w}}  {'quant':<{quant_w}}  {'p50 ms':>8}  {'p90 ms':>8}  {'IoU':>6}  front"]
    for index, (row, name, quant) in enumerate(zip(rows, names, quants)):
        p90 = f"{row.latency_p90_ms:.4g}" if _finite(row.latency_p90_ms, None) else "-"
        lines.append(
            f"{index + 1:>2}  {name:<{name_w}}  {quant:<{quant_w}}  {row.latency_p50_ms:>8.4g}  {p90:>8}  "
            f"{row.iou:>6.4f}  {'yes' if index in front else ''}".rstrip()
        )
    lines.append("Pareto front (black edge: on it); points nudged apart vertically when close")
    return lines


def _add_key(figure, labels, dots):
    """The key under the axes: a legend whose entries are the rows of `_key_lines`.

    The header gets an empty handle so that its columns line up with the rows'; each row's handle
    repeats its point's marker, the last line's the front's dashed line.
    """
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="none")]
    for dot in dots:
        handles.append(Line2D([], [], ls="none", marker=dot.get_marker(), markersize=min(dot.get_markersize(), 9),
                              color=dot.get_color(), markeredgecolor=dot.get_markeredgecolor()))
    handles.append(Line2D([], [], color="black", lw=1, ls="--"))
    figure.legend(handles, labels, loc="outside lower center", prop={"family": "monospace", "size": KEY_FONT_SIZE},
                  frameon=False, handlelength=1.5, borderaxespad=0.2, labelspacing=0.35)


def _limits(low, high, log, pad):
    """Axis limits around [low, high] with `pad` of the span (a minimum one when the span is 0)."""
    if log:
        low, high = math.log10(low), math.log10(high)
    margin = max((high - low) * pad, 0.15 if log else 0.02)
    low, high = low - margin, high + margin
    return (10**low, 10**high) if log else (low, high)


def latency_vs_iou_figure(report, title=None):
    """Build the latency-against-IoU figure of `plot_latency_vs_iou` without saving it.

    Each point is a numbered marker (colour: format, shape: quantization, star: the reference,
    black edge: on the Pareto front) with its min-to-p90 bar; the key under the axes names each
    number with its model, quantization, p50, p90 and IoU. Points whose marker, number or bar
    would touch are shifted apart vertically by a few points (see `dodge`), so none is hidden;
    the key keeps the exact numbers.

    Args:
        report: a `BenchmarkReport`.
        title: plot title, or None for one naming the CPU and threads.

    Returns:
        a `matplotlib.figure.Figure` on an Agg canvas, or None when no row has both a latency
        and an IoU. Raises ImportError when matplotlib is missing.

    Example:
    ```python
    figure = latency_vs_iou_figure(report)
    figure.savefig("bench.png")
    ```
    """
    rows = _plottable(report)
    if not rows:
        return None
    # The Figure API on an explicit Agg canvas: no pyplot state, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter

    points = [(row.latency_p50_ms, row.iou) for row in rows]
    front = pareto_front(points)
    labels = _key_lines(rows, front)
    # Monospace key: its width is known in advance (0.6 em per character), so the figure can be
    # made wide enough for long file names instead of cutting them.
    key_width_in = (max(map(len, labels)) * 0.6 * KEY_FONT_SIZE + 40) / 72
    key_height_in = len(labels) * KEY_FONT_SIZE * 1.35 / 72
    # Room for the tallest possible stack of dodged points, so a crowd still fits the axes.
    stack_in = len(rows) * (STAR_SIZE + GAP) / 72
    figure = Figure(
        figsize=(max(7.5, key_width_in + 0.4), max(4.2, stack_in + 1.5) + key_height_in),
        dpi=120,
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()

    artists = []  # per point: marker, bar, number, marker size
    for index, row in enumerate(rows):
        color = COLORS.get(row.format, "tab:green")
        marker = "*" if row.is_reference else MARKERS.get(row.quantization, "v")
        size = STAR_SIZE if row.is_reference else MARKER_SIZE
        low, high = _spread(row)
        (bar,) = ax.plot([low, high], [row.iou, row.iou], color=color, alpha=0.45, lw=BAR_WIDTH,
                         marker="|", markersize=CAP_SIZE, solid_capstyle="butt", zorder=2,
                         gid=f"bar-{index + 1}")
        (dot,) = ax.plot([row.latency_p50_ms], [row.iou], ls="none", marker=marker, markersize=size, color=color,
                         markeredgecolor="black" if index in front else "white", markeredgewidth=1.0, zorder=4,
                         gid=f"point-{index + 1}")
        number = ax.text(row.latency_p50_ms, row.iou, str(index + 1), fontsize=NUMBER_FONT_SIZE,
                         fontweight="bold", ha="left", va="bottom", zorder=5,
                         gid=f"number-{index + 1}")
        for artist in (bar, dot, number):
            # Placed by `_place_points` after the layout; they must not move the layout themselves.
            artist.set_in_layout(False)
        artists.append((dot, bar, number, size))
    front_points = sorted(points[i] for i in front)
    if len(front_points) > 1:
        ax.step([p[0] for p in front_points], [p[1] for p in front_points], where="post",
                color="black", lw=1, ls="--", zorder=1)

    ax.set_xscale("log")
    # Plain numbers ("2", "10") on the log axis; LogFormatter also thins minor labels when the
    # axis spans decades, where labelling every minor tick made them run into each other.
    ax.xaxis.set_major_formatter(LogFormatter())
    ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.5)))
    spreads = [_spread(row) for row in rows]
    ax.set_xlim(*_limits(min(s[0] for s in spreads), max(s[1] for s in spreads), log=True, pad=0.12))
    ax.set_ylim(*_limits(min(p[1] for p in points), max(p[1] for p in points), log=False, pad=0.12))
    ax.set_xlabel("latency p50 per batch (ms, log scale; bar: min to p90)")
    ax.set_ylabel("IoU against ground truth (up and left is better)")
    env = report.environment or {}
    ax.set_title(title or f"Speed vs quality - {env.get('cpu', '')}, threads={env.get('threads')}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)

    _add_key(figure, labels, [dot for dot, _, _, _ in artists])
    _place_points(figure, ax, rows, front, artists)
    return figure


def _place_points(figure, ax, rows, front, artists):
    """Shift close points apart and widen the limits until every point fits inside the axes.

    Works in display pixels, so it runs the layout first; the shifts become offset transforms in
    inches, which keeps them right at any savefig dpi.
    """
    from matplotlib.transforms import ScaledTranslation

    renderer = figure.canvas.get_renderer()
    # The front stays exactly on its line; the others move out of its way.
    order = sorted(range(len(rows)), key=lambda i: (i not in front, rows[i].latency_p50_ms, i))
    for attempt in range(5):
        figure.draw_without_rendering()  # runs the constrained layout and sets the transforms
        boxes = [_point_box(figure, ax, row, *artists[i][2:], renderer) for i, row in enumerate(rows)]
        shifts = dict(zip(order, dodge([boxes[i] for i in order], gap=GAP * figure.dpi / 72)))
        frame = ax.get_window_extent(renderer)
        over_top = max(box[3] + shifts[i] for i, box in enumerate(boxes)) - frame.y1
        over_bottom = frame.y0 - min(box[1] + shifts[i] for i, box in enumerate(boxes))
        over_right = max(box[2] for box in boxes) - frame.x1
        if max(over_top, over_bottom, over_right) <= 0 or attempt == 4:
            break
        # Widen the limits by what stuck out, and a little more: widening shrinks the scale.
        low, high = ax.get_ylim()
        per_pixel = (high - low) / frame.height * 1.3
        ax.set_ylim(low - max(over_bottom, 0) * per_pixel, high + max(over_top, 0) * per_pixel)
        if over_right > 0:
            left, right = ax.get_xlim()
            ax.set_xlim(left, right * (right / left) ** (over_right / frame.width * 1.3))

    for i, (dot, bar, number, size) in enumerate(artists):
        shift = ScaledTranslation(0, shifts[i] / figure.dpi, figure.dpi_scale_trans)
        dot.set_transform(ax.transData + shift)
        bar.set_transform(ax.transData + shift)
        dx, dy = _number_offset(size)
        number.set_transform(ax.transData + ScaledTranslation(dx / 72, dy / 72 + shifts[i] / figure.dpi,
                                                              figure.dpi_scale_trans))
    # Freeze the layout just computed, so what is saved is exactly what the shifts were made for.
    figure.set_layout_engine("none")


def _number_offset(size):
    """(dx, dy) in points from a marker of `size` to its number: right of it, just above the bar."""
    return size / 2 + 1, BAR_WIDTH / 2 + 1


def _point_box(figure, ax, row, number, size, renderer):
    """(x0, y0, x1, y1) in pixels that a point's marker, bar with its caps, and number take."""
    scale = figure.dpi / 72  # pixels per point
    x, y = ax.transData.transform((row.latency_p50_ms, row.iou))
    low, high = (ax.transData.transform((value, row.iou))[0] for value in _spread(row))
    text = number.get_window_extent(renderer)  # only its size is used: it is not placed yet
    radius, cap = size / 2 * scale, CAP_SIZE / 2 * scale
    dx, dy = (value * scale for value in _number_offset(size))
    return (min(low - cap, x - radius), y - max(radius, cap),
            max(high + cap, x + dx + text.width), y + max(radius, cap, dy + text.height))


def plot_latency_vs_iou(report, path, title=None):
    """Save a scatter plot of p50 latency (x, log scale) against IoU (y).

    The figure is `latency_vs_iou_figure`: numbered points with min-to-p90 bars, the Pareto
    front joined by a line, the reference as a star, and a key naming each number's model.

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
    if not _plottable(report):
        print(f"Note: no model has both a latency and an IoU; plot {path} not written.")
        return None
    try:
        import matplotlib  # noqa: F401 (only to say why the plot is skipped)
    except ImportError:
        print(f"Note: plot {path} skipped: matplotlib is not installed ({INSTALL_HINT}).")
        return None
    figure = latency_vs_iou_figure(report, title)
    # The temporary name keeps the suffix, from which matplotlib picks the image format.
    with atomic_output(output_path(path)) as temporary:
        figure.savefig(temporary)
    return str(path)
