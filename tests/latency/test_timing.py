"""The timing loops (ttplan/latency/timing.py): visits sized in calls from a warm-up, against a fake clock."""

from __future__ import annotations

import pytest

from ttplan.latency import timing


@pytest.fixture
def clock(monkeypatch):
    """A clock that only the fake calls move: each advances it by its own duration."""
    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])

    def call_lasting(ms: float):
        def call() -> None:
            now[0] += ms / 1000
        return call

    return call_lasting


def test_a_visit_lasts_about_the_block_and_holds_at_least_the_least_calls(clock):
    calls = {"slow": clock(10.0), "fast": clock(0.1), "block": clock(5.0)}
    assert timing.block_calls(calls, 5.0) == {"slow": 1, "fast": 50, "block": 1}
    # a call longer than the block still gets `least` calls per visit; short ones are sized by the block as before
    assert timing.block_calls(calls, 5.0, least=5) == {"slow": 5, "fast": 50, "block": 5}


def test_time_all_records_the_mean_of_each_visit_and_the_median_over_rounds(clock):
    durations = iter([1.0, 3.0, 2.0, 2.0, 9.0, 9.0])  # three rounds of two-call visits: means 2, 2, 9
    now = {"t": 0.0}

    def call() -> None:
        now["t"] = next(durations)
        clock(now["t"])()

    assert timing.time_all({"a": call}, rounds=3, block=2, warmup=False) == {"a": pytest.approx(2.0)}
