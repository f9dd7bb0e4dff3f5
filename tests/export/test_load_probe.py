"""keras_unet.export.load_probe: one child process answers every question, and one that dies
or hangs answers for that file only."""

import os

import pytest

from keras_unet.export.load_probe import Prober, tflite_refusal

# A stand-in for the runtime's child (no TensorFlow, no LiteRT): the path says what to do.
PLANTED = (
    "import os, sys, time\n"
    "for line in sys.stdin:\n"
    "    threads, path = line.rstrip('\\n').split(' ', 1)\n"
    "    sys.stderr.write('INFO: log line ' * 20000 + '\\n')  # ~300 kB a question\n"
    "    sys.stderr.flush()\n"
    "    if path == 'crash':\n"
    "        sys.stderr.write('free(): double free detected\\n'); sys.stderr.flush(); os.abort()\n"
    "    if path == 'hang':\n"
    "        time.sleep(60)\n"
    "    if path == 'pid':\n"
    "        print('refused', os.getpid(), flush=True); continue\n"
    "    print('ok' if path == 'good' else 'refused scale out of range', flush=True)\n"
)


def test_one_child_answers_every_question_through_a_flood_of_logs():
    with Prober(PLANTED) as prober:
        first = prober.refusal("pid")
        for _ in range(12):  # ~4 MB of stderr: more than a pipe holds
            assert prober.refusal("good", threads=2) is None
        assert prober.refusal("bad") == "scale out of range"
        assert prober.refusal("pid") == first  # the same process all along


def test_a_crash_answers_for_its_file_and_the_next_question_starts_a_new_child():
    with Prober(PLANTED) as prober:
        before = prober.refusal("pid")
        reason = prober.refusal("crash")
        assert reason == "the runtime crashed preparing the file (signal 6): free(): double free detected"
        assert prober.refusal("good") is None
        assert prober.refusal("pid") != before


def test_a_hang_is_a_refusal_after_the_timeout():
    with Prober(PLANTED, timeout_s=0.5) as prober:
        assert prober.refusal("hang") == "preparing the file did not finish in 0.5 s"
        assert prober.refusal("good") is None


def test_close_stops_the_child():
    prober = Prober(PLANTED)
    pid = int(prober.refusal("pid"))
    prober.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: no such process any more
    assert prober.refusal("good") is None
    prober.close()


def test_the_runtime_refuses_bytes_that_are_no_tflite_file():
    assert tflite_refusal(b"not a flatbuffer" * 8) == "The model is not a valid Flatbuffer buffer"
