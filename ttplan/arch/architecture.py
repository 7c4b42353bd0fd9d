"""Plan a whole architecture: trace its conv/linear layers, plan each decomposed one, keep the rest dense.

Model totals count the traced conv and linear layers (weights plus biases; BN, pooling, residual
adds and activations are neither MACs nor counted parameters), the way the literature counts ResNet
"FLOPs" (which are MACs), and every other op `FlopCounterMode` counts (`UntracedOp`: Conv1d, ConvTranspose2d,
functional convs and matmuls, ...), which stay dense. `tt` is the whole model with every decomposed layer at its
best order and everything else dense, so `1 - tt/baseline` is the model-level reduction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from ttplan.arch.config import LayerConfig, load_config
from ttplan.arch.policy import Decision, Policy, decide
from ttplan.core.contraction import ContractionPlan
from ttplan.core.formats import TTFormat
from ttplan.core.fusion import fusion_wanted
from ttplan.core.latency import LatencyProfile, predict_dense_us
from ttplan.core.layer import LayerPlan, one_order_plans, plan_layer
from ttplan.core.objectives import needs_profile
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.models import count_model_params, load_model
from ttplan.models.trace import TracedLayer, UntracedOp, trace


@dataclass
class ArchLayer:
    """One traced layer: decomposed (`fmt` and `plan` set) or dense (`reason` says why).

    `worse_than_dense`: the format's published order costs more MACs or more parameters than the
    dense layer. With `skip_worse` such a layer is left dense; `rejected` then holds the format.
    """

    name: str
    kind: str
    spec: ConvSpec
    batch: int
    fmt: TTFormat | None
    plan: LayerPlan | None
    reason: str | None = None
    source: str = "policy"
    worse_than_dense: bool = False
    rejected: TTFormat | None = None
    rejected_plan: LayerPlan | None = None
    calls: tuple[ConvSpec, ...] = ()
    call_plans: tuple[LayerPlan, ...] = ()
    #: predicted ms of the dense layer (None: planned without a latency profile), and whether the TT layer is
    #: slower than it
    dense_ms: float | None = None
    slower_than_dense: bool = False
    #: autotune's measurements (`TuneResult.to_dict()`) when the layer was autotuned
    tuned: dict | None = None
    #: planned for a model that runs channels-last (NHWC maps from input to output)
    channels_last: bool = False

    def __post_init__(self) -> None:
        if not self.calls:
            self.calls = (self.spec,)
        if not self.call_plans and (self.plan or self.rejected_plan) is not None:
            self.call_plans = (self.plan or self.rejected_plan,) * len(self.calls)  # type: ignore[assignment]

    @property
    def n_calls(self) -> int:
        """How many times the module runs in one forward pass (each call is planned and counted)."""
        return len(self.calls)

    @property
    def predicted_ms(self) -> float | None:
        """Predicted ms of the layer as planned: its best order if decomposed, else the dense layer (None: planned
        without a latency profile)."""
        if self.plan is None:
            return self.dense_ms
        values = [p.predicted_ms(p.best) for p in self.call_plans]
        return self.dense_ms if None in values else sum(values)

    @property
    def lowering(self) -> dict:
        """How the layer's steps run (`mix`, `channels_last`, `fused`): autotune's choice, else the default lowering
        of the model's maps (`default_lowering`), as one fused kernel call where the plan chose that."""
        if self.tuned is not None and not self.tuned["best"]["dense"]:
            best = self.tuned["best"]
            return {"mix": best["mix"], "channels_last": best["channels_last"], "fused": best.get("fused", False)}
        from ttplan.runtime.lowering import default_lowering  # the runtime owns how steps run

        return asdict(default_lowering(self.channels_last, bool(self.plan and self.plan.fused)))

    @property
    def decomposed(self) -> bool:
        """Whether the layer runs as TT cores."""
        return self.plan is not None

    @property
    def fused(self) -> bool:
        """Whether the layer runs as one call of the fused kernel (where it can run; `lowering`)."""
        return self.decomposed and self.lowering["fused"]

    @property
    def baseline_macs(self) -> int:
        """Dense MACs of every call at the plan's batch (a grouped conv counts 1/groups)."""
        return sum(spec.dense_macs(self.batch) for spec in self.calls)

    @property
    def baseline_params(self) -> int:
        """Dense kernel plus bias."""
        return self.spec.dense_params()

    @property
    def macs(self) -> int:
        """The layer as planned, every call: best order if decomposed, else dense."""
        return sum(p.best.macs for p in self.call_plans) if self.plan else self.baseline_macs

    @property
    def params(self) -> int:
        """Cores (plus bias) if decomposed, else the dense kernel (plus bias)."""
        return self.plan.best.params if self.plan else self.baseline_params

    @property
    def published_macs(self) -> int:
        """The format's published order (every call) if decomposed, else dense."""
        return sum(p.published.macs for p in self.call_plans) if self.plan else self.baseline_macs

    @property
    def shown_published_macs(self) -> int:
        """The published order of the format planned or rejected (every call); dense if there is none."""
        return sum(p.published.macs for p in self.call_plans) if self.call_plans else self.baseline_macs

    def to_dict(self) -> dict:
        """JSON-ready row: geometry, baseline, format, schemes, best, flags."""
        spec = self.spec
        shown = self.plan or self.rejected_plan
        fmt = self.fmt or self.rejected
        out = {
            "name": self.name,
            "kind": self.kind,
            "calls": self.n_calls,
            "geometry": spec.describe(),
            "in_channels": spec.in_channels,
            "out_channels": spec.out_channels,
            "kernel_size": list(spec.kernel_size),
            "stride": list(spec.stride),
            "input_size": list(spec.input_size),
            "output_size": list(spec.output_size),
            "baseline": {"macs": self.baseline_macs, "flops": 2 * self.baseline_macs, "params": self.baseline_params},
            "decomposed": self.decomposed,
            "dense_reason": self.reason,
            "source": self.source,
            "format": None,
            "schemes": {},
            "best": {"order": "best" if self.plan else "dense conv", "macs": self.macs, "flops": 2 * self.macs,
                     "params": self.params},
            "worse_than_dense": self.worse_than_dense,
            "slower_than_dense": self.slower_than_dense,
            "dense_predicted_ms": self.dense_ms,
            "predicted_ms": self.predicted_ms,
            "lowering": self.lowering if self.decomposed else None,
            "macs_reduction": 1 - self.macs / self.baseline_macs if self.baseline_macs else 0.0,
            "params_reduction": 1 - self.params / self.baseline_params if self.baseline_params else 0.0,
        }
        if fmt is not None:
            out["format"] = {**fmt.to_dict(), "tt_shapes": list(fmt.tt_shapes(spec))}
        if shown is not None:
            per_call = [p.schemes for p in self.call_plans] or [shown.schemes]
            out["schemes"] = {name: {"macs": sum(s[name].macs for s in per_call),
                                     "flops": sum(s[name].flops for s in per_call), "params": p.params,
                                     "weight_macs": sum(s[name].weight_macs for s in per_call)}
                              for name, p in shown.schemes.items()}
            out["published"] = shown.fmt.published_scheme
        if self.tuned is not None:
            out["autotune"] = self.tuned
        if self.plan is not None:
            best = self.plan.best
            out["best"].update(feature_macs=sum(p.best.feature_macs for p in self.call_plans),
                               weight_macs=sum(p.best.weight_macs for p in self.call_plans),
                               path=[list(p) for p in best.pairs],
                               steps=[f"{s.left_name} x {s.right_name}" for s in best.steps])
        return out


@dataclass(frozen=True)
class Totals:
    """Model totals over the traced conv and linear layers, dense and as planned."""

    baseline_macs: int
    baseline_params: int
    tt_macs: int
    tt_params: int
    published_macs: int
    decomposed: int
    dense: int
    all_params: int | None = None
    #: predicted ms of the traced layers, dense and as planned (None: planned without a latency profile)
    baseline_ms: float | None = 0.0
    tt_ms: float | None = 0.0
    #: MACs and params of the ops ttplan does not plan (`UntracedOp`), included in every MACs and params total above
    untraced_macs: int = 0
    untraced_params: int = 0

    @property
    def predicted_speedup(self) -> float | None:
        """Predicted dense time over planned time, summed over the traced layers (None without predicted times)."""
        if self.baseline_ms is None or self.tt_ms is None:
            return None
        return self.baseline_ms / self.tt_ms if self.tt_ms else 1.0

    @property
    def macs_reduction(self) -> float:
        """1 - tt/baseline MACs (the literature's "FLOPs reduction": FLOPs = 2 x MACs on both sides)."""
        return 1 - self.tt_macs / self.baseline_macs

    @property
    def params_reduction(self) -> float:
        """1 - tt/baseline parameters."""
        return 1 - self.tt_params / self.baseline_params

    def to_dict(self) -> dict:
        """JSON-ready totals."""
        return {
            "baseline": {"macs": self.baseline_macs, "flops": 2 * self.baseline_macs, "params": self.baseline_params},
            "tt": {"macs": self.tt_macs, "flops": 2 * self.tt_macs, "params": self.tt_params},
            "published": {"macs": self.published_macs, "flops": 2 * self.published_macs, "params": self.tt_params},
            "macs_reduction": self.macs_reduction,
            "flops_reduction": self.macs_reduction,
            "params_reduction": self.params_reduction,
            "decomposed_layers": self.decomposed,
            "dense_layers": self.dense,
            "untraced": {"macs": self.untraced_macs, "flops": 2 * self.untraced_macs, "params": self.untraced_params},
            "all_model_params": self.all_params,
            "predicted_ms": {"baseline": self.baseline_ms, "tt": self.tt_ms, "speedup": self.predicted_speedup},
        }


@dataclass
class ArchPlan:
    """A planned architecture: one `ArchLayer` per traced conv/linear layer, in execution order."""

    model: str
    input_size: tuple[int, int, int]
    batch: int
    fold_weights: bool
    policy: Policy
    layers: list[ArchLayer]
    all_params: int | None = None
    notes: list[str] = field(default_factory=list)
    objective: str = "macs"
    channels_last: bool = False
    #: the ops ttplan does not plan, counted dense in the totals (`trace`)
    untraced: list[UntracedOp] = field(default_factory=list)

    @property
    def totals(self) -> Totals:
        """Baseline and planned MACs/params summed over the layers (dense-kept layers included) and the untraced
        ops (dense); predicted times cover the layers only."""
        macs = sum(op.macs(self.batch) for op in self.untraced)
        params = sum(op.params for op in self.untraced)
        dense_ms = [layer.dense_ms for layer in self.layers]
        tt_ms = [layer.predicted_ms for layer in self.layers]
        return Totals(
            baseline_macs=sum(layer.baseline_macs for layer in self.layers) + macs,
            baseline_params=sum(layer.baseline_params for layer in self.layers) + params,
            tt_macs=sum(layer.macs for layer in self.layers) + macs,
            tt_params=sum(layer.params for layer in self.layers) + params,
            published_macs=sum(layer.published_macs for layer in self.layers) + macs,
            decomposed=sum(layer.decomposed for layer in self.layers),
            dense=sum(not layer.decomposed for layer in self.layers),
            all_params=self.all_params,
            baseline_ms=None if None in dense_ms else sum(dense_ms),  # type: ignore[arg-type]
            tt_ms=None if None in tt_ms else sum(tt_ms),  # type: ignore[arg-type]
            untraced_macs=macs,
            untraced_params=params,
        )

    def formats(self) -> dict[str, TTFormat | None]:
        """Each layer's format as planned (`None` = dense): what `save_config` writes."""
        return {layer.name: layer.fmt for layer in self.layers}

    def plans(self, scheme: str = "best") -> list[tuple[str, ContractionPlan]]:
        """(name, plan) of every decomposed layer at `scheme` (see `LayerPlan.named`): what `ttplan emit` writes."""
        out = []
        for layer in self.layers:
            if layer.plan is None:
                continue
            try:
                out.append((layer.name, layer.plan.named(scheme)))
            except TTPlanError as error:
                raise TTPlanError(f"layer {layer.name}: {error}; use best, published or dense") from None
        return out

    def lowerings(self) -> dict[str, dict]:
        """How each decomposed layer's steps run (`ArchLayer.lowering`), by name: what the TT model is built with."""
        return {layer.name: layer.lowering for layer in self.layers if layer.decomposed}

    def specs(self) -> dict[str, ConvSpec]:
        """Each layer's geometry by name."""
        return {layer.name: layer.spec for layer in self.layers}

    def to_dict(self) -> dict:
        """JSON-ready plan: `model`, `input_size`, `batch`, `fold_weights`, `policy`, `layers`, `totals`, `notes`."""
        return {
            "model": self.model,
            "input_size": list(self.input_size),
            "batch": self.batch,
            "fold_weights": self.fold_weights,
            "objective": self.objective,
            "channels_last": self.channels_last,
            "units": "MACs (FLOPs = 2 x MACs); params = conv/linear weights + biases and the parameters untraced ops "
                     "read; ms predicted by the latency profile unless under autotune (traced layers only)",
            "policy": self.policy.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
            "untraced": [untraced_dict(op, self.batch) for op in self.untraced],
            "totals": self.totals.to_dict(),
            "notes": list(self.notes),
        }


def untraced_dict(op: UntracedOp, batch: int) -> dict:
    """JSON-ready row of an op ttplan does not plan, at `batch`."""
    macs = op.macs(batch)
    return {"name": op.name, "module": op.module, "op": op.op, "calls": op.calls, "macs": macs, "flops": 2 * macs,
            "params": op.params, "dense_reason": op.reason}


@dataclass(frozen=True)
class TracedModel:
    """A traced model: its label, conv/linear layers, input size, every parameter, and the ops ttplan does not plan."""

    label: str
    layers: list[TracedLayer]
    input_size: tuple[int, int, int]
    all_params: int
    untraced: list[UntracedOp]


def trace_model(model_or_name: str | nn.Module, input_size: tuple[int, int, int] | None = None) -> TracedModel:
    """The traced layers and untraced ops of a preset, target or module (`trace`), with its every parameter."""
    if isinstance(model_or_name, nn.Module):
        if input_size is None:
            raise TTPlanError("a model given as an nn.Module needs input_size=(C, H, W), e.g. (3, 224, 224)")
        model, size, label = model_or_name, tuple(input_size), type(model_or_name).__name__
    else:
        model, size = load_model(model_or_name, input_size)
        label = model_or_name
    traced = trace(model, size)  # type: ignore[arg-type]
    if not traced.layers:
        raise TTPlanError(f"model {label!r} has no nn.Conv2d or nn.Linear layer that runs on input {size}")
    return TracedModel(label, traced.layers, size, count_model_params(model), traced.untraced)  # type: ignore[arg-type]


def _worse(plan: LayerPlan) -> bool:
    """The published order costs more MACs or more parameters than the dense layer."""
    return plan.published.macs > plan.baseline_macs or plan.published.params > plan.baseline_params


def plan_layers(
    layers: list[TracedLayer],
    decisions: dict[str, Decision],
    *,
    batch: int = 1,
    fold_weights: bool = False,
    skip_worse: bool = False,
    objective: str = "macs",
    profile: LatencyProfile | None = None,
    skip_slower: bool = False,
    autotune: str | None = None,
    channels_last: bool = False,
    fused: bool = False,
) -> list[ArchLayer]:
    """Plan each decided layer with `plan_layer` (cached per geometry and format); dense ones as they are.

    `skip_slower`: keep a layer dense where its best order is slower than the dense layer (predicted
    by `profile`, or measured when `autotune` names a device to time on: `cpu` or `cuda`). `channels_last`: the
    model runs channels-last, so its TT layers lower to NHWC maps (and autotune measures them so). `fused`: the
    fused kernel may run layers (`plan_layer`). `profile` None: nothing is predicted (the ms are None), so nothing
    may be chosen by time (`latency`, `skip_slower`, `autotune`, which ranks its candidates by prediction).
    """
    if profile is None:
        wanted = [what for what, given in (("objective='latency'", objective == "latency"),
                                           ("skip_slower", skip_slower), (f"autotune={autotune!r}", autotune))
                  if given]
        if wanted:
            raise needs_profile(" and ".join(wanted))
    cache: dict[tuple[ConvSpec, TTFormat], LayerPlan] = {}
    tuned: dict[tuple[ConvSpec, TTFormat], dict] = {}

    def planned(spec: ConvSpec, fmt: TTFormat, kind: str) -> LayerPlan:
        if (spec, fmt) not in cache:
            cache[(spec, fmt)] = plan_layer(spec, fmt, batch=batch, fold_weights=fold_weights, objective=objective,
                                            profile=profile, fused=fused)
            if autotune is not None and kind == "conv":
                cache[(spec, fmt)], tuned[(spec, fmt)] = _autotuned(cache[(spec, fmt)], autotune, channels_last,
                                                                    fused)
        return cache[(spec, fmt)]

    out: list[ArchLayer] = []
    for layer in layers:
        decision = decisions[layer.name]
        row = ArchLayer(layer.name, layer.kind, layer.spec, batch, None, None, decision.reason, decision.source,
                        calls=layer.calls, channels_last=channels_last,
                        dense_ms=None if profile is None else
                        sum(predict_dense_us(spec, batch, profile) for spec in layer.calls) / 1000)
        if decision.fmt is not None:
            # each call costed at its own size, all running one order: the module is one layer whatever its input
            plans = one_order_plans([planned(spec, decision.fmt, layer.kind) for spec in layer.calls])
            plan = plans[0]
            row.call_plans = plans
            row.tuned = tuned.get((layer.spec, decision.fmt))
            row.worse_than_dense = any(_worse(p) for p in plans)
            row.slower_than_dense = _slower(plans, row.dense_ms, row.tuned)
            if row.worse_than_dense and skip_worse:
                published = plan.published
                row.rejected, row.rejected_plan = decision.fmt, plan
                row.reason = (f"--skip-worse: {published.name} order {published.macs:,} MACs / {published.params:,} "
                              f"params vs dense {plan.baseline_macs:,} / {plan.baseline_params:,}")
            elif row.slower_than_dense and skip_slower:
                row.rejected, row.rejected_plan = decision.fmt, plan
                row.reason = f"--skip-slower: {_times(plans, row.dense_ms, row.tuned)}"
            else:
                row.fmt, row.plan = decision.fmt, plan
        out.append(row)
    return out


def _autotuned(plan: LayerPlan, device: str, channels_last: bool = False, fused: bool = True
               ) -> tuple[LayerPlan, dict]:
    """The layer plan with autotune's fastest order as its best (when a TT order is fastest), and the timings.
    `fused`: whether the fused kernel may run layers; where not (`--no-fuse`), autotune times only stock lowerings,
    so that no order is chosen, nor a layer run, by a kernel the plan excludes."""
    from dataclasses import replace

    from ttplan.latency.autotune import autotune_layer

    assert plan.profile is not None  # `plan_layers` refuses autotune without a profile
    result = autotune_layer(plan.spec, plan.fmt, plan.network.batch, plan.best.fold_weights, device=device,
                            profile=plan.profile, channels_last=channels_last, fused=fused)
    tt = [t for t in result.timings if t.plan is not None]
    fastest = min(tt, key=lambda t: t.ms)
    return replace(plan, best=fastest.plan, tuned=result.to_dict()), result.to_dict()


def _slower(plans: tuple[LayerPlan, ...], dense_ms: float | None, tuned: dict | None) -> bool:
    """Whether the best orders (every call) are slower than the dense layer: measured when autotuned (the first
    call's geometry), else predicted (never, without a profile)."""
    if tuned is not None:
        return min(t["ms"] for t in tuned["timings"] if not t["dense"]) >= tuned["dense_ms"]
    predicted = [p.predicted_ms(p.best) for p in plans]
    return dense_ms is not None and None not in predicted and sum(predicted) >= dense_ms  # type: ignore[arg-type]


def _times(plans: tuple[LayerPlan, ...], dense_ms: float | None, tuned: dict | None) -> str:
    """The comparison behind a `--skip-slower` decision, in words."""
    if tuned is not None:
        best = min(t["ms"] for t in tuned["timings"] if not t["dense"])
        return f"measured {best:.3f} ms vs dense {tuned['dense_ms']:.3f} ms"
    return f"predicted {sum(p.predicted_ms(p.best) for p in plans):.3f} ms vs dense {dense_ms:.3f} ms"


def fusion_here(fused: bool | None, channels_last: bool) -> bool:
    """Whether layers may run by the fused kernel on this machine: `fusion_wanted`, with the machine probed for a C
    compiler only where the caller left it open (None)."""
    from ttplan.runtime.kernels.build import find_compiler  # the machine probe; the decision is the core's

    return fusion_wanted(fused, channels_last, fused is None and find_compiler() is not None)


def plan_architecture(
    model_or_name: str | nn.Module,
    input_size: tuple[int, int, int] | None = None,
    config: dict[str, LayerConfig] | str | Path | None = None,
    policy: Policy = Policy(),  # noqa: B008 - frozen dataclass, safe as a default
    batch: int = 1,
    fold_weights: bool = False,
    skip_worse: bool = False,
    *,
    objective: str = "macs",
    profile: LatencyProfile | None = None,
    skip_slower: bool | None = None,
    autotune: str | None = None,
    channels_last: bool = False,
    fused: bool | None = None,
    unnamed: str | None = None,
) -> ArchPlan:
    """Trace a model and plan every layer; the result's `layers` and `totals` are what `ttplan plan` prints.

    `model_or_name`: a preset (`resnet56`), a `module:callable`, or an `nn.Module` (then `input_size`
    (C, H, W) is required). `config`: entries from `load_config` or a path to one; the layers it does
    not name stay dense, or follow `policy` with `unnamed="policy"` (`ttplan.arch.policy.unnamed_rule`); without
    a config every layer follows `policy`. Every decomposed layer is planned with `plan_layer` at `batch`; `to_dict()`
    gives `layers[i].{name, baseline.macs, baseline.params, schemes.<name>.macs, best.macs, best.params,
    worse_than_dense}` and `totals.{baseline,tt}.{macs,params}` (MACs; FLOPs = 2 x MACs).
    `objective` picks what each best order minimises; `skip_slower` (default: on for `latency`) keeps
    dense the layers no TT order beats in time; `autotune` (`cpu`/`cuda`) measures instead of predicting.
    `channels_last`: plan for a model run channels-last (`model.to(memory_format=torch.channels_last)`): TT layers
    lower to NHWC maps and autotune measures on channels-last inputs. Predicted times come from `profile` (fit one
    with `ttplan calibrate --channels-last` for such a model; `ttplan.latency.profiles.load_profile()` reads it);
    without one nothing is predicted, and choosing by time (`latency`, `skip_slower`, `autotune`) is an error.
    `fused` (with `latency`): layers may run as one call of ttplan's fused CPU kernel where predicted faster; None
    (default): wherever it can be built, i.e. for NCHW maps with a C compiler on this machine.

    >>> import torch, ttplan
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
    ...                             torch.nn.Conv2d(32, 64, 3, padding=1))
    >>> plan = ttplan.plan_architecture(model, (3, 32, 32))
    >>> [(layer.name, layer.fmt.label if layer.decomposed else layer.reason) for layer in plan.layers]
    [('0', 'first conv'), ('2', 'hodec')]
    >>> f"{plan.totals.baseline_macs:,} -> {plan.totals.tt_macs:,} MACs"
    '19,759,104 -> 5,997,568 MACs'
    >>> tt = ttplan.convert(model, plan)  # the TT model as planned
    """
    if skip_slower is None:
        skip_slower = objective == "latency"
    fused = fusion_here(fused, channels_last)
    if batch < 1:
        raise TTPlanError(f"batch={batch}: expected a positive int")
    if isinstance(config, (str, Path)):
        config = load_config(config)
    traced = trace_model(model_or_name, input_size)
    decisions = decide(traced.layers, policy, config, unnamed)
    rows = plan_layers(traced.layers, decisions, batch=batch, fold_weights=fold_weights, skip_worse=skip_worse,
                       objective=objective, profile=profile, skip_slower=skip_slower, autotune=autotune,
                       channels_last=channels_last, fused=fused)
    return ArchPlan(traced.label, traced.input_size, batch, fold_weights, policy, rows, traced.all_params,
                    objective=objective, channels_last=channels_last, untraced=traced.untraced)
