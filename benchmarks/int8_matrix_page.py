"""A results file (`benchmarks/results/*.json`, rendered by `results_pages`) from an int8
matrix's work folder, so no figure of the page is typed by hand.

Reads, for every model folder of the work folder that holds a bench.json: the benchmark's rows
(`keras-unet bench --json`), the export reports (what repair kept in float) and the training
run's config.json (epochs). Writes one table of the matrix's rows (`int8_matrix.table_rows`)
with their verdict against the targets, and for a multi-class matrix one table of the
agreement IoU per class (which classes int8 loses). Machine, versions and date come from the
benchmarks' recorded environment.

`--keep-rows-from` merges an earlier results file of the same matrix: the rows of the models
this work folder holds no bench.json for are kept from it (judged again against today's
targets, and named in a note with the date and versions they were measured with), so one model
can be trained, exported and benchmarked again without redoing the others. Each row carries
its own `measured` date and `versions`, so a row kept through several merges keeps the date
it was measured on, not the date of the file it was last merged from.

Example:
```
python -m keras_unet.benchmarks.int8_matrix_page --work runs/int8_camvid \\
    --out benchmarks/results/int8_matrix_camvid.json --title "int8 on every encoder: CamVid" \\
    --command "python -m keras_unet.benchmarks.int8_matrix ..." --note "10 epochs per model"
```
"""

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Optional

from keras_unet.benchmarks.int8_matrix import (MODELS, MODES, failed_targets, mode_of, table_rows,
                                               targets_of)

FORMATS = {".tflite": "TFLite (LiteRT)", ".onnx": "ONNX Runtime"}
MODE_LABELS = {"int8": "", "int16x8": " int16x8", "integer_only": " int8 integer-only"}
EPOCHS_NOTE = "Epochs trained: "
# The note `_kept_notes` writes, read back by `_previous_provenance`.
KEPT_NOTE = re.compile(r"Rows of (?P<models>.+?) are kept from the results of (?P<date>[0-9-]+) "
                       r"\((?P<versions>.*)\): those models")


def runtime_label(file) -> str:
    """`TFLite (LiteRT)`, `ONNX Runtime int16x8`, ...: the runtime and, past int8, the mode."""
    return FORMATS[Path(file).suffix] + MODE_LABELS[mode_of(file)]
MAIN_COLUMNS = [
    {"key": "model", "label": "model"},
    {"key": "runtime", "label": "runtime"},
    {"key": "agreement_iou", "label": "agreement", "format": ".3f"},
    {"key": "pixel_agreement", "label": "pixel agreement", "format": ".3f"},
    {"key": "agreement_mean_iou", "label": "agreement mIoU", "format": ".3f"},
    {"key": "reference_iou", "label": "Keras IoU", "format": ".3f"},
    {"key": "iou_drop", "label": "IoU drop", "format": ".3f"},
    {"key": "p50_ms", "label": "p50 ms", "format": ".1f"},
    {"key": "p50_ratio", "label": "p50 vs Keras", "format": ".2f"},
    {"key": "vs_fp32_tflite", "label": "speed-up vs fp32 TFLite", "format": ".2f", "suffix": "x"},
    {"key": "vs_int8", "label": "p50 vs int8", "format": ".2f", "suffix": "x"},
    {"key": "float_ops", "label": "kept float", "format": "d"},
    {"key": "int16_ops", "label": "kept int16", "format": "d"},
    {"key": "calibration", "label": "calibration"},
    {"key": "verdict", "label": "targets"},
]


def _package_version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keras-unet-edge")
    except PackageNotFoundError:
        return "unknown"


def _read_json(path):
    return json.loads(Path(path).read_text()) if Path(path).exists() else None


def model_results(work) -> list:
    """`(name, bench report, rows, epochs)` of every model of `work` with a bench.json, in
    `MODELS` order."""
    results = []
    for name in MODELS:
        folder = Path(work) / name
        bench = _read_json(folder / "bench.json")
        if bench is None:
            continue
        files = {Path(row["model"]).name for row in bench["rows"]}
        modes = [mode for mode, names in MODES.items() if files & set(names)] or ["int8"]
        exported = {file: {"report": _read_json(folder / f"{file}.report.json")}
                    for mode in modes for file in MODES[mode]}
        config = _read_json(folder / "run" / "config.json") or {}
        results.append((name, bench, table_rows(name, bench["rows"], exported, modes),
                        config.get("epochs_completed")))
    return results


def page_rows(results) -> list:
    """The main table's rows: each int8 file's figures, its p50, the Keras IoU and the verdict
    (`met`, or `missed:` and the targets missed)."""
    rows = []
    for name, bench, matrix_rows, _ in results:
        by_file = {Path(row["model"]).name: row for row in bench["rows"]}
        reference = next((row for row in bench["rows"] if row.get("is_reference")), {})
        environment = bench.get("environment", {})
        for row in matrix_rows:
            measured = by_file.get(row["file"], {})
            rows.append(dict(row, runtime=runtime_label(row["file"]), reference_iou=reference.get("iou"),
                             p50_ms=measured.get("latency_p50_ms"), float_ops=len(row.get("kept_float") or []),
                             int16_ops=len(row.get("kept_int16") or []), verdict=_verdict(row),
                             measured=str(environment.get("date", ""))[:10],
                             versions=_versions_line(environment.get("versions", {}))))
    return rows


def _verdict(row):
    if row.get("error"):
        return "error: " + row["error"]
    failed = failed_targets(row)
    return "missed: " + ", ".join(failed) if failed else "met"


def class_table(results, class_names) -> dict:
    """The agreement IoU of every class, one row per int8 file (multi-class matrices)."""
    columns = [{"key": "model", "label": "model"}, {"key": "runtime", "label": "runtime"}]
    columns += [{"key": f"class_{index}", "label": name, "format": ".2f"} for index, name in enumerate(class_names)]
    rows = []
    for name, _, matrix_rows, _ in results:
        for row in matrix_rows:
            if row.get("agreement_iou_per_class"):
                cells = {f"class_{index}": value for index, value in enumerate(row["agreement_iou_per_class"])}
                rows.append(dict(cells, model=name, runtime=runtime_label(row["file"])))
    return {"caption": "Agreement IoU per class (int8 masks against Keras', validation images)",
            "columns": columns, "rows": rows}


def busy_notes(results) -> list:
    """One note naming the files timed while other processes kept `BUSY_CORES` cores or more
    busy (`machine_load`): their p50 ratios are the machine's, not the file's."""
    from keras_unet.benchmarks.machine_load import BUSY_CORES

    busy = [f"{name} {Path(row['model']).name} ({row['other_load_cores']:.1f})"
            for name, bench, _, _ in results for row in bench["rows"]
            if (row.get("other_load_cores") or 0) >= BUSY_CORES]
    if not busy:
        return []
    return [f"Timed while other processes kept {BUSY_CORES:g} cores or more busy (cores in brackets), "
            f"so their latencies are not comparable: {', '.join(busy)}."]


def build_page(work, title, command, notes=(), class_names=None, previous=None) -> dict:
    """The results file of the matrix in `work` (see the module docstring).

    Args:
        work: the matrix's work folder.
        title: the page's title.
        command: the command that ran the matrix.
        notes: extra Markdown lines for the page's notes.
        class_names: names of the classes of a multi-class matrix (default: indices).
        previous: an earlier results file of this matrix (a dict, as `build_page` returns
            it): its rows of the models `work` has not benchmarked are kept.

    Raises:
        ValueError: no model of `work` holds a bench.json.
    """
    results = model_results(work)
    if not results:
        raise ValueError(f"--work {work!r}: expected model folders with a bench.json, found none")
    environment = results[0][1].get("environment", {})
    rows = page_rows(results)
    epochs = {name: epochs for name, _, _, epochs in results}
    benchmarked = set(epochs)
    kept_models: list = []
    if previous is not None:
        rows, kept_models = _with_kept_rows(rows, previous["tables"][0]["rows"], benchmarked,
                                            previous=previous)
        epochs = {**_previous_epochs(previous), **epochs}
    measured = [row for row in rows if not row.get("error")]
    targets = targets_of(measured[0] if measured else {})
    versions = environment.get("versions", {})
    bench_rows = [row for _, bench, _, _ in results for row in bench["rows"]]
    num_classes = max((row.get("num_classes") or 1 for row in bench_rows), default=1)
    page = {
        "title": title,
        "machine": f"{environment.get('cpu')} ({environment.get('cpu_count')} cores), "
                   f"GPU: {environment.get('gpu') or 'none'}, keras-unet bench --threads {environment.get('threads')}",
        "versions": _versions_line(versions),
        "date": str(environment.get("date", ""))[:10],
        "command": command,
        "source": f"Generated by `python -m keras_unet.benchmarks.int8_matrix_page` from the bench.json, "
                  f"export reports and training runs of {len(results)} model folder(s).",
        "targets": targets,
        "tables": [{"caption": "int8 against Keras on the held-out images", "columns": MAIN_COLUMNS, "rows": rows}],
        "notes": [
            "Targets: " + ", ".join(f"{key} {'>=' if key.endswith(('agreement', 'agreement_iou')) else '<='} {value:g}"
                                    for key, value in targets.items()) + ".",
            EPOCHS_NOTE + ", ".join(f"{name} {epochs[name]}" for name in _in_matrix_order(epochs))
            + ".",
            *busy_notes(results),
            *_kept_notes(rows, kept_models),
            *notes,
        ],
    }
    if num_classes > 1:
        names = class_names or [str(index) for index in range(num_classes)]
        table = class_table(results, names)
        if previous is not None and len(previous["tables"]) > 1:
            table["rows"], _ = _with_kept_rows(table["rows"], previous["tables"][1]["rows"], benchmarked,
                                               judge=False)
        page["tables"].append(table)
    return page


def _versions_line(versions: dict) -> str:
    """`"keras-unet-edge 0.1.0, onnxruntime 1.32.0, ..."`: this package and the recorded ones."""
    return ", ".join([f"keras-unet-edge {_package_version()}"]
                     + [f"{name} {version}" for name, version in versions.items() if version])


def _matrix_position(name) -> int:
    """Where a model stands in `MODELS` (a name it does not list goes last)."""
    return list(MODELS).index(name) if name in MODELS else len(MODELS)


def _in_matrix_order(names) -> list:
    return sorted(names, key=_matrix_position)


def _with_kept_rows(rows: list, previous_rows: list, benchmarked: set, judge: bool = True,
                    previous: Optional[dict] = None) -> tuple:
    """`rows` with the rows of `previous_rows` whose model is not in `benchmarked`, in `MODELS`
    order (each model's rows in their own order); `(rows, kept models)`. Kept rows of the main
    table get their verdict again against today's targets (`judge`). A kept row without its
    own `measured` date and `versions` (written before rows carried them) gets those the
    `previous` file's notes give its model (`_previous_provenance`), else the file's own."""
    origin = {"measured": (previous or {}).get("date"), "versions": (previous or {}).get("versions")}
    noted = _previous_provenance(previous or {})
    kept = []
    for row in previous_rows:
        if row["model"] in benchmarked:
            continue
        row = dict(row, verdict=_verdict(row)) if judge else dict(row)
        if previous is not None:
            known = noted.get(row["model"], origin)
            row.update({key: value for key, value in known.items() if not row.get(key)})
        kept.append(row)
    merged = sorted(rows + kept, key=lambda row: _matrix_position(row["model"]))  # stable
    return merged, _in_matrix_order({row["model"] for row in kept})


def _previous_epochs(page: dict) -> dict:
    """`{model: epochs}` from an earlier results file's epochs note (as `build_page` writes it)."""
    for note in page.get("notes", []):
        if note.startswith(EPOCHS_NOTE):
            pairs = (item.rsplit(" ", 1) for item in note[len(EPOCHS_NOTE):].rstrip(".").split(", "))
            return {name: None if epochs == "None" else int(epochs) for name, epochs in pairs}
    return {}


def _previous_provenance(page: dict) -> dict:
    """`{model: {"measured", "versions"}}` from an earlier results file's notes on kept rows (as
    `_kept_notes` writes them): what a file written before rows carried their date knew."""
    found = {}
    for note in page.get("notes", []):
        match = KEPT_NOTE.match(note)
        if match:
            for name in match["models"].split(", "):
                found[name] = {"measured": match["date"], "versions": match["versions"]}
    return found


def _kept_notes(rows: list, kept_models: list) -> list:
    """One note per date and versions the kept models' rows were measured with."""
    groups: dict = {}
    for name in kept_models:
        row = next(row for row in rows if row["model"] == name)
        groups.setdefault((row.get("measured"), row.get("versions")), []).append(name)
    return [f"Rows of {', '.join(names)} are kept from the results of {date} ({versions}): those "
            "models were not trained, exported or benchmarked again for this page."
            for (date, versions), names in groups.items()]


def main(argv=None) -> int:
    """`python -m keras_unet.benchmarks.int8_matrix_page`: write the results file of a matrix."""
    parser = argparse.ArgumentParser(prog="python -m keras_unet.benchmarks.int8_matrix_page",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, metavar="DIR", help="the matrix's work folder")
    parser.add_argument("--out", required=True, metavar="FILE.json", help="results file to write")
    parser.add_argument("--title", required=True)
    parser.add_argument("--command", required=True, help="the command that ran the matrix")
    parser.add_argument("--summary", default="", help="a Markdown paragraph describing the setup")
    parser.add_argument("--note", action="append", default=[], help="a Markdown line for the notes")
    parser.add_argument("--class-names", nargs="+", metavar="NAME")
    parser.add_argument("--keep-rows-from", metavar="FILE.json",
                        help="an earlier results file of this matrix: keep its rows of the models "
                             "this work folder has not benchmarked")
    args = parser.parse_args(argv)
    previous = None
    if args.keep_rows_from:
        try:
            previous = _read_json(args.keep_rows_from)
        except (OSError, ValueError):
            previous = None
        if not isinstance(previous, dict) or not previous.get("tables"):
            parser.error(f"--keep-rows-from {args.keep_rows_from!r}: expected a results file "
                         "written by this command, with a table of rows")
    try:
        page = build_page(args.work, args.title, args.command, args.note, args.class_names, previous)
    except ValueError as error:
        parser.error(str(error))
    if args.summary:
        page["summary"] = args.summary
    from keras_unet.runtime.files import write_text_atomic

    write_text_atomic(args.out, json.dumps(page, indent=2) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
