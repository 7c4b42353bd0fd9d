"""Plan a whole architecture: trace its conv/linear layers, plan each decomposed one, keep the rest dense.

Model totals count the traced conv and linear layers only (weights plus biases; BN, pooling, residual
adds and activations are neither MACs nor counted parameters), the way the literature counts ResNet
"FLOPs" (which are MACs). `tt` is the whole model with every decomposed layer at its best order and
every other layer dense, so `1 - tt/baseline` is the model-level reduction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ttplan.arch.config import LayerConfig, load_config
from ttplan.arch.policy import Decision, Policy, decide
from ttplan.core.formats import TTFormat
from ttplan.core.layer import LayerPlan, plan_layer
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.models import count_model_params, load_model, trace_layers
from ttplan.models.trace import TracedLayer


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

    @property
    def decomposed(self) -> bool:
        """Whether the layer runs as TT cores."""
        return self.plan is not None

    @property
    def baseline_macs(self) -> int:
        """Dense MACs at the plan's batch (a grouped conv counts 1/groups)."""
        return self.spec.dense_macs(self.batch)

    @property
    def baseline_params(self) -> int:
        """Dense kernel plus bias."""
        return self.spec.dense_params()

    @property
    def macs(self) -> int:
        """The layer as planned: best order if decomposed, else dense."""
        return self.plan.best.macs if self.plan else self.baseline_macs

    @property
    def params(self) -> int:
        """Cores (plus bias) if decomposed, else the dense kernel (plus bias)."""
        return self.plan.best.params if self.plan else self.baseline_params

    @property
    def published_macs(self) -> int:
        """The format's published order if decomposed, else dense."""
        return self.plan.published.macs if self.plan else self.baseline_macs

    def to_dict(self) -> dict:
        """JSON-ready row: geometry, baseline, format, schemes, best, flags."""
        spec = self.spec
        shown = self.plan or self.rejected_plan
        fmt = self.fmt or self.rejected
        out = {
            "name": self.name,
            "kind": self.kind,
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
            "macs_reduction": 1 - self.macs / self.baseline_macs if self.baseline_macs else 0.0,
            "params_reduction": 1 - self.params / self.baseline_params if self.baseline_params else 0.0,
        }
        if fmt is not None:
            out["format"] = {**fmt.to_dict(), "tt_shapes": list(fmt.tt_shapes(spec))}
        if shown is not None:
            out["schemes"] = {name: {"macs": p.macs, "flops": p.flops, "params": p.params,
                                     "weight_macs": p.weight_macs} for name, p in shown.schemes.items()}
            out["published"] = shown.fmt.published_scheme
        if self.plan is not None:
            best = self.plan.best
            out["best"].update(feature_macs=best.feature_macs, weight_macs=best.weight_macs,
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
            "all_model_params": self.all_params,
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

    @property
    def totals(self) -> Totals:
        """Baseline and planned MACs/params summed over the layers (dense-kept layers included)."""
        return Totals(
            baseline_macs=sum(layer.baseline_macs for layer in self.layers),
            baseline_params=sum(layer.baseline_params for layer in self.layers),
            tt_macs=sum(layer.macs for layer in self.layers),
            tt_params=sum(layer.params for layer in self.layers),
            published_macs=sum(layer.published_macs for layer in self.layers),
            decomposed=sum(layer.decomposed for layer in self.layers),
            dense=sum(not layer.decomposed for layer in self.layers),
            all_params=self.all_params,
        )

    def formats(self) -> dict[str, TTFormat | None]:
        """Each layer's format as planned (`None` = dense): what `save_config` writes."""
        return {layer.name: layer.fmt for layer in self.layers}

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
            "units": "MACs (FLOPs = 2 x MACs); params = conv/linear weights + biases",
            "policy": self.policy.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
            "totals": self.totals.to_dict(),
            "notes": list(self.notes),
        }


def trace_model(
    model_or_name: str | nn.Module, input_size: tuple[int, int, int] | None = None
) -> tuple[str, list[TracedLayer], tuple[int, int, int], int]:
    """(label, traced layers, input size, every parameter of the model) for a preset, target or module."""
    if isinstance(model_or_name, nn.Module):
        if input_size is None:
            raise TTPlanError("a model given as an nn.Module needs input_size=(C, H, W), e.g. (3, 224, 224)")
        model, size, label = model_or_name, tuple(input_size), type(model_or_name).__name__
    else:
        model, size = load_model(model_or_name, input_size)
        label = model_or_name
    layers = trace_layers(model, size)  # type: ignore[arg-type]
    if not layers:
        raise TTPlanError(f"model {label!r} has no nn.Conv2d or nn.Linear layer that runs on input {size}")
    return label, layers, size, count_model_params(model)  # type: ignore[return-value]


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
) -> list[ArchLayer]:
    """Plan each decided layer with `plan_layer` (cached per geometry and format); dense ones as they are."""
    cache: dict[tuple[ConvSpec, TTFormat], LayerPlan] = {}
    out: list[ArchLayer] = []
    for layer in layers:
        decision = decisions[layer.name]
        row = ArchLayer(layer.name, layer.kind, layer.spec, batch, None, None, decision.reason, decision.source)
        if decision.fmt is not None:
            key = (layer.spec, decision.fmt)
            if key not in cache:
                cache[key] = plan_layer(layer.spec, decision.fmt, batch=batch, fold_weights=fold_weights)
            plan = cache[key]
            row.worse_than_dense = _worse(plan)
            if row.worse_than_dense and skip_worse:
                published = plan.published
                row.rejected, row.rejected_plan = decision.fmt, plan
                row.reason = (f"--skip-worse: {published.name} order {published.macs:,} MACs / {published.params:,} "
                              f"params vs dense {plan.baseline_macs:,} / {plan.baseline_params:,}")
            else:
                row.fmt, row.plan = decision.fmt, plan
        out.append(row)
    return out


def plan_architecture(
    model_or_name: str | nn.Module,
    input_size: tuple[int, int, int] | None = None,
    config: dict[str, LayerConfig] | str | Path | None = None,
    policy: Policy = Policy(),  # noqa: B008 - frozen dataclass, safe as a default
    batch: int = 1,
    fold_weights: bool = False,
    skip_worse: bool = False,
) -> ArchPlan:
    """Trace a model and plan every layer; the result's `layers` and `totals` are what `ttplan plan` prints.

    `model_or_name`: a preset (`resnet56`), a `module:callable`, or an `nn.Module` (then `input_size`
    (C, H, W) is required). `config`: entries from `load_config` or a path to one; layers it does not
    cover follow `policy`. Every decomposed layer is planned with `plan_layer` at `batch`; `to_dict()`
    gives `layers[i].{name, baseline.macs, baseline.params, schemes.<name>.macs, best.macs, best.params,
    worse_than_dense}` and `totals.{baseline,tt}.{macs,params}` (MACs; FLOPs = 2 x MACs).
    """
    if batch < 1:
        raise TTPlanError(f"batch={batch}: expected a positive int")
    if isinstance(config, (str, Path)):
        config = load_config(config)
    label, layers, size, all_params = trace_model(model_or_name, input_size)
    decisions = decide(layers, policy, config)
    rows = plan_layers(layers, decisions, batch=batch, fold_weights=fold_weights, skip_worse=skip_worse)
    return ArchPlan(label, size, batch, fold_weights, policy, rows, all_params)
