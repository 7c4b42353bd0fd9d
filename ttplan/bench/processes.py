"""The end-to-end timing of `ttplan bench model`, repeated in fresh processes.

What a forward costs on the CPU depends on state that lives and dies with the process: how the C
allocator has laid out the heap, and so how many pages each forward maps anew (`ttplan.runtime.allocator`).
On the development machine the same dense-against-TT comparison differed by half from one process to
the next (`reports/latency_models.md`). Each child here plans the same architecture from the same
request, builds both models and times them interleaved (`bench.model.end_to_end`); the parent
reports every process and the median.
The child is `python -m ttplan.bench.processes`, reading its request as JSON on stdin and printing
its result as JSON on the last line of stdout.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ttplan.errors import TTPlanError


@dataclass(frozen=True)
class ChildRequest:
    """Everything a child needs to rebuild the same comparison: `bench.model.prepare`'s keyword arguments
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


def run_child(request: ChildRequest) -> ProcessTiming:
    """In this process: build both models as the request says and time them (what a child does)."""
    from ttplan.bench.model import end_to_end, prepare
    from ttplan.core.latency import LatencyProfile

    run = prepare(**request.prepare, profile=LatencyProfile.from_dict(request.profile, "the parent's profile"))
    return ProcessTiming(*end_to_end(run, request.rounds))


def time_in_processes(request: ChildRequest, processes: int,
                      progress: Callable[[str], None] | None = None) -> list[ProcessTiming]:
    """Run `processes` children one after another; a child that fails is a one-line error naming its last line."""
    if processes < 1:
        raise TTPlanError(f"processes={processes}: expected a number of fresh processes >= 1")
    say = progress or (lambda message: None)
    timings = []
    for number in range(1, processes + 1):
        done = subprocess.run([sys.executable, "-m", "ttplan.bench.processes"], input=json.dumps(asdict(request)),
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


def main() -> None:
    """The child: a `ChildRequest` as JSON on stdin, a `ProcessTiming` as JSON on the last line of stdout."""
    request = ChildRequest(**json.loads(sys.stdin.read()))
    try:
        timing = run_child(request)
    except TTPlanError as error:
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(asdict(timing)))


if __name__ == "__main__":
    main()


__all__ = ["ChildRequest", "ProcessTiming", "median_speedup", "run_child", "time_in_processes"]
