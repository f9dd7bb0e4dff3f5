"""The whole product on the shipped nuclei set: train, export, benchmark.

1. splits the 200 shipped nuclei pairs (CC0, 128x128 grayscale) into train/ and val/
   folders under OUT/data (seeded),
2. trains a U-Net (16 first-stage filters, batch norm) on CPU for --epochs epochs,
3. exports it to TFLite (float32, full int8) and ONNX (float32, int8 QDQ), each
   verified against the Keras model, calibrated on the training images,
4. benchmarks every file against the Keras model on val/ and prints the table
   (also OUT/bench.json, bench.csv, bench.png).

A step that fails is reported and the others go on. OUT must not exist yet, so an
earlier demo is never overwritten (the default is a new time-stamped folder).

Example:
  keras-unet demo                       # 6 to 10 minutes on a 2-core CPU
  keras-unet demo --epochs 3 --out /tmp/demo
"""

import os
import shutil
import time
import traceback
import warnings

HELP = "train, export and benchmark on the shipped nuclei set"

EXPORTS = (
    ("tflite", "none", "model_fp32.tflite"),
    ("tflite", "int8", "model_int8.tflite"),
    ("onnx", "none", "model_fp32.onnx"),
    ("onnx", "int8", "model_int8.onnx"),
)


def add_arguments(parser):
    from keras_unet.console.arguments import any_int, output_dir, positive_float, positive_int

    parser.add_argument("--out", default=None, metavar="DIR", type=output_dir,
                        help="new folder for everything (default: demo-runs/<timestamp>)")
    parser.add_argument("--epochs", type=positive_int, default=25, metavar="N", help="training epochs")
    parser.add_argument("--filters", type=positive_int, default=16, metavar="N",
                        help="first-stage filters")
    parser.add_argument("--max-images", type=positive_int, default=None, metavar="N",
                        help="use only N of the shipped pairs, for quick trials (default: all 200)")
    parser.add_argument("--bench-seconds", type=positive_float, default=3.0, metavar="S",
                        help="timing budget per model in the benchmark")
    parser.add_argument("--threads", type=positive_int, default=2, metavar="N",
                        help="runtime threads in the benchmark, pinned so the speed-ups compare "
                             "with the README's table")
    parser.add_argument("--seed", type=any_int, default=0, help="data split and training seed")


def split_dataset(source, target, val_fraction=0.2, seed=0, max_images=None):
    """Copies `source`'s pairs into `target/train` and `target/val`; returns both folders."""
    import numpy as np

    from keras_unet.runtime import imageio

    pairs = imageio.list_pairs(source)
    order = np.random.default_rng(seed).permutation(len(pairs))
    if max_images:
        order = order[:max_images]
    n_val = max(1, int(round(len(order) * val_fraction)))
    folders = {}
    for split, indices in (("val", order[:n_val]), ("train", order[n_val:])):
        root = os.path.join(target, split)
        for sub in ("images", "masks"):
            os.makedirs(os.path.join(root, sub))
        for i in indices:
            image, mask = pairs[i]
            shutil.copy2(image, os.path.join(root, "images", os.path.basename(image)))
            shutil.copy2(mask, os.path.join(root, "masks", os.path.basename(mask)))
        folders[split] = root
    return folders["train"], folders["val"]


def _step(title):
    print(f"\n=== {title}", flush=True)


def run(args):
    from keras_unet import cli
    from keras_unet.datasets import nuclei_path

    out = args.out or os.path.join("demo-runs", time.strftime("%Y%m%d-%H%M%S"))
    if os.path.exists(out):
        raise FileExistsError(f"--out {out!r} already exists; the demo only writes into a new folder.")
    started = time.perf_counter()
    _step(f"data: shipped nuclei set -> {out}/data")
    train_dir, val_dir = split_dataset(nuclei_path(), os.path.join(out, "data"), seed=args.seed,
                                       max_images=args.max_images)

    _step("train")
    run_dir = os.path.join(out, "run")
    status = cli.main(["train", "--data", train_dir, "--val-data", val_dir, "--out", run_dir,
              "--image-size", "128", "--channels", "1", "--filters", str(args.filters),
              "--use-batchnorm", "--epochs", str(args.epochs), "--batch-size", "8",
              "--patience", str(max(args.epochs, 1)), "--seed", str(args.seed),
              "--class-names", "nucleus"] + (["--debug"] if getattr(args, "debug", False) else []))
    if status != 0:
        print(f"demo stopped: training failed (exit {status}); see the message above")
        return status
    model_path = os.path.join(run_dir, "model.keras")

    _step("export")
    from keras_unet.export.verify import VerificationError

    exported, failures = [], {}
    for fmt, quantize, name in EXPORTS:
        path = os.path.join(out, name)
        try:
            exporter = _exporter(fmt)
            with warnings.catch_warnings():  # the summary below prints each warning once
                warnings.simplefilter("ignore", UserWarning)
                result = exporter(model_path, path, quantize=quantize, calibration_data=train_dir,
                                  verification_data=val_dir, progress=False,
                                  verbose=args.verbose or args.debug)
            print(result.summary())
            exported.append(path)
        except Exception as error:  # one failed export must not stop the demo
            failures[name] = f"{type(error).__name__}: {error}"
            print(f"{name}: FAILED {failures[name]}")
            if getattr(args, "debug", False) and not isinstance(error, VerificationError):
                traceback.print_exc()  # a refused file is a verdict, not a bug

    _step("benchmark against the Keras model")
    from keras_unet.benchmarks.suite import run_benchmark

    report = run_benchmark(
        [model_path, *exported], data=val_dir, reference=model_path, threads=args.threads,
        seconds=args.bench_seconds, json_path=os.path.join(out, "bench.json"),
        csv_path=os.path.join(out, "bench.csv"), plot_path=os.path.join(out, "bench.png"),
    )
    print(report.format_table())
    for name, reason in failures.items():
        print(f"not exported: {name}: {reason}")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; everything is in {out}/")
    return 1 if failures else 0


def _exporter(fmt):
    if fmt == "tflite":
        from keras_unet.export.tflite import export_tflite

        return export_tflite
    from keras_unet.export.onnx import export_onnx

    return export_onnx
