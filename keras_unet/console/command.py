"""How every command behaves: one-line errors, exit statuses, interrupts, quiet logs.

`keras-unet <command>` (keras_unet.cli) and `python -m keras_unet.benchmarks` both run
their handler through `run_command`, so a mistake reads the same everywhere:

- a bad option value or input file: one line naming it and what was expected, exit 2
  (argparse errors too, through `Parser`: no usage dump);
- any other failure: one line, exit 1; `--debug` shows the traceback and the native logs;
- Ctrl-C: where the run stopped (the command module's `interrupted(args)`), exit 130;
- TensorFlow's, the converters' and the runtimes' own log lines are silenced (`--verbose`
  shows them), and warnings print as one `warning:` line.

Example:
```python
parser = Parser(prog="tool", epilog=EXIT_STATUS, parents=[common_options()])
parser.add_argument("--n", type=positive_int, default=1)
args = parser.parse_args()
sys.exit(run_command("tool", handle, args))
```
"""

import argparse
import sys
import warnings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_STATUS = (
    "Exit status: 0 done; 1 the work failed (an export below its agreement floor, a benchmark "
    "with a failed model, a training run whose loss became NaN); 2 a bad option or input file "
    "(one line names it); 130 interrupted (Ctrl-C). --debug shows tracebacks and the "
    "libraries' own logs, --verbose only the logs."
)
# Exceptions that mean "what you gave me is wrong" (exit 2), not "the work failed" (exit 1).
USAGE_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError,
                IsADirectoryError, PermissionError)
# What `[cpu]`/`[gpu]` add over the `[edge]` install.
FULL_INSTALL_MODULES = ("tensorflow", "keras", "onnx", "tf2onnx")


def one_line(text):
    """`text` on one line: every run of white space, line breaks included, becomes one space."""
    return " ".join(str(text).split())


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit status 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} "
                              f"(see {self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option's help ends with its default.

    A help text that already says its default (`default: the model's metadata`) is left
    alone; flags (store_true) are off unless given, so they show none.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default in (None, argparse.SUPPRESS)
                or not action.option_strings or action.nargs == 0):
            return text
        default = action.default
        if isinstance(default, (list, tuple)):
            default = " ".join(map(str, default))
        return f"{text} (default: {default})"


def common_options():
    """A parent parser with `--verbose` and `--debug`, for every command."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("output")
    group.add_argument("--verbose", action="store_true",
                       help="also show TensorFlow's, the converters' and the runtimes' own logs")
    group.add_argument("--debug", action="store_true",
                       help="on an error, show the Python traceback and the libraries' logs")
    return common


def run_command(prog, handler, args, interrupted=None):
    """Run `handler(args)` the way every command runs; returns the exit status.

    Args:
        prog: the command's name for messages (`keras-unet train`).
        handler: `run(args) -> int`.
        args: parsed arguments with `verbose` and `debug`.
        interrupted: optional `f(args) -> str`, said on Ctrl-C (where the run stopped and how
            to resume it).
    """
    from keras_unet.console.interrupts import reliable_interrupt
    from keras_unet.console.quiet import quiet_output

    debug = getattr(args, "debug", False)
    quiet = None
    try:
        with quiet_output(enabled=not (getattr(args, "verbose", False) or debug)) as quiet, \
                _one_line_warnings(), reliable_interrupt():
            return int(handler(args) or 0)
    except KeyboardInterrupt:
        where = interrupted(args) if interrupted else "run the command again"
        print(f"\n{prog}: interrupted: {one_line(where)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ImportError as error:
        missing = _missing_full_install_module(error)
        if missing is None:
            return _failed(prog, error, debug, quiet, EXIT_FAILED)
        print(f"{prog}: needs {missing}, which this install lacks (an edge install runs "
              f'exported files only). Install the full package: pip install '
              f'"keras-unet-edge[cpu]" (or [gpu]).', file=sys.stderr)
        return EXIT_USAGE
    except USAGE_ERRORS as error:
        return _failed(prog, error, debug, quiet, EXIT_USAGE)
    except Exception as error:  # noqa: BLE001 - one line for the user, the traceback with --debug
        return _failed(prog, error, debug, quiet, EXIT_FAILED)


def _failed(prog, error, debug, quiet, status):
    if debug:
        import traceback

        if quiet is not None and quiet.native_log:
            print(quiet.native_log, file=sys.stderr)
        traceback.print_exception(error)
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    kind = "" if status == EXIT_USAGE else f"{type(error).__name__}: "
    hint = " (--debug shows the traceback)" if status != EXIT_USAGE and not debug else ""
    print(f"{prog}: error: {kind}{one_line(message)}{hint}", file=sys.stderr)
    return status


class _one_line_warnings:
    """Print warnings as `warning: <message>` (one line, no source line) inside the block."""

    def __enter__(self):
        self._saved = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            print(f"warning: {one_line(message)}", file=file or sys.stderr)

        warnings.showwarning = show
        return self

    def __exit__(self, *exc):
        warnings.showwarning = self._saved
        return False


def _missing_full_install_module(error):
    name = getattr(error, "name", None) or ""
    text = str(error)
    for module in FULL_INSTALL_MODULES:
        if name.split(".")[0] == module or f"'{module}'" in text or f"'{module}." in text:
            return module
    return None
