"""keras_unet.runtime.timing: what is inside the clock, how many calls, the statistics.

Durations come from a fake `time.perf_counter` that the timed callables advance by known
amounts, so the tests check exact numbers and assert no real speed.
"""

import numpy as np
import pytest

from keras_unet.runtime import timing


class FakeClock:
    """`time.perf_counter` stand-in: time moves only when a test says so."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture()
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", fake)
    return fake


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


def test_time_callable_times_call_and_sync_but_not_warmup(clock):
    calls, synced = [], []

    def call():
        calls.append(1)
        clock.advance(0.002 if len(calls) > 3 else 1.0)  # slow warm-up calls must not count
        return len(calls)

    def sync(out):
        synced.append(out)
        clock.advance(0.0005)  # the device wait is part of the call

    times = timing.time_callable(call, warmup=3, runs=7, sync=sync)
    assert times == pytest.approx([0.0025] * 7)
    assert len(calls) == 10 and synced == list(range(1, 11))


def test_time_callable_seconds_budget_stops_at_the_deadline(clock):
    tick = lambda: clock.advance(0.010)  # noqa: E731
    assert len(timing.time_callable(tick, warmup=0, seconds=0.05, min_runs=3)) == 5
    # A budget shorter than one call still gives `min_runs` calls.
    assert len(timing.time_callable(tick, warmup=0, seconds=0.001, min_runs=4)) == 4


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


def test_median_ms_drops_the_warm_up_and_takes_the_median(clock):
    durations = iter([5.0, 0.003, 0.001, 0.002, 0.010, 0.002])  # the first is the warm-up

    def call():
        clock.advance(next(durations))

    assert timing.median_ms(call, warmup=1, runs=5) == pytest.approx(2.0)


def test_median_in_turn_alternates_and_stops_at_none():
    order = []

    def measure(name, value):
        return lambda: order.append(name) or value

    medians = timing.median_in_turn({"a": measure("a", 1.0), "b": measure("b", 2.5)}, rounds=3)
    assert medians == {"a": 1.0, "b": 2.5} and order == ["a", "b"] * 3
    assert timing.median_in_turn({"a": lambda: 1.0, "b": lambda: None}, rounds=3) == {}
