"""`keras-unet bench` and `python -m keras_unet.benchmarks`: benchmark model files from the command line.

Imports no TensorFlow or Keras (a `.keras` model imports Keras when it is loaded), so the same
command runs on an edge device with only `pip install "keras-unet-edge[edge]"`.

Exit code: 0 when every model was measured; 1 when any model failed (its row, with `error`,
is still printed and written to --json/--csv); 2 for a usage error.

Example:
  python -m keras_unet.benchmarks unet.tflite unet_int8.tflite unet.onnx --data data/val \
      --reference unet.keras --threads 2 --runs 100 --json bench.json --csv bench.csv --plot bench.png
  keras-unet bench unet.keras unet_int8.onnx unet_int8.tflite --data data/val --runtime all
"""

import sys

from keras_unet.benchmarks.measure import MASK_ENCODINGS, MeasureOptions

HELP = "benchmark .keras/.tflite/.onnx/.xml files: latency, size, memory, IoU, agreement"


def add_arguments(parser):
    """Add the bench options to an `argparse` parser.

    Args:
        parser: an `argparse.ArgumentParser` (the `bench` subparser of `keras-unet`).

    Example:
    ```python
    parser = argparse.ArgumentParser(); add_arguments(parser)
    ```
    """
    from keras_unet.console.arguments import (any_int, existing_dir, existing_file,
                                              non_negative_int, output_file, positive_float,
                                              positive_int)

    from keras_unet.benchmarks.suite import ALL_RUNTIMES, BROWSER_RUNTIME
    from keras_unet.runtime import RUNTIMES

    parser.add_argument("models", nargs="+", metavar="MODEL", type=existing_file,
                        help=".keras, .tflite, .onnx or OpenVINO .xml (with its .bin) files")
    parser.add_argument("--data", metavar="DIR", type=existing_dir,
                        help="labelled images (DIR/images, DIR/masks) for IoU, Dice, agreement "
                             "(default: none, latency and size only)")
    parser.add_argument("--reference", metavar="MODEL.keras", type=existing_file,
                        help="full-precision model to compare against (default: the first .keras "
                             "among MODELs)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="threads for every runtime; pin it to compare runs (default: each "
                             "runtime's choice)")
    parser.add_argument("--runtime", choices=[*RUNTIMES, BROWSER_RUNTIME, ALL_RUNTIMES], default=None,
                        help="run the MODELs with this runtime (openvino for .onnx/.tflite files; "
                             f"'{BROWSER_RUNTIME}': headless Chromium, onnxruntime-web for .onnx/.ort "
                             "and MediaPipe for uint8-input .tflite), or "
                             f"'{ALL_RUNTIMES}': each file on every installed runtime that runs it, "
                             "one row each, the fastest that keeps agreement with the reference "
                             "marked (default: by suffix; the reference always runs on its own)")
    parser.add_argument("--warmup", type=non_negative_int, default=5, metavar="N",
                        help="untimed calls per model")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--runs", type=positive_int, default=None, metavar="N",
                        help="timed calls per model (default: 50)")
    budget.add_argument("--seconds", type=positive_float, default=None, metavar="S",
                        help="timing budget per model instead of --runs (default: none)")
    parser.add_argument("--batch-size", type=positive_int, default=1, metavar="N", help="images per call")
    parser.add_argument("--rounds", type=positive_int, default=5, metavar="N",
                        help="alternating blocks when timing a .tflite next to a bare invoke loop")
    parser.add_argument("--no-compare-bare", dest="compare_bare", action="store_false",
                        help="skip the bare interpreter.invoke() baseline for .tflite files")
    parser.add_argument("--isolate", action="store_true", help="run each model in its own process")
    parser.add_argument("--mask-encoding", choices=MASK_ENCODINGS, default=None,
                        help="how mask files encode classes (default: from the model's metadata)")
    parser.add_argument("--ignore-index", type=any_int, default=None, metavar="K",
                        help="mask value to leave out of IoU/Dice (default: the model's metadata)")
    parser.add_argument("--max-images", type=positive_int, default=None, metavar="N",
                        help="use at most this many images (default: all)")
    parser.add_argument("--json", metavar="FILE", type=output_file,
                        help="write the full report as JSON (default: none)")
    parser.add_argument("--csv", metavar="FILE", type=output_file,
                        help="write one CSV line per model (default: none)")
    parser.add_argument("--plot", metavar="FILE.png", type=output_file,
                        help="plot latency against IoU (default: none)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args):
    """Run the benchmark described by parsed arguments; print the table. Returns the exit code.

    The exit code is 0 when every model ran, 1 when any model failed (the failed rows are
    still in the table and the files).

    Example:
    ```python
    run(parser.parse_args(["m.tflite", "--data", "data/"]))
    ```
    """
    from keras_unet.benchmarks.suite import BROWSER_RUNTIME, run_benchmark

    if args.runtime == BROWSER_RUNTIME:  # say what to install before measuring anything
        from keras_unet.benchmarks.browser.bench_row import require_browser

        require_browser()
    # The option flags are named after the `MeasureOptions` fields (--batch-size -> batch_size).
    options = {name: getattr(args, name) for name in MeasureOptions.names()}
    report = run_benchmark(
        args.models,
        data=args.data,
        reference=args.reference,
        isolate=args.isolate,
        max_images=args.max_images,
        progress=not args.quiet,
        json_path=args.json,
        csv_path=args.csv,
        plot_path=args.plot,
        **options,
    )
    report.print_table()
    for label, path in (("JSON", args.json), ("CSV", args.csv)):
        if path:
            print(f"{label} written to {path}")
    failed = report.failed
    if failed:
        names = ", ".join(row.name for row in failed)
        print(f"bench: {len(failed)} of {len(report.rows)} models failed ({names}); exit code 1", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    """Entry point of `python -m keras_unet.benchmarks`.

    Example:
    ```python
    main(["m.onnx", "--data", "data/", "--runs", "20"])
    ```
    """
    from keras_unet.console.command import (EXIT_STATUS, HelpFormatter, Parser, common_options,
                                            run_command)

    parser = Parser(prog="python -m keras_unet.benchmarks", description=__doc__.strip(),
                    epilog=EXIT_STATUS, formatter_class=HelpFormatter, parents=[common_options()])
    add_arguments(parser)
    return run_command(parser.prog, run, parser.parse_args(argv))
