"""Exact, conv-aware search for the cheapest contraction order, and brute force to check it.

Every contraction tree of a TT-conv network has one "spine": the path
from the input `X` to the result. Each spine step absorbs a group of cores that were first
contracted among themselves (a weight-only subtree). So the optimum is

    best(A ∪ G) = min over groups G of  best(A) + weight(G) + feature step(A, G)

over sets `A` of cores already absorbed into the feature map, where `G` ranges over sets of
cores and `weight(G)` is itself the cheapest weight-only tree for `G` (a DP over subsets).

Outer products (steps that share no index) are part of the space while the network has at most
`OUTER_LIMIT` cores: then `G` is any set and every split is tried (3^n work), so the search is
exact over all pairwise orders. Above that, `G` ranges over connected sets only (for the chain-
shaped core graphs of TT formats: intervals), which keeps 16-tensor networks well under a second;
opt_einsum's `dp` and cotengra make the same restriction by default. Costs come from
`ttplan.core.contraction.pair_cost` alone.

Each optimizer is a small object with one call, as in opt_einsum's `paths.py`, registered by name
in `OPTIMIZERS`; what it minimises is an objective from `ttplan.core.objectives` (MACs, memory or
predicted latency), so the same DP serves all three.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ttplan.core.contraction import ContractionPlan, Operand, leaf_operands, pair_cost
from ttplan.core.latency import LatencyProfile
from ttplan.core.network import TensorNetwork
from ttplan.core.objectives import ZERO, Objective, Score, make_objective
from ttplan.errors import TTPlanError

#: networks with at most this many cores are searched with outer products included
OUTER_LIMIT = 9


@dataclass
class _Tree:
    """A weight-only subtree: its score, its operand, and its steps as pairs of subtrees."""

    score: Score
    operand: Operand
    steps: list[tuple[int, int]] = field(default_factory=list)  # (left mask, right mask), children first


def _connected_subsets(neighbours: dict[int, int], n: int) -> list[int]:
    """All connected subsets (bitmasks over cores 0…n-1) of the core graph, smallest first."""
    seen: set[int] = set()
    frontier = [1 << v for v in range(n)]
    seen.update(frontier)
    while frontier:
        grown: list[int] = []
        for mask in frontier:
            reach = 0
            m = mask
            while m:
                low = m & -m
                reach |= neighbours[low.bit_length() - 1]
                m ^= low
            reach &= ~mask
            while reach:
                low = reach & -reach
                reach ^= low
                bigger = mask | low
                if bigger not in seen:
                    seen.add(bigger)
                    grown.append(bigger)
        frontier = grown
    return sorted(seen, key=lambda m: (m.bit_count(), m))


class Optimizer(Protocol):
    """One call: the best plan of a network under the optimizer's objective."""

    name: str

    def __call__(self, network: TensorNetwork, *, fold_weights: bool = False,
                 memory_limit: int | None = None) -> ContractionPlan: ...


@dataclass(frozen=True)
class ExactSearch:
    """Dynamic programming over the feature map's absorbed cores and connected weight groups.

    `objective` is a name in `ttplan.core.objectives.OBJECTIVES` (`macs`, `memory`, `latency`) or an
    objective object; an unknown name is a TTPlanError.
    """

    objective: str | Objective = "macs"
    name: str = "best"

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", make_objective(self.objective))

    def __call__(
        self, network: TensorNetwork, *, fold_weights: bool = False, memory_limit: int | None = None
    ) -> ContractionPlan:
        leaves = leaf_operands(network)
        cores = leaves[1:]
        n = len(cores)
        outer = n <= OUTER_LIMIT
        groups = core_groups(network, outer)
        trees = self._weight_trees(network, cores, groups, outer, fold_weights, memory_limit)
        full = (1 << n) - 1
        # feature-map DP: state = mask of absorbed cores -> (score, operand, previous mask, group)
        best: dict[int, tuple[Score, Operand, int, int]] = {0: (ZERO, leaves[0], -1, 0)}
        for absorbed in range(full + 1):  # numeric order visits every subset before its supersets
            if absorbed not in best:
                continue
            score, fm, _, _ = best[absorbed]
            # when every set of cores is a group (outer products, or a hyperedge joining all cores), walk the
            # sub-masks of what is left (3^n in all) rather than every group for every state (4^n)
            for group in (_submasks(full ^ absorbed) if len(groups) == full else groups):
                if group & absorbed:
                    continue
                tree = trees.get(group)
                if tree is None or not (outer or tree.operand.indices & fm.indices):
                    continue
                cost = pair_cost(network, fm, tree.operand)
                if memory_limit is not None and cost.elements > memory_limit:
                    continue
                step = self.objective.step_cost(network, fm, tree.operand, cost, fold_weights)
                new = self.objective.combine(score, tree.score, step, cost.elements)
                target = absorbed | group
                if target not in best or new < best[target][0]:
                    best[target] = (new, cost.result, absorbed, group)
        if full not in best:
            raise TTPlanError(self._infeasible(network, fold_weights, memory_limit))
        pairs = self._pairs(network, best, trees, full)
        return ContractionPlan(network, pairs, self.name, fold_weights)

    def _weight_trees(
        self,
        network: TensorNetwork,
        cores: list[Operand],
        groups: list[int],
        outer: bool,
        fold_weights: bool,
        memory_limit: int | None,
    ) -> dict[int, _Tree]:
        """Cheapest weight-only tree for every group of cores (smaller groups first).

        Splits are all sub-masks when outer products are allowed (`groups` then holds every
        subset), else pairs of connected groups that share an index.
        """
        trees: dict[int, _Tree] = {}
        # every set of cores connected (a hyperedge joins them all): walk sub-masks, not the list of groups
        submasks = outer or len(groups) == (1 << len(cores)) - 1
        for group in groups:
            if group & (group - 1) == 0:
                trees[group] = _Tree(ZERO, cores[group.bit_length() - 1])
                continue
            choice: _Tree | None = None
            for left in _splits(group, groups, submasks):
                right = group ^ left
                if left > right or right not in trees or left not in trees:
                    continue
                lt, rt = trees[left], trees[right]
                if not outer and not lt.operand.indices & rt.operand.indices:
                    continue
                cost = pair_cost(network, lt.operand, rt.operand)
                if memory_limit is not None and cost.elements > memory_limit:
                    continue
                step = self.objective.step_cost(network, lt.operand, rt.operand, cost, fold_weights)
                score = self.objective.combine(lt.score, rt.score, step, cost.elements)
                score = (score[0], score[1], score[2] + cost.macs)
                if choice is None or score < choice.score:
                    choice = _Tree(score, cost.result, [*lt.steps, *rt.steps, (left, right)])
            if choice is not None:
                trees[group] = choice
        return trees

    def rebuild_pairs(self, network: TensorNetwork) -> list[tuple[int, int]]:
        """SSA pairs that merge all cores into the kernel by the cheapest weight-only order."""
        cores = leaf_operands(network)[1:]
        outer = len(cores) <= OUTER_LIMIT
        full = (1 << len(cores)) - 1
        trees = self._weight_trees(network, cores, core_groups(network, outer), outer, False, None)
        if full not in trees:
            raise TTPlanError(
                "the cores are not connected by ranks, so the kernel cannot be rebuilt without outer products"
            )
        ids = {1 << v: v + 1 for v in range(len(cores))}
        pairs, nxt = [], len(network.tensors)
        for left, right in trees[full].steps:
            pairs.append((ids[left], ids[right]))
            ids[left | right] = nxt
            nxt += 1
        return pairs

    def _pairs(self, network, best, trees, full) -> list[tuple[int, int]]:
        """Turn the DP's choices into SSA pairs: each group's weight steps, then its feature step."""
        chain: list[int] = []
        state = full
        while state:
            _, _, previous, group = best[state]
            chain.append(group)
            state = previous
        chain.reverse()
        ids: dict[int, int] = {1 << v: v + 1 for v in range(len(network.tensors) - 1)}
        nxt = len(network.tensors)
        fm_id = 0
        pairs: list[tuple[int, int]] = []
        for group in chain:
            for left, right in trees[group].steps:
                pairs.append((ids[left], ids[right]))
                ids[left | right] = nxt
                nxt += 1
            pairs.append((fm_id, ids[group]))
            fm_id = nxt
            nxt += 1
        return pairs

    def _infeasible(self, network: TensorNetwork, fold_weights: bool, memory_limit: int | None) -> str:
        """Explain an impossible memory limit with the smallest limit that works."""
        if memory_limit is None:
            return "the network cannot be contracted without outer products"
        least = ExactSearch("memory")(network, fold_weights=fold_weights).largest_intermediate
        return (
            f"memory_limit={memory_limit}: no order keeps every intermediate within {memory_limit:,} elements; "
            f"the smallest possible largest intermediate is {least:,}"
        )


def core_groups(network: TensorNetwork, outer: bool = False) -> list[int]:
    """Sets of cores (bitmasks over `network.tensors[1:]`), smallest first: all, or connected only."""
    cores = leaf_operands(network)[1:]
    n = len(cores)
    if outer:
        return sorted(range(1, 1 << n), key=lambda m: (m.bit_count(), m))
    neighbours = {
        v: sum(1 << u for u in range(n) if u != v and cores[u].indices & cores[v].indices) for v in range(n)
    }
    return _connected_subsets(neighbours, n)


def _submasks(mask: int):
    """Every non-empty sub-mask of `mask`."""
    sub = mask
    while sub:
        yield sub
        sub = (sub - 1) & mask


def _splits(group: int, groups: list[int], outer: bool):
    """Candidate left halves of `group`: every proper sub-mask, or the connected groups inside it."""
    if outer:
        left = (group - 1) & group
        while left:
            yield left
            left = (left - 1) & group
        return
    size = group.bit_count()
    for left in groups:
        if left.bit_count() >= size:
            break
        if left & ~group == 0:
            yield left


@dataclass(frozen=True)
class BruteForce:
    """Every order of pairwise contractions, outer products included; exponential, for checks."""

    max_tensors: int = 7
    name: str = "brute-force"
    objective: str | Objective = "macs"

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", make_objective(self.objective))

    def __call__(
        self, network: TensorNetwork, *, fold_weights: bool = False, memory_limit: int | None = None
    ) -> ContractionPlan:
        if len(network.tensors) > self.max_tensors:
            raise TTPlanError(
                f"brute force over {len(network.tensors)} tensors: allowed up to {self.max_tensors}; use ExactSearch"
            )
        leaves = leaf_operands(network)
        objective = self.objective
        best: list = [None]

        def walk(live: dict[int, Operand], nxt: int, score: Score, pairs: list) -> None:
            if len(live) == 1:
                if best[0] is None or score[:2] < best[0][0][:2]:
                    best[0] = (score, list(pairs))
                return
            keys = sorted(live)
            for x in range(len(keys)):
                for y in range(x + 1, len(keys)):
                    a, b = live[keys[x]], live[keys[y]]
                    cost = pair_cost(network, a, b)
                    if memory_limit is not None and cost.elements > memory_limit:
                        continue
                    step = objective.step_cost(network, a, b, cost, fold_weights)
                    rest = {k: v for k, v in live.items() if k not in (keys[x], keys[y])}
                    rest[nxt] = cost.result
                    pairs.append((keys[x], keys[y]))
                    walk(rest, nxt + 1, objective.combine(score, ZERO, step, cost.elements), pairs)
                    pairs.pop()

        walk(dict(enumerate(leaves)), len(leaves), ZERO, [])
        if best[0] is None:
            raise TTPlanError(f"memory_limit={memory_limit}: no order fits")
        return ContractionPlan(network, best[0][1], self.name, fold_weights)


#: optimizer name -> factory taking the objective
OPTIMIZERS: dict[str, Callable[[str | Objective], Optimizer]] = {
    "exact": ExactSearch,
    "memory": lambda objective: ExactSearch("memory"),
    "brute-force": lambda objective: BruteForce(objective=objective),
}


def optimize(
    network: TensorNetwork,
    method: str = "exact",
    *,
    fold_weights: bool = False,
    memory_limit: int | None = None,
    objective: str | Objective = "macs",
    profile: LatencyProfile | None = None,
) -> ContractionPlan:
    """The best plan for `network` by the named optimizer (`exact`, `memory` or `brute-force`) and objective.

    `objective` is `macs`, `memory` or `latency` (predicted time under `profile`, default: this user's
    calibrated profile, else the committed default one).
    """
    if method not in OPTIMIZERS:
        raise TTPlanError(f"method={method!r}: expected one of {', '.join(OPTIMIZERS)}")
    if memory_limit is not None and memory_limit <= 0:
        raise TTPlanError(f"memory_limit={memory_limit}: expected a positive number of elements")
    optimizer = OPTIMIZERS[method](make_objective(objective, profile))
    return optimizer(network, fold_weights=fold_weights, memory_limit=memory_limit)
