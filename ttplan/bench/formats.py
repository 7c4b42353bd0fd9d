"""Formats at equal parameters on one layer: each format's published and best-order MACs and its CPU time.

For every swept format (classical, hodec with 1-3 modes, the tensor ring, CP joint and separable) the uniform rank
whose parameter reduction is nearest a target (e.g. 90% and 97%) is planned at the timing batch; each plan runs as
a `TTConv2d` and is timed against the dense `nn.Conv2d` with `ttplan.bench.latency.time_interleaved` (medians).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ttplan.analysis.sweep import format_label
from ttplan.bench.latency import time_interleaved
from ttplan.core.formats import TTFormat, make_format
from ttplan.core.layer import plan_layer
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.latency.machine import describe
from ttplan.runtime.layers import TTConv2d

#: (kind, modes per side) compared: the sweep's formats and CP with a separable window
FORMATS: tuple[tuple[str, int], ...] = (("classical", 3), ("hodec", 1), ("hodec", 2), ("hodec", 3), ("tr", 3),
                                        ("cp", 1), ("cp-separable", 1))


@dataclass(frozen=True)
class FormatRow:
    """One format at the rank nearest a parameter target: its counts at the batch and its measured times."""

    target: float
    label: str
    fmt: TTFormat
    params: int
    reduction: float
    published_macs: int
    best_macs: int
    published_ms: float
    best_ms: float


def nearest_rank_format(spec: ConvSpec, kind: str, order: int, target: float) -> TTFormat | None:
    """The format of `kind` at the uniform rank whose parameter reduction is nearest `target` (None if it does
    not fit the layer)."""
    dense = spec.dense_params()
    try:
        probe = make_format(kind, spec, rank=1, order=order)
    except TTPlanError:
        return None
    best: tuple[float, TTFormat] | None = None
    for rank in range(1, max(probe.rank_bounds(spec)) + 1):
        fmt = make_format(kind, spec, rank=rank, order=order)
        gap = abs(1 - fmt.params(spec) / dense - target)
        if best is None or gap < best[0]:
            best = (gap, fmt)
        if 1 - fmt.params(spec) / dense < target - 0.05:
            break
    return None if best is None else best[1]


def compare_formats(spec: ConvSpec, targets: Iterable[float] = (0.90, 0.97), batch: int = 32, repeats: int = 5,
                    formats: Iterable[tuple[str, int]] = FORMATS, seed: int = 0,
                    progress: Callable[[int], None] | None = None) -> tuple[list[FormatRow], float]:
    """Plan and time every format at each target; returns the rows and the dense conv's median milliseconds."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, spec.in_channels, *spec.input_size, generator=gen)
    dense = nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride, spec.padding,
                      spec.dilation, bias=False)
    rows: list[FormatRow] = []
    dense_ms: list[float] = []
    for target in targets:
        chosen = [(format_label(kind, order), fmt) for kind, order in formats
                  if (fmt := nearest_rank_format(spec, kind, order, target)) is not None]
        modules: dict[str, nn.Module] = {"dense": dense}
        plans = {}
        for label, fmt in chosen:
            plan = plan_layer(spec, fmt, batch=batch)
            plans[label] = plan
            modules[f"{label} published"] = TTConv2d(spec, fmt, plan=plan.published, batch=batch)
            modules[f"{label} best"] = TTConv2d(spec, fmt, plan=plan.best, batch=batch)
        ms = time_interleaved(modules, x, repeats)
        dense_ms.append(ms["dense"])
        for label, fmt in chosen:
            plan = plans[label]
            params = fmt.params(spec)
            rows.append(FormatRow(target, label, fmt, params, 1 - params / spec.dense_params(),
                                  plan.published.macs, plan.best.macs, ms[f"{label} published"], ms[f"{label} best"]))
        if progress is not None:
            progress(1)
    return rows, sorted(dense_ms)[len(dense_ms) // 2]


def render_markdown(rows: list[FormatRow], spec: ConvSpec, name: str, batch: int, dense_ms: float, threads: int,
                    repeats: int, command: str, load: str) -> str:
    """The report: one table per parameter target."""
    dense_macs = spec.dense_macs(batch)
    lines = [
        f"# Formats at equal parameters: {name} ({spec.describe()})",
        "",
        f"Regenerate: `{command}`. Each format at the uniform rank whose parameter reduction is nearest the target; "
        f"MACs at batch {batch} (FLOPs = 2 x MACs) under ttplan's conv-aware model, the best order searched at that "
        f"batch; times are medians of {repeats} interleaved blocks of `TTConv2d` forwards (no grad, float32, "
        f"{threads} thread{'s' if threads != 1 else ''}) on {describe('cpu')}.",
        f"The machine is shared: load average at the start `{load}`; read times as ratios measured side by side. "
        "Where the best order is the published one (best / published 1.000 with equal MACs) the same plan is timed "
        "twice: the spread of those pairs is the noise of this run.",
        f"Dense `nn.Conv2d`: {dense_macs:,} MACs, {spec.dense_params():,} params, {dense_ms:.2f} ms.",
        "CP is fitted by ALS, not an exact projection (only its costs and speed matter here).",
    ]
    for target in dict.fromkeys(r.target for r in rows):
        lines += ["", f"## about {100 * target:.0f}% fewer parameters", "",
                  "| format | ranks | params | params↓ | published MACs | best MACs | best / published "
                  "| published ms | best ms | best vs dense time |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in (r for r in rows if r.target == target):
            ranks = ",".join(map(str, r.fmt.ranks))
            lines.append(
                f"| {r.label} | {ranks} | {r.params:,} | {100 * r.reduction:.1f}% | {r.published_macs:,} "
                f"({r.published_macs / dense_macs:.3f}x) | {r.best_macs:,} ({r.best_macs / dense_macs:.3f}x) | "
                f"{r.best_macs / r.published_macs:.3f} | {r.published_ms:.2f} | {r.best_ms:.2f} | "
                f"{r.best_ms / dense_ms:.2f}x |")
    return "\n".join(lines) + "\n"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (what `uptime` shows), or `unknown`."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


__all__ = ["FORMATS", "FormatRow", "compare_formats", "load_average", "nearest_rank_format", "render_markdown"]
