"""Dense and TT in both memory formats, all four timed interleaved in one process: the best of each.

A PyTorch user on a CPU can run the dense model channels-last, and that alone made the dense ResNets
faster on the development machine; the TT model may be fastest in either format. `bench model
--channels-last` compares both models channels-last, and beside that times four models in one set of
interleaved rounds: the dense model as loaded (NCHW) and channels-last, the TT model planned for NCHW
(the run's objective, profile file aside: the NCHW profile `load_profile` finds, as `ttplan emit` would
use) and the TT model of the channels-last run. Its answer is the best dense against the best TT,
each in whichever format suits it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

#: the four models, in the order they are timed and reported
MODELS = ("dense NCHW", "dense channels-last", "TT NCHW", "TT channels-last")


@dataclass(frozen=True)
class FormatTimings:
    """Median ms of each of `MODELS` over the same interleaved rounds."""

    ms: dict[str, float]

    def best(self, kind: str) -> str:
        """The fastest of the dense (`kind="dense"`) or TT (`"TT"`) models, by name."""
        return min((name for name in MODELS if name.startswith(kind + " ")), key=self.ms.__getitem__)

    @property
    def speedup(self) -> float:
        """The best dense model's time over the best TT model's."""
        return self.ms[self.best("dense")] / self.ms[self.best("TT")]


def time_all(calls: dict[str, Callable[[], object]], rounds: int, sync: Callable[[], None] = lambda: None,
             block: int = 1) -> dict[str, float]:
    """Median ms per call of each callable over `rounds`, every round visiting each in turn (after one warm-up
    call each), so drifts in load hit all of them alike; a visit makes `block` back-to-back calls and records
    their mean."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            sync()
            start = time.perf_counter()
            for _ in range(block):
                call()
            sync()
            times[name].append((time.perf_counter() - start) * 1000 / block)
    return {name: statistics.median(values) for name, values in times.items()}


__all__ = ["MODELS", "FormatTimings", "time_all"]
