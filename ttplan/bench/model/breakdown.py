"""Where a model's forward spends its time, by kind of module: each module's calls timed by forward hooks.

The end-to-end speedup is bounded by what the TT layers leave alone (Amdahl). The per-layer table times the
convs apart; this times a whole forward of each model with every leaf module's calls clocked in place (a
pre-hook and a hook, the device synchronised at both), and sums them by kind: the layers TT replaces (the
dense convs in the dense model, the TT layers in the TT one, under one label), then each other module type
(`Conv2d` kept dense, `BatchNorm2d`, `MaxPool2d`, `ReLU`, ...), and what runs between modules (functional
ops such as the residual adds). The two models are timed interleaved, round by round, like every other
measurement (`ttplan.latency.timing`); medians over rounds per kind. Each kind's minor page faults are
counted the same way (where the platform counts them), since where an allocator hands memory back shows up
as the kind whose allocations fault it in again.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ttplan.runtime.allocator import minor_page_faults

#: the label of the layers TT replaces, in both models
REPLACED = "replaced layers (dense convs / TT layers)"
#: the label of what runs outside any timed module (the residual adds, flatten, functional calls)
BETWEEN = "between modules (adds, functional ops)"


@dataclass(frozen=True)
class TimeBreakdown:
    """Median ms per forward of each kind of module, in the dense and the TT model (0 where a model has none)."""

    dense: dict[str, float]
    tt: dict[str, float]
    dense_total: float
    tt_total: float
    dense_faults: dict[str, float] | None = None  # median minor page faults per forward by kind (None: not counted)
    tt_faults: dict[str, float] | None = None

    @property
    def kinds(self) -> list[str]:
        """Every kind, the replaced layers first, then by the TT model's time, largest first; `BETWEEN` last."""
        rest = sorted((set(self.dense) | set(self.tt)) - {REPLACED, BETWEEN},
                      key=lambda kind: -max(self.tt.get(kind, 0.0), self.dense.get(kind, 0.0)))
        return [REPLACED, *rest, BETWEEN]

    def largest_kept(self) -> tuple[str, float] | None:
        """The module type the TT model spends most time in besides the replaced layers, with its ms."""
        kept = [(kind, ms) for kind, ms in self.tt.items() if kind not in (REPLACED, BETWEEN)]
        return max(kept, key=lambda pair: pair[1]) if kept else None


def _timed_modules(model: nn.Module, replaced: set[str]) -> list[tuple[str, nn.Module]]:
    """(kind, module) for every module timed in `model`: the replaced layers as wholes, and every leaf module
    outside them."""
    out: list[tuple[str, nn.Module]] = []
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue
        if name in replaced:
            out.append((REPLACED, module))
            inside.append(name)
        elif name and not any(True for _ in module.children()):
            out.append((type(module).__name__, module))
    return out


class _Clock:
    """Forward hooks on `model` that add each timed module's wall time, and minor page faults, per call to its kind."""

    def __init__(self, model: nn.Module, replaced: set[str], sync: Callable[[], None]) -> None:
        self.model = model
        self.sync = sync
        self.totals: dict[str, float] = {}
        self.faults: dict[str, int] = {}
        self.handles = []
        for kind, module in _timed_modules(model, replaced):
            self.totals.setdefault(kind, 0.0)
            self.faults.setdefault(kind, 0)
            self.handles.append(module.register_forward_pre_hook(self._start))
            self.handles.append(module.register_forward_hook(self._stop(kind)))
        self._started = 0.0
        self._faulted = 0

    def _start(self, module: nn.Module, args: tuple) -> None:
        self.sync()
        self._faulted = minor_page_faults() or 0
        self._started = time.perf_counter()

    def _stop(self, kind: str) -> Callable:
        def hook(module: nn.Module, args: tuple, out: object) -> None:  # returns None: the output stands
            self.sync()
            self.totals[kind] += 1000 * (time.perf_counter() - self._started)
            self.faults[kind] += (minor_page_faults() or 0) - self._faulted
        return hook

    def forward(self, x: torch.Tensor) -> tuple[dict[str, float], dict[str, int], float]:
        """One forward: ms and page faults per kind, and the whole forward's ms (the hooks' own cost included)."""
        self.totals = dict.fromkeys(self.totals, 0.0)
        self.faults = dict.fromkeys(self.faults, 0)
        self.sync()
        start = time.perf_counter()
        self.model(x)
        self.sync()
        total = 1000 * (time.perf_counter() - start)
        return dict(self.totals), dict(self.faults), total

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def time_breakdown(dense: nn.Module, tt: nn.Module, x: torch.Tensor, replaced: set[str], rounds: int,
                   sync: Callable[[], None] = lambda: None) -> TimeBreakdown:
    """Median ms per forward by kind of module for both models, one forward of each per round, interleaved
    (after one warm-up forward each); `replaced`: the names of the layers TT replaces. Hooks are removed after."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: expected at least 1")
    clocks = {"dense": _Clock(dense, replaced, sync), "tt": _Clock(tt, replaced, sync)}
    samples: dict[str, list[tuple[dict[str, float], dict[str, int], float]]] = {"dense": [], "tt": []}
    try:
        with torch.no_grad():
            for clock in clocks.values():
                clock.forward(x)
            for _ in range(rounds):
                for which, clock in clocks.items():
                    samples[which].append(clock.forward(x))
    finally:
        for clock in clocks.values():
            clock.remove()

    def medians(runs: list[tuple[dict[str, float], dict[str, int], float]]
                ) -> tuple[dict[str, float], dict[str, float], float]:
        kinds = {kind: statistics.median(run[0][kind] for run in runs) for kind in runs[0][0]}
        faults = {kind: statistics.median(run[1][kind] for run in runs) for kind in runs[0][1]}
        between = statistics.median(max(0.0, total - sum(parts.values())) for parts, _, total in runs)
        return {**kinds, BETWEEN: between}, faults, statistics.median(total for _, _, total in runs)

    (dense_kinds, dense_faults, dense_total), (tt_kinds, tt_faults, tt_total) = (medians(samples["dense"]),
                                                                                 medians(samples["tt"]))
    counted = minor_page_faults() is not None
    return TimeBreakdown(dense_kinds, tt_kinds, dense_total, tt_total, dense_faults if counted else None,
                         tt_faults if counted else None)


def render_breakdown(result: TimeBreakdown) -> list[str]:
    """Markdown lines: the table of ms by kind, and the largest part the TT layers leave alone."""
    lines = ["Where each model's forward goes (every leaf module's calls timed in place by forward hooks, one "
             "forward of each model per round, interleaved; medians; rounds of their own, so the totals, which "
             "include the hooks' small cost, can differ from the end-to-end row):", "",
             "| part | dense ms | TT ms | share of TT | page faults per forward (dense / TT) |",
             "| --- | ---: | ---: | ---: | ---: |"]

    def faults(kind: str) -> str:
        if result.dense_faults is None or result.tt_faults is None or kind == BETWEEN:
            return ""
        return f"{result.dense_faults.get(kind, 0):,.0f} / {result.tt_faults.get(kind, 0):,.0f}"

    for kind in result.kinds:
        dense, tt = result.dense.get(kind, 0.0), result.tt.get(kind, 0.0)
        share = tt / result.tt_total if result.tt_total > 0 else 0.0
        lines.append(f"| {kind} | {dense:.2f} | {tt:.2f} | {share:.0%} | {faults(kind)} |")
    lines += [f"| whole forward | {result.dense_total:.2f} | {result.tt_total:.2f} | 100% | |", ""]
    kept = result.largest_kept()
    if kept is not None:
        kind, ms = kept
        share = ms / result.tt_total if result.tt_total > 0 else 0.0
        lines += [f"Besides the replaced layers, the TT model spends most in `{kind}`: {ms:.2f} ms, {share:.0%} of "
                  f"its forward (the dense model: {result.dense.get(kind, 0.0):.2f} ms).", ""]
    return lines


__all__ = ["BETWEEN", "REPLACED", "TimeBreakdown", "render_breakdown", "time_breakdown"]
