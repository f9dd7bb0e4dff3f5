"""Resident memory (RSS) of this process while a model loads and runs.

`resource.getrusage(...).ru_maxrss` is a high-water mark for the whole process: after the first
big model it never goes down, so it cannot tell models apart. On Linux this module instead
resets the kernel's high-water mark (`echo 5 > /proc/self/clear_refs`, Linux >= 4.0) before a
model is loaded and reads `VmHWM` from `/proc/self/status` after it ran: an exact peak for that
stretch, with no sampling thread to disturb the timing. Where the reset is refused, a thread
samples `VmRSS` every few milliseconds (it can miss a short spike). Elsewhere (macOS) the
process-wide `ru_maxrss` is all there is, and the report says so in `memory_method`.

`model_rss_delta_mb` = peak during load and run minus RSS just before the load: what the model
adds. Memory the runtime libraries keep after an earlier model (imports, allocator pools) is
not counted again, which is why `--isolate` (one subprocess per model) exists for clean numbers.

Example:
```python
from keras_unet.benchmarks.memory import PeakRSS

with PeakRSS() as memory:
    buffer = bytearray(50 * 2**20)
memory.peak_mb, memory.delta_mb
```
"""

import os
import sys
import threading

from keras_unet.runtime.files import MB

_STATUS = "/proc/self/status"


def _status_mb(field):
    try:
        with open(_STATUS) as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / MB  # the kernel's "kB" is KiB
    except OSError:
        return None
    return None


def current_rss_mb():
    """Resident memory of this process now, in MB of 10^6 bytes (None where it cannot be read).

    Example:
    ```python
    current_rss_mb()  # e.g. 412.5
    ```
    """
    value = _status_mb("VmRSS")
    if value is not None:
        return value
    return _ru_maxrss_mb()


def _ru_maxrss_mb():
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / MB if sys.platform == "darwin" else peak * 1024 / MB


def _reset_high_water_mark():
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Context manager measuring RSS before and the peak RSS during its block.

    Args:
        interval: sampling period in seconds when the kernel's high-water mark cannot be reset.

    Attributes:
        before_mb: RSS on entry, MB.
        peak_mb: highest RSS seen during the block, MB.
        delta_mb: `peak_mb - before_mb`.
        method: "vmhwm" (exact), "sampled", or "ru_maxrss" (process-wide).

    Example:
    ```python
    with PeakRSS() as memory:
        runner = load_runner("model.tflite"); runner.run(batch)
    print(memory.peak_mb, memory.delta_mb)
    ```
    """

    def __init__(self, interval=0.005):
        self.interval = interval
        self.before_mb = None
        self.peak_mb = None
        self.method = None
        self._stop = None
        self._thread = None
        self._sampled = None

    @property
    def delta_mb(self):
        if self.before_mb is None or self.peak_mb is None:
            return None
        return max(0.0, self.peak_mb - self.before_mb)

    def __enter__(self):
        self.before_mb = current_rss_mb()
        if os.path.exists(_STATUS) and _reset_high_water_mark():
            self.method = "vmhwm"
        elif os.path.exists(_STATUS):
            self.method = "sampled"
            self._sampled = self.before_mb
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:
            self.method = "ru_maxrss"
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            value = _status_mb("VmRSS")
            if value is not None and value > self._sampled:
                self._sampled = value

    def pause(self):
        """Stop a sampling thread (before a timed loop), keeping the peak seen so far.

        Harmless with the exact methods, which need no thread.
        """
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def __exit__(self, *exc_info):
        self.pause()
        if self.method == "vmhwm":
            self.peak_mb = _status_mb("VmHWM")
        elif self.method == "sampled":
            self.peak_mb = max(self._sampled, current_rss_mb() or 0.0)
        else:
            self.peak_mb = _ru_maxrss_mb()
        return False
