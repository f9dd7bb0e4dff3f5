"""keras_unet.benchmarks.timing: the runtime's timing loop, and the bare-invoke baseline.

The loop and the statistics themselves are tested in tests/runtime/test_timing.py.
"""

import numpy as np
import pytest

from keras_unet.benchmarks import timing


def test_the_benchmark_times_with_the_runtime_loop():
    """One timing loop in the project: the benchmark's names are the runtime's functions."""
    from keras_unet.runtime import timing as primitives

    assert timing.time_callable is primitives.time_callable
    assert timing.time_interleaved is primitives.time_interleaved
    assert timing.summarize is primitives.summarize


@pytest.mark.slow
def test_bare_invoke_runs_the_model_on_the_given_batch(tiny_models):
    # Two images: bright (200) and dark (50); the interpreter's batch-1 input is resized to 2.
    batch = np.concatenate([np.full((1, 32, 32, 3), 200, np.float32), np.full((1, 32, 32, 3), 50, np.float32)])
    invoke = timing.make_bare_invoke(tiny_models["tflite"], threads=1, batch=batch)
    invoke()
    interpreter = invoke.__self__
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    expected = 1.0 / (1.0 + np.exp(-(np.array([200.0, 50.0]) - 128.0) / 10.0))  # the tiny model, by hand
    assert output.shape == (2, 32, 32, 1)
    np.testing.assert_allclose(output[:, 0, 0, 0], expected, rtol=1e-4)
    np.testing.assert_allclose(output.std(axis=(1, 2, 3)), 0.0, atol=1e-6)

    times = timing.bare_invoke_baseline(tiny_models["tflite"], threads=1, warmup=1, runs=5)
    assert len(times) == 5
