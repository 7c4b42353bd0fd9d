"""The timing loops of every measurement in ttplan: interleaved rounds (autotune, the benchmarks) and the median of
one op's repeats (calibration).

`time_all`: every round visits each callable in turn, so a drift in machine load hits all of them alike, and the
median over rounds is kept. A visit can be a block of back-to-back calls (their mean is recorded), sized
so that it lasts a few milliseconds (`block_calls`): one page fault or scheduler tick then does not decide between
two variants that each take a fraction of a millisecond. `median_us`: one op timed alone, repeated until a time
budget is spent, its median kept (the calibration's samples, each a single op).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable


def _no_sync() -> None:
    return None


def block_calls(calls: dict[Hashable, Callable[[], object]], block_ms: float, sync: Callable[[], None] = _no_sync,
                warmup: int = 2, least: int = 1) -> dict[Hashable, int]:
    """Calls per visit for each callable so that a visit lasts about `block_ms`, and holds at least `least` calls,
    from the last of `warmup` timed calls of each (the first ones warm caches and fold weights)."""
    blocks = {}
    for name, call in calls.items():
        elapsed = 0.0
        for _ in range(warmup):
            sync()
            start = time.perf_counter()
            call()
            sync()
            elapsed = 1000 * (time.perf_counter() - start)
        blocks[name] = max(least, 1, round(block_ms / max(elapsed, 1e-3)))
    return blocks


def time_all(calls: dict[Hashable, Callable[[], object]], rounds: int, sync: Callable[[], None] = _no_sync,
             block: int | dict[Hashable, int] = 1, warmup: bool = True) -> dict[Hashable, float]:
    """Median ms per call of each callable over `rounds`, every round visiting each in turn (after one warm-up
    call each unless `warmup` is off); a visit makes `block` back-to-back calls (a count per callable, or one
    for all) and records their mean."""
    counts = block if isinstance(block, dict) else dict.fromkeys(calls, block)
    if warmup:
        for call in calls.values():
            call()
    times: dict[Hashable, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            sync()
            start = time.perf_counter()
            for _ in range(counts[name]):
                call()
            sync()
            times[name].append((time.perf_counter() - start) * 1000 / counts[name])
    return {name: statistics.median(values) for name, values in times.items()}


def median_us(fn: Callable[[], object], budget_s: float = 0.03, min_reps: int = 5, max_reps: int = 200) -> float:
    """Median microseconds of `fn()` over repeats (one warm-up call; stops after `budget_s` once `min_reps` ran)."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


__all__ = ["block_calls", "median_us", "time_all"]
