"""The `keras-unet` command. Each subcommand lives in its own module (see COMMANDS).

Command modules define `HELP`, `add_arguments(parser)` and `run(args) -> int`, and import
TensorFlow/Keras only inside `run`, so `keras-unet --help` answers at once. A module may also
define `interrupted(args) -> str`, the line printed on Ctrl-C (where the run stopped and the
command that resumes it). How errors, interrupts and logs look is the same for every command:
see `keras_unet.console.command`.
"""

import importlib
import shlex
import sys

from keras_unet.console.command import (EXIT_INTERRUPTED, EXIT_STATUS, EXIT_USAGE, HelpFormatter,
                                        Parser, common_options, run_command)
from keras_unet.version import __version__

COMMANDS = {
    "info": "keras_unet.commands.info",
    "train": "keras_unet.commands.train",
    "predict": "keras_unet.commands.predict",
    "evaluate": "keras_unet.commands.evaluate",
    "export": "keras_unet.export.cli",
    "bench": "keras_unet.benchmarks.cli",
    "demo": "keras_unet.commands.demo",
    "web": "keras_unet.commands.web",
}


def build_parser():
    parser = Parser(
        prog="keras-unet",
        description="Train U-Nets with Keras 3, export them to TFLite/ONNX, benchmark the exports.",
        epilog=EXIT_STATUS,
    )
    parser.add_argument("--version", action="version", version=f"keras-unet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = common_options()
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
            epilog=EXIT_STATUS,
            formatter_class=HelpFormatter,
            parents=[common],
        )
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run, interrupted=getattr(module, "interrupted", None))
    return parser


def main(argv=None):
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while starting up: nothing has been done yet
        print("\nkeras-unet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.handler is None:
        print(f"keras-unet {args.command}: {args.unavailable}", file=sys.stderr)
        return EXIT_USAGE
    # What the user typed, for the "resume with" line of an interrupted run.
    args.command_line = "keras-unet " + shlex.join(sys.argv[1:] if argv is None else argv)
    return run_command(f"keras-unet {args.command}", args.handler, args, args.interrupted)


if __name__ == "__main__":
    sys.exit(main())
