"""A pytest plugin that shares the slow lane out longest work first (`-n N --dist loadfile`).

pytest-xdist's `loadfile` scheduler hands out whole files (so a module fixture is built once),
most tests first. A file of one long test (the README quick start, the registration matrix)
therefore starts last, and one worker runs it alone while the others wait. This plugin keeps
the file as the unit of work, with two changes:

- Units are handed out longest first (the longest-processing-time rule), by the seconds in
  `slow_lane_seconds.json` beside this file. A unit the table does not list counts
  `UNLISTED_S` per test, so a new file is guessed long rather than left for last. Only the
  order of the figures matters: they were measured on one machine, and a stale figure only
  makes the order less good, never a test wrong.
- The files of a folder in `SHARED_FOLDERS` are one unit: they share a session fixture that
  exports models (tests/browser), which one worker then builds once instead of every worker
  that runs one of the files.

`python -m pytest -m slow -n 2 --dist loadfile --record-seconds PATH` writes the seconds of
each unit of that run (setup, call and teardown of its tests) to PATH, to refresh the table.
Other `--dist` modes, and runs without xdist, are left as they are.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any, Callable

import pytest

TABLE = Path(__file__).resolve().parent / "slow_lane_seconds.json"
UNLISTED_S = 10.0
SHARED_FOLDERS = ("tests/browser",)


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its file, or the shared folder holding that file."""
    path = nodeid.split("::", 1)[0]
    for folder in SHARED_FOLDERS:
        if path.startswith(folder + "/"):
            return folder
    return path


def read_table(path: Path | None = None) -> dict:
    """`{unit: seconds}` from a table written by `--record-seconds` (default `TABLE`); empty
    when there is none."""
    path = TABLE if path is None else path
    try:
        return {str(unit): float(seconds) for unit, seconds in json.loads(path.read_text()).items()}
    except FileNotFoundError:
        return {}


class LongestFirstQueue(collections.OrderedDict):
    """xdist's queue of units (`{unit: {nodeid: done}}`), popped longest first.

    The scheduler takes work with `popitem(last=False)` and puts a crashed worker's units
    back with `update`; both keep working, only the order of the pops changes (ties keep the
    collection order).
    """

    def __init__(self, cost: Callable[[str, dict], float]) -> None:
        super().__init__()
        self.cost = cost

    def popitem(self, last: bool = True) -> tuple:
        if not self:
            raise KeyError("popitem(): the queue of units is empty")
        unit = max(self, key=lambda name: self.cost(name, self[name]))
        return unit, self.pop(unit)


def expected_seconds(table: dict) -> Callable[[str, dict], float]:
    """The cost of a unit: its figure in `table`, else `UNLISTED_S` per test."""

    def cost(unit: str, tests: dict) -> float:
        return table.get(unit, UNLISTED_S * len(tests))

    return cost


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--record-seconds", metavar="PATH", default=None,
                     help="write the seconds each unit of work took (file, or shared folder) to "
                          "PATH as JSON, for tests/helpers/slow_lane_seconds.json")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LongestFirstScheduling(LoadFileScheduling):
        def __init__(self, config: pytest.Config, log: Any = None) -> None:
            super().__init__(config, log)
            self.workqueue = LongestFirstQueue(expected_seconds(read_table()))

        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return LongestFirstScheduling(config, log)


class SecondsRecorder:
    """Adds up the durations of the test reports per unit; written when the session ends.

    Under xdist the controller sees every worker's reports, so only it records.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.seconds: dict = collections.defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[unit_of(report.nodeid)] += report.duration

    def pytest_sessionfinish(self) -> None:
        ordered = dict(sorted(((unit, round(s, 1)) for unit, s in self.seconds.items()),
                              key=lambda item: (-item[1], item[0])))
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(ordered, indent=1) + "\n")
        temporary.replace(self.path)


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("record_seconds")
    if path and not hasattr(config, "workerinput"):
        config.pluginmanager.register(SecondsRecorder(path), "slow_lane_seconds_recorder")
