"""Latency measurement: warm-up, a timed loop of one call, percentiles, and a bare baseline.

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
import time

import numpy as np


def time_callable(fn, warmup=3, runs=None, seconds=None, sync=None, min_runs=3, max_runs=100_000):
    """Call `fn` repeatedly and return the duration of each timed call in seconds.

    Args:
        fn: callable taking no arguments; its return value goes to `sync`.
        warmup: untimed calls first (allocation, JIT, caches).
        runs: number of timed calls. Default 50 when `seconds` is not given either.
        seconds: time budget for the timed calls instead of a count (at least `min_runs`).
        sync: callable applied to `fn`'s result before the clock stops (GPU sync), or None.
        min_runs: fewest timed calls when `seconds` is used.
        max_runs: most timed calls when `seconds` is used.

    Returns:
        list of float seconds, one per timed call.

    Example:
    ```python
    time_callable(lambda: None, warmup=0, runs=5)  # five tiny durations
    ```
    """
    if runs is not None and seconds is not None:
        raise ValueError(f"Give `runs` or `seconds`, not both. Received: runs={runs}, seconds={seconds}")
    if runs is None and seconds is None:
        runs = 50
    if runs is not None and (not isinstance(runs, (int, np.integer)) or runs < 1):
        raise ValueError(f"`runs` must be a positive integer. Received: runs={runs!r}")
    if seconds is not None and not seconds > 0:
        raise ValueError(f"`seconds` must be positive. Received: seconds={seconds!r}")
    if warmup < 0:
        raise ValueError(f"`warmup` must be >= 0. Received: warmup={warmup!r}")
    sync = sync or (lambda out: out)
    for _ in range(int(warmup)):
        sync(fn())
    times = []
    clock = time.perf_counter
    if runs is not None:
        for _ in range(int(runs)):
            start = clock()
            sync(fn())
            times.append(clock() - start)
        return times
    deadline = clock() + seconds
    while len(times) < max_runs:
        start = clock()
        sync(fn())
        end = clock()
        times.append(end - start)
        if end >= deadline and len(times) >= min_runs:
            break
    return times


def time_interleaved(fns, warmup=3, runs=None, seconds=None, rounds=5, sync=None):
    """Time several callables in alternating blocks, so drift on the machine hits all of them.

    Args:
        fns: dict name -> callable.
        warmup: untimed calls of each callable, before the first round.
        runs: timed calls of each callable in total, split over the rounds.
        seconds: time budget of each callable in total, split over the rounds.
        rounds: number of alternations.
        sync: dict name -> sync callable, or None.

    Returns:
        dict name -> list of float seconds.

    Example:
    ```python
    time_interleaved({"a": lambda: None, "b": lambda: None}, runs=10, rounds=2)
    ```
    """
    sync = sync or {}
    if runs is None and seconds is None:
        runs = 50
    rounds = max(1, int(rounds))
    for name, fn in fns.items():
        settle = sync.get(name) or (lambda out: out)
        for _ in range(int(warmup)):
            settle(fn())
    times = {name: [] for name in fns}
    for index in range(rounds):
        for name, fn in fns.items():
            if runs is not None:
                # Spread the remainder over the first rounds so the total is exactly `runs`.
                block = runs // rounds + (1 if index < runs % rounds else 0)
                if block == 0:
                    continue
                times[name] += time_callable(fn, warmup=0, runs=block, sync=sync.get(name))
            else:
                times[name] += time_callable(
                    fn, warmup=0, seconds=seconds / rounds, sync=sync.get(name), min_runs=1
                )
    return times


def summarize(times, batch_size=1):
    """Latency statistics of a list of durations.

    Args:
        times: durations in seconds, one per call.
        batch_size: images per call, for the throughput.

    Returns:
        dict with `latency_mean_ms`, `latency_std_ms`, `latency_min_ms`, `latency_p50_ms`,
        `latency_p90_ms`, `latency_p99_ms`, `latency_max_ms`, `throughput_ips` (images per
        second at the median) and `runs`.

    Example:
    ```python
    summarize([0.010, 0.012, 0.011])["latency_p50_ms"]  # 11.0
    ```
    """
    values = np.asarray(times, np.float64) * 1000.0
    if values.size == 0:
        raise ValueError("`times` is empty: nothing was timed.")
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "latency_mean_ms": float(values.mean()),
        "latency_std_ms": float(values.std()),
        "latency_min_ms": float(values.min()),
        "latency_p50_ms": float(p50),
        "latency_p90_ms": float(p90),
        "latency_p99_ms": float(p99),
        "latency_max_ms": float(values.max()),
        "throughput_ips": float(batch_size * 1000.0 / p50) if p50 > 0 else float("inf"),
        "runs": int(values.size),
    }


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
