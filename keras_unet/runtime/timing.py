"""Timing primitives: warm-up, a timed loop on `time.perf_counter`, medians and percentiles.

The one timing loop of the project: `keras_unet.benchmarks` times runners with it, and the
export times files with it (its speed checks, the activation-type choice and what float
layers cost an int8 file). TF-free, numpy only.

Noise: warm-up calls are dropped; the timed loop stops after `runs` calls or `seconds`,
whichever is given; `time_interleaved` alternates blocks so that a slow minute on a shared
machine hits every callable; the median (p50) is the headline, not the mean.

Example:
```python
from keras_unet.runtime.timing import median_ms, summarize, time_callable

times = time_callable(lambda: sum(range(1000)), warmup=2, runs=20)
summarize(times, batch_size=1)["latency_p50_ms"]
median_ms(lambda: sum(range(1000)), warmup=1, runs=5)
```
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

import numpy as np

def time_callable(fn: Callable[[], Any], warmup: int = 3, runs: Optional[int] = None,
                  seconds: Optional[float] = None, sync: Optional[Callable[[Any], Any]] = None,
                  min_runs: int = 3, max_runs: int = 100_000) -> list:
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
    times: list = []
    clock = time.perf_counter
    if runs is not None:
        for _ in range(int(runs)):
            start = clock()
            sync(fn())
            times.append(clock() - start)
        return times
    assert seconds is not None  # checked above: one of runs and seconds is given
    deadline = clock() + seconds
    while len(times) < max_runs:
        start = clock()
        sync(fn())
        end = clock()
        times.append(end - start)
        if end >= deadline and len(times) >= min_runs:
            break
    return times


def time_interleaved(fns: Mapping[str, Callable[[], Any]], warmup: int = 3, runs: Optional[int] = None,
                     seconds: Optional[float] = None, rounds: int = 5,
                     sync: Optional[Mapping[str, Callable[[Any], Any]]] = None) -> dict:
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
    times: dict = {name: [] for name in fns}
    for index in range(rounds):
        for name, fn in fns.items():
            if runs is not None:
                # Spread the remainder over the first rounds so the total is exactly `runs`.
                block = runs // rounds + (1 if index < runs % rounds else 0)
                if block == 0:
                    continue
                times[name] += time_callable(fn, warmup=0, runs=block, sync=sync.get(name))
            elif seconds is not None:
                times[name] += time_callable(
                    fn, warmup=0, seconds=seconds / rounds, sync=sync.get(name), min_runs=1
                )
    return times


def summarize(times: Any, batch_size: int = 1) -> dict:
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


def median_ms(fn: Callable[[], Any], warmup: int = 1, runs: int = 5) -> float:
    """Median milliseconds of `runs` timed calls of `fn` after `warmup` untimed ones.

    Args:
        fn: callable taking no arguments (e.g. an interpreter's `invoke`).
        warmup: untimed calls first (XNNPACK packs weights on the first).
        runs: timed calls.

    Returns:
        the median duration in milliseconds.

    Example:
    ```python
    median_ms(lambda: None, warmup=1, runs=5)  # a few microseconds
    ```
    """
    return float(np.median(time_callable(fn, warmup=warmup, runs=runs))) * 1e3


def median_in_turn(measures: Mapping[str, Callable[[], Optional[float]]], rounds: int,
                   digits: int = 3) -> dict:
    """Call each measurement in turn, `rounds` times, and keep each one's median.

    For measurements that are costly on their own (each loads a file and times it): taken
    in turn, a machine's drift reaches all of them.

    Args:
        measures: name -> callable returning a figure (ms), or None when it cannot measure.
        rounds: how many times each is called.
        digits: the medians are rounded to this many decimals.

    Returns:
        name -> median, or {} as soon as a measurement returns None.

    Example:
    ```python
    median_in_turn({"a": lambda: 1.0, "b": lambda: 2.0}, rounds=3)  # {'a': 1.0, 'b': 2.0}
    ```
    """
    values: dict = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            figure = measure()
            if figure is None:
                return {}
            values[name].append(figure)
    return {name: round(float(np.median(figures)), digits) for name, figures in values.items()}
