"""Quantization-aware fine-tuning against post-training int8, model by model.

Builds on the int8 matrix (`keras_unet.benchmarks.int8_matrix`): for each model it trains (or
finds) the float model and its post-training int8 files, then fine-tunes the float model's
quantize-aware copy with `keras-unet train --init MODEL.keras --qat --epochs E` (E defaults to
20% of the matrix's 15 training epochs), exports the QAT model to int8 TFLite and ONNX with
default options (learned ranges; the images only verify), and benchmarks the float model, both
post-training files and both QAT files in one `keras-unet bench` run on the held-out split.
One table: agreement with the float model's masks, IoU drop, p50 as a ratio of Keras', and
layers kept in float, for post-training and QAT side by side.

Targets: after QAT, agreement >= 0.99 and IoU drop <= 0.003 on both runtimes, every
layer in int8, latency the same as the post-training int8 file of the same model.

Every step is skipped when its output exists, so an interrupted matrix resumes.

Example:
```
python -m keras_unet.benchmarks.qat_matrix --data ../shared/data/nuclei --work runs/int8 \
    --models mobilenet_v3_small mobilenet_v3_large
```
"""

import argparse
import json
import sys
from pathlib import Path

from keras_unet.benchmarks.int8_matrix import (add_matrix_arguments, p50_ratio, run_cli, run_model,
                                               split_folder, write_rows)

TARGETS = {"agreement_iou": 0.99, "iou_drop": 0.003}
FILES = ("int8.tflite", "int8.onnx", "qat/int8.tflite", "qat/int8.onnx")


def run_qat(name, folders, work, epochs, qat_epochs, threads, image_size, channels):
    """Fine-tune, export and benchmark one model's QAT copy; returns its table rows."""
    run_model(name, folders, work, epochs, threads, image_size, channels)  # float + PTQ files
    folder = Path(work) / name
    qat = folder / "qat"
    qat.mkdir(exist_ok=True)
    log = qat / "log.txt"
    model = folder / "run" / "model.keras"
    if not (qat / "run" / "metrics.json").exists():
        code = run_cli("train", "--data", folders["train"], "--out", qat / "run", "--init", model,
                       "--qat", "--epochs", qat_epochs, "--image-size", image_size,
                       "--channels", channels, "--seed", 0, "--quiet", log=log)
        if code:
            return [{"model": name, "error": f"QAT training failed (exit {code}), see {log}"}]
    for suffix in ("tflite", "onnx"):
        out = qat / f"int8.{suffix}"
        if not out.exists():
            run_cli("export", qat / "run" / "model.keras", "--out", out, "--quantize", "int8",
                    "--calibration-data", folders["train"], "--threads", threads,
                    "--report", qat / f"int8.{suffix}.report.json", log=log)
    bench = qat / "bench.json"
    files = [folder / f for f in FILES if (folder / f).exists()]
    if not bench.exists():
        run_cli("bench", model, *files, "--data", folders["test"], "--reference", model,
                "--threads", threads, "--seconds", 5, "--json", bench, log=log)
    rows = json.loads(bench.read_text())["rows"] if bench.exists() else []
    by_file = {str(Path(row["model"]).relative_to(folder)): row for row in rows
               if Path(row["model"]).is_relative_to(folder)}
    table = []
    for file in FILES:
        row = by_file.get(file)
        report_path = folder / f"{file}.report.json"
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        method = "qat" if file.startswith("qat/") else "post-training"
        if row is None:
            table.append({"model": name, "file": file, "method": method, "error": "not written"})
            continue
        table.append({
            "model": name, "file": Path(file).name, "method": method,
            "agreement_iou": row.get("agreement_iou"), "iou_drop": row.get("iou_drop"),
            "p50_ratio": p50_ratio(row),
            "kept_float": report.get("kept_float", []), "error": row.get("error"),
        })
    return table


def meets_targets(row):
    """True when a QAT row meets the quality targets (TARGETS) (latency is compared by eye)."""
    return (row.get("error") is None and row["agreement_iou"] >= TARGETS["agreement_iou"]
            and row["iou_drop"] <= TARGETS["iou_drop"] and not row["kept_float"])


def format_table(rows):
    """The rows as a fixed-width text table."""
    header = (f"{'model':<19} {'file':<12} {'method':<13} {'agree':>6} {'drop':>7} "
              f"{'p50/keras':>9} {'float':>5}  target")
    lines = [header]
    for row in rows:
        if row.get("error"):
            lines.append(f"{row['model']:<19} {row.get('file', ''):<12} "
                         f"{row.get('method', ''):<13} {row['error']}")
            continue
        ratio = f"{row['p50_ratio']:.2f}" if row["p50_ratio"] else "-"
        target = ("yes" if meets_targets(row) else "NO") if row["method"] == "qat" else ""
        lines.append(f"{row['model']:<19} {row['file']:<12} {row['method']:<13} "
                     f"{row['agreement_iou']:>6.4f} {row['iou_drop']:>7.4f} {ratio:>9} "
                     f"{len(row['kept_float']):>5}  {target}")
    return "\n".join(lines)


def main(argv=None):
    """`python -m keras_unet.benchmarks.qat_matrix`: run it and print the table."""
    parser = argparse.ArgumentParser(prog="python -m keras_unet.benchmarks.qat_matrix",
                                     description=__doc__.split("\n\n")[0])
    add_matrix_arguments(parser, "the int8 matrix's folder (its models are reused when present)",
                         default_models=["mobilenet_v3_small", "mobilenet_v3_large", "vanilla"])
    parser.add_argument("--qat-epochs", type=int, default=None,
                        help="QAT epochs (default: 20%% of --epochs, at least 1)")
    args = parser.parse_args(argv)
    qat_epochs = args.qat_epochs if args.qat_epochs is not None else max(1, round(args.epochs * 0.2))
    if args.epochs < 1 or qat_epochs < 1 or args.threads < 1 or args.image_size < 32:
        parser.error("--epochs, --qat-epochs and --threads must be >= 1 and --image-size >= 32")
    folders = split_folder(args.data, args.work)
    rows = []
    for name in args.models:
        rows.extend(run_qat(name, folders, args.work, args.epochs, qat_epochs, args.threads,
                            args.image_size, args.channels))
        print(format_table(rows), flush=True)
    write_rows(args.json, rows)
    return 0 if all(meets_targets(r) for r in rows if r.get("method") == "qat") else 1


if __name__ == "__main__":
    sys.exit(main())
