"""`ttplan bench model`: a dense model against its TT conversion, end to end and layer by layer.

`measure` plans, builds and times both models; `report` renders the markdown; `processes` repeats the end-to-end
timing in fresh processes, each running this package's `__main__` (the child); `compiled`, `memory_formats`, `forms`
and `breakdown` are the `--compile`, `--channels-last`, `--best` and per-module-kind timings. Imports flow one way:
`measure` and `__main__` use the others, `report` uses `measure`, and nothing imports `__main__`.
"""

from ttplan.bench.model.measure import (
    LayerTiming,
    ModelBench,
    bench_model,
    build_tt_model,
    end_to_end,
    prepare,
    time_pair,
)
from ttplan.bench.model.processes import ChildRequest, ProcessTiming, median_speedup, time_in_processes
from ttplan.bench.model.report import render_report, render_section

__all__ = ["ChildRequest", "LayerTiming", "ModelBench", "ProcessTiming", "bench_model", "build_tt_model",
           "end_to_end", "median_speedup", "prepare", "render_report", "render_section",
           "time_in_processes", "time_pair"]
