import numpy as np
import pytest

from keras_unet.benchmarks import timing


def test_percentiles_are_ordered_and_throughput_follows_p50():
    rng = np.random.default_rng(1)
    times = list(rng.lognormal(-4, 0.5, 500))
    stats = timing.summarize(times, batch_size=4)
    order = ["latency_min_ms", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms"]
    values = [stats[key] for key in order]
    assert values == sorted(values)
    assert stats["latency_p50_ms"] == pytest.approx(np.median(times) * 1000)
    assert stats["throughput_ips"] == pytest.approx(4 * 1000 / stats["latency_p50_ms"])
    assert stats["runs"] == 500


def test_time_callable_counts_warmup_apart_and_syncs():
    calls, synced = [], []
    times = timing.time_callable(lambda: calls.append(1) or len(calls), warmup=3, runs=7, sync=synced.append)
    assert len(times) == 7 and len(calls) == 10 and len(synced) == 10
    assert all(t >= 0 for t in times)


def test_time_callable_seconds_budget_gives_at_least_min_runs():
    times = timing.time_callable(lambda: None, warmup=0, seconds=0.01, min_runs=5)
    assert len(times) >= 5


def test_interleaved_gives_each_exactly_runs():
    order = []
    times = timing.time_interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, warmup=1, runs=11, rounds=3
    )
    assert len(times["a"]) == 11 and len(times["b"]) == 11
    # Blocks alternate: after warm-up, a-block, b-block, a-block...
    timed = order[2:]
    assert timed[:4] == ["a"] * 4 and timed[4:8] == ["b"] * 4


def test_argument_errors():
    with pytest.raises(ValueError, match="runs"):
        timing.time_callable(lambda: None, runs=0)
    with pytest.raises(ValueError, match="not both"):
        timing.time_callable(lambda: None, runs=3, seconds=1.0)
    with pytest.raises(ValueError, match="empty"):
        timing.summarize([])


def test_bare_invoke_baseline_runs_a_tflite_file(tiny_models):
    times = timing.bare_invoke_baseline(tiny_models["tflite"], threads=1, warmup=1, runs=5)
    assert len(times) == 5 and all(t > 0 for t in times)
    batch = np.full((1, 32, 32, 3), 200, np.float32)
    invoke = timing.make_bare_invoke(tiny_models["tflite"], threads=1, batch=batch)
    invoke()
