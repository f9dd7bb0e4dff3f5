"""Export a Keras U-Net to TFLite or ONNX, quantize it, and verify it against Keras.

Every export is run against the Keras model on real images before it is written:
float32 must match within 1e-4; a quantized file must keep agreement_iou, the IoU of the
two models' masks, at or above --agreement-floor (0.95), or the command fails with the
numbers and writes nothing. The file is written to a temporary name and renamed into
place, so a failed export leaves an earlier file untouched. An existing --out is only
replaced with --force.

Examples:
    keras-unet export model.keras --format tflite --out model.tflite
    keras-unet export model.keras --format tflite --quantize int8 \\
        --calibration-data data/val --io uint8 --out model_int8.tflite
    keras-unet export model.keras --format onnx --quantize int8 \\
        --calibration-data data/val --dynamic-batch --out model_int8.onnx

Exit status: 0 written, 1 verification failed (nothing written), 2 bad input.
"""

import sys
from pathlib import Path

HELP = "export a .keras model to TFLite or ONNX (fp32/fp16/dynamic/int8), verified against Keras"

FORMATS = {"tflite": ".tflite", "onnx": ".onnx"}


def add_arguments(parser):
    """Add the `export` options to an argparse parser."""
    parser.add_argument("model", metavar="MODEL.keras", help="the Keras model file")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="output file (.tflite or .onnx)")
    parser.add_argument("--format", choices=sorted(FORMATS), default=None,
                        help="output format (default: from the --out suffix)")
    parser.add_argument("--quantize", choices=("none", "fp16", "dynamic", "int8"), default="none",
                        help="none (float32), fp16, dynamic (TFLite only) or int8 "
                             "(needs --calibration-data)")
    parser.add_argument("--calibration-data", metavar="DIR", default=None,
                        help="real images for int8 calibration: DIR/images/* or images in DIR")
    parser.add_argument("--calibration-size", type=int, default=100, metavar="N",
                        help="at most N calibration images (default 100)")
    parser.add_argument("--verification-data", metavar="DIR", default=None,
                        help="images to verify on (default: the calibration images, else "
                             "the shipped nuclei sample)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="static input size; needed for a model that accepts any size")
    parser.add_argument("--io", choices=("uint8", "int8", "float32"), default=None,
                        help="TFLite int8 input/output dtype (default uint8 for int8, else float32)")
    parser.add_argument("--agreement-floor", type=float, default=0.95, metavar="IOU",
                        help="lowest agreement_iou (foreground IoU of the two models' masks; "
                             "frequency-weighted IoU for several classes) a quantized export "
                             "may have (default 0.95)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--dynamic-batch", action="store_true", help="ONNX: free batch dimension")
    parser.add_argument("--dynamic-size", action="store_true", help="ONNX: free height and width")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip running the file against the Keras model")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _format(args):
    suffix = Path(args.out).suffix.lower()
    if args.format is None:
        for name, expected in FORMATS.items():
            if suffix == expected:
                return name
        raise ValueError(
            f"Cannot tell the format from --out; pass --format tflite|onnx or use a "
            f".tflite/.onnx suffix. Received: --out {args.out}"
        )
    if suffix != FORMATS[args.format]:
        raise ValueError(
            f"--out must end in '{FORMATS[args.format]}' for --format {args.format}. "
            f"Received: --out {args.out}"
        )
    return args.format


def _export(args, fmt):
    if args.calibration_size <= 0:
        raise ValueError(f"--calibration-size must be positive. Received: {args.calibration_size}")
    if args.quantize == "int8" and args.calibration_data is None:
        from keras_unet.export.calibration import require_calibration

        require_calibration(None, "int8", "cli")
    if fmt == "onnx" and args.io not in (None, "float32"):
        raise ValueError(f"--io applies to TFLite only; ONNX keeps float32 I/O. Received: --io {args.io}")
    if Path(args.out).exists() and not args.force:
        raise FileExistsError(f"{args.out} exists; pass --force to replace it "
                              "(it is replaced only if the new export verifies)")
    common = dict(
        quantize=args.quantize, calibration_data=args.calibration_data,
        calibration_size=args.calibration_size,
        input_size=tuple(args.input_size) if args.input_size else None,
        verify=not args.no_verify, agreement_floor=args.agreement_floor,
        verification_data=args.verification_data, progress=not args.quiet,
    )
    if fmt == "tflite":
        from keras_unet.export.tflite import export_tflite

        if args.dynamic_batch or args.dynamic_size or args.opset != 17:
            raise ValueError("--opset, --dynamic-batch and --dynamic-size apply to ONNX only; "
                             "TFLite files have a static shape")
        return export_tflite(args.model, args.out, io_dtype=args.io, **common)
    from keras_unet.export.onnx import export_onnx

    return export_onnx(args.model, args.out, opset=args.opset, dynamic_batch=args.dynamic_batch,
                       dynamic_size=args.dynamic_size, **common)


def run(args):
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

    try:
        fmt = _format(args)
        result = _export(args, fmt)
    except VerificationError as error:
        print(f"keras-unet export: {error}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"keras-unet export: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # a conversion step failed; the message names it
        print(f"keras-unet export: failed: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def main(argv=None):
    """Parse `argv` and run, for `python -m keras_unet.export.cli`."""
    import argparse

    parser = argparse.ArgumentParser(prog="keras-unet export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
