"""Whether the TFLite runtime prepares a file, asked in a child process.

XNNPack refuses some int8 files it cannot prepare (an op outside its scale limits) with a
`RuntimeError`, which the int8 step records and passes over. For some others, such as a
file with a float op between int8 ones where the delegate's partition fails half-way
(ai-edge-litert 2.3), it frees a buffer twice and the process aborts: nothing in the
process can catch that. So the int8 step asks a child process to prepare each file first.

Example:
```python
from keras_unet.export.load_probe import tflite_refusal

reason = tflite_refusal(model_bytes, threads=2)   # None: it loads
```
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Optional

_PREPARE = (
    "import sys\n"
    "from keras_unet.runtime.loaders import interpreter_class\n"
    "interpreter = interpreter_class()(model_path=sys.argv[1], num_threads=int(sys.argv[2]))\n"
    "interpreter.allocate_tensors()\n"
)
# Preparing a file takes well under a second; a child that hangs is a refusal too.
TIMEOUT_S = 300


def tflite_refusal(model_bytes: bytes, threads: int = 1) -> Optional[str]:
    """None when a fresh TFLite interpreter (default delegates: XNNPack) prepares the file,
    else the runtime's last line (or how the child died).

    Example:
    ```python
    tflite_refusal(open("model_int8.tflite", "rb").read())   # None
    ```
    """
    with tempfile.TemporaryDirectory(prefix="keras_unet_probe_") as folder:
        path = os.path.join(folder, "probe.tflite")
        with open(path, "wb") as handle:
            handle.write(model_bytes)
        try:
            done = subprocess.run([sys.executable, "-c", _PREPARE, path, str(threads)],
                                  capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"preparing the file did not finish in {TIMEOUT_S} s"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()
             and not line.startswith(("INFO:", "WARNING:", "  File", "Traceback"))]
    last = lines[-1] if lines else ""
    if done.returncode < 0:
        return f"the runtime crashed preparing the file (signal {-done.returncode}): {last}".rstrip(": ")
    return last.split(": ", 1)[-1] if last.startswith(("RuntimeError", "ValueError")) else last
