"""The slow lane's scheduler hands out the longest unit first and records what each unit took."""

import json

import pytest
import slow_lane_schedule as schedule
from slow_lane_schedule import LongestFirstQueue, expected_seconds, unit_of


def test_a_unit_is_a_file_or_the_shared_folder_holding_it():
    assert unit_of("tests/docs/test_snippets.py::test_page_snippets_run[README.md]") == \
        "tests/docs/test_snippets.py"
    assert unit_of("tests/browser/test_web_page.py::test_page") == "tests/browser"
    assert unit_of("tests/browserish/test_x.py::test_y") == "tests/browserish/test_x.py"


def test_units_are_popped_longest_first_and_unlisted_ones_by_their_test_count():
    queue = LongestFirstQueue(expected_seconds({"a.py": 30.0, "b.py": 90.0, "c.py": 30.0}))
    for unit, tests in (("a.py", 3), ("b.py", 1), ("c.py", 1), ("new.py", 4), ("tiny.py", 1)):
        queue[unit] = {f"{unit}::t{i}": False for i in range(tests)}
    popped = [queue.popitem(last=False)[0] for _ in range(3)]
    assert popped == ["b.py", "new.py", "a.py"]  # new.py: 4 tests x UNLISTED_S = 40 s
    # A crashed worker's unit goes back and is still handed out by its length.
    queue.update({"b.py": {"b.py::t0": False}})
    assert [queue.popitem(last=False)[0] for _ in range(3)] == ["b.py", "c.py", "tiny.py"]
    with pytest.raises(KeyError):
        queue.popitem(last=False)


def test_a_missing_table_means_every_unit_is_unlisted(tmp_path):
    assert schedule.read_table(tmp_path / "none.json") == {}
    assert set(schedule.read_table()) >= {"tests/docs/test_snippets.py", "tests/browser"}


INNER = {
    "test_many": "def test_one(): log('many')\ndef test_two(): log('many')\ndef test_three(): log('many')\n",
    "test_long": "def test_only(): log('long')\n",
}


def test_loadfile_runs_the_longest_file_first_and_records_seconds(pytester, monkeypatch):
    # xdist's own loadfile order is most tests first (test_many); the table says test_long
    # takes longer, so one worker must run it first.
    pytest.importorskip("xdist")
    log = pytester.path / "order.txt"
    pytester.makeconftest(f"def log(name):\n    open({str(log)!r}, 'a').write(name + '\\n')\n"
                          "import builtins\nbuiltins.log = log\n")
    pytester.makepyfile(**INNER)
    table = pytester.path / "table.json"
    table.write_text(json.dumps({"test_long.py": 50.0, "test_many.py": 5.0}))
    # The workers are new processes: they import the plugin from tests/helpers.
    monkeypatch.setenv("PYTHONPATH", str(schedule.TABLE.parent))
    monkeypatch.setattr(schedule, "TABLE", table)
    recorded = pytester.path / "seconds.json"
    result = pytester.runpytest_inprocess("-p", "slow_lane_schedule", "-p", "no:cacheprovider",
                                          "-n", "1", "--dist", "loadfile",
                                          "--record-seconds", str(recorded))
    result.assert_outcomes(passed=4)
    assert log.read_text().split() == ["long", "many", "many", "many"]
    assert set(json.loads(recorded.read_text())) == {"test_long.py", "test_many.py"}


def test_other_dist_modes_keep_xdists_scheduler():
    pytest.importorskip("xdist")

    class Config:
        def getoption(self, name):
            return {"dist": "load"}[name]

    assert schedule.pytest_xdist_make_scheduler(Config(), None) is None
