"""A Ctrl-C that some library swallows still stops the command."""

import subprocess
import sys
import textwrap

# A suite started in the background (`cmd &` in a script) hands its children SIGINT ignored,
# and Python then installs no KeyboardInterrupt handler: give the child the interactive default.
DEFAULT_SIGINT = """
import os, signal, time
signal.signal(signal.SIGINT, signal.default_int_handler)
"""


def _run_child(body):
    """Run `body` (indented Python) in a fresh interpreter with the interactive SIGINT."""
    code = DEFAULT_SIGINT + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_a_swallowed_interrupt_is_raised_again_at_the_next_check():
    done = _run_child("""
        from keras_unet.console.interrupts import raise_if_interrupted, reliable_interrupt

        with reliable_interrupt(resend_after_s=60):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)
            except KeyboardInterrupt:
                pass  # what a library catching BaseException does
            try:
                raise_if_interrupted()
            except KeyboardInterrupt:
                print("stopped at the check")
                raise
    """)
    assert "stopped at the check" in done.stdout
    assert done.returncode != 0 and "KeyboardInterrupt" in done.stderr


def test_the_block_end_raises_an_interrupt_nobody_checked():
    done = _run_child("""
        from keras_unet.console.interrupts import reliable_interrupt

        try:
            with reliable_interrupt(resend_after_s=60):
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.5)
                except KeyboardInterrupt:
                    pass
        except KeyboardInterrupt:
            print("interrupted at the end of the block")
    """)
    assert "interrupted at the end of the block" in done.stdout, done.stderr


def test_an_interrupt_turned_into_another_error_still_stops_as_an_interrupt():
    # pybind11 replaces a KeyboardInterrupt raised inside native code by a RuntimeError
    # ("MISMATCH of original and normalized active exception types"): seen in CI when Ctrl-C
    # landed while TensorFlow traced the training step.
    done = _run_child("""
        from keras_unet.console.interrupts import reliable_interrupt

        try:
            with reliable_interrupt(resend_after_s=60):
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.5)
                except KeyboardInterrupt as error:
                    raise RuntimeError("pybind11::error_already_set: MISMATCH") from error
        except KeyboardInterrupt as stop:
            print("interrupted:", type(stop.__cause__).__name__)
    """)
    assert "interrupted: RuntimeError" in done.stdout, done.stderr


def test_an_error_without_an_interrupt_keeps_its_type():
    done = _run_child("""
        from keras_unet.console.interrupts import reliable_interrupt

        try:
            with reliable_interrupt(resend_after_s=60):
                raise RuntimeError("a real failure")
        except RuntimeError as error:
            print("kept:", error)
    """)
    assert "kept: a real failure" in done.stdout, done.stderr
