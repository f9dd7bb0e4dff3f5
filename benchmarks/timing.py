"""Latency measurement of runners: the runtime's timing loop, device sync, and a bare baseline.

What is timed is `runner.run(batch)` on a batch prepared once outside the loop, so resizing,
quantizing and post-processing stay out of the number (they are the application's cost, not
the model's). Each run is timed on its own with `time.perf_counter`; for Keras on a GPU the
output is synchronised before the clock stops (`synchronize`).

Noise: warm-up runs are dropped; the timed loop stops after `runs` calls or `seconds`,
whichever is given; thread counts are pinned by the caller (`threads` goes to the runtime);
`interleaved` alternates blocks of two measurements so that a slow minute on a shared machine
hits both of them; the median (p50) is the headline, not the mean.

Example:
```python
from keras_unet.benchmarks.timing import time_callable, summarize

times = time_callable(lambda: sum(range(1000)), warmup=2, runs=20)
summarize(times, batch_size=1)["latency_p50_ms"]
```
"""

import sys

import numpy as np

# The timing loop and the statistics are the runtime's, shared with the export's speed checks.
from keras_unet.runtime.timing import summarize, time_callable, time_interleaved  # noqa: F401


def synchronize_fn(runner):
    """Return the call that waits for a runner's device work to finish, or None on CPU runtimes.

    Only a Keras model on the JAX or PyTorch backend runs asynchronously on a GPU; `.tflite` and
    `.onnx` runners (CPU providers) return when the work is done.

    Args:
        runner: an `keras_unet.runtime` runner.

    Returns:
        a callable taking the run's output, or None.

    Example:
    ```python
    sync = synchronize_fn(runner)
    out = runner.run(batch); sync and sync(out)
    ```
    """
    if getattr(runner, "format", None) != "keras":
        return None
    keras = sys.modules.get("keras")
    backend = keras.config.backend() if keras is not None else None
    if backend == "jax":
        import jax

        return jax.block_until_ready
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return lambda out: torch.cuda.synchronize()
    if backend == "tensorflow":
        # Eager TF returns tensors whose values may still be computing on a GPU; asking for
        # the numpy value waits for them.
        return lambda out: [np.asarray(x) for x in (out if isinstance(out, (list, tuple)) else [out])]
    return None


def bare_invoke_baseline(tflite_path, threads=None, warmup=3, runs=None, seconds=None, batch=None):
    """Time a bare `interpreter.invoke()` loop: the floor the harness is compared against.

    The input is set once; only `invoke()` is inside the clock. Used to show that the harness
    (`runner.run`) adds no overhead worth mentioning.

    Args:
        tflite_path: path of a `.tflite` file.
        threads: interpreter threads (pin the same number as the harness), or None.
        warmup: untimed invokes first.
        runs: timed invokes (default 50), or None with `seconds`.
        seconds: time budget instead of `runs`.
        batch: input array (the harness's prepared batch), or None for zeros of the input's
            shape and dtype.

    Returns:
        list of float seconds, one per invoke.

    Example:
    ```python
    summarize(bare_invoke_baseline("model.tflite", threads=2, runs=50))["latency_p50_ms"]
    ```
    """
    invoke = make_bare_invoke(tflite_path, threads=threads, batch=batch)
    return time_callable(invoke, warmup=warmup, runs=runs, seconds=seconds)


def make_bare_invoke(tflite_path, threads=None, batch=None):
    """Load a fresh interpreter, set its input once, and return its `invoke` method.

    Args:
        tflite_path: path of a `.tflite` file.
        threads: interpreter threads, or None.
        batch: input array, or None for zeros of the input's shape and dtype.

    Returns:
        the interpreter's `invoke` (a callable with no arguments).

    Example:
    ```python
    invoke = make_bare_invoke("model.tflite", threads=2); invoke()
    ```
    """
    from keras_unet.runtime.tflite import interpreter_class

    interpreter = interpreter_class()(model_path=str(tflite_path), num_threads=threads)
    detail = interpreter.get_input_details()[0]
    if batch is None:
        batch = np.zeros(detail["shape"], detail["dtype"])
    batch = np.asarray(batch)
    if tuple(batch.shape) != tuple(detail["shape"]):
        interpreter.resize_tensor_input(detail["index"], batch.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], batch.astype(detail["dtype"], copy=False))
    return interpreter.invoke
