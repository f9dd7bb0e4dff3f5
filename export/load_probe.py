"""Whether the TFLite runtime prepares a file, asked in a child process.

XNNPack refuses some int8 files it cannot prepare (an op outside its scale limits) with a
`RuntimeError`, which the int8 step records and passes over. For some others, such as a
file with a float op between int8 ones where the delegate's partition fails half-way
(ai-edge-litert 2.3), it frees a buffer twice and the process aborts: nothing in the
process can catch that. So the int8 step asks a child process to prepare each file first.

The child stays up between questions (`Prober`): repair asks about every file it builds, and
starting Python and the runtime took 0.7 s a question, longer than preparing a small file.
A child that dies answers that question with how it died, and the next question starts a
fresh one. Its stderr goes to a file, never a pipe nobody reads (the runtime logs a line
per file; a full pipe would stall the child).

Example:
```python
from keras_unet.export.load_probe import tflite_refusal

reason = tflite_refusal(model_bytes, threads=2)   # None: it loads
```
"""

from __future__ import annotations

import atexit
import os
import selectors
import subprocess
import sys
import tempfile
import threading
from typing import IO, Optional

# One question a line: "<threads> <path>"; one answer a line: "ok" or "refused <reason>".
CHILD = (
    "import sys\n"
    "from keras_unet.runtime.loaders import interpreter_class\n"
    "Interpreter = interpreter_class()\n"
    "for line in sys.stdin:\n"
    "    threads, path = line.rstrip('\\n').split(' ', 1)\n"
    "    try:\n"
    "        interpreter = Interpreter(model_path=path, num_threads=int(threads))\n"
    "        interpreter.allocate_tensors()\n"
    "        del interpreter\n"
    "        answer = 'ok'\n"
    "    except Exception as error:\n"
    "        lines = [l.strip() for l in str(error).splitlines() if l.strip()]\n"
    "        answer = 'refused ' + (lines[-1] if lines else type(error).__name__)\n"
    "    print(answer, flush=True)\n"
)
# Preparing a file takes well under a second; a child that hangs is a refusal too.
TIMEOUT_S = 300


class Prober:
    """A child process that prepares TFLite files on request and says whether they loaded.

    Args:
        code: the child's program (`CHILD`; tests plant others).
        timeout_s: how long one question may take before it counts as a refusal (the
            child is then stopped, and the next question starts a new one).

    Example:
    ```python
    with Prober() as prober:
        prober.refusal("model_int8.tflite", threads=2)   # None: it loads
    ```
    """

    def __init__(self, code: str = CHILD, timeout_s: float = TIMEOUT_S) -> None:
        self.code = code
        self.timeout_s = timeout_s
        self._process: Optional[subprocess.Popen] = None
        self._stderr: Optional[IO[bytes]] = None
        self._lock = threading.Lock()

    def refusal(self, path: str, threads: int = 1) -> Optional[str]:
        """None when the child prepared `path`, else the runtime's reason (or how it died)."""
        with self._lock:
            process = self._running()
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(f"{int(threads)} {path}\n".encode())
                process.stdin.flush()
            except BrokenPipeError:
                return self._died()
            answer = self._read_line(process)
            if answer is None:
                self.close()
                return f"preparing the file did not finish in {self.timeout_s:g} s"
            if not answer:
                return self._died()
            text = answer.decode(errors="replace").strip()
            return None if text == "ok" else text.split(" ", 1)[-1]

    def close(self) -> None:
        """Stops the child (the next question starts a new one)."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> "Prober":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _running(self) -> subprocess.Popen:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self.close()
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen([sys.executable, "-c", self.code], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr)
        return self._process

    def _read_line(self, process: subprocess.Popen) -> Optional[bytes]:
        """The child's next line (b"" when it died), or None when none came in time."""
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(self.timeout_s):
                return None
        return process.stdout.readline()

    def _died(self) -> str:
        """How the child died (its last stderr line), and forget it."""
        process, stderr = self._process, self._stderr
        assert process is not None and stderr is not None
        code = process.wait()
        stderr.seek(0)
        lines = [line.strip() for line in stderr.read().decode(errors="replace").splitlines()
                 if line.strip() and not line.startswith(("INFO:", "WARNING:", "  File", "Traceback"))]
        self.close()
        last = lines[-1] if lines else ""
        if code < 0:
            return f"the runtime crashed preparing the file (signal {-code}): {last}".rstrip(": ")
        return f"the runtime's process ended (exit {code}) preparing the file: {last}".rstrip(": ")


_PROBER = Prober()
atexit.register(_PROBER.close)


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
        return _PROBER.refusal(path, threads)
