"""The `keras-unet` command. Each subcommand lives in its own module (see COMMANDS).

Command modules define `HELP`, `add_arguments(parser)` and `run(args) -> int`, and import
TensorFlow/Keras only inside `run`, so `keras-unet --help` answers at once.
"""

import argparse
import importlib
import os
import sys

from keras_unet.version import __version__

COMMANDS = {
    "info": "keras_unet.commands.info",
    "train": "keras_unet.commands.train",
    "predict": "keras_unet.commands.predict",
    "evaluate": "keras_unet.commands.evaluate",
    "export": "keras_unet.export.cli",
    "bench": "keras_unet.benchmarks.cli",
    "demo": "keras_unet.commands.demo",
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-unet",
        description="Train U-Nets with Keras 3, export them to TFLite/ONNX, benchmark the exports.",
    )
    parser.add_argument("--version", action="version", version=f"keras-unet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # A command whose optional dependency is missing stays listed, and says why.
            sub = subparsers.add_parser(name, help=f"(unavailable: {error})")
            sub.set_defaults(handler=None, unavailable=str(error))
            continue
        sub = subparsers.add_parser(
            name,
            help=module.HELP,
            description=(module.__doc__ or module.HELP).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv=None):
    # TensorFlow's C++ INFO/WARNING start-up lines (oneDNN, XNNPACK, grappler) would bury
    # the command's own output. The command owns this process, so it sets the level
    # before anything imports TensorFlow; an explicit setting by the user still wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.handler is None:
        print(f"keras-unet {args.command}: {args.unavailable}", file=sys.stderr)
        return 2
    try:
        return int(args.handler(args) or 0)
    except ImportError as error:
        missing = _missing_full_install_module(error)
        if missing is None:
            raise
        print(f"keras-unet {args.command}: needs {missing}, which this install lacks (an edge "
              f"install runs exported files only). Install the full package: "
              f'pip install "keras-unet-edge[cpu]" (or [gpu]).', file=sys.stderr)
        return 2


# What `[cpu]`/`[gpu]` add over the `[edge]` install.
FULL_INSTALL_MODULES = ("tensorflow", "keras", "onnx", "tf2onnx")


def _missing_full_install_module(error):
    name = getattr(error, "name", None) or ""
    text = str(error)
    for module in FULL_INSTALL_MODULES:
        if name.split(".")[0] == module or f"'{module}'" in text or f"'{module}." in text:
            return module
    return None


if __name__ == "__main__":
    sys.exit(main())
