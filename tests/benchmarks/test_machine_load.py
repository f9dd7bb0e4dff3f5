"""keras_unet.benchmarks.machine_load: the cores other work kept busy while a model was timed."""

import subprocess
import sys
import time

import pytest

from keras_unet.benchmarks import machine_load
from keras_unet.benchmarks.machine_load import BUSY_CORES, OtherLoad, busy_lines
from keras_unet.benchmarks.report import BenchmarkReport, BenchmarkRow


def _fake_clock(monkeypatch, busy, own, wall):
    """Feed OtherLoad two samples: the machine's busy seconds, this process's, the wall clock."""
    samples = {"busy": iter(busy), "own": iter(own), "wall": iter(wall)}
    monkeypatch.setattr(machine_load, "_machine_busy_seconds", lambda: next(samples["busy"]))
    monkeypatch.setattr(machine_load, "_own_seconds", lambda: next(samples["own"]))
    monkeypatch.setattr(machine_load.time, "perf_counter", lambda: next(samples["wall"]))


def test_this_process_own_cpu_time_is_not_counted_as_other_load(monkeypatch):
    # Over 2 s the machine was busy 3.0 CPU-seconds, 2.0 of them this process's: 0.5 cores of others.
    _fake_clock(monkeypatch, busy=[100.0, 103.0], own=[10.0, 12.0], wall=[50.0, 52.0])
    with OtherLoad() as load:
        pass
    assert load.cores == pytest.approx(0.5)


def test_clock_rounding_never_gives_negative_load(monkeypatch):
    # /proc/stat ticks (10 ms) are coarser than os.times(): own time may exceed the machine's.
    _fake_clock(monkeypatch, busy=[100.0, 100.99], own=[10.0, 11.0], wall=[50.0, 51.0])
    with OtherLoad() as load:
        pass
    assert load.cores == 0.0


def test_without_proc_stat_the_load_is_unknown(monkeypatch, tmp_path):
    monkeypatch.setattr(machine_load, "_PROC_STAT", str(tmp_path / "missing"))
    with OtherLoad() as load:
        pass
    assert load.cores is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_a_spinning_child_process_shows_as_other_load():
    child = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.3)  # let it start spinning
        with OtherLoad() as load:
            time.sleep(1.0)  # this process idles: what is counted is the child's
    finally:
        child.kill()
        child.wait()
    assert load.cores >= 0.3


def test_busy_rows_are_flagged_under_the_table():
    rows = [BenchmarkRow(model="idle.tflite", other_load_cores=0.05),
            BenchmarkRow(model="busy.tflite", other_load_cores=BUSY_CORES + 0.6),
            BenchmarkRow(model="unknown.onnx", other_load_cores=None)]
    lines = busy_lines(rows)
    assert len(lines) == 1 and "busy.tflite" in lines[0] and "1.10 cores" in lines[0]
    assert lines[0] in BenchmarkReport(environment={}, rows=rows).format_table()
