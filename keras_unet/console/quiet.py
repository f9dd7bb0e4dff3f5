"""Keep TensorFlow's, the converters' and the runtimes' own log lines off the user's screen.

TensorFlow prints an absl banner and oneDNN notes from C++ when it is imported, the TFLite
converter prints `fully_quantize: 0, inference_type: 6 ...` for every conversion, LiteRT
prints `Created TensorFlow Lite XNNPACK delegate`, Keras and tf2onnx raise warnings about
their own internals. None of it is for a user of keras-unet, and it buries what is.

`quiet_output()` silences that for the duration of a `with` block and puts everything back
afterwards, so a Python caller's process is not changed for good:

- native (C/C++) writes to file descriptor 2 go to a temporary file (kept as `.native_log`,
  shown by the CLI with `--debug`), while Python's own `sys.stderr` (progress bars, our
  messages) still reaches the terminal through a copy of the original descriptor;
- `TF_CPP_MIN_LOG_LEVEL` is set to 2 if the caller did not set it (it only matters when
  TensorFlow is first imported inside the block);
- known third-party warnings (NOISY_WARNINGS) are ignored and chatty loggers (NOISY_LOGGERS)
  raised to ERROR.

Nested blocks are free (the outer one does the work). `enabled=False` (the CLI's
`--verbose`) leaves everything as it is.

Example:
```python
from keras_unet.console.quiet import quiet_output

with quiet_output():
    import tensorflow as tf   # no banner
```
"""

import contextlib
import io
import logging
import os
import sys
import tempfile
import threading
import warnings

# Warnings raised inside libraries about themselves; the user can do nothing about them.
NOISY_WARNINGS = (
    r"`shuffle=True` was passed, but will be ignored",   # Keras, tf.data input
    r"In the future `np\.object` will be defined",          # tf2onnx on numpy 2
    r".*np\.(object|bool|cast)",                            # tf2onnx / onnx numpy deprecations
    r"Your input ran out of data",                          # Keras, last partial epoch
    r"Skipping variable loading for optimizer",             # Keras, loading for inference
    r"Compiled the loaded model, but the compiled metrics", # Keras, loading for inference
    r".*tf\.lite\.Interpreter is deprecated",               # TF, when our fallback runs
    r"Statistics for quantized inputs were expected",       # TFLite converter
)
NOISY_LOGGERS = ("tensorflow", "absl", "tf2onnx", "onnx", "onnxruntime", "h5py", "matplotlib")

_lock = threading.Lock()
_depth = 0


class NativeStderr:
    """Route file descriptor 2 to a temporary file, keeping Python's `sys.stderr` visible."""

    def __init__(self):
        self.native_log = ""
        self._saved_fd = None
        self._log = None
        self._python_stderr = None

    @staticmethod
    def _python_stderr_is_fd2():
        try:
            return sys.stderr is not None and sys.stderr.fileno() == 2
        except (AttributeError, OSError, ValueError):
            return False  # e.g. pytest's capsys: Python writes never reach fd 2 anyway

    def start(self):
        try:
            sys.stderr.flush()
            self._saved_fd = os.dup(2)
        except (AttributeError, OSError, ValueError):
            self._saved_fd = None  # no descriptor 2 (a GUI process): nothing to silence
            return self
        self._log = tempfile.TemporaryFile()
        if self._python_stderr_is_fd2():
            self._python_stderr = sys.stderr
            stream = io.FileIO(os.dup(self._saved_fd), "w", closefd=True)
            sys.stderr = io.TextIOWrapper(stream, encoding=sys.stderr.encoding or "utf-8",
                                          errors="backslashreplace", line_buffering=True,
                                          write_through=True)
        os.dup2(self._log.fileno(), 2)
        return self

    def stop(self):
        if self._saved_fd is None:
            return
        if self._python_stderr is not None:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
                sys.stderr.close()
            sys.stderr = self._python_stderr
            self._python_stderr = None
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        self._saved_fd = None
        self._log.seek(0)
        self.native_log = self._log.read().decode("utf-8", "replace")
        self._log.close()


@contextlib.contextmanager
def quiet_output(enabled=True):
    """Silence native logs, known third-party warnings and chatty loggers inside the block.

    Args:
        enabled: False leaves the process as it is (verbose mode).

    Yields:
        a `NativeStderr` whose `native_log` holds the silenced native output once the block
        has ended, or None when nothing was silenced (disabled, or inside another block).

    Example:
    ```python
    with quiet_output() as quiet:
        convert()
    print(quiet.native_log if quiet else "")
    ```
    """
    global _depth
    with _lock:
        outermost = enabled and _depth == 0
        _depth += 1 if outermost else 0
    if not outermost:
        yield None
        return
    caller_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    if caller_level is None:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    loggers = {name: logging.getLogger(name) for name in NOISY_LOGGERS}
    levels = {name: logger.level for name, logger in loggers.items()}
    native = NativeStderr()
    try:
        with warnings.catch_warnings():
            for pattern in NOISY_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            for logger in loggers.values():
                logger.setLevel(logging.ERROR)
            native.start()
            try:
                yield native
            finally:
                native.stop()
    finally:
        for name, logger in loggers.items():
            logger.setLevel(levels[name])
        # Put back the caller's value (tf2onnx, for one, sets its own while converting).
        if caller_level is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = caller_level
        with _lock:
            _depth -= 1
