"""Whole-model latency: the dense model against its TT conversion, end to end and layer by layer.

The TT model is built the way a user builds it: the architecture is planned as `ttplan plan` plans it (a
`PlanRequest`: the default policy, or the choices given (config, policy, budget), weights folded, the chosen
objective; `--skip-slower` on with `latency`), `emit_model` writes the
standalone source and its `convert(model)` swaps the layers of a copy of the dense model (or, with
`runtime="layers"`, `ttplan.runtime.layers.convert` does, running the same lowering); either folds each BatchNorm
that reads a TT layer's output alone into that layer, as they do for any eval model (`ttplan.runtime.batchnorm`).
Both models run in eval mode under `torch.no_grad()`, float32. End to end, every round calls the dense model once
and the TT model once, in turn (so load drifts hit both alike); the median over rounds is reported.
Per layer, each distinct (geometry, plan) is timed the same way on its real input, beside its dense
conv and, where the MAC objective would choose another order, that order too.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ttplan.arch.architecture import ArchLayer, ArchPlan
from ttplan.arch.request import PlanRequest, run_request
from ttplan.bench.model.breakdown import TimeBreakdown, time_breakdown
from ttplan.bench.model.compiled import CompiledTiming, time_compiled
from ttplan.bench.model.forms import (
    COMPILED,
    COMPILED_LAST,
    COMPILED_NO_LAYOUT,
    EAGER,
    EAGER_FROZEN,
    EAGER_LAST,
    FORMS,
    ORT,
    BestForms,
    compiled_runner,
    frozen_runner,
    onnx_runtime_runner,
    time_forms,
)
from ttplan.bench.model.memory_formats import MODELS, FormatTimings
from ttplan.bench.model.processes import ChildRequest, ProcessTiming, time_in_processes
from ttplan.core.contraction import ContractionPlan
from ttplan.core.latency import LatencyProfile
from ttplan.core.search import optimize
from ttplan.errors import TTPlanError
from ttplan.latency.timing import time_all
from ttplan.models import load_model
from ttplan.runtime.allocator import minor_page_faults, set_malloc
from ttplan.runtime.layers import TTConv2d, convert
from ttplan.runtime.lowering import Lowering


@dataclass
class LayerTiming:
    """One distinct (geometry, plan) of the model: measured and predicted ms, dense and TT."""

    names: list[str]
    geometry: str
    decomposed: bool
    dense_ms: float
    tt_ms: float | None
    dense_predicted_ms: float
    tt_predicted_ms: float | None
    macs_ratio: float
    note: str = ""
    macs_plan_ms: float | None = None  # what the MAC objective runs (its order, stock ops), timed where it differs
    tt_again_ms: float | None = None  # the TT layer in the same rounds as `macs_plan_ms`

    @property
    def no_slower_than_macs_plan(self) -> bool | None:
        """Whether the layer measured no slower than what the MAC objective runs (None where the two are the same)."""
        return None if self.macs_plan_ms is None else self.tt_again_ms <= self.macs_plan_ms

    @property
    def speedup(self) -> float | None:
        return None if self.tt_ms is None else self.dense_ms / self.tt_ms


@dataclass
class ModelBench:
    """One end-to-end comparison and its per-layer breakdown."""

    arch: str
    config: str | None
    batch: int
    threads: int
    device: str
    objective: str
    runtime: str
    rounds: int
    dense_ms: float
    tt_ms: float
    plan: ArchPlan
    layers: list[LayerTiming] = field(default_factory=list)
    malloc: str = "default"
    dense_faults: float | None = None  # minor page faults per forward (None where not counted)
    tt_faults: float | None = None
    compiled: list[CompiledTiming] = field(default_factory=list)  # with --compile
    processes: list[ProcessTiming] = field(default_factory=list)  # with --processes
    channels_last: bool = False  # both models and the input in torch.channels_last
    formats: FormatTimings | None = None  # with channels_last: dense and TT in both memory formats
    breakdown: TimeBreakdown | None = None  # each model's forward by kind of module
    best: BestForms | None = None  # with best: each model in every deployed form, the best of each

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.tt_ms

    @property
    def replaced_ms(self) -> float:
        """The dense time of the layers TT replaces: each distinct layer's measured dense ms times its count."""
        return sum(row.dense_ms * len(row.names) for row in self.layers if row.decomposed)

    @property
    def ceiling(self) -> float | None:
        """The end-to-end speedup if the replaced layers took no time at all (Amdahl's bound), or None."""
        rest = self.dense_ms - self.replaced_ms
        return self.dense_ms / rest if rest > 0 and self.replaced_ms > 0 else None

    @property
    def at_dense_rate(self) -> float | None:
        """The end-to-end speedup if every TT layer ran its MACs at its dense conv's measured time per MAC (the TT
        layers' dense ms times their MACs ratio, plus the rest), or None where `ceiling` is: what fewer MACs alone
        can give, before any TT layer is slower per MAC than oneDNN's dense conv."""
        rest = self.dense_ms - self.replaced_ms
        if rest <= 0 or self.replaced_ms <= 0:
            return None
        scaled = sum(row.dense_ms * row.macs_ratio * len(row.names) for row in self.layers if row.decomposed)
        return self.dense_ms / (rest + scaled)

    def to_dict(self) -> dict:
        """The run as JSON-ready data (`bench model --json`): settings, the end-to-end numbers of the run's own
        memory format, the planned reductions, best against best (with `best`), and each table's rows."""
        totals = self.plan.totals
        return {
            "arch": self.arch, "config": self.config, "batch": self.batch, "threads": self.threads,
            "device": self.device, "objective": self.objective, "runtime": self.runtime, "rounds": self.rounds,
            "malloc": self.malloc, "channels_last": self.channels_last,
            "dense_ms": self.dense_ms, "tt_ms": self.tt_ms, "speedup": self.speedup,
            "macs_reduction": totals.macs_reduction, "params_reduction": totals.params_reduction,
            "decomposed_layers": totals.decomposed, "dense_layers": totals.dense,
            "dense_faults": self.dense_faults, "tt_faults": self.tt_faults,
            "best": None if self.best is None else self.best.to_dict(),
            "compiled": [{**dataclasses.asdict(t), "speedup": t.speedup} for t in self.compiled],
            "memory_formats": None if self.formats is None else dict(self.formats.ms),
            "processes": [{**dataclasses.asdict(t), "speedup": t.speedup} for t in self.processes],
            "layers": [dataclasses.asdict(row) for row in self.layers],
        }


def time_pair(first: Callable[[], object], second: Callable[[], object], rounds: int,
              sync: Callable[[], None] = lambda: None, calls: int = 1) -> tuple[float, float]:
    """Median ms per call of two callables timed in alternation over `rounds` (after one warm-up call each);
    each visit makes `calls` back-to-back calls and records their mean (`ttplan.latency.timing.time_all`)."""
    ms = time_all({"first": first, "second": second}, rounds, sync, calls)
    return ms["first"], ms["second"]


def faults_per_call(fn: Callable[[], object], calls: int = 3) -> float | None:
    """Minor page faults per call of `fn` (the allocator mapping memory anew), averaged over `calls` calls."""
    before = minor_page_faults()
    for _ in range(calls):
        fn()
    after = minor_page_faults()
    return None if before is None or after is None else (after - before) / calls


def build_tt_model(dense: nn.Module, plan: ArchPlan, runtime: str = "emitted") -> nn.Module:
    """The dense model with every decomposed layer of `plan` swapped in, by generated code or by the library.

    Where the plan keeps every layer dense (the latency objective at batch 1 may), that is the dense model: a copy,
    so the benchmark still reports the plan's outcome (speedup 1 within noise) instead of failing. A plan made
    for a channels-last model gives a channels-last model.
    """
    layers = [layer for layer in plan.layers if layer.decomposed]
    if not layers:
        model = copy.deepcopy(dense).eval()
        return model.to(memory_format=torch.channels_last) if plan.channels_last else model
    if runtime == "emitted":
        return generated_module(plan).convert(dense).eval()
    if runtime != "layers":
        raise TTPlanError(f"runtime={runtime!r}: expected emitted or layers")
    lowerings = {name: Lowering(**lowering) for name, lowering in plan.lowerings().items()}
    formats = {layer.name: layer.fmt for layer in layers}
    plans = {layer.name: layer.plan.best for layer in layers}
    model = convert(dense, formats, plan.input_size, "best", True, plans=plans, lowerings=lowerings).eval()
    return model.to(memory_format=torch.channels_last) if plan.channels_last else model


def generated_module(plan: ArchPlan) -> types.ModuleType:
    """The file `ttplan emit --arch` writes for `plan`, as a module (its `convert`, `freeze`, ...), made once per
    source: torch.compile looks the module's globals up in sys.modules. The plan decomposes at least one layer."""
    from ttplan.runtime.codegen import emit_model

    lowerings = {name: Lowering(**lowering) for name, lowering in plan.lowerings().items()}
    source = emit_model([(layer.name, layer.plan.best) for layer in plan.layers if layer.decomposed], plan.model,
                        lowerings, channels_last=plan.channels_last)
    name = f"ttplan_generated_{plan.model}_{hashlib.sha1(source.encode()).hexdigest()[:12]}"
    module = sys.modules.get(name)
    if module is None:
        module = types.ModuleType(name)
        exec(compile(source, f"tt_{plan.model}.py", "exec"), module.__dict__)
        sys.modules[name] = module
    return module


def _inputs(model: nn.Module, x: torch.Tensor, names: set[str]) -> dict[str, torch.Tensor]:
    """The input each named submodule receives in one forward of `model`."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:  # returns None: the output stands
            seen.setdefault(name, args[0].detach())
        return hook

    hooks = [model.get_submodule(name).register_forward_hook(keep(name)) for name in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def _group_key(layer: ArchLayer) -> tuple:
    best = layer.plan.best.pairs if layer.plan else None
    return (layer.spec, layer.fmt, best, tuple(sorted(layer.lowering.items())) if layer.plan else None)


def layer_breakdown(dense: nn.Module, tt: nn.Module, plan: ArchPlan, x: torch.Tensor, rounds: int,
                    sync: Callable[[], None], profile: LatencyProfile) -> list[LayerTiming]:
    """Per distinct (geometry, plan): the dense conv and the TT layer on their real input, interleaved."""
    groups: dict[tuple, list[ArchLayer]] = {}
    for layer in plan.layers:
        if layer.kind == "conv":
            groups.setdefault(_group_key(layer), []).append(layer)
    inputs = _inputs(dense, x, {g[0].name for g in groups.values()})
    out: list[LayerTiming] = []
    with torch.no_grad():
        for members in groups.values():
            layer = members[0]
            xin = inputs[layer.name]
            dense_mod, tt_mod = dense.get_submodule(layer.name), tt.get_submodule(layer.name)
            if not layer.decomposed:
                dense_ms = _time_modules(dense_mod, None, xin, rounds, sync)[0]
                out.append(LayerTiming([m.name for m in members], layer.spec.describe(), False, dense_ms, None,
                                       layer.dense_ms, None, 1.0, layer.reason or ""))
                continue
            tt_mod = _deployed(tt_mod)
            dense_ms, tt_ms = _time_modules(dense_mod, tt_mod, xin, rounds, sync)
            timing = LayerTiming([m.name for m in members], layer.spec.describe(), True, dense_ms, tt_ms,
                                 layer.dense_ms, layer.predicted_ms, layer.macs / layer.baseline_macs)
            other = _macs_plan(layer)
            if other is not None:
                stock = Lowering(**{**layer.lowering, "fused": False})
                alt = _deployed(TTConv2d(layer.spec, layer.fmt, other, True, device=xin.device,
                                         lowering=stock).eval())  # timing only: random cores serve
                timing.macs_plan_ms, timing.tt_again_ms = _time_modules(alt, tt_mod, xin, rounds, sync)
                timing.note = (f"MAC plan{' (stock ops)' if layer.fused else ''} {timing.macs_plan_ms:.3f} ms vs "
                               f"{timing.tt_again_ms:.3f} ms (same rounds)")
            out.append(timing)
    return out


def _deployed(layer: nn.Module) -> nn.Module:
    """A TT layer as it runs deployed for inference, as autotune times it: a frozen copy where its weights are folded
    (`freeze`), else the layer itself."""
    if getattr(layer, "fold_weights", False) and callable(getattr(layer, "freeze", None)):
        layer = copy.deepcopy(layer)
        layer.freeze()
    return layer


#: ms each module runs per visit in the per-layer timing: a block of back-to-back calls, so one page fault or
#: scheduler tick does not decide a layer that takes a millisecond (`bench latency` times single layers alike)
LAYER_BLOCK_MS = 10.0


def _time_modules(first: nn.Module, second: nn.Module | None, x: torch.Tensor, rounds: int,
                  sync: Callable[[], None]) -> tuple[float, float]:
    """`time_pair` for two modules on one input (`second` None: time the first alone), in blocks of calls
    lasting about `LAYER_BLOCK_MS` for the slower of the two (the same count for both)."""
    def one() -> object:
        return first(x)

    def two() -> object:
        return second(x) if second is not None else None

    slowest = max(time_pair(one, two, 1, sync))
    calls = max(1, round(LAYER_BLOCK_MS / max(slowest, 1e-3)))
    return time_pair(one, two, rounds, sync, calls)


def _macs_plan(layer: ArchLayer) -> ContractionPlan | None:
    """The order the MAC objective picks for this layer (run on stock ops), where that is not what the layer runs:
    another order, or the same one run by the fused kernel."""
    assert layer.plan is not None
    mine = layer.plan.best
    other = optimize(mine.network, fold_weights=True)
    return None if other.pairs == mine.pairs and not layer.fused else other


@dataclass
class Prepared:
    """What one benchmark run times: the plan, the dense and TT models on the device, an input, a sync."""

    plan: ArchPlan
    dense: nn.Module
    tt: nn.Module
    x: torch.Tensor
    sync: Callable[[], None]


def prepare(arch: str, *, choices: dict | None = None, batch: int = 32, threads: int | None = None,
            device: str = "cpu", objective: str = "latency", profile: LatencyProfile,
            runtime: str = "emitted", autotune: bool = False, malloc: str = "default", channels_last: bool = False,
            fused: bool | None = None, progress: Callable[[str], None] | None = None,
            input_size: tuple[int, int, int] | None = None) -> Prepared:
    """Set the process up (allocator, threads), plan `arch` and build both models, as `bench_model` times them;
    `choices`: how formats are chosen, as `ttplan plan`'s options give them (`PlanRequest.with_choices`; None: the
    default policy). With `channels_last` both models and the input are `torch.channels_last` (the TT layers planned
    so). `fused`: whether layers may run by the fused kernel (`plan_architecture`; None: where it can, never
    channels-last). `input_size` (C, H, W): required for a `module:callable` model, else the preset's own."""
    if device == "cuda" and not torch.cuda.is_available():
        raise TTPlanError("--device cuda: no CUDA device is available here; use --device cpu")
    set_malloc(malloc)  # a one-line error for an unknown mode
    if threads is not None:
        torch.set_num_threads(threads)
    say = progress or (lambda message: None)
    dev = torch.device(device)
    say(f"planning {arch} (objective {objective}, batch {batch})")
    size = tuple(input_size) if input_size is not None else None  # a list after a child's JSON request
    request = PlanRequest.with_choices(arch, choices, input_size=size, batch=batch, fold_weights=True,
                                       objective=objective, latency_profile=profile,
                                       autotune=device if autotune else None, channels_last=channels_last, fused=fused)
    outcome = run_request(request)
    for line in ([outcome.unmet] if outcome.unmet else []) + outcome.warnings:
        say(line)
    plan = outcome.plan
    dense, size = load_model(arch, size)
    dense = dense.to(dev).eval()
    say("converting")
    tt = build_tt_model(dense, plan, runtime).to(dev)
    x = torch.randn(batch, *size, device=dev)
    if channels_last:
        dense, x = dense.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    return Prepared(plan, dense, tt, x, sync)


def end_to_end(run: Prepared, rounds: int) -> tuple[float, float, float | None, float | None]:
    """Median ms of dense and TT over interleaved rounds, then page faults per forward of each."""
    dense, tt, x = run.dense, run.tt, run.x
    with torch.no_grad():
        dense_ms, tt_ms = time_pair(lambda: dense(x), lambda: tt(x), rounds, run.sync)
        dense_faults, tt_faults = faults_per_call(lambda: dense(x)), faults_per_call(lambda: tt(x))
    return dense_ms, tt_ms, dense_faults, tt_faults


def bench_model(arch: str, *, choices: dict | None = None, batch: int = 32, threads: int | None = None,
                device: str = "cpu", objective: str = "latency", profile: LatencyProfile,
                other_profile: LatencyProfile | None = None, rounds: int = 9, layer_rounds: int = 9,
                runtime: str = "emitted", autotune: bool = False,
                malloc: str = "default", compile: bool = False, processes: int = 0, channels_last: bool = False,
                fused: bool | None = None, progress: Callable[[str], None] | None = None,
                input_size: tuple[int, int, int] | None = None, best: bool = False) -> ModelBench:
    """Plan `arch` (the default policy, or as `choices` say: `prepare`), convert it and time dense against TT (see the
    module docstring).

    `malloc="retain"` first makes the C allocator keep freed memory (`ttplan.runtime.allocator`): for this
    process and the rest of its life, dense and TT alike. `compile` also times both under `torch.compile`
    (`ttplan.bench.model.compiled`); `processes` repeats the end-to-end timing in that many fresh processes
    (`ttplan.bench.model.processes`). `channels_last` runs both models, and plans the TT one, in `torch.channels_last`.
    `fused`: whether NCHW TT layers may run by the fused kernel (None: wherever it can be built). `input_size`
    (C, H, W): the model's input, required for a `module:callable` model (default: the preset's). `best` also times
    each model in every form a user deploys, best against best (`best_forms`). `profile` plans the run's models;
    `other_profile` the other memory format's, which `channels_last` and `best` also build (the caller resolves both:
    `ttplan.latency.profiles.load_profile`).
    """
    say = progress or (lambda message: None)
    if (channels_last or best) and other_profile is None:
        raise TTPlanError("bench_model: channels_last and best plan the models of the other memory format too: "
                          "give other_profile (ttplan.latency.profiles.load_profile for that format)")
    settings = {"arch": arch, "choices": choices, "batch": batch, "threads": threads, "device": device,
                "objective": objective, "runtime": runtime, "autotune": autotune, "malloc": malloc,
                "channels_last": channels_last, "fused": fused, "input_size": input_size}
    run = prepare(**settings, profile=profile, progress=say)
    say(f"timing end to end, {rounds} rounds")
    dense_ms, tt_ms, dense_faults, tt_faults = end_to_end(run, rounds)
    say(f"timing each model's modules in place, {rounds} rounds")
    replaced = set(run.plan.lowerings())
    breakdown = time_breakdown(run.dense, run.tt, run.x, replaced, rounds, run.sync)
    compiled = []
    if compile:
        say("compiling both models four ways (inductor: layout optimization on and off, without and with "
            "freezing) and timing them")
        compiled = time_compiled(run.dense, run.tt, run.x, rounds, time_pair, run.sync)
    formats = forms = None
    if channels_last or best:
        other = _other_format(settings, other_profile, say)
        nchw, last = (other, run) if channels_last else (run, other)
        if channels_last:
            say("timing dense and TT in both memory formats")
            formats = both_formats(nchw, last, rounds)
        if best:
            forms = best_forms(nchw, last, rounds, say, _stock_for_onnx(settings, nchw, profile, other_profile, say))
    repeats = []
    if processes:
        say(f"timing end to end again in {processes} fresh processes")
        request = ChildRequest({**settings, "threads": torch.get_num_threads()}, profile.to_dict(), rounds)
        repeats = time_in_processes(request, processes, progress=say)
    say(f"timing layers, {layer_rounds} rounds each")
    layers = layer_breakdown(run.dense, run.tt, run.plan, run.x, layer_rounds, run.sync, profile)
    return ModelBench(arch, (choices or {}).get("config_path"), batch, torch.get_num_threads(), device, objective,
                      runtime, rounds, dense_ms, tt_ms, run.plan, layers, malloc, dense_faults, tt_faults, compiled,
                      repeats, channels_last, formats, breakdown, forms)


def _other_format(settings: dict, profile: LatencyProfile, progress: Callable[[str], None]) -> Prepared:
    """The run's models prepared again for the other memory format: the TT one planned as for a model in that
    format (the run's objective and options, with `profile`, the caller's profile for that format)."""
    last = not settings["channels_last"]
    progress(f"the {'channels-last' if last else 'NCHW'} models, planned with the latency profile "
             f"{profile.source or profile.label}")
    return prepare(**{**settings, "channels_last": last}, profile=profile, progress=progress)


def _stock_for_onnx(settings: dict, nchw: Prepared, profile: LatencyProfile, other_profile: LatencyProfile | None,
                    progress: Callable[[str], None]) -> Prepared | None:
    """The NCHW models planned again without the fused kernel, for ONNX Runtime, where `nchw`'s plan runs layers
    fused: ONNX carries no ttplan op, so the exported fused layers would run the stock steps of orders chosen for the
    kernel; a user deploying to ONNX plans with `--no-fuse`. None where no layer is fused."""
    if not any(layer.fused for layer in nchw.plan.layers):
        return None
    progress("the NCHW models planned without the fused kernel, for ONNX Runtime (ONNX carries no ttplan op)")
    nchw_profile = other_profile if settings["channels_last"] else profile
    return prepare(**{**settings, "channels_last": False, "fused": False}, profile=nchw_profile, progress=progress)


def both_formats(nchw: Prepared, last: Prepared, rounds: int) -> FormatTimings:
    """The channels-last run's models beside the NCHW ones, all four timed interleaved on the same input values
    (`ttplan.bench.model.memory_formats`)."""
    x_last = last.x
    x = x_last.contiguous()
    models = dict(zip(MODELS, (lambda: nchw.dense(x), lambda: last.dense(x_last), lambda: nchw.tt(x),
                               lambda: last.tt(x_last))))
    with torch.no_grad():
        return FormatTimings(time_all(models, rounds, last.sync))


def best_forms(nchw: Prepared, last: Prepared, rounds: int,
               progress: Callable[[str], None] = lambda message: None, stock: Prepared | None = None) -> BestForms:
    """Each model in every form of `ttplan.bench.model.forms.FORMS`, all timed interleaved on the same input values:
    eager NCHW (`nchw`'s models), the same prepared for inference (`frozen_runner`), eager channels-last (`last`'s:
    the TT one planned for channels-last) and `last`'s models compiled, and
    `nchw`'s models compiled with freezing (layout optimization on and off) and in ONNX Runtime (`stock`'s instead
    where given: planned without the fused kernel, `_stock_for_onnx`). A form that cannot be built for a side is
    recorded with its reason; the others are timed."""
    import torch._dynamo

    x = nchw.x
    x_last = x.contiguous(memory_format=torch.channels_last)
    progress(f"preparing both models for inference in eager mode ({EAGER_FROZEN})")
    runners = {EAGER: (lambda: nchw.dense(x), lambda: nchw.tt(x)),
               EAGER_FROZEN: (frozen_runner(nchw.dense, x, "dense"), frozen_runner(nchw.tt, x, "TT")),
               EAGER_LAST: (lambda: last.dense(x_last), lambda: last.tt(x_last))}
    for form, models, inputs, layout in ((COMPILED, nchw, x, True), (COMPILED_NO_LAYOUT, nchw, x, False),
                                         (COMPILED_LAST, last, x_last, True)):
        progress(f"compiling both models ({form}: inductor, freezing, layout optimization "
                 f"{'on' if layout else 'off'})")
        runners[form] = (compiled_runner(models.dense, inputs, layout), compiled_runner(models.tt, inputs, layout))
    threads = torch.get_num_threads()
    progress(f"exporting both models to ONNX for ONNX Runtime ({threads} intra-op threads)")
    onnx = stock or nchw
    runners[ORT] = (onnx_runtime_runner(onnx.dense, x, threads), onnx_runtime_runner(onnx.tt, x, threads))
    reduction = dict.fromkeys(FORMS, nchw.plan.totals.macs_reduction)
    reduction[EAGER_LAST] = reduction[COMPILED_LAST] = last.plan.totals.macs_reduction
    reduction[ORT] = onnx.plan.totals.macs_reduction
    progress(f"timing both models in {len(FORMS)} forms, {rounds} rounds")
    try:
        return time_forms(runners, rounds, nchw.sync, reduction, threads)
    finally:
        torch._dynamo.reset()  # the compiled graphs are not needed again


__all__ = ["LAYER_BLOCK_MS", "LayerTiming", "ModelBench", "Prepared", "best_forms", "bench_model", "both_formats",
           "build_tt_model", "end_to_end", "generated_module", "prepare", "time_pair"]
