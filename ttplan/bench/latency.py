"""Latency of TT conv layers against the dense conv: the 3x3 convs of ResNet-18, at batch 1 and 32.

For each distinct 3x3 conv geometry of the ResNet-18 preset (traced at 3x224x224) and each batch, one
process times, interleaved and in `torch.no_grad()`: the dense `nn.Conv2d`, and `TTConv2d` running
the classical order (classical format), the hodec order and the searched best order (hodec format),
plus tensorly-torch's TT conv when it is installed, and the dense conv and the fast order again on a channels-last
copy of the input (`dense-cl`, `fast-cl`: the comparison for a model run channels-last). Modes are the balanced
factors of the channels in
ascending order (layer3.0.conv1: `tt_shapes 4,8,8,9,4,4,8`), ranks uniform (16 by default, clipped at
small boundary modes). Each repeat calls every variant once, in turn, so drifts in machine load hit
all of them alike; a row reports the median over repeats and the ratio to dense in the same row.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ttplan.core.formats import TTFormat, balanced_factors, make_format
from ttplan.core.latency import LatencyProfile
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.latency.machine import describe
from ttplan.latency.timing import block_calls, time_all
from ttplan.models import load_model, trace_layers
from ttplan.runtime.layers import TTConv2d
from ttplan.runtime.lowering import Lowering

VARIANTS = ("dense", "classical", "hodec", "best", "fast", "fused", "tltorch", "tl-tucker", "dense-cl", "fast-cl")
#: the variants that run on a channels-last copy of the input
CHANNELS_LAST = ("dense-cl", "fast-cl")
#: tensorly-torch's factorizations timed beside ttplan's, at the parameters of ttplan's hodec layer
TLTORCH = {"tltorch": "tt", "tl-tucker": "tucker"}
FOCUS = "layer3.0.conv1"


@dataclass(frozen=True)
class LayerGroup:
    """Layers sharing one geometry (they time the same), named in trace order."""

    names: tuple[str, ...]
    spec: ConvSpec

    @property
    def label(self) -> str:
        return self.names[0] if len(self.names) == 1 else f"{self.names[0]} (+{len(self.names) - 1})"


@dataclass
class LatencyRow:
    """One geometry at one batch: median milliseconds and planned MACs per variant (None: not run)."""

    group: LayerGroup
    batch: int
    ms: dict[str, float | None]
    macs: dict[str, int | None]
    notes: dict[str, str] = field(default_factory=dict)

    def ratio(self, variant: str) -> float | None:
        """Time of `variant` over the dense conv's time in this row (< 1: faster than dense)."""
        value, dense = self.ms.get(variant), self.ms["dense"]
        return None if value is None or not dense else value / dense

    def macs_ratio(self, variant: str) -> float | None:
        value = self.macs.get(variant)
        return None if value is None else value / self.macs["dense"]


def resnet18_3x3_groups(input_size: tuple[int, int, int] = (3, 224, 224)) -> list[LayerGroup]:
    """The 3x3 convs of the ResNet-18 preset, grouped by identical geometry, in trace order."""
    model, size = load_model("resnet18", input_size)
    groups: dict[ConvSpec, list[str]] = {}
    for layer in trace_layers(model, size):
        if layer.kind == "conv" and layer.spec.kernel_size == (3, 3):
            groups.setdefault(layer.spec, []).append(layer.name)
    return [LayerGroup(tuple(names), spec) for spec, names in groups.items()]


def select_groups(groups: list[LayerGroup], names: list[str]) -> list[LayerGroup]:
    """The groups holding any of `names`; an unknown name is a one-line error listing the valid ones."""
    known = [name for group in groups for name in group.names]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise TTPlanError(f"--layers {unknown[0]}: not a 3x3 conv of resnet18; choose from {', '.join(known)}")
    return [group for group in groups if set(group.names) & set(names)]


def bench_formats(spec: ConvSpec, rank: int = 16, order: int = 3) -> dict[str, TTFormat]:
    """Classical and hodec formats with ascending balanced modes and a uniform rank."""
    in_modes = tuple(sorted(balanced_factors(spec.in_channels, order)))
    out_modes = tuple(sorted(balanced_factors(spec.out_channels, order)))
    return {kind: make_format(kind, spec, in_modes=in_modes, out_modes=out_modes, rank=rank)
            for kind in ("classical", "hodec")}


def _tltorch_conv(spec: ConvSpec, params: int, factorization: str = "tt") -> tuple[nn.Module | None, str]:
    """tensorly-torch's factorized conv (`tt` or `tucker`) of the same geometry with about `params` parameters
    (its rank given as that fraction of the dense kernel), or None and why not."""
    try:
        import tltorch  # optional dependency
    except ImportError:
        return None, "not installed"
    conv = nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride, spec.padding,
                     spec.dilation, bias=False)
    fraction = params / conv.weight.numel()
    try:
        return tltorch.FactorizedConv.from_conv(conv, rank=fraction, factorization=factorization,
                                                implementation="factorized"), ""
    except Exception as error:  # an API mismatch must not stop the benchmark
        return None, f"failed: {type(error).__name__}"


def build_variants(spec: ConvSpec, formats: dict[str, TTFormat], batch: int, rank: int,
                   device: torch.device, with_tltorch: bool = True, *,
                   profile: LatencyProfile) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The modules to time (float32, eval mode, on `device`) and a note per variant that could not be built;
    `profile` plans the orders chosen by time (`fast`, `fused`)."""
    dense = nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride, spec.padding,
                      spec.dilation, bias=False)
    fast = _fast_plan(spec, formats["hodec"], batch, profile)
    fused, why = _fused_plan(spec, formats["hodec"], batch, profile)
    modules: dict[str, nn.Module] = {
        "dense": dense,
        "classical": TTConv2d(spec, formats["classical"], plan="classical", batch=batch),
        "hodec": TTConv2d(spec, formats["hodec"], plan="hodec", batch=batch),
        "best": TTConv2d(spec, formats["hodec"], plan="best", batch=batch),
        "fast": TTConv2d(spec, formats["hodec"], plan=fast, fold_weights=True, batch=batch),
        "floor": MemoryFloor(spec),
        "dense-cl": dense,  # the same conv, handed a channels-last input
        "fast-cl": TTConv2d(spec, formats["hodec"], plan=fast, fold_weights=True, batch=batch,
                            lowering=Lowering("conv", channels_last=True)),
    }
    notes: dict[str, str] = {}
    if fused is not None and device.type == "cpu":
        modules["fused"] = TTConv2d(spec, formats["hodec"], plan=fused, fold_weights=True, batch=batch,
                                    lowering=Lowering(fused=True))
    else:
        notes["fused"] = why if fused is None else "CPU only"
    if with_tltorch:
        params = formats["hodec"].params(spec)
        for name, factorization in TLTORCH.items():
            module, why = _tltorch_conv(spec, params, factorization)
            if module is None:
                notes[name] = why
            else:
                modules[name] = module
    return {name: m.to(device).eval() for name, m in modules.items()}, notes


class MemoryFloor(nn.Module):
    """Reads its input once and writes an output of the layer's shape, with no arithmetic to speak of: no layer
    that reads its input and writes its output can take less time (the `floor` of the layer3.0.conv1 check)."""

    def __init__(self, spec: ConvSpec) -> None:
        super().__init__()
        self.out_channels, self.output_size = spec.out_channels, spec.output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.sum()  # one pass over the input (eager: it runs although its result is dropped)
        return torch.empty(x.shape[0], self.out_channels, *self.output_size, dtype=x.dtype, device=x.device).fill_(0.0)


def _fast_plan(spec: ConvSpec, fmt: TTFormat, batch: int, profile: LatencyProfile):
    """The order for inference planned by time (`best_order` with the latency profile), weights folded at load."""
    from ttplan.core.layer import best_order
    from ttplan.core.network import build_network

    return best_order(build_network(spec, fmt, batch), fold_weights=True, objective="latency", profile=profile)


def _fused_plan(spec: ConvSpec, fmt: TTFormat, batch: int, profile: LatencyProfile) -> tuple[object | None, str]:
    """The fusable order the fused kernel is predicted to run fastest (folded weights), or None and why not."""
    from ttplan.core.layer import fastest_fused
    from ttplan.core.network import build_network
    from ttplan.runtime.kernels import kernel_status

    status = kernel_status()
    if not status.available:
        return None, "no kernel"
    plan = fastest_fused(build_network(spec, fmt, batch), True, profile)
    return (plan, "") if plan is not None else (None, "not fusable")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def graphed(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """`module(x)` captured as one CUDA graph: a replay is one launch, so per-kernel launch cost drops out."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(stream):
        for _ in range(3):  # warm up allocator and cuDNN outside the capture, as torch's docs ask
            module(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        module(x)
    return graph.replay


def time_interleaved(modules: dict[str, nn.Module], x: torch.Tensor, repeats: int, warmup: int = 2,
                     block_ms: float = 25.0, cuda_graphs: bool = False,
                     inputs: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Median milliseconds per call of each module; every repeat visits each module in turn. `inputs` gives some
    modules an input of their own (the same values in another memory format, say); the rest get `x`.

    A visit runs one block of calls lasting about `block_ms` (the count per module is fixed from the
    warm-up) and records the mean per call, so a layer is timed in steady state, as when called over
    and over, rather than right after a different, possibly much larger, layer ran.
    """
    device = x.device
    given = {name: (inputs or {}).get(name, x) for name in modules}
    if cuda_graphs:
        run = {name: graphed(module, given[name]) for name, module in modules.items()}
    else:
        run = {name: (lambda module=module, arg=given[name]: module(arg)) for name, module in modules.items()}
    sync = functools.partial(_sync, device)
    with torch.no_grad():
        blocks = block_calls(run, block_ms, sync, warmup)
        return time_all(run, repeats, sync, blocks, warmup=False)


def run_latency(groups: list[LayerGroup], batches: tuple[int, ...] = (1, 32), repeats: int = 7, rank: int = 16,
                device: str = "cpu", progress: Callable[[int], None] | None = None,
                cuda_graphs: bool = False, *, profile: LatencyProfile) -> list[LatencyRow]:
    """Time every group at every batch; rows in group order, batches inner. `profile` plans the orders chosen by
    predicted time (`ttplan.latency.profiles.load_profile()`, as `ttplan bench latency` reads it)."""
    if cuda_graphs and device != "cuda":
        raise TTPlanError(f"--cuda-graphs needs --device cuda, got --device {device}")
    if device == "cuda" and not torch.cuda.is_available():
        raise TTPlanError("--device cuda: no CUDA device is available here; use --device cpu")
    target = torch.device(device)
    rows: list[LatencyRow] = []
    generator = torch.Generator().manual_seed(0)
    for group in groups:
        spec = group.spec
        formats = bench_formats(spec, rank)
        for batch in batches:
            modules, notes = build_variants(spec, formats, batch, rank, target, profile=profile)
            x = torch.randn(batch, spec.in_channels, *spec.input_size, generator=generator).to(target)
            ms: dict[str, float | None] = dict.fromkeys(VARIANTS)
            last = x.contiguous(memory_format=torch.channels_last)
            ms.update(time_interleaved(modules, x, repeats, cuda_graphs=cuda_graphs,
                                       inputs=dict.fromkeys(CHANNELS_LAST, last)))
            macs: dict[str, int | None] = dict.fromkeys(VARIANTS)
            macs["dense"] = spec.dense_macs(batch)
            macs["dense-cl"] = macs["dense"]
            for name in ("classical", "hodec", "best", "fast", "fused", "fast-cl"):
                if name in modules:
                    macs[name] = modules[name].plan.macs
            rows.append(LatencyRow(group, batch, ms, macs, notes))
            del modules, x, last
            if progress is not None:
                progress(1)
    return rows


def _cell(row: LatencyRow, variant: str) -> str:
    ms, ratio = row.ms.get(variant), row.ratio(variant)
    if ms is None:
        return row.notes.get(variant, "-")
    return f"{ms:.2f} ({ratio:.2f}x)"


def _macs_cell(row: LatencyRow) -> str:
    return " / ".join(f"{row.macs_ratio(v):.2f}" if row.macs.get(v) else "-"
                      for v in ("classical", "hodec", "best", "fast", "fused"))


def render_section(rows: list[LatencyRow], device: str, threads: int, repeats: int, rank: int, command: str,
                   cuda_graphs: bool = False) -> str:
    """One run's tables (one per batch) and the layer3.0.conv1 check, as Markdown."""
    where = f"{device}: {describe(device)}"
    if device == "cuda" and cuda_graphs:
        where += ", each layer replayed as one captured CUDA graph"
    elif device != "cuda":
        where += f", torch.set_num_threads({threads})"
    tl = next((r.notes["tltorch"] for r in rows if "tltorch" in r.notes), None)
    lines = [
        f"## {where}",
        "",
        f"Command: `{command}`. float32, `torch.no_grad()`; {repeats} interleaved repeats, each visiting every "
        "variant for one block of back-to-back calls of about 25 ms (at least one call); cells give the median "
        f"over repeats of the mean time per call. Uniform rank {rank}. "
        "Cells: milliseconds per call (time / dense time in the same row). "
        "`MACs vs dense`: planned MACs of classical / hodec / best / fast / fused over the dense conv's (FLOPs = 2 x "
        "MACs). `fast`: the hodec format at the order planned by time (`--objective latency`), weights folded "
        "at load. `fused`: the hodec order that ttplan's fused CPU kernel is predicted to run fastest (a mixing, the "
        "conv and a mixing in one pass per image; `Lowering(fused=True)`), weights folded at load. "
        "`tltorch` / `tl-tucker`: tensorly-torch's TT and Tucker convs (`implementation='factorized'`) at the "
        "hodec layer's parameter count. `dense-cl` / `fast-cl`: the dense conv and the fast order on a channels-last "
        "copy of the input, the TT layer on NHWC maps with its channel mixings as 1x1 convs (ratios still over the "
        "NCHW dense conv; the check below compares them with each other).",
        "",
    ]
    if tl:
        lines += [f"tensorly-torch: {tl}; its columns show why.", ""]
    for batch in sorted({r.batch for r in rows}):
        lines += [
            f"### batch {batch}",
            "",
            "| layers | geometry | dense ms | classical | hodec | best | fast | fused | tltorch | tl-tucker | "
            "dense-cl | fast-cl | MACs vs dense |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in (r for r in rows if r.batch == batch):
            lines.append(f"| {', '.join(row.group.names)} | {row.group.spec.describe()} | {row.ms['dense']:.2f} | "
                         f"{_cell(row, 'classical')} | {_cell(row, 'hodec')} | {_cell(row, 'best')} | "
                         f"{_cell(row, 'fast')} | {_cell(row, 'fused')} | {_cell(row, 'tltorch')} | "
                         f"{_cell(row, 'tl-tucker')} | "
                         f"{_cell(row, 'dense-cl')} | {_cell(row, 'fast-cl')} | "
                         f"{_macs_cell(row)} |")
        lines.append("")
    lines += _focus(rows)
    return "\n".join(lines).rstrip("\n") + "\n"


def _focus(rows: list[LatencyRow]) -> list[str]:
    """The issue's check on layer3.0.conv1 at batch 32, stated from the measured numbers."""
    row = next((r for r in rows if FOCUS in r.group.names and r.batch == 32), None)
    if row is None:
        return []
    best, classical, fast = row.ratio("best"), row.ratio("classical"), row.ratio("fast")
    speed = f"{1 / best:.1f}x faster than dense" if best < 1 else f"{best:.1f}x slower than dense"
    floor = row.ratio("floor")
    floor_words = "" if floor is None else (
        f" Reading the input once and writing the output once, with no arithmetic, takes {row.ms['floor']:.2f} ms "
        f"in the same rounds ({1 / floor:.1f}x faster than dense): the bound for any layer that reads and writes "
        "its maps, before it computes anything.")
    return [
        f"Check, {FOCUS} at batch 32 (hodec `tt_shapes 4,8,8,9,4,4,8`, ranks 16): the best order runs "
        f"{speed} ({'meets' if 1 / best >= 5 else 'misses'} the 5x target; planned MACs "
        f"{1 / row.macs_ratio('best'):.1f}x fewer); the fast order (latency objective, folded weights) runs "
        f"{1 / fast:.1f}x faster than dense ({'meets' if 1 / fast >= 10 else 'misses'} the 10x target; planned MACs "
        f"{1 / row.macs_ratio('fast'):.1f}x fewer); the classical order takes {classical:.2f}x the dense time "
        f"({'slower' if classical > 1 else 'not slower'} than dense; planned MACs {row.macs_ratio('classical'):.2f}x "
        "dense)." + _fused_words(row) + floor_words + _channels_last_words(row),
        "",
    ]


def _fused_words(row: LatencyRow) -> str:
    """The check for the fused kernel, against the dense conv and (where timed) the dense conv channels-last."""
    fused = row.ratio("fused")
    if fused is None:
        return f" The fused kernel did not run ({row.notes.get('fused', 'not timed')})."
    against = row.ms.get("dense-cl")
    verdict = "meets" if 1 / fused >= 10 else "misses"
    words = (f" The fused kernel runs its order {1 / fused:.1f}x faster than dense ({verdict} the 10x target; "
             f"planned MACs {1 / row.macs_ratio('fused'):.1f}x fewer)")  # type: ignore[operator]
    if against:
        ratio = against / row.ms["fused"]  # type: ignore[operator]
        words += f" and {ratio:.1f}x faster than the dense conv on a channels-last input"
    return words + "."


def _channels_last_words(row: LatencyRow) -> str:
    """The check again for a channels-last model: the fast order on NHWC maps against the dense conv on the same
    channels-last input."""
    dense, fast = row.ms.get("dense-cl"), row.ms.get("fast-cl")
    if not dense or not fast:
        return ""
    return (f" On a channels-last input the dense conv takes {dense:.2f} ms and the fast order on NHWC maps "
            f"{fast:.2f} ms: {dense / fast:.1f}x ({'meets' if dense / fast >= 10 else 'misses'} the 10x target "
            "against that baseline).")


def render_report(section: str) -> str:
    """A new report: title, what is measured, then the run's section."""
    return "\n".join([
        "# Latency of TT conv layers: ResNet-18's 3x3 convs",
        "",
        "Dense `nn.Conv2d` against `ttplan.runtime.layers.TTConv2d` running the classical order (classical format), "
        "the "
        "hodec order and the searched best order (hodec format), with balanced ascending modes and uniform ranks, "
        "and tensorly-torch's TT and Tucker convs where installed. Written by `ttplan bench latency`; "
        "`--append` adds a run (e.g. on CUDA) below.",
        "",
        section,
    ])


__all__ = ["LatencyRow", "LayerGroup", "bench_formats", "render_report", "render_section", "resnet18_3x3_groups",
           "run_latency", "select_groups", "time_interleaved"]
