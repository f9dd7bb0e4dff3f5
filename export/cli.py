"""Export a Keras U-Net to TFLite, ONNX or ORT (ONNX Runtime Mobile), quantize it, verify it.

Every export is run against the Keras model on real images before it is written:
float32 must match within 1e-4; a quantized file must keep agreement_iou, the IoU of the
two models' masks, at or above --agreement-floor (0.95), or the command fails with the
numbers and writes nothing. int8 verifies on images held out from --calibration-data
(at least 32 where there are 64), not on the images it calibrated on. int8 tries each
calibration (ranges clipped at the 99.99th percentile, min/max, and for ONNX Entropy) and
keeps the best; below an agreement of 0.985 (or the floor, when higher) it is repaired:
candidates (the stem, the head, contiguous stretches of the model and the worst layers of the
per-layer report) are measured on the whole file at int16 activations or in float and kept by
agreement gained per latency cost until 0.985 holds by two standard errors of the verified
agreement (the noise of the verification images), then halves of a kept stretch go back to
int8 while it still holds; of the files that clear it the fastest is written (of those within
2% of it, the one keeping the fewest ops); when none does, the fastest file within the noise of the best agreement found (the
all-int8 file when repair gained no more than that noise), with a warning that says by how
much it falls short and what keeps more (--quantize int16x8, or train --qat); --no-repair
turns all that off (percentile calibration only). --integer-only (for NPUs) refuses any float
op and repairs at int16 only; --quantize int16x8 writes every activation at 16 bits. --report
FILE.json writes the per-layer report and the repair's candidates (also when the export is
refused) and prints the worst layers. The file is written to a temporary name and renamed
into place, so a failed export leaves an earlier file untouched. An existing --out is only
replaced with --force.

Examples:
    keras-unet export model.keras --format tflite --out model.tflite
    keras-unet export model.keras --format tflite --quantize int8 \\
        --calibration-data data/val --io uint8 --out model_int8.tflite
    keras-unet export model.keras --format onnx --quantize int8 \\
        --calibration-data data/val --dynamic-batch --out model_int8.onnx
    keras-unet export model.keras --quantize int8 --calibration-data data/train \\
        --out model_int8.tflite --report int8_report.json
    keras-unet export model.keras --quantize int8 --calibration-data data/train \\
        --out model_int8.ort          # ONNX Runtime Mobile (the ONNX export, converted)

"""

import argparse
import sys
from pathlib import Path
from typing import Any

from keras_unet.export.options import STATIC_MODES

HELP = "export a .keras model to TFLite, ONNX or ORT (fp32/fp16/dynamic/int8), verified against Keras"

# ort: ONNX Runtime's own format, what ONNX Runtime Mobile loads (the ONNX export, converted).
FORMATS = {"tflite": ".tflite", "onnx": ".onnx", "ort": ".ort", "openvino": ".xml"}


def add_arguments(parser) -> None:
    """Add the `export` options to an argparse parser."""
    from keras_unet.console.arguments import (existing_dir, existing_file, int_in,
                                              output_file, positive_int,
                                              unit_interval)
    from keras_unet.export.options import ExportOptions as defaults

    parser.add_argument("model", metavar="MODEL.keras", type=existing_file, help="the Keras model file")
    parser.add_argument("--out", required=True, metavar="FILE",
                        type=output_file,
                        help="output file (.tflite, .onnx, .ort, or .xml for OpenVINO IR)")
    parser.add_argument("--format", choices=sorted(FORMATS), default=None,
                        help="output format (default: from the --out suffix)")
    parser.add_argument("--quantize", choices=("none", "fp16", "dynamic", "int8", "int16x8"),
                        default=defaults.quantize,
                        help="none (float32), fp16, dynamic (TFLite only), int8, or int16x8 "
                             "(8-bit weights, 16-bit activations); int8 and int16x8 need "
                             "--calibration-data")
    parser.add_argument("--calibration-data", metavar="DIR", default=None, type=existing_dir,
                        help="real images for int8/int16x8 calibration: DIR/images/* or images "
                             "in DIR (default: none; int8 and int16x8 need it)")
    parser.add_argument("--calibration-size", type=positive_int,
                        default=defaults.calibration_size, metavar="N",
                        help="at most N calibration images")
    parser.add_argument("--verification-data", metavar="DIR", default=None, type=existing_dir,
                        help="images to verify on (default: images held out from the calibration "
                             "images, else the shipped nuclei sample)")
    parser.add_argument("--input-size", type=positive_int, nargs=2, metavar=("H", "W"), default=None,
                        help="static input size; needed for a model that accepts any size "
                             "(default: the model's own)")
    parser.add_argument("--io", choices=("uint8", "int8", "int16", "float32"), default=None,
                        help="TFLite input/output dtype (default uint8 for int8, int16 for "
                             "int16x8 --integer-only, else float32); MediaPipe needs uint8 or "
                             "float32, it refuses int8")
    parser.add_argument("--input-channels", type=int, choices=(1, 3), default=None, metavar="C",
                        help="TFLite: channels the file takes; 3 makes a 1-channel model take "
                             "RGB and convert it to gray inside (MediaPipe needs 3) "
                             "(default: the model's own)")
    parser.add_argument("--agreement-floor", type=unit_interval,
                        default=defaults.agreement_floor, metavar="IOU",
                        help="lowest agreement_iou (foreground IoU of the two models' masks; "
                             "frequency-weighted IoU for several classes) a quantized export "
                             f"may have, in [0, 1] (default {defaults.agreement_floor:g})")
    parser.add_argument("--repair", action=argparse.BooleanOptionalAction, default=None,
                        help="int8/int16x8: try every calibration, and below agreement 0.985 (by "
                             "two standard errors of the verification) keep the layers whose "
                             "measured effect is largest at int16 activations or in float, by "
                             "gain per latency cost, and write the fastest file that holds "
                             "(default: on)")
    parser.add_argument("--integer-only", action="store_true",
                        help="int8/int16x8 for NPUs: no float op in the file (TFLite: integer "
                             "input and output); repair keeps layers at int16 activations, never "
                             "in float; the export lists ops a typical NPU delegate would not run")
    parser.add_argument("--report", metavar="FILE.json", default=None,
                        type=output_file,
                        help="int8/int16x8: write the quantization report: the per-layer rows, "
                             "the repair's candidates with their gain and cost (also when the "
                             "export is refused), and print the worst layers (default: none)")
    parser.add_argument("--threads", type=positive_int, default=defaults.threads, metavar="N",
                        help="threads for the speed checks during export")
    parser.add_argument("--activation-type", choices=("auto", "uint8", "int8"),
                        default=defaults.activation_type,
                        help="ONNX int8 activations; auto times both here and keeps the faster")
    parser.add_argument("--output", choices=("probabilities", "mask"), default=defaults.output,
                        help="what the file outputs: probabilities, or mask: a uint8 class-id "
                             "mask (threshold or arg-max inside the file, checked against "
                             "keras-unet predict's masks), so a device does no post-processing")
    parser.add_argument("--opset", type=int_in(13, 18), default=defaults.opset, metavar="N",
                        help="ONNX opset (13 to 18: what tf2onnx converts to)")
    parser.add_argument("--dynamic-batch", action="store_true", help="ONNX: free batch dimension")
    parser.add_argument("--dynamic-size", action="store_true", help="ONNX: free height and width")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip running the file against the Keras model")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _format(args) -> str:
    suffix = Path(args.out).suffix.lower()
    if args.format is None:
        for name, expected in FORMATS.items():
            if suffix == expected:
                return name
        raise ValueError(
            f"Cannot tell the format from --out; pass --format tflite|onnx|ort|openvino or use a "
            f".tflite/.onnx/.ort/.xml suffix. Received: --out {args.out}"
        )
    if suffix != FORMATS[args.format]:
        raise ValueError(
            f"--out must end in '{FORMATS[args.format]}' for --format {args.format}. "
            f"Received: --out {args.out}"
        )
    return args.format


def _check_report_options(args):
    if args.report is None:
        return
    if args.quantize not in STATIC_MODES:
        raise ValueError(f"--report is the per-layer report of an int8 export; it needs "
                         f"--quantize int8 or int16x8. Received: --quantize {args.quantize}")
    if Path(args.report).suffix.lower() != ".json":
        raise ValueError(f"--report writes JSON: give a .json file. Received: --report {args.report}")


def _export(args, fmt) -> Any:
    from keras_unet.export.options import ExportOptions
    from keras_unet.export.pipeline import run_export

    # --calibration-size, --threads and --agreement-floor are range-checked by their argparse
    # types (keras_unet.console.arguments) when the command line is read.
    if args.repair and args.quantize not in STATIC_MODES:
        raise ValueError(f"--repair keeps layers of an int8 file at a higher precision; it does "
                         f"not apply to --quantize {args.quantize}.")
    if args.integer_only and args.quantize not in STATIC_MODES:
        raise ValueError("--integer-only needs --quantize int8 or int16x8 (every activation "
                         f"quantized). Received: --quantize {args.quantize}")
    if args.activation_type != "auto" and (fmt != "onnx" or args.quantize != "int8"):
        raise ValueError("--activation-type applies to ONNX int8 exports only. Received: "
                         f"--activation-type {args.activation_type}")
    _check_report_options(args)
    if args.quantize in STATIC_MODES and args.calibration_data is None:
        from keras_unet.export.calibration import require_calibration

        require_calibration(None, args.quantize, "cli")
    if fmt in ("onnx", "ort", "openvino") and args.io not in (None, "float32"):
        raise ValueError(f"--io applies to TFLite only; ONNX keeps float32 I/O. Received: --io {args.io}")
    if fmt in ("onnx", "ort", "openvino") and args.input_channels is not None:
        raise ValueError("--input-channels applies to TFLite only; an ONNX file takes the "
                         f"model's own channels. Received: --input-channels {args.input_channels}")
    if Path(args.out).exists() and not args.force:
        raise FileExistsError(f"{args.out} exists; pass --force to replace it "
                              "(it is replaced only if the new export verifies)")
    options = ExportOptions(
        quantize=args.quantize, calibration_data=args.calibration_data,
        calibration_size=args.calibration_size,
        input_size=tuple(args.input_size) if args.input_size else None,
        verify=not args.no_verify, agreement_floor=args.agreement_floor,
        verification_data=args.verification_data, progress=not args.quiet,
        repair=args.repair, layer_report=args.report is not None, threads=args.threads,
        verbose=getattr(args, "verbose", False) or getattr(args, "debug", False),
        output=args.output, io_dtype=args.io, input_channels=args.input_channels,
        opset=args.opset, dynamic_batch=args.dynamic_batch, dynamic_size=args.dynamic_size,
        activation_type=args.activation_type, integer_only=args.integer_only,
    )
    if fmt == "tflite" and (args.dynamic_batch or args.dynamic_size
                            or args.opset != ExportOptions.opset):
        raise ValueError("--opset, --dynamic-batch and --dynamic-size apply to ONNX only; "
                         "TFLite files have a static shape")
    return run_export(_converter(fmt), options, args.model, args.out)


def _converter(fmt) -> Any:
    """The format's `Converter` (imported here: each brings its converter's libraries)."""
    if fmt == "tflite":
        from keras_unet.export.tflite import CONVERTER
    elif fmt == "ort":
        from keras_unet.export.ort import CONVERTER
    elif fmt == "openvino":
        from keras_unet.export.openvino import CONVERTER
    else:
        from keras_unet.export.onnx import CONVERTER
    return CONVERTER


def run(args) -> int:
    """Run `keras-unet export` for parsed `args`; returns the exit status.

    Example:
    ```python
    import argparse
    from keras_unet.export import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    cli.run(parser.parse_args(["model.keras", "--out", "model.tflite"]))
    ```
    """
    from keras_unet.export.verify import VerificationError

    import warnings

    from keras_unet.console.command import one_line

    try:
        fmt = _format(args)
        with warnings.catch_warnings():  # the summary prints each of the export's warnings once
            warnings.simplefilter("ignore", UserWarning)
            result = _export(args, fmt)
    except VerificationError as error:
        print(f"keras-unet export: {error}", file=sys.stderr)
        outcome = error.outcome
        if outcome is not None:
            _write_report(args, outcome.verification, outcome.calibration, outcome.kept_float,
                          outcome.attempts, outcome.layer_report, written=False,
                          kept_int16=outcome.kept_int16, candidates=outcome.candidates)
        return 1
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError) as error:
        print(f"keras-unet export: error: {one_line(error)}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # a conversion step failed; the message names it
        print(f"keras-unet export: failed: {one_line(error)}", file=sys.stderr)
        return 1
    print(result.summary(worst_layers=WORST_LAYERS if args.report else 0))
    if args.report:
        iou = {k: getattr(result, k) for k in ("iou_keras", "iou_export", "iou_drop")
               if getattr(result, k) is not None}
        _write_report(args, result.verification, result.calibration_method, result.kept_float,
                      result.repair_attempts, result.layer_report, written=True, iou=iou,
                      latency=result.kept_float_latency_ms, kept_int16=result.kept_int16,
                      candidates=result.repair_candidates)
    return 0


WORST_LAYERS = 10


def _write_report(args, verification, calibration, kept_float, attempts, layers, written,
                  iou=None, latency=None, kept_int16=None, candidates=None):
    from keras_unet.export.int8_report import quantization_report
    from keras_unet.export.quantization.report import format_worst_layers
    from keras_unet.runtime.files import write_json_atomic

    if not written and layers:
        print(format_worst_layers(layers, n=WORST_LAYERS), file=sys.stderr)
    if args.report is None:
        return
    report = quantization_report(
        file=args.out, written=written, agreement_floor=args.agreement_floor,
        verification=verification, calibration_method=calibration, kept_float=kept_float,
        attempts=attempts, layers=layers, iou=iou, kept_float_latency_ms=latency,
        kept_int16=kept_int16, candidates=candidates)
    write_json_atomic(args.report, report)
    print(f"per-layer report written to {args.report}", file=sys.stderr if not written else sys.stdout)


def main(argv=None) -> int:
    """Parse `argv` and run, for `python -m keras_unet.export.cli`."""
    from keras_unet.console.command import (EXIT_STATUS, HelpFormatter, Parser, common_options,
                                            run_command)

    parser = Parser(prog="keras-unet export", description=__doc__, epilog=EXIT_STATUS,
                    formatter_class=HelpFormatter, parents=[common_options()])
    add_arguments(parser)
    return run_command(parser.prog, run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
