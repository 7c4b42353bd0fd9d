"""Plan one layer: the dense baseline, the fixed schemes and the searched best order, side by side."""

from __future__ import annotations

from dataclasses import dataclass, field

from ttplan.core.contraction import ContractionPlan
from ttplan.core.formats import TTFormat
from ttplan.core.network import TensorNetwork, build_network
from ttplan.core.peers import PeerResult, compare_peers, im2col_equation, im2col_expression
from ttplan.core.schemes import schemes_for
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec


@dataclass
class LayerPlan:
    """Everything `ttplan layer` reports for one layer and one format."""

    spec: ConvSpec
    fmt: TTFormat
    network: TensorNetwork
    schemes: dict[str, ContractionPlan]
    best: ContractionPlan
    peers: list[PeerResult] = field(default_factory=list)

    @property
    def baseline_macs(self) -> int:
        """MACs of the dense conv at the plan's batch size."""
        return self.spec.dense_macs(self.network.batch)

    @property
    def baseline_params(self) -> int:
        """Parameters of the dense conv (kernel plus bias)."""
        return self.spec.dense_params()

    @property
    def published(self) -> ContractionPlan:
        """The format's own published order."""
        return self.schemes[self.fmt.published_scheme]

    def summary(self, plan: ContractionPlan) -> dict:
        """One plan's totals, with ratios to dense."""
        return {
            "macs": plan.macs,
            "flops": plan.flops,
            "macs_vs_dense": plan.macs / self.baseline_macs,
            "feature_macs": plan.feature_macs,
            "weight_macs": plan.weight_macs,
            "params": plan.params,
            "compression": self.baseline_params / plan.params,
            "largest_intermediate": plan.largest_intermediate,
            "peak_live": plan.peak_live,
            "runtime_weight_elements": plan.runtime_weight_elements,
        }

    def to_dict(self) -> dict:
        """JSON-ready report (`ttplan layer --json`)."""
        best = self.summary(self.best)
        best["steps"] = [s.to_dict() for s in self.best.steps]
        best["path"] = [list(p) for p in self.best.pairs]
        out = {
            "layer": {
                "spec": self.spec.describe(),
                "in_channels": self.spec.in_channels,
                "out_channels": self.spec.out_channels,
                "kernel_size": list(self.spec.kernel_size),
                "stride": list(self.spec.stride),
                "padding": list(self.spec.padding),
                "dilation": list(self.spec.dilation),
                "input_size": list(self.spec.input_size),
                "output_size": list(self.spec.output_size),
                "batch": self.network.batch,
            },
            "format": self.fmt.to_dict(),
            "fold_weights": self.best.fold_weights,
            "baseline": {"macs": self.baseline_macs, "flops": 2 * self.baseline_macs, "params": self.baseline_params},
            "schemes": {name: self.summary(plan) for name, plan in self.schemes.items()},
            "best": best,
        }
        if self.peers:
            equation, shapes = im2col_equation(self.network)
            out["im2col_einsum"] = {
                "expression": im2col_expression(self.network),
                "equation": equation,
                "shapes": [list(shape) for shape in shapes],
            }
            out["peers"] = [p.to_dict() for p in self.peers]
        return out


def plan_layer(
    spec: ConvSpec,
    fmt: TTFormat,
    *,
    batch: int = 1,
    fold_weights: bool = False,
    memory_limit: int | None = None,
    compare: bool = False,
) -> LayerPlan:
    """Build the network, cost the fixed schemes, search the best order and optionally ask the peers."""
    network = build_network(spec, fmt, batch)
    schemes = schemes_for(network, fold_weights)
    best = optimize(network, fold_weights=fold_weights, memory_limit=memory_limit)
    peers = compare_peers(network) if compare else []
    return LayerPlan(spec, fmt, network, schemes, best, peers)
