"""Budgets: per-layer ranks (and optionally modes) that meet model-level MACs/params reduction targets.

Objective, as the project plans layers ("fewest MACs at a given parameter count"): among the
configurations that meet both targets, keep as many parameters as the targets allow (capacity) and,
at that parameter count, the fewest model MACs (best orders). Layers the policy would decompose take
part (with a config, the layers it does not name); config entries and skipped layers stay as they are.

Method: each layer gets candidate formats (uniform ranks from a geometric grid, clipped to the exact
ranks; with `search_format` also 1-3 modes a side and their factorisations), each costed by its best
order (`best_order`) once per distinct (geometry, format); keeping the layer dense is a candidate too.
`skip_worse` and `skip_slower` drop the candidates `ttplan plan` would keep dense under them (published order
worse than dense; best order predicted slower than dense), so the plan the budget returns keeps every layer it
chose; config entries they reject stay dense and are costed so.
For a price `mu`, each layer independently minimises `MACs - mu * params`: the lower convex hull of
its (params, MACs) points. Walking every layer's hull edges in slope order traces the model's
(params, MACs) frontier; the last point that meets both targets is taken, then filled greedily with
the cheapest extra parameters (fewest MACs per added parameter) that still meet them.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from ttplan.arch.architecture import ArchPlan, fusion_here, plan_layers, trace_model
from ttplan.arch.config import LayerConfig, load_config
from ttplan.arch.policy import Decision, Policy, decide, skip_reason, unnamed_rule
from ttplan.core.formats import TTFormat, get_format, linear_format, make_format
from ttplan.core.latency import LatencyProfile, predict_dense_us, predict_plan_us
from ttplan.core.layer import best_order
from ttplan.core.network import build_network
from ttplan.core.objectives import needs_profile
from ttplan.core.schemes import published
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.models.trace import TracedLayer, UntracedOp, dense_totals

#: uniform ranks tried (each clipped to the exact rank at its cut)
RANK_GRID = (1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192,
             224, 256, 320, 384, 448, 512, 640, 768, 896, 1024)
MAX_ORDER = 3  # modes a side tried by search_format (the same count on both sides)
MAX_SPREAD = 4  # search_format: largest/smallest mode at most this


@dataclass(frozen=True)
class Candidate:
    """One costed choice for a layer: a format (None = dense), its best-order MACs and its parameters."""

    fmt: TTFormat | None
    macs: int
    params: int


@dataclass(frozen=True)
class Costed:
    """One (geometry, format) as the search sees it: its cost on the search's axis, whether its published order
    costs more MACs or parameters than the dense layer, and its best order's predicted microseconds (None: no
    latency profile)."""

    cost: int
    worse: bool
    us: float | None


@dataclass
class BudgetResult:
    """What the search found: every layer's format, the re-planned model, and whether the targets are met."""

    formats: dict[str, TTFormat | None]
    plan: ArchPlan
    met: bool
    target_macs: int | None
    target_params: int | None
    message: str
    evaluated: int
    seconds: float
    target_speedup: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready summary of the search (the plan itself is `plan.to_dict()`)."""
        totals = self.plan.totals
        return {"met": bool(self.met), "target_macs": self.target_macs, "target_params": self.target_params,
                "macs": totals.tt_macs, "params": totals.tt_params, "macs_reduction": totals.macs_reduction,
                "params_reduction": totals.params_reduction, "message": self.message,
                "candidates_evaluated": self.evaluated, "seconds": round(self.seconds, 2),
                "target_speedup": self.target_speedup, "predicted_speedup": totals.predicted_speedup}


def factorisations(n: int, d: int) -> list[tuple[int, ...]]:
    """Multisets of `d` factors > 1 with product `n` (descending), largest/smallest at most MAX_SPREAD."""
    if d == 1:
        return [(n,)]
    out: list[tuple[int, ...]] = []

    def grow(rest: int, k: int, hi: int, acc: tuple[int, ...]) -> None:
        if k == 1:
            if 2 <= rest <= hi:
                out.append((*acc, rest))
            return
        for q in range(min(hi, rest), 1, -1):
            if rest % q == 0 and q ** k >= rest:
                grow(rest // q, k - 1, q, (*acc, q))

    grow(n, d, n, ())
    return [f for f in out if f[0] <= MAX_SPREAD * f[-1]]


def arrangements(n: int, d: int) -> list[tuple[int, ...]]:
    """Mode tuples for `n` channels in `d` modes: each factorisation, descending (as `balanced_factors`)."""
    return factorisations(n, d)


def mode_pairs(layer: TracedLayer, policy: Policy, search_format: bool) -> list[TTFormat]:
    """The format shapes (modes, no ranks yet) to try for one layer."""
    spec = layer.spec
    kind = linear_format() if layer.kind == "linear" else policy.format
    if not search_format:
        try:
            fmt = make_format(kind, spec, rank=1, order=policy.order)
        except TTPlanError:
            return []
        return [fmt.with_ranks(())]
    cls = get_format(kind)
    orders = cls.search_orders(MAX_ORDER)
    return [cls(a, b, ()) for d in orders
            for a, b in itertools.product(arrangements(spec.in_channels, d), arrangements(spec.out_channels, d))]


def rank_formats(spec: ConvSpec, probe: TTFormat) -> list[TTFormat]:
    """The format at each grid rank, clipped to the exact ranks (duplicates dropped)."""
    try:
        probe.validate_modes(spec)
    except TTPlanError:
        return []
    exact = probe.max_ranks(spec)
    out: list[TTFormat] = []
    seen: set[tuple[int, ...]] = set()
    for r in RANK_GRID:
        ranks = probe.fill_ranks(spec, lambda p: min(r, exact[p]))  # noqa: B023  (used at once)
        if ranks not in seen:
            seen.add(ranks)
            out.append(probe.with_ranks(ranks))
        if r >= max(exact):
            break
    return out


@dataclass
class BudgetProblem:
    """A prepared search: the traced model, who takes part, and the (geometry, format) pairs to cost."""

    label: str
    layers: list[TracedLayer]
    input_size: tuple[int, int, int]
    all_params: int
    decisions: dict[str, Decision]
    free: list[str]
    options: dict[str, list[TTFormat]]
    target_macs: int | None
    target_params: int | None
    policy: Policy
    batch: int = 1
    fold_weights: bool = False
    jobs: list[tuple[ConvSpec, TTFormat]] = field(default_factory=list)
    objective: str = "macs"
    profile: LatencyProfile | None = None
    #: with a speedup target the search's cost axis is predicted time (ns) instead of MACs; `target_macs` holds
    #: the time to reach
    target_speedup: float | None = None
    #: the ops ttplan does not plan: dense, in the MACs and params totals (not in predicted times)
    untraced: list[UntracedOp] = field(default_factory=list)
    #: drop candidates whose published order is worse than dense / whose best order is predicted slower than dense
    skip_worse: bool = False
    skip_slower: bool = False
    #: the fused kernel may run the chosen layers (`plan_layers`), as `plan_architecture` decides it
    fused: bool = False

    def _dense_cost(self, spec: ConvSpec) -> int:
        """The dense layer's cost on the search's axis: its MACs, or predicted ns with a speedup target."""
        if self.target_speedup is not None:
            return round(predict_dense_us(spec, self.batch, self.profile) * 1000)
        return spec.dense_macs(self.batch)

    def _measure(self, spec: ConvSpec, fmt: TTFormat) -> Costed:
        """A format's cost on the search's axis (MACs at its best order, or predicted ns with a speedup target),
        whether its published order is worse than dense, and its best order's predicted µs."""
        network = build_network(spec, fmt, self.batch)
        plan = best_order(network, fold_weights=self.fold_weights, objective=self.objective, profile=self.profile)
        us = None if self.profile is None else predict_plan_us(plan, self.profile)
        shown = published(network, self.fold_weights)
        worse = shown.macs > spec.dense_macs(self.batch) or shown.params > spec.dense_params()
        return Costed(round(us * 1000) if self.target_speedup is not None else plan.macs, worse, us)

    def _rejected(self, calls: tuple[ConvSpec, ...], costed: list[Costed]) -> bool:
        """Whether `skip_worse` or `skip_slower` keeps a layer of these calls dense (as `plan_layers` decides)."""
        if self.skip_worse and any(c.worse for c in costed):
            return True
        if not self.skip_slower or self.profile is None:  # `prepare_budget` refuses skip_slower without a profile
            return False
        dense_ms = sum(predict_dense_us(call, self.batch, self.profile) for call in calls) / 1000
        return sum(c.us / 1000 for c in costed) >= dense_ms  # type: ignore[operator]

    def solve(self, progress: Callable[[int], None] | None = None) -> BudgetResult:
        """Cost every job (calling `progress(1)` after each), then pick the per-layer candidates."""
        start = time.perf_counter()
        costs: dict[tuple[ConvSpec, TTFormat], Costed] = {}
        for spec, fmt in self.jobs:
            costs[(spec, fmt)] = self._measure(spec, fmt)
            if progress is not None:
                progress(1)
        by_name = {layer.name: layer for layer in self.layers}
        fixed_macs = 0 if self.target_speedup is not None else sum(op.macs(self.batch) for op in self.untraced)
        fixed_params = sum(op.params for op in self.untraced)
        for layer in self.layers:
            if layer.name not in self.free:
                fmt = self.decisions[layer.name].fmt
                spec = layer.spec
                costed = [] if fmt is None else [self._measure(call, fmt) for call in layer.calls]
                if fmt is None or self._rejected(layer.calls, costed):
                    fixed_macs += sum(self._dense_cost(call) for call in layer.calls)
                    fixed_params += spec.dense_params()
                else:
                    fixed_macs += sum(c.cost for c in costed)
                    fixed_params += fmt.params(spec)
        candidates = {}
        for name in self.free:
            layer = by_name[name]
            spec = layer.spec
            dense = Candidate(None, sum(self._dense_cost(call) for call in layer.calls), spec.dense_params())
            kept = [(f, [costs[(call, f)] for call in layer.calls]) for f in self.options[name]]
            candidates[name] = [dense, *(Candidate(f, sum(c.cost for c in costed), f.params(spec))
                                         for f, costed in kept if not self._rejected(layer.calls, costed))]
        chosen, met = select(candidates, fixed_macs, fixed_params, self.target_macs, self.target_params)
        formats: dict[str, TTFormat | None] = {}
        decisions: dict[str, Decision] = {}
        for layer in self.layers:
            if layer.name in chosen:
                fmt = chosen[layer.name].fmt
                decisions[layer.name] = Decision(fmt, None if fmt else "budget: kept dense", "budget")
            else:
                decisions[layer.name] = self.decisions[layer.name]
            formats[layer.name] = decisions[layer.name].fmt
        rows = plan_layers(self.layers, decisions, batch=self.batch, fold_weights=self.fold_weights,
                           skip_worse=self.skip_worse, objective=self.objective, profile=self.profile,
                           skip_slower=self.skip_slower, fused=self.fused)
        plan = ArchPlan(self.label, self.input_size, self.batch, self.fold_weights, self.policy, rows, self.all_params,
                        objective=self.objective, untraced=self.untraced)
        if self.target_speedup is not None:
            message = describe_speedup(plan, met, self.target_speedup, self.target_params)
        else:
            message = describe_outcome(plan, met, self.target_macs, self.target_params, fixed_macs, fixed_params)
        plan.notes.append(message)
        target_macs = None if self.target_speedup is not None else self.target_macs
        return BudgetResult(formats, plan, met, target_macs, self.target_params, message, len(self.jobs),
                            time.perf_counter() - start, self.target_speedup)


def _target(reduction: float | None, baseline: int, what: str) -> int | None:
    if reduction is None:
        return None
    if not 0 <= reduction < 1:
        raise TTPlanError(f"target {what} reduction={reduction}: expected a fraction in [0, 1), e.g. 0.72")
    return math.floor((1 - reduction) * baseline)


def prepare_budget(
    model_or_name: str | nn.Module,
    input_size: tuple[int, int, int] | None = None,
    *,
    target_macs_reduction: float | None = None,
    target_params_reduction: float | None = None,
    policy: Policy = Policy(),  # noqa: B008 - frozen dataclass, safe as a default
    config: dict[str, LayerConfig] | str | Path | None = None,
    search_format: bool = False,
    batch: int = 1,
    fold_weights: bool = False,
    target_speedup: float | None = None,
    objective: str = "macs",
    profile: LatencyProfile | None = None,
    skip_worse: bool = False,
    skip_slower: bool | None = None,
    unnamed: str | None = None,
    fused: bool | None = None,
) -> BudgetProblem:
    """Trace the model and list the candidates; targets are model-level reductions (e.g. 0.72 = 72% fewer).

    `target_speedup` S asks for a predicted time of the conv/linear layers <= dense / S (latency profile);
    it replaces the MACs target (the search trades time against parameters instead of MACs).
    `skip_worse`, `skip_slower` (default: on for `latency`): as in `plan_architecture`, applied to the candidates.
    The layers a `config` does not name are searched (`unnamed_rule` with a budget refuses to keep them dense).
    `profile`: the latency profile (None: nothing predicted, so no speedup target, `latency` or `skip_slower`).
    `fused`: whether the fused kernel may run the chosen layers, as in `plan_architecture` (None: where a C compiler
    is found); the search itself costs orders, which do not depend on it.
    """
    if skip_slower is None:
        skip_slower = objective == "latency"
    fused = fusion_here(fused, False)  # a budget plans NCHW maps
    if target_macs_reduction is None and target_params_reduction is None and target_speedup is None:
        raise TTPlanError("a budget needs a target: give target_macs_reduction, target_params_reduction and/or "
                          "target_speedup (e.g. --target-macs-reduction 0.72)")
    if target_speedup is not None and target_macs_reduction is not None:
        raise TTPlanError(f"target_speedup={target_speedup} and target_macs_reduction={target_macs_reduction}: "
                          "give one (both constrain the same axis of the search)")
    if target_speedup is not None and target_speedup <= 1:
        raise TTPlanError(f"target_speedup={target_speedup}: expected a factor above 1, e.g. 1.5")
    if profile is None:
        wanted = [what for what, given in (("target_speedup", target_speedup is not None),
                                           ("objective='latency'", objective == "latency"),
                                           ("skip_slower", skip_slower)) if given]
        if wanted:
            raise needs_profile(" and ".join(wanted))
    if isinstance(config, (str, Path)):
        config = load_config(config)
    traced = trace_model(model_or_name, input_size)
    label, layers, size, all_params = traced.label, traced.layers, traced.input_size, traced.all_params
    decisions = decide(layers, policy, config, unnamed_rule(unnamed, bool(config), budget=True))
    first_conv = next((layer.name for layer in layers if layer.kind == "conv"), None)
    free = [layer.name for layer in layers
            if not (config and layer.name in config) and skip_reason(layer, policy, first_conv) is None]
    options: dict[str, list[TTFormat]] = {}
    jobs: dict[tuple[ConvSpec, TTFormat], None] = {}
    for layer in layers:
        if layer.name not in free:
            continue
        fmts = [f for probe in mode_pairs(layer, policy, search_format) for f in rank_formats(layer.spec, probe)]
        options[layer.name] = fmts
        for fmt in fmts:
            for call in layer.calls:  # a module called twice is costed at each call's geometry
                jobs[(call, fmt)] = None
    baseline_macs, baseline_params = dense_totals(layers, batch, traced.untraced)
    target_macs = _target(target_macs_reduction, baseline_macs, "MACs")
    if target_speedup is not None:
        baseline_ns = sum(round(predict_dense_us(call, batch, profile) * 1000)
                          for layer in layers for call in layer.calls)
        target_macs = math.floor(baseline_ns / target_speedup)
    return BudgetProblem(
        label, layers, size, all_params, decisions, free, options,
        target_macs, _target(target_params_reduction, baseline_params, "params"),
        policy, batch, fold_weights, list(jobs), objective, profile, target_speedup, traced.untraced, skip_worse,
        skip_slower, fused,
    )


def frontier(cands: list[Candidate], dense_params: int) -> list[int]:
    """Indices of the candidates no other one beats, by increasing capacity (then MACs).

    Capacity is the parameter count capped at the dense layer's (cores beyond it add no expressiveness).
    A candidate is dropped when another has at least its capacity, at most its MACs and at most its
    parameters (one of them strictly): fewest MACs for each capacity and parameter count.
    """
    cap = np.array([min(c.params, dense_params) for c in cands], dtype=np.float64)
    macs = np.array([c.macs for c in cands], dtype=np.float64)
    params = np.array([c.params for c in cands], dtype=np.float64)
    ge = (cap[None, :] >= cap[:, None]) & (macs[None, :] <= macs[:, None]) & (params[None, :] <= params[:, None])
    gt = (cap[None, :] > cap[:, None]) | (macs[None, :] < macs[:, None]) | (params[None, :] < params[:, None])
    dominated = (ge & gt).any(axis=1)
    kept = [i for i in range(len(cands)) if not dominated[i]]
    unique: dict[tuple[float, float, float], int] = {}
    for i in kept:
        unique.setdefault((cap[i], macs[i], params[i]), i)
    return sorted(unique.values(), key=lambda i: (cap[i], macs[i], params[i]))


@dataclass
class _Table:
    """Every layer's frontier as padded arrays (layers x points): MACs, params and log-capacity."""

    macs: np.ndarray
    params: np.ndarray
    value: np.ndarray
    length: np.ndarray
    fixed_macs: int
    fixed_params: int
    cap_m: float
    cap_p: float

    def totals(self, pos: np.ndarray) -> tuple[float, float]:
        rows = np.arange(len(pos))
        return (self.fixed_macs + self.macs[rows, pos].sum(), self.fixed_params + self.params[rows, pos].sum())

    def score(self, pos: np.ndarray) -> tuple[float, float, float]:
        """(relative excess over the targets, -capacity, MACs): smaller is better."""
        macs, params = self.totals(pos)
        excess = max((macs - self.cap_m) / self.cap_m if math.isfinite(self.cap_m) else 0.0,
                     (params - self.cap_p) / self.cap_p if math.isfinite(self.cap_p) else 0.0, 0.0)
        return (excess, -float(self.value[np.arange(len(pos)), pos].sum()), macs)


def _lagrangian(table: _Table) -> list[np.ndarray]:
    """Per-layer argmax of `capacity - lam*MACs - mu*params` over a grid of prices, mu bisected per lam."""
    scale_m = table.macs.max(axis=1).sum()
    scale_p = table.params.max(axis=1).sum()
    out = []

    def pick(lam: float, mu: float) -> np.ndarray:
        return np.argmax(table.value - lam * table.macs / scale_m - mu * table.params / scale_p, axis=1)

    for lam in [0.0, *np.logspace(-2, 5, 36)]:
        pos = pick(lam, 0.0)
        if table.totals(pos)[1] > table.cap_p:
            lo, hi = 0.0, 1.0
            while table.totals(pick(lam, hi))[1] > table.cap_p and hi < 1e9:
                lo, hi = hi, hi * 4
            for _ in range(40):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if table.totals(pick(lam, mid))[1] > table.cap_p else (lo, mid)
            pos = pick(lam, hi)
        out.append(pos)
    return out


def _descend(table: _Table) -> np.ndarray:
    """Greedy: from the top of every frontier, step down where it buys the most progress per capacity lost."""
    pos = table.length - 1
    rows = np.arange(len(pos))
    macs, params = table.totals(pos)
    scale_m, scale_p = max(macs, 1.0), max(params, 1.0)
    while macs > table.cap_m or params > table.cap_p:
        down = np.maximum(pos - 1, 0)
        gain = (table.macs[rows, pos] - table.macs[rows, down]) / scale_m * (macs > table.cap_m) + \
               (table.params[rows, pos] - table.params[rows, down]) / scale_p * (params > table.cap_p)
        loss = np.maximum(table.value[rows, pos] - table.value[rows, down], 1e-12)
        ratio = np.where((pos > 0) & (gain > 0), gain / loss, -np.inf)
        n = int(np.argmax(ratio))
        if not np.isfinite(ratio[n]):
            break
        pos[n] -= 1
        macs, params = table.totals(pos)
    return pos


def _fill(table: _Table, pos: np.ndarray) -> np.ndarray:
    """Give capacity back wherever both targets still hold: two greedy orders (largest log-capacity gain;
    most gain per share of the remaining slack), the better one kept."""
    results = [_fill_by(table, pos, per_slack) for per_slack in (False, True)]
    return min(results, key=table.score)


def _fill_by(table: _Table, pos: np.ndarray, per_slack: bool) -> np.ndarray:
    pos = pos.copy()
    rows = np.arange(len(pos))
    while True:
        macs, params = table.totals(pos)
        dm = table.macs - table.macs[rows, pos][:, None]
        dp = table.params - table.params[rows, pos][:, None]
        gain = table.value - table.value[rows, pos][:, None]
        ok = (gain > 0) & (macs + dm <= table.cap_m) & (params + dp <= table.cap_p)
        if not ok.any():
            return pos
        score = gain
        if per_slack:
            use = np.maximum(np.maximum(dm, 0) / max(table.cap_m - macs, 1e-9),
                             np.maximum(dp, 0) / max(table.cap_p - params, 1e-9))
            score = gain / np.maximum(use, 1e-12)
        n, k = np.unravel_index(int(np.argmax(np.where(ok, score, -np.inf))), gain.shape)
        pos[n] = k


def _improve(table: _Table, pos: np.ndarray, rounds: int = 3, depth: int = 4) -> np.ndarray:
    """Local search: lower one layer by up to `depth` points, refill, keep it if the capacity grew."""
    best, best_score = pos, table.score(pos)
    for _ in range(rounds):
        improved = False
        for n in range(len(best)):
            for k in range(int(best[n]) - 1, max(int(best[n]) - 1 - depth, -1), -1):
                trial = best.copy()
                trial[n] = k
                trial = _fill(table, trial)
                score = table.score(trial)
                if score < best_score:
                    best, best_score, improved = trial, score, True
                    break
        if not improved:
            break
    return best


def select(
    candidates: dict[str, list[Candidate]],
    fixed_macs: int,
    fixed_params: int,
    target_macs: int | None,
    target_params: int | None,
) -> tuple[dict[str, Candidate], bool]:
    """One candidate per layer that meets both targets keeping the most capacity (sum of log params).

    Each layer's candidates are first cut to its frontier (fewest MACs for each capacity). Solutions
    come from a Lagrangian sweep (prices on MACs and params) and a greedy descent; the feasible one
    with the most capacity is kept (ties: fewer MACs) and topped up greedily. Log-capacity spreads the
    compression over the layers instead of wiping out a few; a local search (lower one layer, refill)
    polishes the result. Returns the choice and whether it meets
    the targets; if none does, the closest one (smallest relative excess).
    """
    names = list(candidates)
    dense = {n: min(c.params for c in candidates[n] if c.fmt is None) for n in names}
    fronts = {n: frontier(candidates[n], dense[n]) for n in names}
    width = max(len(f) for f in fronts.values())
    macs = np.zeros((len(names), width))
    params = np.zeros((len(names), width))
    value = np.full((len(names), width), -np.inf)
    for row, n in enumerate(names):
        for col, i in enumerate(fronts[n]):
            c = candidates[n][i]
            macs[row, col], params[row, col] = c.macs, c.params
            value[row, col] = math.log(min(c.params, dense[n]))
    table = _Table(macs, params, value, np.array([len(fronts[n]) for n in names]), fixed_macs, fixed_params,
                   math.inf if target_macs is None else float(target_macs),
                   math.inf if target_params is None else float(target_params))
    best = min([*_lagrangian(table), _descend(table)], key=table.score)
    met = table.score(best)[0] == 0.0
    if met:
        best = _improve(table, _fill(table, best))
    return {n: candidates[n][fronts[n][int(best[row])]] for row, n in enumerate(names)}, met


def describe_speedup(plan: ArchPlan, met: bool, speedup: float, target_params: int | None) -> str:
    """One plain sentence for a speedup target: met or not, with the predicted times and reductions."""
    totals = plan.totals
    wanted = f"predicted speedup >= {speedup:.2f}x"
    if target_params is not None:
        wanted += f" and params <= {target_params:,}"
    got = (f"dense {totals.baseline_ms:.2f} ms -> {totals.tt_ms:.2f} ms ({totals.predicted_speedup:.2f}x), "
           f"{totals.macs_reduction:.1%} fewer MACs, {totals.params_reduction:.1%} fewer params")
    return f"targets met: {wanted}; found {got}" if met else f"targets cannot be met: wanted {wanted}; closest {got}"


def describe_outcome(plan: ArchPlan, met: bool, target_macs: int | None, target_params: int | None,
                     fixed_macs: int = 0, fixed_params: int = 0) -> str:
    """One plain sentence: targets met or not, and the numbers (with what the layers outside the search cost)."""
    totals = plan.totals
    wanted = []
    if target_macs is not None:
        wanted.append(f"MACs <= {target_macs:,} ({1 - target_macs / totals.baseline_macs:.1%} fewer)")
    if target_params is not None:
        wanted.append(f"params <= {target_params:,} ({1 - target_params / totals.baseline_params:.1%} fewer)")
    got = (f"{totals.tt_macs:,} MACs ({totals.macs_reduction:.1%} fewer) and {totals.tt_params:,} params "
           f"({totals.params_reduction:.1%} fewer)")
    if met:
        return f"targets met: {' and '.join(wanted)}; found {got}"
    return (f"targets cannot be met with these candidates: wanted {' and '.join(wanted)}; the closest point found "
            f"has {got}; the layers outside the search (skipped or fixed by config) and the ops ttplan does not "
            f"plan alone cost {fixed_macs:,} MACs and {fixed_params:,} params")
