"""Benchmark results: one row per model, the environment, and their table, JSON and CSV forms.

Keys are snake_case with units (`latency_p50_ms`, `model_size_mb`, `throughput_ips`). The JSON
holds everything, including each run's latency (`latency_runs_ms`); the CSV holds the same row
fields except that per-run list (lists such as `iou_per_class` are JSON-encoded in their cell).
Files are written through a temporary file and a rename (`keras_unet.runtime.files`), their
folder created first, so an interrupted run never leaves half a report.

Example:
```python
from keras_unet.benchmarks.report import BenchmarkReport, BenchmarkRow

report = BenchmarkReport(environment={}, rows=[BenchmarkRow(model="m.onnx", format="onnx")])
print(report.format_table())
report.to_json("bench.json"); report.to_csv("bench.csv")
```
"""

import csv
import dataclasses
import io
import json
import math
import os
from pathlib import Path

from keras_unet.benchmarks.machine_load import busy_lines
from keras_unet.runtime.files import write_bytes_atomic, write_text_atomic


@dataclasses.dataclass
class BenchmarkRow:
    """The measurements of one model file. Fields that could not be measured stay None.

    `fastest_runtime`: in a run putting one file on several runtimes, True on the row of the
    fastest runtime that keeps agreement with the reference, False on that file's other rows;
    None when the file ran on one runtime (`mark_fastest_runtimes`).

    Example:
    ```python
    from keras_unet.benchmarks import BenchmarkRow

    row = BenchmarkRow(model="runs/m.tflite", format="tflite", latency_p50_ms=12.5)
    row.name   # 'm.tflite'
    ```
    """

    model: str
    name: str = None
    format: str = None
    quantization: str = None
    is_reference: bool = False
    model_size_mb: float = None
    load_time_s: float = None
    input_size: str = None
    batch_size: int = None
    threads: int = None
    warmup: int = None
    runs: int = None
    latency_mean_ms: float = None
    latency_std_ms: float = None
    latency_min_ms: float = None
    latency_p50_ms: float = None
    latency_p90_ms: float = None
    latency_p99_ms: float = None
    latency_max_ms: float = None
    throughput_ips: float = None
    speedup_vs_reference: float = None
    bare_latency_p50_ms: float = None
    harness_overhead: float = None
    rss_before_mb: float = None
    peak_rss_mb: float = None
    model_rss_delta_mb: float = None
    memory_method: str = None
    num_classes: int = None
    quality_images: int = None
    iou: float = None
    dice: float = None
    mean_iou: float = None
    pixel_accuracy: float = None
    iou_per_class: list = None
    dice_per_class: list = None
    iou_drop: float = None
    pixel_agreement: float = None
    agreement_iou: float = None
    agreement_mean_iou: float = None
    agreement_iou_per_class: list = None
    runtime: str = None
    runtime_version: str = None
    execution_provider: str = None
    fastest_runtime: bool = None
    other_load_cores: float = None
    error: str = None
    latency_runs_ms: list = None

    def __post_init__(self):
        if self.name is None:
            self.name = os.path.basename(str(self.model))

    @property
    def ok(self):
        return self.error is None

    def to_dict(self):
        return {key: _clean(value) for key, value in dataclasses.asdict(self).items()}


def mark_fastest_runtimes(rows, agreement_target) -> dict:
    """Mark, per model file measured on several runtimes, the fastest one that keeps agreement.

    A row keeps agreement when its `agreement_iou` with the reference is at least
    `agreement_target`; a row without one (no labelled data or no reference) or with an
    error cannot be marked. Every row of such a file gets `fastest_runtime` True (the one
    with the lowest `latency_p50_ms` among those keeping agreement) or False; files measured
    on one runtime keep None.

    Args:
        rows: the `BenchmarkRow`s of one run.
        agreement_target: the lowest `agreement_iou` a marked row may have.

    Returns:
        dict model path -> its marked row, or None when no row of that file keeps agreement.

    Example:
    ```python
    mark_fastest_runtimes(report.rows, 0.98)  # {"unet.onnx": <row on openvino>}
    ```
    """
    groups = {}
    for row in rows:
        groups.setdefault(os.path.abspath(row.model), []).append(row)
    marked = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        keeping = [row for row in group if row.error is None and row.latency_p50_ms is not None
                   and row.agreement_iou is not None and row.agreement_iou >= agreement_target]
        best = min(keeping, key=lambda row: row.latency_p50_ms, default=None)
        for row in group:
            row.fastest_runtime = row is best
        marked[group[0].model] = best
    return marked


def _runtime_lines(rows, agreement_target):
    """One line per file measured on several runtimes: each runtime's p50 and its ratio."""
    groups = {}
    for row in rows:
        if row.fastest_runtime is not None:
            groups.setdefault(os.path.abspath(row.model), []).append(row)
    lines = []
    for group in groups.values():
        best = next((row for row in group if row.fastest_runtime), None)
        timed = [row for row in group if row.error is None and row.latency_p50_ms]
        base = best or min(timed, key=lambda row: row.latency_p50_ms, default=None)
        cells = []
        for row in sorted(timed, key=lambda row: row.latency_p50_ms):
            ratio = row.latency_p50_ms / base.latency_p50_ms
            cells.append(f"{row.runtime or row.format} {_num(row.latency_p50_ms)} ms ({ratio:.2f}x)")
        target = "" if agreement_target is None else f" >= {agreement_target:g}"
        if best is not None:
            verdict = f"fastest keeping agreement IoU{target}: {best.runtime or best.format}"
        elif any(row.agreement_iou is not None for row in group):
            verdict = f"none keeps agreement IoU{target}: none marked"
        else:
            verdict = "agreement not measured (needs --data and a reference): none marked"
        lines.append(f"runtimes of {group[0].name}: {', '.join(cells) or 'none ran'}; {verdict}")
    return lines


CSV_FIELDS = [f.name for f in dataclasses.fields(BenchmarkRow) if f.name != "latency_runs_ms"]


def _clean(value):
    # JSON has no NaN/inf; None says "not measured" just as well.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def output_path(path):
    """`path` as a `Path` whose folder exists (created if needed): where a report file goes.

    Example:
    ```python
    write_text_atomic(output_path("results/bench.json"), text)
    ```
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _fmt(value, spec, empty="-"):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return empty
    return format(value, spec)


def _num(value):
    # Two decimals for ordinary values, three significant digits for tiny ones (0.006 ms).
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, ".2f") if abs(value) >= 1 or value == 0 else format(value, ".3g")


@dataclasses.dataclass
class BenchmarkReport:
    """All rows of one benchmark run, with the environment and the settings used.

    Args:
        environment: dict from `keras_unet.benchmarks.environment.collect_environment`.
        rows: list of `BenchmarkRow`.
        settings: dict of the options (warmup, runs, seconds, threads, batch size, data).

    Example:
    ```python
    import keras_unet
    from keras_unet.benchmarks import run_benchmark
    from keras_unet.datasets import nuclei_path

    keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2).save("unet.keras")
    report = run_benchmark(["unet.keras"], data=nuclei_path(), max_images=8, runs=5,
                           progress=False)
    report.print_table()
    report.to_json("bench.json")
    ```
    """

    environment: dict
    rows: list
    settings: dict = dataclasses.field(default_factory=dict)

    @property
    def reference(self):
        return next((row for row in self.rows if row.is_reference), None)

    @property
    def failed(self):
        """The rows of the models that could not be loaded or run."""
        return [row for row in self.rows if row.error is not None]

    def to_dict(self):
        return {
            "environment": self.environment,
            "settings": self.settings,
            "rows": [row.to_dict() for row in self.rows],
        }

    @classmethod
    def from_dict(cls, data):
        rows = [BenchmarkRow(**row) for row in data.get("rows", [])]
        return cls(environment=data.get("environment", {}), rows=rows, settings=data.get("settings", {}))

    def to_json(self, path):
        """Write the whole report as JSON (atomically); returns the path."""
        write_text_atomic(output_path(path), json.dumps(self.to_dict(), indent=2))
        return os.fspath(path)

    def to_csv(self, path):
        """Write one CSV line per row with `CSV_FIELDS` (atomically); returns the path."""
        stream = io.StringIO(newline="")
        writer = csv.DictWriter(stream, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in self.rows:
            values = row.to_dict()
            writer.writerow(
                {key: json.dumps(values[key]) if isinstance(values[key], list) else values[key] for key in CSV_FIELDS}
            )
        # Bytes, so the csv module's line endings reach the file unchanged on every OS.
        write_bytes_atomic(output_path(path), stream.getvalue().encode("utf-8"))
        return os.fspath(path)

    def format_table(self):
        """The report as a fixed-width text table, one line per model, errors below.

        Example:
        ```python
        print(report.format_table())
        ```
        """
        headers = ["model", "format", "quant", "size MB", "p50 ms", "p90 ms", "p99 ms",
                   "speed-up", "IoU", "IoU drop", "agree IoU", "agree px", "agree mIoU"]
        lines = []
        for row in self.rows:
            name = row.name + (" (ref)" if row.is_reference else "") + (" (fastest)" if row.fastest_runtime else "")
            if row.error is not None:
                cells = [name, row.format or "?", row.quantization or "-", _num(row.model_size_mb)]
                cells += ["error"] + [""] * (len(headers) - 5)
            else:
                cells = [
                    name,
                    row.format or "?",
                    row.quantization or "-",
                    _num(row.model_size_mb),
                    _num(row.latency_p50_ms),
                    _num(row.latency_p90_ms),
                    _num(row.latency_p99_ms),
                    _fmt(row.speedup_vs_reference, ".2f") + ("x" if row.speedup_vs_reference else ""),
                    _fmt(row.iou, ".4f"),
                    _fmt(row.iou_drop, "+.4f"),
                    _fmt(row.agreement_iou, ".4f"),
                    _fmt(row.pixel_agreement, ".4f"),
                    _fmt(row.agreement_mean_iou, ".4f"),
                ]
            lines.append(cells)
        widths = [max([len(h)] + [len(c[i]) for c in lines]) for i, h in enumerate(headers)]

        def join(cells):
            return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        out = [join(headers), join(["-" * w for w in widths])] + [join(c) for c in lines]
        for row in self.rows:
            if row.error is not None:
                out.append(f"error in {row.name}: {row.error}")
        out.extend(_runtime_lines(self.rows, (self.settings or {}).get("agreement_target")))
        out.extend(busy_lines(self.rows))
        overheads = [r for r in self.rows if r.harness_overhead is not None]
        for row in overheads:
            out.append(
                f"harness overhead {row.name}: p50 {row.latency_p50_ms:.3f} ms vs bare invoke "
                f"{row.bare_latency_p50_ms:.3f} ms = {row.harness_overhead:.3f}x"
            )
        env = self.environment or {}
        if env:
            runtimes = sorted({f"{r.runtime} {r.runtime_version}" for r in self.rows
                               if r.runtime and r.runtime_version})  # an error row has none
            parts = [f"{env.get('cpu')} ({env.get('cpu_count')} cores)", f"threads={env.get('threads')}",
                     f"gpu={env.get('gpu') or 'none'}"] + runtimes + [str(env.get("date"))]
            out.append(", ".join(parts))
        return "\n".join(out)

    def print_table(self):
        print(self.format_table())
