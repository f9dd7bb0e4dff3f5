"""The int8 fidelity matrix: does every encoder's int8 file segment like its Keras model?

For each model of the matrix: train it (`keras-unet train --seed 0`, reproducible), export
int8 TFLite and int8 ONNX with default options (calibrated on the training split; the export
verifies on images it did not calibrate on and repairs by itself when it must), export float32
TFLite for the speed comparison, then benchmark everything in one `keras-unet bench` run on a
held-out split that neither training nor calibration saw. One table: agreement with the Keras
masks, IoU drop, p50 latency as a ratio of the Keras model's p50 in the same run, layers kept in
float, and whether the export was written without a flag.

Targets: agreement >= 0.98, IoU drop <= 0.005, int8 p50 <= 0.35x Keras.

Every step is skipped when its output exists, so an interrupted matrix resumes; delete a model's
folder to redo it.

Example:
```
python -m keras_unet.benchmarks.int8_matrix --data ../shared/data/nuclei --work runs/int8 \
    --epochs 15 --threads 2
```
"""

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

# name -> `keras-unet train` model arguments. "seed" is the original U-Net (filters 64, no BN);
# at Adam's default 1e-3 it collapsed to predicting no foreground (IoU 0 from its second
# epoch on), at 1e-4 it learns.
MODELS = {
    "vanilla": ["--filters", "16"],
    "vanilla_bn": ["--filters", "16", "--use-batchnorm"],
    "mobilenet_v2": ["--filters", "16", "--encoder", "mobilenet_v2"],
    "mobilenet_v3_small": ["--filters", "16", "--encoder", "mobilenet_v3_small"],
    "mobilenet_v3_large": ["--filters", "16", "--encoder", "mobilenet_v3_large"],
    "resnet50": ["--filters", "16", "--encoder", "resnet50"],
    "attention": ["--filters", "16", "--use-batchnorm", "--use-attention"],
    "seed": ["--filters", "64", "--lr", "1e-4"],
}
EXPORTS = {"int8.tflite": ["--quantize", "int8"], "int8.onnx": ["--quantize", "int8"],
           "fp32.tflite": ["--quantize", "none"]}
TARGETS = {"agreement_iou": 0.98, "iou_drop": 0.005, "p50_ratio": 0.35}


def run_cli(*args, log):
    command = [sys.executable, "-m", "keras_unet.cli", *map(str, args)]
    with open(log, "a") as handle:
        handle.write("$ " + " ".join(command[2:]) + "\n")
        handle.flush()
        return subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode


def split_folder(data, work, held_out=0.25, seed=0):
    """Seeded split of DATA into WORK/split/{train,test}/{images,masks} (symlinks)."""
    from keras_unet.runtime import imageio

    pairs = imageio.list_pairs(data)
    random.Random(seed).shuffle(pairs)
    cut = int(round(len(pairs) * (1 - held_out)))
    folders = {}
    for part, chunk in (("train", pairs[:cut]), ("test", pairs[cut:])):
        folder = Path(work) / "split" / part
        folders[part] = folder
        if folder.exists():
            continue
        for sub in ("images", "masks"):
            (folder / sub).mkdir(parents=True)
        for image, mask in chunk:
            os.symlink(os.path.abspath(image), folder / "images" / os.path.basename(image))
            os.symlink(os.path.abspath(mask), folder / "masks" / os.path.basename(mask))
    return folders


def run_model(name, folders, work, epochs, threads, image_size, channels):
    """Train, export and benchmark one model; returns its rows for the table."""
    folder = Path(work) / name
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    model = folder / "run" / "model.keras"
    if not (folder / "run" / "metrics.json").exists():
        code = run_cli("train", "--data", folders["train"], "--out", folder / "run", "--epochs", epochs,
                    "--image-size", image_size, "--channels", channels, "--encoder-weights", "none",
                    "--seed", 0, "--quiet", *MODELS[name], log=log)
        if code:
            return [{"model": name, "error": f"training failed (exit {code}), see {log}"}]
    exported = {}
    for file, options in EXPORTS.items():
        out, report = folder / file, folder / f"{file}.report.json"
        if not out.exists():
            extra = ["--report", report] if "int8" in file else []
            code = run_cli("export", model, "--out", out, "--calibration-data", folders["train"],
                        "--threads", threads, *options, *extra, log=log)
            exported[file] = {"code": code}
        if report.exists():
            exported.setdefault(file, {})["report"] = json.loads(report.read_text())
    bench = folder / "bench.json"
    files = [model] + [folder / f for f in EXPORTS if (folder / f).exists()]
    if not bench.exists():
        run_cli("bench", *files, "--data", folders["test"], "--reference", model, "--threads", threads,
             "--seconds", 5, "--json", bench, log=log)
    rows = json.loads(bench.read_text())["rows"] if bench.exists() else []
    by_file = {Path(row["model"]).name: row for row in rows}
    fp32 = by_file.get("fp32.tflite", {})
    table = []
    for file in ("int8.tflite", "int8.onnx"):
        row = by_file.get(file)
        report = exported.get(file, {}).get("report") or {}
        if row is None:
            table.append({"model": name, "file": file, "error": "refused",
                          "best_agreement": report.get("agreement_iou")})
            continue
        table.append({
            "model": name, "file": file, "agreement_iou": row.get("agreement_iou"),
            "pixel_agreement": row.get("pixel_agreement"), "iou": row.get("iou"),
            "iou_drop": row.get("iou_drop"),
            "p50_ratio": p50_ratio(row),
            "vs_fp32_tflite": (fp32["latency_p50_ms"] / row["latency_p50_ms"]
                               if fp32.get("latency_p50_ms") and row.get("latency_p50_ms") else None),
            "kept_float": report.get("kept_float", []),
            "error": row.get("error"),
        })
    return table


def meets_targets(row):
    """True when a row meets every target of the matrix."""
    return (row.get("error") is None and row["agreement_iou"] >= TARGETS["agreement_iou"]
            and row["iou_drop"] <= TARGETS["iou_drop"] and row["p50_ratio"] <= TARGETS["p50_ratio"])


def format_table(rows):
    """The matrix as a fixed-width text table."""
    header = (f"{'model':<20}{'file':<13}{'agree':>7}{'pixel':>7}{'IoU':>7}{'drop':>8}{'p50/keras':>10}"
              f"{'vs fp32':>8}{'float':>6}  ok")
    lines = [header]
    for row in rows:
        if row.get("error"):
            lines.append(f"{row['model']:<20}{row.get('file', ''):<13}{row['error']}")
            continue
        lines.append(
            f"{row['model']:<20}{row['file']:<13}{row['agreement_iou']:>7.4f}{row['pixel_agreement']:>7.4f}"
            f"{row['iou']:>7.4f}{row['iou_drop']:>8.4f}{row['p50_ratio']:>10.2f}"
            f"{(row['vs_fp32_tflite'] or float('nan')):>8.2f}{len(row['kept_float']):>6}  "
            f"{'yes' if meets_targets(row) else 'NO'}")
    return "\n".join(lines)


def add_matrix_arguments(parser, work_help, default_models):
    """The options every matrix script takes: data, work folder, models, training, JSON."""
    parser.add_argument("--data", required=True, metavar="DIR", help="labelled folder (images/, masks/)")
    parser.add_argument("--work", required=True, metavar="DIR", help=work_help)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=default_models)
    parser.add_argument("--epochs", type=int, default=15, help="training epochs of the float models")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")


def write_rows(path, rows):
    """The table's rows as JSON at `path` (written atomically); nothing when `path` is None."""
    if path:
        from keras_unet.runtime.files import write_text_atomic

        write_text_atomic(path, json.dumps(rows, indent=2))


def p50_ratio(row):
    """A bench row's p50 as a ratio of the reference's p50 (None when it was not timed)."""
    speedup = row.get("speedup_vs_reference")
    return 1.0 / speedup if speedup else None


def main(argv=None):
    """`python -m keras_unet.benchmarks.int8_matrix`: run the matrix and print its table."""
    parser = argparse.ArgumentParser(prog="python -m keras_unet.benchmarks.int8_matrix",
                                     description=__doc__.split("\n\n")[0])
    add_matrix_arguments(parser, "where runs, exports and reports go", default_models=list(MODELS))
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.threads < 1 or args.image_size < 32:
        parser.error("--epochs and --threads must be >= 1 and --image-size >= 32")
    folders = split_folder(args.data, args.work)
    rows = []
    for name in args.models:
        rows.extend(run_model(name, folders, args.work, args.epochs, args.threads, args.image_size,
                              args.channels))
        print(format_table(rows), flush=True)
    write_rows(args.json, rows)
    return 0 if all(meets_targets(row) for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
