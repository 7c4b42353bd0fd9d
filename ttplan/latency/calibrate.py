"""Calibrate the latency model: time the ops that plans lower to on this device, fit, and check on held-out layers.

Fitting samples come from a grid of synthetic layers (channel counts 24…384, not those of the preset
models): each layer's plans are lowered, run once to capture every intermediate, and then each step's
instructions (its reshapes and its one `mm`/`bmm`/`conv2d`) are timed alone; the dense conv of each
geometry is timed too. The check times whole layers the fit never saw (the 3x3 convs of ResNet-56 and
ResNet-18 in the hodec format) and compares them with the prediction. Timings are medians over
repeats in `torch.no_grad()`, float32. With `channels_last` every input is channels-last and every plan
is lowered to NHWC maps (`default_lowering(channels_last=True)`: 1x1-conv mixings), the dense conv too runs
channels-last: the profile of a model run in `torch.channels_last`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ttplan.core.contraction import ContractionPlan
from ttplan.core.formats import make_format
from ttplan.core.fusion import fused_form
from ttplan.core.latency import (
    LatencyProfile,
    Sample,
    dense_shape,
    fit_profile,
    fused_shape,
    predict_dense_us,
    predict_fused_us,
    predict_plan_us,
    relative_errors,
    step_shapes,
)
from ttplan.core.network import build_network
from ttplan.core.schemes import merged, schemes_for
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.latency.machine import identity
from ttplan.latency.timing import median_us
from ttplan.runtime.lowering import INPUT, Program, by_step, default_lowering, execute, lower

#: (channels in, channels out, input size, stride) of the fitting grid; batch per resolution keeps each op short
FIT_GEOMETRIES = ((24, 24, 32, 1), (48, 48, 16, 1), (24, 48, 32, 2), (96, 96, 8, 1), (48, 96, 16, 2),
                  (96, 96, 28, 1), (192, 192, 14, 1), (96, 192, 28, 2), (384, 384, 7, 1), (192, 384, 14, 2))
FIT_BATCHES = (1, 8, 32)
FIT_RANKS = (4, 8, 16, 32)
#: extra dense convs timed for the fit (channels, input size): the dense time depends on more than its MACs
DENSE_CHANNELS = (24, 48, 96, 192, 384, 768)
DENSE_SIZES = (6, 12, 20, 40, 60)


def _random_cores(plan: ContractionPlan, device: torch.device) -> list[torch.Tensor]:
    net = plan.network
    return [torch.randn(core.shape, device=device) * 0.1 for core in net.fmt.cores(net.spec)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(program: Program, batch: int, device: torch.device, budget_s: float) -> list[tuple[int, float]]:
    """(step number, median µs) of each step of `program`, weight-only steps included, each timed alone."""
    plan = program.plan
    spec = plan.network.spec
    cores = _random_cores(plan, device)
    env: dict[str, torch.Tensor] = dict(zip(program.cores, cores))
    sizes = dict(program.sizes)
    out: list[tuple[int, float]] = []
    weight_steps = {s.number for s in plan.steps if s.kind == "weight"}
    for step, group in by_step(program.weight):
        if step in weight_steps:  # the rest lay out a feature-map product's weight: part of folding, not an op
            out.append((step, _time_group(program, group, env, sizes, device, budget_s)))
        execute(program, group, env, sizes)
    folded = {name: env[name] for name in program.folded}
    h, w = spec.input_size
    env = {INPUT: _input(program.lowering.channels_last, batch, spec.in_channels, h, w, device), **folded}
    if program.lowering.channels_last:  # the program reads the input as (b, s, i…), as `run_feature_steps` hands it
        env[INPUT] = env[INPUT].permute(0, 2, 3, 1)
    sizes = dict(program.sizes, b=batch, h=h, w=w, s=h * w)
    for step, group in by_step(program.feature):
        if step:
            out.append((step, _time_group(program, group, env, sizes, device, budget_s)))
        execute(program, group, env, sizes)
    return out


def _time_group(program: Program, group: tuple, env: dict[str, torch.Tensor], sizes: dict[str, int],
                device: torch.device, budget_s: float) -> float:
    """Median µs of one step's instructions run from a copy of the current tensors and sizes."""
    snapshot, size_snapshot = dict(env), dict(sizes)
    return median_us(lambda: (execute(program, group, dict(snapshot), dict(size_snapshot)), _sync(device)), budget_s)


def _input(channels_last: bool, batch: int, channels: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """A random input map, channels-last in memory when asked."""
    x = torch.randn(batch, channels, h, w, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def time_dense(spec: ConvSpec, batch: int, device: torch.device, budget_s: float, channels_last: bool = False
               ) -> float:
    """Median µs of the dense conv of `spec` at `batch` (on a channels-last input when asked)."""
    h, w = spec.input_size
    x = _input(channels_last, batch, spec.in_channels, h, w, device)
    weight = torch.randn(spec.out_channels, spec.in_channels // spec.groups, *spec.kernel_size, device=device)
    return median_us(lambda: (F.conv2d(x, weight, None, spec.stride, spec.padding, spec.dilation, spec.groups),
                              _sync(device)), budget_s)


def time_layer(plan: ContractionPlan, device: torch.device, budget_s: float, channels_last: bool = False,
               fused: bool = False) -> float:
    """Median µs of one forward of a `TTConv2d` running `plan` (weights folded when the plan folds them); with
    `channels_last` on a channels-last input, lowered to NHWC maps; with `fused`, by the fused kernel."""
    from ttplan.runtime.layers import TTConv2d

    net = plan.network
    layer = TTConv2d(net.spec, net.fmt, plan, plan.fold_weights, device=device,
                     lowering=default_lowering(channels_last, fused)).eval()
    h, w = net.spec.input_size
    x = _input(channels_last, net.batch, net.spec.in_channels, h, w, device)
    return median_us(lambda: (layer(x), _sync(device)), budget_s)


def grid() -> Iterator[tuple[ConvSpec, int, int]]:
    """(spec, batch, rank) of the fitting grid: every geometry, batch and rank, big maps at small batches only."""
    for cin, cout, size, stride in FIT_GEOMETRIES:
        spec = ConvSpec.make(cin, cout, 3, stride, 1, input_size=size)
        for batch in FIT_BATCHES:
            if batch * cin * size * size <= 4_000_000:
                for rank in FIT_RANKS:
                    yield spec, batch, rank


def fit_plans() -> Iterator[tuple[ContractionPlan, int]]:
    """The plans whose steps are timed for the fit: per grid geometry, batch and rank, the searched and published
    orders of hodec (folded) and classical (one unfolded, so weight-only steps are sampled too)."""
    for spec, batch, rank in grid():
        net = build_network(spec, make_format("hodec", spec, rank=rank), batch)
        plans = {optimize(net, fold_weights=True).pairs: optimize(net, fold_weights=True),
                 schemes_for(net, True)["hodec"].pairs: schemes_for(net, True)["hodec"]}
        if rank in (8, 32):
            classical = build_network(spec, make_format("classical", spec, rank=rank), batch)
            plans[("c",)] = optimize(classical, fold_weights=rank == 32)
        for plan in plans.values():
            if plan.executable:
                yield plan, batch


def fused_plans() -> Iterator[ContractionPlan]:
    """The plans timed as fused layers: per grid geometry, batch and rank, hodec's fusable orders among the
    fewest-MACs and the merged one (folded)."""
    for spec, batch, rank in grid():
        net = build_network(spec, make_format("hodec", spec, rank=rank), batch)
        plans = {plan.pairs: plan for plan in (optimize(net, fold_weights=True), merged(net, True))
                 if plan is not None and plan.executable and fused_form(plan) is not None}
        yield from plans.values()


def fused_kernel_available(device: torch.device, channels_last: bool) -> bool:
    """Whether the fused kernel runs here (CPU, NCHW maps, built), so that a profile gets fused samples."""
    from ttplan.runtime.kernels import kernel_status

    return device.type == "cpu" and not channels_last and kernel_status().available


def dense_grid() -> Iterator[tuple[ConvSpec, int]]:
    """Dense 3x3 convs (stride 1 and 2) over channel counts and sizes none of the preset models use."""
    for channels in DENSE_CHANNELS:
        for size in DENSE_SIZES:
            for stride in (1, 2):
                spec = ConvSpec.make(channels, channels * stride, 3, stride, 1, input_size=size)
                for batch in FIT_BATCHES:
                    if spec.dense_macs(batch) <= 500_000_000:
                        yield spec, batch


@dataclass
class Calibration:
    """The fitted profile and the number of samples behind it."""

    profile: LatencyProfile
    samples: int
    seconds: float


def calibrate(device: str = "cpu", threads: int | None = None, budget_s: float = 0.02,
              progress: Callable[[str], None] | None = None, channels_last: bool = False,
              rounds: int = 3) -> Calibration:
    """Time the grid's steps and dense convs on `device` and fit a profile (see the module docstring).

    The whole grid is timed `rounds` times over and each op keeps its median over the rounds, so a slow
    moment of the machine (seconds long) spoils one round of a few ops, not the fit: one pass over the grid
    once gave a profile with a 27% median error where the same machine's next gave 9%."""
    if rounds < 1:
        raise TTPlanError(f"rounds={rounds}: expected a positive int")
    dev = _device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    plans = list(fit_plans())
    lowering = default_lowering(channels_last)
    programs = [lower(plan, lowering) for plan, _ in plans]  # lowered once, timed every round
    dense_keys = list(dict.fromkeys([(plan.network.spec, batch) for plan, batch in plans] + list(dense_grid())))
    fusable = list(fused_plans()) if fused_kernel_available(dev, channels_last) else []
    fused: list[list[float]] = [[] for _ in fusable]  # per fusable plan: the fused layer's µs per round
    steps: list[dict[int, list[float]]] = [{} for _ in plans]  # per plan: step -> µs per round
    layers: dict[int, list[float]] = {}  # plan -> the whole layer's µs per round, for every fourth plan
    dense: dict[tuple, list[float]] = {key: [] for key in dense_keys}  # (spec, batch) -> µs per round
    with torch.no_grad():
        for r in range(1, rounds + 1):
            for n, ((plan, batch), program) in enumerate(zip(plans, programs)):
                if progress is not None and n % 10 == 0:
                    progress(f"fitting samples: round {r}/{rounds}, layer {n + 1}/{len(plans)}")
                for step, us in time_steps(program, batch, dev, budget_s):
                    steps[n].setdefault(step, []).append(us)
                if n % 4 == 0:
                    layers.setdefault(n, []).append(time_layer(plan, dev, budget_s, channels_last))
            for key in dense_keys:
                dense[key].append(time_dense(*key, dev, budget_s, channels_last))
            if progress is not None and fusable:
                progress(f"fused layers: round {r}/{rounds}, {len(fusable)} layers")
            for n, plan in enumerate(fusable):
                fused[n].append(time_layer(plan, dev, budget_s, fused=True))
    samples: list[Sample] = []
    overheads: list[float] = []
    for n, (plan, _) in enumerate(plans):
        shapes = step_shapes(plan)
        step_sum = 0.0
        for step, values in steps[n].items():
            us = statistics.median(values)
            samples.append(Sample(shapes[step], us))
            if not (plan.fold_weights and shapes[step].kind == "weight"):
                step_sum += us
        if n in layers:
            overheads.append(statistics.median(layers[n]) - step_sum)
    samples += [Sample(dense_shape(spec, batch), statistics.median(values)) for (spec, batch), values in dense.items()]
    layer_overhead = max(0.0, statistics.median(overheads))
    # a fused layer (weights folded) is one op: its fit's own overhead is the whole layer's, far below the
    # per-layer overhead of a layer of stock ops
    samples += [Sample(fused_shape(fused_form(plan)), statistics.median(values))  # type: ignore[arg-type]
                for plan, values in zip(fusable, fused)]
    threads_used, here = torch.get_num_threads(), identity(dev)
    label = (f"calibrated on {here}, {threads_used} thread{'s' if threads_used > 1 else ''}"
             + (", channels-last" if channels_last else "") + f", median of {rounds} round{'s' if rounds > 1 else ''}")
    profile = fit_profile(samples, label=label,
                          device=dev.type, threads=threads_used, torch_version=torch.__version__,
                          layer_overhead_us=layer_overhead)
    profile = replace(profile, machine=here)
    return Calibration(profile, len(samples), time.perf_counter() - start)


@dataclass(frozen=True)
class CheckRow:
    """One held-out layer: predicted and measured µs of the TT layer and of the dense conv."""

    name: str
    batch: int
    tt_predicted: float
    tt_measured: float
    dense_predicted: float
    dense_measured: float
    #: the merged order run by the fused kernel, where the kernel runs here (NCHW, built) and the order is fusable
    fused_predicted: float | None = None
    fused_measured: float | None = None


@dataclass
class CheckResult:
    """Held-out rows and their relative errors."""

    rows: list[CheckRow]

    @property
    def fused_rows(self) -> list[CheckRow]:
        """The rows whose merged order was also predicted and measured run fused."""
        return [r for r in self.rows if r.fused_predicted is not None and r.fused_measured is not None]

    @property
    def errors(self) -> list[float]:
        """Relative errors of every prediction (TT layers on stock ops and fused, dense convs)."""
        fused = self.fused_rows
        return relative_errors([r.tt_predicted for r in self.rows] + [r.dense_predicted for r in self.rows]
                               + [r.fused_predicted for r in fused],  # type: ignore[misc]
                               [r.tt_measured for r in self.rows] + [r.dense_measured for r in self.rows]
                               + [r.fused_measured for r in fused])  # type: ignore[misc]

    @property
    def fused_errors(self) -> list[float]:
        """Relative errors of the fused layers' predictions alone."""
        fused = self.fused_rows
        return relative_errors([r.fused_predicted for r in fused], [r.fused_measured for r in fused])  # type: ignore

    def to_dict(self) -> dict:
        errors, fused = self.errors, self.fused_errors
        out = {"median_relative_error": statistics.median(errors), "worst_relative_error": max(errors),
               "layers": len(self.rows)}
        if fused:
            out.update(fused_median_relative_error=statistics.median(fused), fused_worst_relative_error=max(fused),
                       fused_layers=len(fused))
        return out


def check_layers() -> list[tuple[str, ContractionPlan]]:
    """Held-out layers: the distinct 3x3 convs of ResNet-56 (batch 32) and ResNet-18 (batch 1, 8), hodec rank 16,
    the searched order with folded weights."""
    from ttplan.models import load_model, trace_layers

    out: list[tuple[str, ContractionPlan]] = []
    for arch, batches in (("resnet56", (32,)), ("resnet18", (1, 8))):
        model, size = load_model(arch, None)
        seen: set[ConvSpec] = set()
        for layer in trace_layers(model, size):
            spec = layer.spec
            if layer.kind != "conv" or spec.kernel_size != (3, 3) or spec.in_channels < 16 or spec in seen:
                continue
            seen.add(spec)
            fmt = make_format("hodec", spec, rank=16)
            for batch in batches:
                out.append((f"{arch} {layer.name} b{batch}", optimize(build_network(spec, fmt, batch),
                                                                       fold_weights=True)))
    return out


def check(profile: LatencyProfile, device: str = "cpu", budget_s: float = 0.05,
          progress: Callable[[str], None] | None = None, channels_last: bool = False, rounds: int = 3
          ) -> CheckResult:
    """Measure the held-out layers and their dense convs (channels-last when asked) and compare with `profile`'s
    predictions; every layer is measured once per round over the whole list and keeps its median, as the fit's
    ops do (a single pass over the same profile gave 20% one minute and 10% the next)."""
    if rounds < 1:
        raise TTPlanError(f"rounds={rounds}: expected a positive int")
    dev = _device(device)
    layers = check_layers()
    tt: list[list[float]] = [[] for _ in layers]
    dense: list[list[float]] = [[] for _ in layers]
    wide = [merged(plan.network, True) for _, plan in layers] if fused_kernel_available(dev, channels_last) else []
    wide = [plan if plan is not None and fused_form(plan) is not None else None for plan in wide]
    fused: list[list[float]] = [[] for _ in layers]
    with torch.no_grad():
        for r in range(1, rounds + 1):
            for n, (name, plan) in enumerate(layers):
                if progress is not None:
                    progress(f"checking, round {r}/{rounds}, {n + 1}/{len(layers)}: {name}")
                spec, batch = plan.network.spec, plan.network.batch
                tt[n].append(time_layer(plan, dev, budget_s, channels_last))
                dense[n].append(time_dense(spec, batch, dev, budget_s, channels_last))
                if wide and wide[n] is not None:
                    fused[n].append(time_layer(wide[n], dev, budget_s, fused=True))
    rows = []
    for n, (name, plan) in enumerate(layers):
        row = CheckRow(name, plan.network.batch, predict_plan_us(plan, profile), statistics.median(tt[n]),
                       predict_dense_us(plan.network.spec, plan.network.batch, profile), statistics.median(dense[n]))
        if fused[n]:
            row = replace(row, fused_predicted=predict_fused_us(wide[n], profile),
                          fused_measured=statistics.median(fused[n]))
        rows.append(row)
    return CheckResult(rows)


def _device(device: str) -> torch.device:
    if device not in ("cpu", "cuda"):
        raise TTPlanError(f"--device {device}: expected cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise TTPlanError("--device cuda: no CUDA device is available here; use --device cpu")
    return torch.device(device)


__all__ = ["Calibration", "CheckResult", "CheckRow", "calibrate", "check", "check_layers"]
