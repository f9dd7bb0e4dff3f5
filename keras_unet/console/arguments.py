"""argparse types that check a value's range when the command line is read.

A wrong number is refused before any work starts, with argparse's one-line error naming the
option, the accepted range and what was received (`argument --lr: expected a finite number
> 0, received 'nan'`), instead of a run that trains to NaN or writes nothing and exits 0.
Each type's `__name__` is what argparse prints for a value that does not parse at all.

Example:
```python
parser.add_argument("--lr", type=positive_float, default=1e-3)
parser.add_argument("--val-split", type=open_fraction, default=0.2)
parser.add_argument("--image-size", type=positive_int, nargs="+", action=ImageSizeAction)
```
"""

import argparse
import math
import os


def _number(text, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, received {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, received {text!r}")
    return value


def _ranged(kind, low=None, high=None, low_open=False, high_open=False, name=None):
    """A type accepting `kind` values in the interval, its error saying the interval."""
    what = "an integer" if kind is int else "a finite number"
    if low is not None and high is not None:  # an interval reads best as one: "in [0, 1)"
        expected = f"{what} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        expected = f"{what} {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        expected = f"{what} {'<' if high_open else '<='} {high:g}"
    else:
        expected = what

    def parse(text):
        value = _number(text, kind)
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"expected {expected}, received {text!r}")
        return value

    parse.__name__ = name or expected
    parse.expected = expected
    return parse


positive_int = _ranged(int, low=1, name="positive integer")
non_negative_int = _ranged(int, low=0, name="integer >= 0")
positive_float = _ranged(float, low=0, low_open=True, name="positive number")
non_negative_float = _ranged(float, low=0, name="number >= 0")
# A probability or IoU: thresholds, agreement floors.
unit_interval = _ranged(float, low=0, high=1, name="number in [0, 1]")
# A share that must leave something on both sides: validation split, dropout.
open_fraction = _ranged(float, low=0, high=1, low_open=True, high_open=True, name="number in (0, 1)")
half_open_fraction = _ranged(float, low=0, high=1, high_open=True, name="number in [0, 1)")
any_int = _ranged(int, name="integer")


def int_in(low, high):
    """An integer type for `low <= value <= high` (e.g. `int_in(1, 65535)` for a port)."""
    return _ranged(int, low=low, high=high, name=f"integer in [{low}, {high}]")


def host_port(text):
    """`HOST:PORT` (a name, an IPv4 address or a bracketed IPv6 address, and a port in
    [1, 65535]), e.g. the coordinator of a multi-process run; returned as given.

    Example:
    ```python
    parser.add_argument("--coordinator", type=host_port)   # 10.0.0.1:1234, [::1]:1234
    ```
    """
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or host in ("[]",) or (":" in host and not host.startswith("[")):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 10.0.0.1:1234), received {text!r}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with a port in [1, 65535], received {text!r}")
    return text


host_port.__name__ = "HOST:PORT"


def existing_dir(text):
    """A folder that exists (for inputs); the error names it."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"the folder {text!r} does not exist")
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a file, expected a folder")
    return text


def existing_file(text):
    """A file that exists (for inputs); the error names it."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"the file {text!r} does not exist")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, expected a file")
    return text


def output_file(text):
    """A file to write: not a folder, and its folder must exist.

    One rule for every file option (`--out`, `--json`, `--csv`, `--plot`, `--report` ...):
    creating a missing folder would hide a typo in its name. Folder options (`--output DIR`)
    are created instead (`output_dir`).
    """
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, expected a file name")
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"the folder of {text!r} does not exist ({folder})")
    return text


def output_dir(text):
    """A folder to write into (created by the command): must not be an existing file."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a file, expected a folder")
    return text


class ImageSizeAction(argparse.Action):
    """`--image-size H [W]`: one or two positive integers, stored as given (a list).

    argparse cannot say "one or two" with nargs; this action checks the count, so the usage
    line reads `--image-size H [W ...]` and three values are refused by name.
    """

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) not in (1, 2):
            raise argparse.ArgumentError(self, f"expected H or H W (one or two sizes), received "
                                               f"{len(values)} values: {' '.join(map(str, values))}")
        setattr(namespace, self.dest, list(values))
