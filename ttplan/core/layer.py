"""Plan one layer: the dense baseline, the fixed schemes and the searched best order, side by side."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ttplan.core.contraction import ContractionPlan
from ttplan.core.formats import TTFormat
from ttplan.core.fusion import fused_form
from ttplan.core.latency import LatencyProfile, predict_dense_us, predict_fused_us, predict_plan_us
from ttplan.core.network import TensorNetwork, build_network
from ttplan.core.objectives import needs_profile
from ttplan.core.peers import PeerResult, compare_peers, im2col_equation, im2col_expression
from ttplan.core.schemes import merged, schemes_for
from ttplan.core.search import BOUNDED_NOTE, optimize
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError


@dataclass
class LayerPlan:
    """Everything `ttplan layer` reports for one layer and one format."""

    spec: ConvSpec
    fmt: TTFormat
    network: TensorNetwork
    schemes: dict[str, ContractionPlan]
    best: ContractionPlan
    peers: list[PeerResult] = field(default_factory=list)
    objective: str = "macs"
    profile: LatencyProfile | None = None
    #: measured candidates when autotuned (`ttplan.latency.autotune.TuneResult.to_dict()`), else None
    tuned: dict | None = None
    #: the best order runs as one call of the fused kernel (`ttplan.core.fusion`), chosen for its predicted time
    fused: bool = False

    def predicted_ms(self, plan: ContractionPlan) -> float | None:
        """Predicted milliseconds of one forward of `plan` on the profiled machine (None without a profile); the
        fused kernel's time for the best order when it runs fused."""
        if self.profile is None:
            return None
        if self.fused and plan.pairs == self.best.pairs:
            fused = predict_fused_us(plan, self.profile)
            if fused is not None:
                return fused / 1000
        return predict_plan_us(plan, self.profile) / 1000

    @property
    def warnings(self) -> list[str]:
        """One line if the bounded search chose any of this layer's orders (the best, or the dense rebuild's), one if
        the peers ran greedy instead of exhaustive optimizers."""
        out = []
        bounded = [name for name, plan in (("best", self.best), *self.schemes.items()) if plan.bounded]
        if bounded:
            what = f"the {' and the '.join(bounded)} order{'s were' if len(bounded) > 1 else ' was'}"
            out.append(f"{self.spec.describe()}, {self.fmt.describe(self.spec)}: {what} {BOUNDED_NOTE}")
        if any(peer.name.endswith("-greedy") for peer in self.peers):
            out.append("the peers ran their greedy optimizers: their exhaustive ones explode on this network too")
        return out

    @property
    def baseline_ms(self) -> float | None:
        """Predicted milliseconds of the dense conv at the plan's batch."""
        return None if self.profile is None else predict_dense_us(self.spec, self.network.batch, self.profile) / 1000

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

    def named(self, name: str) -> ContractionPlan:
        """The plan called `name`: `best`, `published`, or one of this layer's schemes (its published one, dense)."""
        if name == "best":
            return self.best
        if name == "published":
            return self.published
        if name in self.schemes:
            return self.schemes[name]
        raise TTPlanError(f"scheme {name!r}: this {self.fmt.label} layer has best, published and "
                          f"{', '.join(self.schemes)}")

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
            "predicted_ms": self.predicted_ms(plan),
            "bounded": plan.bounded,
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
                "extra_padding": list(self.spec.extra_padding),
                "padding_mode": self.spec.padding_mode,
                "dilation": list(self.spec.dilation),
                "input_size": list(self.spec.input_size),
                "output_size": list(self.spec.output_size),
                "batch": self.network.batch,
            },
            "format": self.fmt.to_dict(),
            "fold_weights": self.best.fold_weights,
            "objective": self.objective,
            "fused": self.fused,
            "profile": None if self.profile is None else self.profile.label,
            "baseline": {"macs": self.baseline_macs, "flops": 2 * self.baseline_macs, "params": self.baseline_params,
                         "predicted_ms": self.baseline_ms},
            "schemes": {name: self.summary(plan) for name, plan in self.schemes.items()},
            "best": best,
            "warnings": self.warnings,
        }
        if self.tuned is not None:
            out["autotune"] = self.tuned
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
    objective: str = "macs",
    profile: LatencyProfile | None = None,
    fused: bool = False,
) -> LayerPlan:
    """Build the network, cost the fixed schemes, search the best order and optionally ask the peers.

    `objective`: what the best order minimises (`macs`, `memory`, `latency`: see `best_order`); every plan also
    gets a predicted time under `profile` (None: no predicted times; `latency` needs a profile, which
    `ttplan.latency.profiles.load_profile()` reads: nothing here reads a file).
    `fused`: the fused kernel may run the layer. With `latency`, a fusable order run fused (`fastest_fused`) becomes
    the best where it is predicted faster than the best order on stock ops; with `macs` or `memory`, the best order
    itself runs fused where it is fusable and not predicted slower (`fused_runs`): the same MACs, sooner.

    >>> from ttplan import ConvSpec, make_format, plan_layer
    >>> spec = ConvSpec.make(64, 64, 3, padding=1, input_size=32)
    >>> plan = plan_layer(spec, make_format("hodec", spec, rank=16))
    >>> f"best {plan.best.macs:,} MACs, published {plan.published.macs:,}, dense {plan.baseline_macs:,}"
    'best 4,497,408 MACs, published 14,942,208, dense 37,748,736'
    """
    if objective == "latency" and profile is None:
        raise needs_profile("objective='latency'")
    network = build_network(spec, fmt, batch)
    schemes = schemes_for(network, fold_weights)
    # by time, the fewest-MACs order is what the margin compares against and a fused candidate: searched once here
    fewest = optimize(network, fold_weights=fold_weights, memory_limit=memory_limit) if objective == "latency" \
        else None
    best = best_order(network, fold_weights=fold_weights, memory_limit=memory_limit, objective=objective,
                      profile=profile, fewest=fewest)
    if not fused:
        candidate = None
    elif objective == "latency":
        candidate = fused_choice(network, best, fold_weights, profile, memory_limit, fewest)
    else:  # the same order, so the same MACs and memory: fused wherever the kernel is not predicted slower
        candidate = best if fused_runs(best, profile) else None
    peers = compare_peers(network) if compare else []
    return LayerPlan(spec, fmt, network, schemes, candidate or best, peers, objective, profile,
                     fused=candidate is not None)


def fused_runs(plan: ContractionPlan, profile: LatencyProfile | None) -> bool:
    """Whether to run `plan` itself (an order chosen for its MACs or memory) by the fused kernel: where it is fusable
    and, under a profile, predicted faster than on stock ops by `MARGIN` (without one, nothing is predicted, and the
    kernel runs what it can: it computes exactly the plan's MACs)."""
    if fused_form(plan) is None:
        return False
    return profile is None or fused_beats(plan, plan, profile)


def fused_beats(fused: ContractionPlan, stock: ContractionPlan, profile: LatencyProfile) -> bool:
    """Whether `fused` run by the fused kernel is predicted faster than `stock` on stock ops by more than the models'
    error (`MARGIN`); False where the profile has no fused fit."""
    us = predict_fused_us(fused, profile)
    return us is not None and us < MARGIN * predict_plan_us(stock, profile)


#: how much faster a prediction must say an order is before planning by time takes it over the plainer choice (the
#: fewest-MACs order over stock ops; stock ops over the fused kernel): the latency model is off by 10-20% on
#: held-out layers (`ttplan calibrate --check`), so a smaller predicted gain is a coin toss on the machine
MARGIN = 0.85


def best_order(network: TensorNetwork, *, fold_weights: bool = False, memory_limit: int | None = None,
               objective: str = "macs", profile: LatencyProfile | None = None,
               fewest: ContractionPlan | None = None) -> ContractionPlan:
    """The order planning runs for `objective`: `optimize`'s, except that by time (`latency`) the fewest-MACs
    order is kept unless the least-time order is predicted faster than it by more than the model's error
    (`MARGIN`). Within that error the two are a coin toss on the machine, and fewer MACs is what holds on
    every machine and thread count. `fewest`: that order if the caller already searched it (same folding and
    memory limit), else it is searched here."""
    if objective != "latency":
        return optimize(network, fold_weights=fold_weights, memory_limit=memory_limit, objective=objective,
                        profile=profile)
    if profile is None:
        raise needs_profile("objective='latency'")
    fastest = optimize(network, fold_weights=fold_weights, memory_limit=memory_limit, objective=objective,
                       profile=profile)
    if fewest is None:
        fewest = optimize(network, fold_weights=fold_weights, memory_limit=memory_limit)
    if fewest.pairs == fastest.pairs or not fewest.executable:
        return fastest
    return fastest if predict_plan_us(fastest, profile) < MARGIN * predict_plan_us(fewest, profile) else fewest


def fused_choice(network: TensorNetwork, best: ContractionPlan, fold_weights: bool, profile: LatencyProfile,
                 memory_limit: int | None = None, fewest: ContractionPlan | None = None) -> ContractionPlan | None:
    """The order to run by the fused kernel instead of `best` on stock ops, where one is predicted faster by more
    than the models' error (`MARGIN`); else None. `fewest` as in `fastest_fused`."""
    candidate = fastest_fused(network, fold_weights, profile, best, memory_limit, fewest)
    if candidate is None:
        return None
    return candidate if fused_beats(candidate, best, profile) else None


def fastest_fused(network: TensorNetwork, fold_weights: bool, profile: LatencyProfile,
                  best: ContractionPlan | None = None, memory_limit: int | None = None,
                  fewest: ContractionPlan | None = None) -> ContractionPlan | None:
    """Of the fusable orders among `best`, the fewest-MACs order and the `merged` order, the one the fused kernel
    is predicted to run fastest; None if none is fusable (or the profile has no fused fit). `fewest`: the
    fewest-MACs order if the caller already searched it (same folding and memory limit), else searched here."""
    if fewest is None:
        fewest = optimize(network, fold_weights=fold_weights, memory_limit=memory_limit)
    candidates = [plan for plan in (best, fewest, merged(network, fold_weights))
                  if plan is not None and plan.executable]
    if memory_limit is not None:
        candidates = [plan for plan in candidates if plan.largest_intermediate <= memory_limit]
    timed = [(us, plan) for plan in candidates if (us := predict_fused_us(plan, profile)) is not None]
    return min(timed, key=lambda pair: pair[0])[1] if timed else None


def one_order(bests: Sequence[ContractionPlan], objective: str = "macs",
              predict: Callable[[int, ContractionPlan], float | None] | None = None) -> tuple[ContractionPlan, ...]:
    """One order for every call of a module, given each call's best (one network per input size): a layer runs one
    order whatever its input, so of the calls' own best orders the one least costly over all calls is returned at
    each call's geometry. Cost: summed MACs (`macs`), the largest intermediate (`memory`), or summed predicted time
    (`latency`: `predict(call, plan)` in ms, where it predicts every call), the other two breaking ties."""
    candidates = list(dict.fromkeys(plan.pairs for plan in bests))
    if len(candidates) <= 1:
        return tuple(bests)

    def at(best: ContractionPlan, pairs: tuple[tuple[int, int], ...]) -> ContractionPlan:
        return best if best.pairs == pairs else ContractionPlan(best.network, pairs, best.name, best.fold_weights)

    def cost(pairs: tuple[tuple[int, int], ...]) -> tuple[float, ...]:
        runs = [at(best, pairs) for best in bests]
        macs, peak = sum(run.macs for run in runs), max(run.largest_intermediate for run in runs)
        times = [predict(n, run) for n, run in enumerate(runs)] if predict is not None else [None]
        if objective == "latency" and None not in times:
            return (sum(times), macs, peak)  # type: ignore[arg-type]
        return (peak, macs) if objective == "memory" else (macs, peak)

    chosen = min(candidates, key=cost)
    return tuple(at(best, chosen) for best in bests)


def one_order_plans(plans: Sequence[LayerPlan]) -> tuple[LayerPlan, ...]:
    """Each call's `LayerPlan` with `one_order`'s order as its best (by the plans' objective and predicted times);
    a call whose best changes no longer runs fused (the fused choice was made for its own best)."""
    bests = one_order([plan.best for plan in plans], plans[0].objective if plans else "macs",
                      lambda n, run: plans[n].predicted_ms(run))
    return tuple(plan if best is plan.best else replace(plan, best=best, fused=False)
                 for plan, best in zip(plans, bests))
