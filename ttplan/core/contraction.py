"""The cost model and the one object that answers every cost question about an order.

A plan is a sequence of pairwise contractions (`pairs`, in SSA form: tensors are numbered
`0…n-1`, step `t` creates tensor `n+t`). `pair_cost` is the only place where a step is costed
(docs/cost-model.md, "Counting"); schemes, the search, brute force and peers all go through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from ttplan.core.network import WINDOW_AXES, TensorNetwork, index_order
from ttplan.errors import TTPlanError

#: window indices and the map axes their conv applies to: the joint window `k` (both), or a separable
#: window's height `kh` and width `kw` (one axis each, with that axis's stride, padding and dilation)
WINDOWS = WINDOW_AXES
#: indices whose size the cost model handles itself (batch, spatial, window)
GEOMETRY = frozenset({"b", "s", *WINDOWS})


@dataclass(frozen=True)
class Operand:
    """A tensor during contraction: its open indices, whether it holds the feature map, and
    whether the window (the conv) has already been applied to it."""

    indices: frozenset[str]
    feature: bool = False
    windowed: bool = False
    leaves: frozenset[int] = frozenset()


@dataclass(frozen=True)
class PairCost:
    """What one pairwise contraction costs and produces."""

    kind: str  # "weight" | "feature" | "conv"
    macs: int
    pixels: int | None  # resolution of a feature-map step (H·W or H'·W'); None for weight steps
    elements: int  # size of the result
    result: Operand


def channel_product(network: TensorNetwork, names: frozenset[str]) -> int:
    """Product of the sizes of `names`, leaving out batch, spatial and window."""
    out = 1
    for name in names:
        if name not in GEOMETRY:
            out *= network.indices[name].size
    return out


def map_size(network: TensorNetwork, op: Operand) -> tuple[int, int]:
    """(H, W) of a feature map: each axis at the output size once a window index over it has been summed."""
    return network.resolutions[tuple(name for name in network.windows if name in op.indices)]


def operand_elements(network: TensorNetwork, op: Operand) -> int:
    """Elements of a tensor: feature maps at their current resolution and without an unapplied window."""
    if not op.feature:
        return math.prod(network.indices[n].size for n in op.indices)
    h, w = map_size(network, op)
    return network.batch * h * w * channel_product(network, op.indices)


def open_indices(network: TensorNetwork, a: Operand, b: Operand, union: frozenset[str],
                 leaves: frozenset[int]) -> frozenset[str]:
    """The indices still open after contracting `a` with `b`: those of the output, and those held by a tensor
    not yet in either operand. Without hyperedges that is the symmetric difference."""
    if not network.hyperedges:
        return a.indices ^ b.indices
    output = network.output
    holders = network.holders
    return frozenset(i for i in union if i in output or not holders[i] <= leaves)


def pair_cost(network: TensorNetwork, a: Operand, b: Operand) -> PairCost:
    """Cost of contracting `a` with `b` under ttplan's conv-aware model (docs/cost-model.md).

    - weight-only: product of every index in either operand;
    - feature-map step: B · (H·W before the window, H'·W' after) · the channel/rank indices;
    - conv step (the feature map meets the tensor holding the window `k`): B · H'W' · K · the rest; a
      separable window's `kh` (or `kw`) step runs at H'×W (or H'×W') and multiplies by k_h (or k_w).

    Every index in either operand counts once, so a rank both hold and keep open (a hyperedge) is a batch index
    of the step: a depthwise conv step costs B · H'W' · K · the other open indices.
    """
    if a.feature and b.feature:
        raise TTPlanError("two operands both hold the feature map: a network has only one input")
    union = a.indices | b.indices
    leaves = a.leaves | b.leaves
    kept = open_indices(network, a, b, union, leaves)
    if not a.feature and not b.feature:
        macs = math.prod(network.indices[n].size for n in union)
        result = Operand(frozenset(kept), False, False, leaves)
        return PairCost("weight", macs, None, math.prod(network.indices[n].size for n in kept), result)
    fm, other = (a, b) if a.feature else (b, a)
    summed = [name for name in network.windows if name in fm.indices and name in other.indices]
    remaining = tuple(name for name in network.windows if name in kept)
    result = Operand(frozenset(kept), True, not remaining, leaves)
    h, w = network.resolutions[remaining]
    pixels = h * w
    macs = network.batch * pixels * channel_product(network, union)
    for name in summed:
        macs *= network.indices[name].size
    conv = bool(summed)
    return PairCost("conv" if conv else "feature", macs, pixels, operand_elements(network, result), result)


def leaf_operands(network: TensorNetwork) -> list[Operand]:
    """The network's tensors as operands (the input first)."""
    return [
        Operand(frozenset(t.indices), t.is_input, False, frozenset({n})) for n, t in enumerate(network.tensors)
    ]


@dataclass(frozen=True)
class Step:
    """One executed contraction of a plan."""

    number: int
    left: int
    right: int
    result: int
    left_name: str
    right_name: str
    name: str
    kind: str
    indices: tuple[str, ...]
    macs: int
    pixels: int | None
    elements: int
    shares_index: bool  # False for an outer product
    map_size: tuple[int, int] | None = None  # (H, W) the feature-map step runs at (H', W' from the conv on)

    def to_dict(self) -> dict:
        """JSON-ready description of the step."""
        return {
            "step": self.number,
            "left": self.left_name,
            "right": self.right_name,
            "result": self.name,
            "kind": self.kind,
            "indices": list(self.indices),
            "macs": self.macs,
            "resolution": self.pixels,
            "elements": self.elements,
        }


class ContractionPlan:
    """A contraction order for one network, and everything it costs (cotengra's ContractionTree idea).

    `fold_weights=True` models inference with weights folded at load time: weight-only steps then
    cost nothing per forward, and the folded factors' size is reported as runtime weight memory.
    `bounded=True` marks an order from the bounded search (`ttplan.core.search.RunSearch`): it may not be the optimum.
    """

    def __init__(
        self,
        network: TensorNetwork,
        pairs: list[tuple[int, int]] | tuple[tuple[int, int], ...],
        name: str = "custom",
        fold_weights: bool = False,
        bounded: bool = False,
    ) -> None:
        self.network = network
        self.pairs = tuple((int(a), int(b)) for a, b in pairs)
        self.name = name
        self.fold_weights = fold_weights
        self.bounded = bounded
        _ = self.steps  # validate eagerly: a bad path fails at construction

    @cached_property
    def steps(self) -> tuple[Step, ...]:
        """Cost every step with `pair_cost`, in order."""
        net = self.network
        ops: dict[int, Operand] = dict(enumerate(leaf_operands(net)))
        names = {n: t.name for n, t in enumerate(net.tensors)}
        nxt = len(net.tensors)
        steps: list[Step] = []
        for number, (a, b) in enumerate(self.pairs, start=1):
            if a not in ops or b not in ops or a == b:
                raise TTPlanError(f"plan {self.name!r} step {number}: ({a}, {b}) does not name two live tensors")
            cost = pair_cost(net, ops[a], ops[b])
            label = "·".join(net.tensors[n].name for n in sorted(cost.result.leaves))
            size = None if cost.kind == "weight" else map_size(net, cost.result)
            steps.append(
                Step(number, a, b, nxt, names[a], names[b], label, cost.kind,
                     tuple(sorted(cost.result.indices, key=index_order)), cost.macs, cost.pixels, cost.elements,
                     bool(ops[a].indices & ops[b].indices), size)
            )
            del ops[a], ops[b]
            ops[nxt], names[nxt] = cost.result, label
            nxt += 1
        if len(ops) != 1:
            raise TTPlanError(f"plan {self.name!r} leaves {len(ops)} tensors uncontracted; a plan must end in one")
        (last,) = ops.values()
        if last.indices != frozenset(net.output):
            raise TTPlanError(f"plan {self.name!r} ends with indices {sorted(last.indices)}, not {list(net.output)}")
        return tuple(steps)

    def contracted_at(self) -> dict[str, int]:
        """For each index, the number of the step that sums it (indices never summed are absent)."""
        live = {n: frozenset(t.indices) for n, t in enumerate(self.network.tensors)}
        at: dict[str, int] = {}
        for step in self.steps:
            both = live.pop(step.left) | live.pop(step.right)
            live[step.result] = frozenset(step.indices)
            for name in both - live[step.result]:
                at[name] = step.number
        return at

    @property
    def feature_macs(self) -> int:
        """MACs of the steps that touch the feature map (per forward, at batch B)."""
        return sum(s.macs for s in self.steps if s.kind != "weight")

    @property
    def weight_macs(self) -> int:
        """MACs of core-with-core steps (once per forward, or at load time when folded)."""
        return sum(s.macs for s in self.steps if s.kind == "weight")

    @property
    def macs(self) -> int:
        """MACs per forward pass: feature-map steps plus weight-only steps unless folded."""
        return self.feature_macs + (0 if self.fold_weights else self.weight_macs)

    @property
    def flops(self) -> int:
        """FLOPs = 2 × MACs (torch.utils.flop_counter's convention)."""
        return 2 * self.macs

    @property
    def params(self) -> int:
        """Elements of all cores plus the bias if present (`TTFormat.params`)."""
        return self.network.fmt.params(self.network.spec)

    @property
    def largest_intermediate(self) -> int:
        """Elements of the largest tensor any step creates."""
        return max(s.elements for s in self.steps)

    @property
    def peak_live(self) -> int:
        """Most elements alive at once: input, cores and intermediates, operands freed after each step."""
        net = self.network
        sizes = {n: operand_elements(net, op) for n, op in enumerate(leaf_operands(net))}
        live = sum(sizes.values())
        peak = live
        for step in self.steps:
            peak = max(peak, live + step.elements)
            live += step.elements - sizes.pop(step.left) - sizes.pop(step.right)
            sizes[step.result] = step.elements
        return peak

    @property
    def runtime_weight_elements(self) -> int:
        """Weight elements held at run time: the cores, or with folding the folded factors the feature map meets."""
        if not self.fold_weights:
            return self.network.params()
        produced = {s.result: s for s in self.steps}
        leaves = leaf_operands(self.network)
        total = 0
        for step in self.steps:
            if step.kind == "weight":
                continue
            for side in (step.left, step.right):
                if side in produced and produced[side].kind == "weight":
                    total += produced[side].elements
                elif side < len(leaves) and not leaves[side].feature:
                    total += operand_elements(self.network, leaves[side])
        return total

    @property
    def executable(self) -> bool:
        """Whether every step contracts at least one shared index (outer products are never run)."""
        return all(step.shares_index for step in self.steps)

    def to_dict(self) -> dict:
        """JSON-ready summary: totals and the steps in order."""
        return {
            "name": self.name,
            "macs": self.macs,
            "flops": self.flops,
            "feature_macs": self.feature_macs,
            "weight_macs": self.weight_macs,
            "params": self.params,
            "largest_intermediate": self.largest_intermediate,
            "peak_live": self.peak_live,
            "runtime_weight_elements": self.runtime_weight_elements,
            "fold_weights": self.fold_weights,
            "bounded": self.bounded,
            "path": [list(p) for p in self.pairs],
            "steps": [s.to_dict() for s in self.steps],
        }

    def __repr__(self) -> str:
        return f"ContractionPlan({self.name!r}, macs={self.macs:,}, steps={len(self.pairs)})"
