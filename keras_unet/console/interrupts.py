"""Ctrl-C that always stops a command, even when it lands inside a garbage-collector callback.

Example:
```python
with reliable_interrupt():
    model.fit(...)   # Ctrl-C raises KeyboardInterrupt here, every time
```
"""

import contextlib
import signal
import sys
import threading

# Set by a Ctrl-C inside `reliable_interrupt`, cleared once its KeyboardInterrupt has left the
# block: a long loop calls `raise_if_interrupted()` at safe points (a training batch), so an
# interrupt that some library swallowed still stops it there.
_pending = threading.Event()


def raise_if_interrupted():
    """Raise KeyboardInterrupt if a Ctrl-C arrived that has not stopped the command yet.

    Example:
    ```python
    for batch in batches:
        raise_if_interrupted()
        step(batch)
    ```
    """
    if _pending.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def reliable_interrupt(resend_after_s=1.0):
    """Make sure a Ctrl-C stops the run, even one that arrives inside a gc callback.

    Python ignores an exception raised in a garbage-collector callback (it prints
    "Exception ignored in: <function _xla_gc_callback>"), and Keras imports jax where it is
    installed, which registers one: a Ctrl-C landing there would be swallowed and training
    would go on. While this is active, each SIGINT raises KeyboardInterrupt as usual and,
    unless that exception has left the block `resend_after_s` later, is delivered again;
    the swallowed one is not printed. Code that catches exceptions broadly can still eat it,
    so loops also call `raise_if_interrupted()` at safe points. Any other exception that leaves
    the block while a Ctrl-C is pending is raised as KeyboardInterrupt from it: a Ctrl-C that
    lands inside native code (TensorFlow tracing a function through pybind11) can come out as
    "RuntimeError: pybind11::error_already_set: MISMATCH ... REPLACED BY KeyboardInterrupt",
    and the user asked to stop, not for an error. Where SIGINT is not Python's default (another
    handler, or a thread other than the main one) nothing changes.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    settled = threading.Event()
    previous_hook = sys.unraisablehook

    def resend():
        if not settled.is_set():
            import _thread

            _thread.interrupt_main(signal.SIGINT)

    def on_interrupt(signum, frame):
        _pending.set()
        timer = threading.Timer(resend_after_s, resend)
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    def unraisable(info):
        if not issubclass(info.exc_type, KeyboardInterrupt):  # that one is delivered again
            previous_hook(info)

    signal.signal(signal.SIGINT, on_interrupt)
    sys.unraisablehook = unraisable
    try:
        yield
        raise_if_interrupted()  # swallowed on the way and never re-delivered: stop now
    except KeyboardInterrupt:
        _pending.clear()  # delivered: it stops the command
        raise
    except Exception as error:
        if not _pending.is_set():
            raise
        _pending.clear()  # the interrupt, turned into another type on its way out
        raise KeyboardInterrupt from error
    finally:
        settled.set()
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGINT, signal.default_int_handler)
