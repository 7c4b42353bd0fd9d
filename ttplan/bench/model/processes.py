"""The end-to-end timing of `ttplan bench model`, repeated in fresh processes: the parent's side.

What a forward costs on the CPU depends on state that lives and dies with the process: how the C
allocator has laid out the heap, and so how many pages each forward maps anew (`ttplan.runtime.allocator`),
so the same dense-against-TT comparison can differ by half from one process to the next. Each child plans
the same architecture from the same request, builds both models and times them interleaved
(`measure.end_to_end`); the parent reports every process and the median.
The child is `python -m ttplan.bench.model` (`__main__.py`), reading its request as JSON on stdin and
printing its result as JSON on the last line of stdout.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ttplan.errors import TTPlanError

#: the module a fresh process runs (`python -m`): this package's `__main__.py`
CHILD = "ttplan.bench.model"


@dataclass(frozen=True)
class ChildRequest:
    """Everything a child needs to rebuild the same comparison: `measure.prepare`'s keyword arguments
    (JSON values), the latency profile as its dict, and the rounds to time."""

    prepare: dict
    profile: dict
    rounds: int


@dataclass(frozen=True)
class ProcessTiming:
    """One fresh process: median ms of dense and TT, and page faults per forward of each."""

    dense_ms: float
    tt_ms: float
    dense_faults: float | None
    tt_faults: float | None

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.tt_ms


def median_speedup(timings: list[ProcessTiming]) -> float:
    """The median over processes of each process's speedup."""
    return statistics.median(t.speedup for t in timings)


def time_in_processes(request: ChildRequest, processes: int,
                      progress: Callable[[str], None] | None = None) -> list[ProcessTiming]:
    """Run `processes` children one after another; a child that fails is a one-line error naming its last line."""
    if processes < 1:
        raise TTPlanError(f"processes={processes}: expected a number of fresh processes >= 1")
    say = progress or (lambda message: None)
    timings = []
    for number in range(1, processes + 1):
        done = subprocess.run([sys.executable, "-m", CHILD], input=json.dumps(asdict(request)),
                              capture_output=True, text=True, check=False)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise TTPlanError(f"fresh process {number} of {processes} failed (exit {done.returncode}): {last}")
        timing = ProcessTiming(**json.loads(lines[-1]))
        say(f"process {number}/{processes}: dense {timing.dense_ms:.2f} ms, TT {timing.tt_ms:.2f} ms, "
            f"{timing.speedup:.2f}x")
        timings.append(timing)
    return timings


__all__ = ["CHILD", "ChildRequest", "ProcessTiming", "median_speedup", "time_in_processes"]
