"""The int8 fidelity matrix: does every encoder's int8 file segment like its Keras model?

For each model of the matrix: train it (`keras-unet train --seed 0`, reproducible), export
int8 TFLite and int8 ONNX with default options (calibrated on the training folder; the export
verifies on images it did not calibrate on and repairs by itself when it must), export float32
TFLite for the speed comparison, then benchmark everything in one `keras-unet bench` run on a
held-out folder that neither training nor calibration saw. One table: agreement with the Keras
masks, IoU drop, p50 latency as a ratio of the Keras model's p50 in the same run, layers kept in
float, and whether the export was written without a flag.

Binary (nuclei: one folder, a seeded quarter held out): targets agreement (foreground IoU)
>= 0.985, IoU drop <= 0.005, int8 p50 <= 0.30x Keras.

Multi-class (`--num-classes K`, e.g. 11-class CamVid: train and calibrate on its train/,
measure on its val/ with `--test-data`): agreement is the frequency-weighted IoU of the int8
masks against Keras' (the gate the export verifies on), beside the pixel agreement and the
agreement mIoU (informational); the IoU drop is the drop of mean IoU against the ground truth,
void (`--ignore-index`) left out. Targets: agreement >= 0.985, pixel agreement >= 0.99, mIoU
drop <= 0.005, int8 p50 <= 0.30x Keras.

`--modes` adds the other quantized files: `int16x8` (8-bit weights, 16-bit activations;
target agreement >= 0.995, its p50 shown against the int8 file's and fp32 TFLite's) and
`integer_only` (int8 with `--integer-only`: no float op, repair at int16 only; target
agreement >= 0.98 binary, >= 0.97 multi-class). Off by default: on a CPU a 16x8 TFLite file
runs on TFLite's reference int16 kernels, about 25x slower than float32.

A step runs only when its output is missing or older than its input (see `run_model`), so an
interrupted matrix resumes, and a rerun after deleting the export files (a changed export)
reuses the trained models; delete a model's folder to redo all of it.

Example:
```
python -m keras_unet.benchmarks.int8_matrix --data ../shared/data/nuclei --work runs/int8 \
    --epochs 15 --threads 2
python -m keras_unet.benchmarks.int8_matrix --data ../shared/data/camvid/train \
    --test-data ../shared/data/camvid/val --num-classes 11 --ignore-index 11 \
    --image-size 128 160 --work runs/int8_camvid --epochs 20 --models vanilla_bn resnet50
```
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from keras_unet.benchmarks.int8_matrix_data import (  # noqa: F401 - split_folder: qat_matrix's import
    Labels, is_current, matrix_folders, split_folder, training_done)
# The targets, named here too for the page and the tests.
from keras_unet.benchmarks.targets import (  # noqa: F401
    MODE_TARGETS, MULTI_CLASS_MODE_TARGETS, MULTI_CLASS_TARGETS, TARGETS)

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
           "fp32.tflite": ["--quantize", "none"],
           "int16x8.tflite": ["--quantize", "int16x8"], "int16x8.onnx": ["--quantize", "int16x8"],
           "int8_integer_only.tflite": ["--quantize", "int8", "--integer-only"],
           "int8_integer_only.onnx": ["--quantize", "int8", "--integer-only"]}
# The quantized files of the table, by mode (`--modes`); fp32.tflite is always exported.
MODES = {"int8": ("int8.tflite", "int8.onnx"),
         "int16x8": ("int16x8.tflite", "int16x8.onnx"),
         "integer_only": ("int8_integer_only.tflite", "int8_integer_only.onnx")}
def run_cli(*args, log):
    command = [sys.executable, "-m", "keras_unet.cli", *map(str, args)]
    with open(log, "a") as handle:
        handle.write("$ " + " ".join(command[2:]) + "\n")
        handle.flush()
        return subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode


def _size_arguments(image_size):
    return [image_size] if isinstance(image_size, int) else list(image_size)


def _bench_is_current(bench, files):
    """bench.json exists, is newer than every file it measures, measured exactly them, and
    none of them failed (a failure may be the benchmark's, which a rerun can fix)."""
    if not is_current(bench, files):
        return False
    rows = json.loads(Path(bench).read_text()).get("rows", [])
    return (not any(row.get("error") for row in rows)
            and sorted(Path(row["model"]).name for row in rows) == sorted(Path(f).name for f in files))


def files_of(modes) -> list:
    """The export files of `modes` (keys of `MODES`), fp32.tflite included, in `EXPORTS` order."""
    wanted = {"fp32.tflite"} | {file for mode in modes for file in MODES[mode]}
    return [file for file in EXPORTS if file in wanted]


def mode_of(file) -> str:
    """The mode (key of `MODES`) of a quantized file name."""
    return next(mode for mode, files in MODES.items() if file in files)


def run_model(name, folders, work, epochs, threads, image_size, channels, labels=Labels(),
              modes=("int8",)) -> list:
    """Train, export and benchmark one model; returns its rows for the table.

    A step runs only when its output is missing or older than its input: training when the
    run folder holds no finished run of `epochs` (a shorter one is continued), an export when
    its file is missing or older than the model, the benchmark when a file it measures is
    newer than bench.json, the set of files changed or one of them failed. Deleting a model's
    export files thus redoes those exports and the benchmark, and keeps the trained model.

    Args:
        name: a key of `MODELS`.
        folders: `{"train", "test"}` from `matrix_folders`.
        work: the matrix's work folder; the model's files go to `work/name/`.
        epochs: training epochs.
        threads: threads of the export's speed checks and of the benchmark.
        image_size: model input size, H or (H, W).
        channels: image channels.
        labels: the `Labels` of the data (binary by default).
        modes: the quantized files to export and measure (keys of `MODES`).

    Returns:
        one dict per int8 file (see `format_table`), with `error` set when it was refused.
    """
    folder = Path(work) / name
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    model = folder / "run" / "model.keras"
    if not training_done(folder / "run", epochs):
        code = run_cli("train", "--data", folders["train"], "--out", folder / "run", "--epochs", epochs,
                       "--image-size", *_size_arguments(image_size), "--channels", channels,
                       "--encoder-weights", "none", "--seed", 0, "--quiet", *labels.train_arguments(),
                       *MODELS[name], log=log)
        if code:
            return [{"model": name, "error": f"training failed (exit {code}), see {log}"}]
    exported = {}
    for file in files_of(modes):
        options = EXPORTS[file]
        out, report = folder / file, folder / f"{file}.report.json"
        if not is_current(out, [model]):
            extra = ["--report", report] if file != "fp32.tflite" else []
            if out.exists():
                extra.append("--force")  # older than a model trained further since
            code = run_cli("export", model, "--out", out, "--calibration-data", folders["train"],
                           "--threads", threads, *options, *extra, log=log)
            exported[file] = {"code": code}
        if report.exists():
            exported.setdefault(file, {})["report"] = json.loads(report.read_text())
    bench = folder / "bench.json"
    files = [model] + [folder / f for f in files_of(modes) if (folder / f).exists()]
    if not _bench_is_current(bench, files):
        run_cli("bench", *files, "--data", folders["test"], "--reference", model, "--threads", threads,
                "--seconds", 5, "--json", bench, *labels.bench_arguments(), log=log)
    rows = json.loads(bench.read_text())["rows"] if bench.exists() else []
    return table_rows(name, rows, exported, modes)


def table_rows(name, bench_rows, exported=None, modes=("int8",)) -> list:
    """The matrix's rows of one model from its `keras-unet bench` rows (the int8 files').

    Args:
        name: the model's name in the matrix.
        bench_rows: the `rows` of its bench.json.
        exported: file name -> `{"report": export report}` (what repair kept in float).
        modes: the modes whose files the table holds (keys of `MODES`).

    Returns:
        one dict per quantized file: `mode`, `agreement_iou` (binary: foreground IoU;
        multi-class: frequency-weighted IoU), `pixel_agreement`, `agreement_mean_iou`, `iou`
        (multi-class: mean IoU), `iou_drop`, `p50_ratio`, `vs_fp32_tflite`, `vs_int8` (p50
        over the same format's int8 file's), `kept_float`, `kept_int16`, `calibration` (the
        export's chosen calibration, `"+bias"` when its biases were corrected, `"+gptq"` when
        its weights were rounded against the calibration images), `num_classes`,
        `error`; a file that was not written gets `error` "refused" and the best agreement
        its export report holds.
    """
    exported = exported or {}
    by_file = {Path(row["model"]).name: row for row in bench_rows}
    fp32 = by_file.get("fp32.tflite", {})
    table = []
    for file in [f for mode in modes for f in MODES[mode]]:
        row = by_file.get(file)
        report = exported.get(file, {}).get("report") or {}
        if row is None:
            table.append({"model": name, "file": file, "mode": mode_of(file), "error": "refused",
                          "best_agreement": report.get("agreement_iou")})
            continue
        int8 = by_file.get("int8" + Path(file).suffix, {})
        table.append({
            "model": name, "file": file, "mode": mode_of(file), "num_classes": row.get("num_classes"),
            "agreement_iou": row.get("agreement_iou"), "pixel_agreement": row.get("pixel_agreement"),
            "agreement_mean_iou": row.get("agreement_mean_iou"),
            "agreement_iou_per_class": row.get("agreement_iou_per_class"),
            "iou": row.get("iou"), "iou_drop": row.get("iou_drop"),
            "p50_ratio": p50_ratio(row),
            "vs_fp32_tflite": (fp32["latency_p50_ms"] / row["latency_p50_ms"]
                               if fp32.get("latency_p50_ms") and row.get("latency_p50_ms") else None),
            "vs_int8": (row["latency_p50_ms"] / int8["latency_p50_ms"]
                        if mode_of(file) != "int8" and int8.get("latency_p50_ms")
                        and row.get("latency_p50_ms") else None),
            "kept_float": report.get("kept_float", []),
            "kept_int16": report.get("kept_int16", []),
            "calibration": report.get("calibration_method"),
            "error": row.get("error"),
        })
    return table


def targets_of(row) -> dict:
    """The targets a row is held to: for int8 `MULTI_CLASS_TARGETS` for a multi-class model,
    else `TARGETS`; for the other modes their agreement (`MODE_TARGETS`) and the IoU drop."""
    multi = (row.get("num_classes") or 1) > 1
    base = MULTI_CLASS_TARGETS if multi else TARGETS
    mode = row.get("mode", "int8")
    if mode == "int8":
        return base
    return {**(MULTI_CLASS_MODE_TARGETS if multi else MODE_TARGETS)[mode],
            "iou_drop": base["iou_drop"]}


def failed_targets(row) -> list:
    """The keys of `targets_of(row)` that a measured row misses: agreement figures below
    theirs, IoU drop or p50 ratio above; a figure that was not measured misses."""
    failed = []
    for key, target in targets_of(row).items():
        value = row.get(key)
        if value is None or (value < target if key in ("agreement_iou", "pixel_agreement") else value > target):
            failed.append(key)
    return failed


def meets_targets(row) -> bool:
    """True when a row has no error and meets every target of the matrix (`failed_targets`)."""
    return row.get("error") is None and not failed_targets(row)


def _cell(value, spec, width):
    return format("-" if value is None else format(value, spec), f">{width}")


def format_table(rows) -> str:
    """The matrix as a fixed-width text table; multi-class rows also show the agreement mIoU
    (informational) and their IoU is the mean IoU.

    Example:
    ```python
    print(format_table(run_model("vanilla_bn", folders, "runs/int8", 15, 2, 128, 3)))
    ```
    """
    header = (f"{'model':<20}{'file':<13}{'agree':>7}{'pixel':>7}{'a.mIoU':>7}{'IoU':>7}{'drop':>8}"
              f"{'p50/keras':>10}{'vs fp32':>8}{'float':>6}  ok")
    lines = [header]
    for row in rows:
        if row.get("error"):
            lines.append(f"{row['model']:<20}{row.get('file', ''):<13}{row['error']}")
            continue
        lines.append(
            f"{row['model']:<20}{row['file']:<13}{_cell(row['agreement_iou'], '.4f', 7)}"
            f"{_cell(row['pixel_agreement'], '.4f', 7)}{_cell(row.get('agreement_mean_iou'), '.4f', 7)}"
            f"{_cell(row['iou'], '.4f', 7)}{_cell(row['iou_drop'], '.4f', 8)}{_cell(row['p50_ratio'], '.2f', 10)}"
            f"{_cell(row['vs_fp32_tflite'], '.2f', 8)}{len(row['kept_float']):>6}  "
            f"{'yes' if meets_targets(row) else 'NO'}")
    return "\n".join(lines)


def add_matrix_arguments(parser, work_help, default_models, multi_class=False) -> None:
    """The options every matrix script takes: data, work folder, models, training, JSON.

    With `multi_class`, also the classes (`--num-classes`, `--ignore-index`, `--class-names`),
    a held-out `--test-data` folder and `--image-size H [W]`.
    """
    parser.add_argument("--data", required=True, metavar="DIR", help="labelled folder (images/, masks/)")
    parser.add_argument("--work", required=True, metavar="DIR", help=work_help)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=default_models)
    parser.add_argument("--epochs", type=int, default=15, help="training epochs of the float models")
    if multi_class:
        parser.add_argument("--image-size", type=int, nargs="+", default=[128], metavar=("H", "W"),
                            help="model input size, H or H W (default: 128)")
        parser.add_argument("--test-data", metavar="DIR",
                            help="held-out labelled folder to measure on (default: a seeded quarter "
                                 "of --data, held out from training and calibration)")
        parser.add_argument("--num-classes", type=int, default=1, metavar="K",
                            help="1 for binary masks, else the number of classes (default: 1)")
        parser.add_argument("--ignore-index", type=int, metavar="K",
                            help="mask value left out of training and scores (CamVid: 11)")
        parser.add_argument("--class-names", nargs="+", default=[], metavar="NAME")
    else:
        parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["int8"],
                        help="quantized files to export and measure (default: int8)")
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
    add_matrix_arguments(parser, "where runs, exports and reports go", default_models=list(MODELS),
                         multi_class=True)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.threads < 1 or len(args.image_size) > 2 or min(args.image_size) < 32:
        parser.error("--epochs and --threads must be >= 1 and --image-size one or two sizes >= 32")
    try:
        labels = Labels(args.num_classes, args.ignore_index, tuple(args.class_names))
        folders = matrix_folders(args.data, args.work, args.test_data)
    except ValueError as error:
        parser.error(str(error))
    image_size = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size)
    rows = []
    for name in args.models:
        rows.extend(run_model(name, folders, args.work, args.epochs, args.threads, image_size,
                              args.channels, labels, modes=args.modes))
        print(format_table(rows), flush=True)
    write_rows(args.json, rows)
    return 0 if all(meets_targets(row) for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
