"""How many cores other work kept busy while a model was timed.

A latency ratio (a file's p50 over Keras') is only fair when both were timed on the same idle
cores. On a shared 2-core machine a test run beside a bench moved ResNet50's int8 TFLite ratio
from 0.24x to 0.28x with no sign in the report. `OtherLoad` measures that sign: the machine's
busy CPU time during the block (Linux `/proc/stat`, every process) minus this process's own
(`os.times`, every thread), per second of wall time, i.e. the cores other processes used.

Rule: a row timed while other processes kept `BUSY_CORES` cores or more busy is flagged in the
table (`busy_lines`); its latency is the machine's, not the model's. Where `/proc/stat` is
missing (macOS, Windows) the figure is None and nothing is flagged.

Example:
```python
from keras_unet.benchmarks.machine_load import OtherLoad

with OtherLoad() as load:
    sum(range(10**6))
load.cores   # e.g. 0.02 on an idle machine; None off Linux
```
"""

import os
import time

#: Other processes' cores at or above which a row's latency is flagged: half a core taken
#: from a 2-thread bench is a quarter of its compute.
BUSY_CORES = 0.5
_PROC_STAT = "/proc/stat"


def _machine_busy_seconds():
    """CPU seconds every core spent outside idle and iowait since boot, or None off Linux."""
    try:
        with open(_PROC_STAT) as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already
    # counted in user and nice, so only the first eight are summed.
    ticks = [int(value) for value in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds():
    times = os.times()
    return times.user + times.system


class OtherLoad:
    """Context manager: `cores` is the average number of cores other processes kept busy.

    `cores` is None until the block ends, and stays None where the machine's CPU time cannot
    be read. It counts every other process, child processes of this one included.
    """

    def __init__(self):
        self.cores = None
        self._start = None

    def __enter__(self):
        self._start = (_machine_busy_seconds(), _own_seconds(), time.perf_counter())
        return self

    def __exit__(self, *exc_info):
        busy, own, wall = _machine_busy_seconds(), _own_seconds(), time.perf_counter()
        start_busy, start_own, start_wall = self._start
        if busy is None or start_busy is None or wall <= start_wall:
            return False
        other = (busy - start_busy) - (own - start_own)
        # The clock ticks are coarser than os.times(): a small negative figure is rounding.
        self.cores = max(0.0, other / (wall - start_wall))
        return False


def busy_lines(rows, threshold=BUSY_CORES):
    """One warning line per row timed while other processes kept `threshold` cores busy.

    Args:
        rows: `BenchmarkRow`s (their `other_load_cores`; None is never flagged).
        threshold: cores of other work at which a row is flagged.

    Example:
    ```python
    busy_lines(report.rows)
    # ['busy machine: other processes kept 1.10 cores busy while m.tflite was timed; ...']
    ```
    """
    return [
        f"busy machine: other processes kept {row.other_load_cores:.2f} cores busy while {row.name} "
        f"was timed; its latency and ratios are the machine's, not the model's (rerun on an idle machine)"
        for row in rows
        if row.other_load_cores is not None and row.other_load_cores >= threshold
    ]
