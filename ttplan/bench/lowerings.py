"""Every lowering of each distinct TT layer of an architecture, against the dense conv in both memory formats.

What `default_lowering` rests on, measured on this machine: for each distinct decomposed layer (geometry and
format) of ARCH at one batch, its fewest-MACs order with folded weights, run by `TTConv2d` in each lowering of
`LOWERINGS` (bmm or 1x1-conv mixings on NCHW maps, the same on NHWC maps, the fused kernel where it runs that
order), each on an input in its own memory format, and the dense conv on an NCHW and on a channels-last input.
All variants of a layer are timed interleaved (`time_all`, blocks of back-to-back calls), medians over rounds.
Every lowering's output is checked against the NCHW bmm lowering's before it is timed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ttplan.arch.request import PlanRequest, run_request
from ttplan.bench.latency import LayerGroup as GeometryGroup
from ttplan.core.contraction import ContractionPlan
from ttplan.core.formats import TTFormat
from ttplan.core.fusion import fused_form
from ttplan.errors import TTPlanError
from ttplan.latency.timing import block_calls, time_all
from ttplan.runtime.kernels import kernel_status
from ttplan.runtime.layers import TTConv2d
from ttplan.runtime.lowering import LOWERINGS, Lowering, default_lowering

#: the dense conv on each memory format, beside the lowerings' labels
DENSE, DENSE_CL = "dense", "dense-cl"
#: ms of back-to-back calls per visit (as autotune)
BLOCK_MS = 5.0


@dataclass(frozen=True)
class LayerGroup(GeometryGroup):
    """Decomposed layers sharing a geometry and format (they run the same), named in trace order, with the order
    they run."""

    fmt: TTFormat
    plan: ContractionPlan


@dataclass(frozen=True)
class LoweringRow:
    """One layer group: median ms per variant (a lowering's label, `dense`, `dense-cl`), None where not run; `same`
    maps a lowering whose program is instruction for instruction another's to that one (timed once, shared ms)."""

    group: LayerGroup
    ms: dict[str, float | None]
    same: dict[str, str]

    def timed(self, channels_last: bool, stock: bool = False) -> dict[str, float]:
        """Median ms of the lowerings timed on maps of that memory format (of lowerings with the same program, the
        first); `stock`: without the fused kernel."""
        return {low.label: self.ms[low.label] for low in LOWERINGS if low.channels_last == channels_last
                and self.ms[low.label] is not None and low.label not in self.same and not (stock and low.fused)}

    def fastest(self, channels_last: bool) -> str:
        """The label of the fastest lowering on maps of that memory format."""
        timed = self.timed(channels_last)
        return min(timed, key=timed.__getitem__)


def layer_groups(arch: str, batch: int, choices: dict | None = None,
                 say: Callable[[str], None] = lambda line: None) -> list[LayerGroup]:
    """The distinct decomposed layers of `arch`, planned as `ttplan plan` plans it (the default policy, or as
    `choices` say: `PlanRequest.with_choices`), each with its fewest-MACs order for folded weights at `batch`; an
    unmet budget and the plan's warnings go to `say`."""
    outcome = run_request(PlanRequest.with_choices(arch, choices, batch=batch, fold_weights=True))
    for line in ([outcome.unmet] if outcome.unmet else []) + outcome.warnings:
        say(line)
    planned = outcome.plan
    groups: dict[tuple, list] = {}
    for layer in planned.layers:
        if layer.decomposed and layer.kind == "conv":
            groups.setdefault((layer.spec, layer.fmt), []).append(layer)
    if not groups:
        raise TTPlanError(f"{arch}: no decomposed conv layer to time (the policy or config keeps every layer dense)")
    return [LayerGroup(tuple(layer.name for layer in layers), layers[0].spec, layers[0].fmt, layers[0].plan.best)
            for layers in groups.values()]


def _runs(plan: ContractionPlan, lowering: Lowering) -> bool:
    """Whether the lowering runs something of its own for this plan (the fused one only where the kernel runs it)."""
    return not lowering.fused or (fused_form(plan) is not None and kernel_status().available)


def time_group(group: LayerGroup, batch: int, rounds: int) -> LoweringRow:
    """Every lowering of the group's plan and the dense conv in both formats, interleaved; medians (ms)."""
    spec, plan = group.spec, group.plan
    reference = TTConv2d(spec, group.fmt, plan, fold_weights=True).eval()
    x = torch.randn(batch, spec.in_channels, *spec.input_size)
    inputs = {False: x, True: x.contiguous(memory_format=torch.channels_last)}
    weight = torch.randn(spec.out_channels, spec.in_channels // spec.groups, *spec.kernel_size)
    calls: dict[str, Callable[[], object]] = {
        name: (lambda v=inputs[last]: F.conv2d(v, weight, None, spec.stride, spec.padding, spec.dilation, spec.groups))
        for name, last in ((DENSE, False), (DENSE_CL, True))}
    programs: dict[tuple, str] = {}  # the instructions of each timed lowering -> its label
    same: dict[str, str] = {}
    with torch.no_grad():
        expected = reference(x)
        for lowering in LOWERINGS:
            if not _runs(plan, lowering):
                continue
            layer = TTConv2d(spec, group.fmt, plan, fold_weights=True, lowering=lowering).eval()
            program = (layer.program.weight, layer.program.feature)
            if program in programs:  # the same instructions: timing them twice would only show noise
                same[lowering.label] = programs[program]
                continue
            programs[program] = lowering.label
            layer.load_state_dict(reference.state_dict())
            got = layer(inputs[lowering.channels_last])
            if not torch.allclose(got, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max())):
                raise TTPlanError(f"{group.label}: the {lowering.label} lowering computed another layer "
                                  f"(max difference {float((got - expected).abs().max()):.3g})")
            calls[lowering.label] = lambda m=layer, v=inputs[lowering.channels_last]: m(v)
        ms = time_all(calls, rounds, block=block_calls(calls, BLOCK_MS), warmup=False)
    ms.update({label: ms[twin] for label, twin in same.items()})
    return LoweringRow(group, {name: ms.get(name) for name in (DENSE, DENSE_CL, *(low.label for low in LOWERINGS))},
                       same)


def run_lowerings(groups: list[LayerGroup], batch: int, rounds: int,
                  progress: Callable[[int], None] = lambda n: None) -> list[LoweringRow]:
    """`time_group` for each group in turn."""
    rows = []
    for group in groups:
        rows.append(time_group(group, batch, rounds))
        progress(1)
    return rows


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def render_section(rows: list[LoweringRow], arch: str, batch: int, threads: int, rounds: int, command: str) -> str:
    """One run as Markdown: a row per layer group, and how often each format's default lowering was fastest."""
    labels = [low.label for low in LOWERINGS]
    lines = [
        f"## {arch}, batch {batch}, {threads} thread{'s' if threads > 1 else ''}",
        "",
        f"Command: `{command}`. Median of {rounds} interleaved rounds (blocks of calls of about {BLOCK_MS:g} ms); "
        "each layer's fewest-MACs order, weights folded; NHWC lowerings (`+nhwc`) and `dense-cl` on a channels-last "
        "input, the others on an NCHW one. `= bmm`: the same program as that lowering's (timed once); an empty cell: "
        "the fused kernel does not run that order (or is not built).",
        "",
        "| layers | geometry | MACs x dense | " + " | ".join(f"{name} ms" for name in (DENSE, DENSE_CL, *labels))
        + " | fastest NCHW | fastest NHWC |",
        "| --- | --- | ---: | " + " | ".join("---:" for _ in range(2 + len(labels))) + " | --- | --- |",
    ]
    for row in rows:
        spec = row.group.spec
        ratio = row.group.plan.macs / spec.dense_macs(batch)
        cells = [f"= {row.same[name]}" if name in row.same else _ms(row.ms[name])
                 for name in (DENSE, DENSE_CL, *labels)]
        lines.append(f"| {row.group.label} | {spec.describe()} | {ratio:.3f} | " + " | ".join(cells)
                     + f" | {row.fastest(False)} | {row.fastest(True)} |")
    lines.append("")
    for last, words in ((False, "NCHW"), (True, "NHWC")):
        default = default_lowering(last).label
        wins = sum(row.ms[default] is not None and row.ms[default] <= min(row.timed(last, stock=True).values())
                   for row in rows)
        lines.append(f"- {words} maps: the default lowering ({default}) was the fastest stock lowering in {wins} of "
                     f"{len(rows)} layers.")
    return "\n".join(lines) + "\n"


def render_report(sections: list[str], machine: str) -> str:
    """The whole report: what it measures, where, then each run."""
    head = ["# Lowerings: how each TT layer's steps run fastest", "",
            "Written by `ttplan bench lowerings` (`scripts/latency_reports.sh`). " + __doc__.split("\n\n", 1)[1]
            .replace("\n", " ").strip(), "", f"Machine: {machine}.", ""]
    return "\n".join(head) + "\n" + "\n".join(sections)


__all__ = ["LayerGroup", "LoweringRow", "layer_groups", "render_report", "render_section", "run_lowerings",
           "time_group"]
