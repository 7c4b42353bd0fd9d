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

The work still grows exponentially where many cores can meet: a CP network (one rank shared by every
factor, so every set of factors is a group) prices about 1.5·3^n candidate steps, 9x per added mode a side.
`predicted_steps` counts them before the search runs; above `STEP_LIMIT` the exact search hands the network
to `RunSearch`, the same dynamic programming over runs of consecutive cores only (polynomial, O(n^3) steps),
whose plan is marked `bounded`: it may miss the optimum, and reports say so.

Each optimizer is a small object with one call, as in opt_einsum's `paths.py`, registered by name
in `OPTIMIZERS`; what it minimises is an objective from `ttplan.core.objectives` (MACs, memory or
predicted latency), so the same DP serves all three.
"""

from __future__ import annotations

import heapq
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
#: the most candidate steps (`predicted_steps`) the exact search prices, about 5 s of CPython on the development
#: machine; a network predicted to need more is planned by the bounded `RunSearch` instead
STEP_LIMIT = 500_000
#: what reports say of an order the bounded search found
BOUNDED_NOTE = (f"found by the bounded search (runs of consecutive cores), as the exact search would price more than "
                f"{STEP_LIMIT:,} candidate steps: it may not be the optimum")


@dataclass
class _Tree:
    """A weight-only subtree: its score, its operand, and its steps as pairs of subtrees."""

    score: Score
    operand: Operand
    steps: list[tuple[int, int]] = field(default_factory=list)  # (left mask, right mask), children first


def _connected_subsets(neighbours: dict[int, int], n: int, limit: int | None = None) -> list[int]:
    """All connected subsets (bitmasks over cores 0…n-1) of the core graph, smallest first (only some once more
    than `limit` are found)."""
    seen: set[int] = set()
    frontier = [1 << v for v in range(n)]
    seen.update(frontier)
    while frontier and (limit is None or len(seen) <= limit):
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
    #: the most candidate steps to price (`predicted_steps`); above it `RunSearch` plans instead (None: no bound)
    step_limit: int | None = STEP_LIMIT

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", make_objective(self.objective))

    def __call__(
        self, network: TensorNetwork, *, fold_weights: bool = False, memory_limit: int | None = None
    ) -> ContractionPlan:
        if self.step_limit is not None and predicted_steps(network, self.step_limit) > self.step_limit:
            return RunSearch(self.objective, self.name)(network, fold_weights=fold_weights, memory_limit=memory_limit)
        leaves = leaf_operands(network)
        cores = leaves[1:]
        n = len(cores)
        outer = n <= OUTER_LIMIT
        groups = core_groups(network, outer)
        trees = self._weight_trees(network, cores, groups, outer, fold_weights, memory_limit)
        full = (1 << n) - 1
        # feature-map DP: state = mask of absorbed cores -> (score, operand, previous mask, group)
        best: dict[int, tuple[Score, Operand, int, int]] = {0: (ZERO, leaves[0], -1, 0)}
        # the states reached, smallest first: numeric order visits every subset before its supersets, and a heap
        # of the reached ones spares the 2^n masks a chain of many cores never reaches
        queue = [0]
        while queue:
            absorbed = heapq.heappop(queue)
            fm = best[absorbed][1]
            # when every set of cores is a group (outer products, or a hyperedge joining all cores), walk the
            # sub-masks of what is left (3^n in all) rather than every group for every state (4^n)
            for group in (_submasks(full ^ absorbed) if len(groups) == full else groups):
                if group & absorbed:
                    continue
                tree = trees.get(group)
                if tree is None or not (outer or tree.operand.indices & fm.indices):
                    continue
                if _absorb(self.objective, network, best, absorbed, group, tree, fold_weights, memory_limit):
                    heapq.heappush(queue, absorbed | group)
        if full not in best:
            raise TTPlanError(self._infeasible(network, fold_weights, memory_limit))
        return ContractionPlan(network, _spine_pairs(network, best, trees, full), self.name, fold_weights)

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
                choice = _merge(self.objective, network, choice, (left, lt), (right, rt), fold_weights, memory_limit)
            if choice is not None:
                trees[group] = choice
        return trees

    def rebuild_pairs(self, network: TensorNetwork) -> list[tuple[int, int]]:
        """SSA pairs that merge all cores into the kernel by the cheapest weight-only order."""
        return self.rebuild(network)[0]

    def rebuild(self, network: TensorNetwork) -> tuple[list[tuple[int, int]], bool]:
        """`rebuild_pairs`, and whether the bounded `RunSearch` found them (past `step_limit`; may not be cheapest)."""
        if self.step_limit is not None and predicted_steps(network, self.step_limit, True) > self.step_limit:
            return RunSearch(self.objective).rebuild_pairs(network), True
        cores = leaf_operands(network)[1:]
        outer = len(cores) <= OUTER_LIMIT
        full = (1 << len(cores)) - 1
        trees = self._weight_trees(network, cores, core_groups(network, outer), outer, False, None)
        if full not in trees:
            raise TTPlanError(
                "the cores are not connected by ranks, so the kernel cannot be rebuilt without outer products"
            )
        return _tree_pairs(network, trees[full]), False

    def _infeasible(self, network: TensorNetwork, fold_weights: bool, memory_limit: int | None) -> str:
        """Explain an impossible memory limit with the smallest limit that works."""
        if memory_limit is None:
            return "the network cannot be contracted without outer products"
        least = ExactSearch("memory")(network, fold_weights=fold_weights).largest_intermediate
        return (
            f"memory_limit={memory_limit}: no order keeps every intermediate within {memory_limit:,} elements; "
            f"the smallest possible largest intermediate is {least:,}"
        )


@dataclass(frozen=True)
class RunSearch:
    """The exact search's dynamic programming over runs of consecutive cores (in the network's core order) only.

    Each weight-only tree merges a run, split into two runs; the feature map first absorbs a run, then always a
    run next to the run it holds. That is O(n^3) candidate steps for n cores, against the exact search's up to
    3^n, and every published order is among them (each absorbs runs one after another from one end), so its plan
    never costs more than the published one. It may miss the optimum: its plans are marked `bounded`.
    """

    objective: str | Objective = "macs"
    name: str = "best"

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", make_objective(self.objective))

    def __call__(
        self, network: TensorNetwork, *, fold_weights: bool = False, memory_limit: int | None = None
    ) -> ContractionPlan:
        leaves = leaf_operands(network)
        n = len(leaves) - 1
        runs = _runs(n)
        trees = self._trees(network, runs, fold_weights, memory_limit)
        full = (1 << n) - 1
        best: dict[int, tuple[Score, Operand, int, int]] = {0: (ZERO, leaves[0], -1, 0)}
        for absorbed in [0, *runs]:  # shorter runs first: every state before the longer runs it grows into
            if absorbed not in best:
                continue
            fm = best[absorbed][1]
            for group in runs if absorbed == 0 else _beside(absorbed, n):
                tree = trees.get(group)
                if tree is not None and tree.operand.indices & fm.indices:
                    _absorb(self.objective, network, best, absorbed, group, tree, fold_weights, memory_limit)
        if full not in best:
            raise TTPlanError(self._infeasible(network, fold_weights, memory_limit))
        return ContractionPlan(network, _spine_pairs(network, best, trees, full), self.name, fold_weights,
                               bounded=True)

    def rebuild_pairs(self, network: TensorNetwork) -> list[tuple[int, int]]:
        """SSA pairs that merge all cores into the kernel by the cheapest split of runs."""
        n = len(network.tensors) - 1
        tree = self._trees(network, _runs(n), False, None).get((1 << n) - 1)
        if tree is None:
            raise TTPlanError("the cores are not connected by ranks, so the kernel cannot be rebuilt without outer "
                              "products")
        return _tree_pairs(network, tree)

    def _trees(self, network: TensorNetwork, runs: list[int], fold_weights: bool,
               memory_limit: int | None) -> dict[int, _Tree]:
        """Cheapest weight-only tree of every run (shorter runs first), split into two runs sharing an index."""
        cores = leaf_operands(network)[1:]
        trees: dict[int, _Tree] = {}
        for run in runs:
            if run & (run - 1) == 0:
                trees[run] = _Tree(ZERO, cores[run.bit_length() - 1])
                continue
            choice: _Tree | None = None
            low = run & -run
            left = low
            while left != run:  # left halves: the run's first core, its first two, ...
                right = run ^ left
                if left in trees and right in trees and trees[left].operand.indices & trees[right].operand.indices:
                    choice = _merge(self.objective, network, choice, (left, trees[left]), (right, trees[right]),
                                    fold_weights, memory_limit)
                left |= left << 1 & run
            if choice is not None:
                trees[run] = choice
        return trees

    def _infeasible(self, network: TensorNetwork, fold_weights: bool, memory_limit: int | None) -> str:
        """Explain a failed bounded search: no order of runs, or none within the memory limit."""
        if memory_limit is None:
            return "the network cannot be contracted by runs of consecutive cores without outer products"
        least = RunSearch("memory")(network, fold_weights=fold_weights).largest_intermediate
        return (f"memory_limit={memory_limit}: no order the bounded search tries (runs of consecutive cores, for a "
                f"network too large for the exact search) keeps every intermediate within {memory_limit:,} "
                f"elements; the smallest it finds is {least:,}")


def _run(first: int, last: int) -> int:
    """The bitmask of cores `first…last`."""
    return ((1 << (last + 1)) - 1) ^ ((1 << first) - 1)


def _runs(n: int) -> list[int]:
    """Every run of consecutive cores among 0…n-1, shorter runs first."""
    return [_run(first, first + size - 1) for size in range(1, n + 1) for first in range(n - size + 1)]


def _beside(run: int, n: int) -> list[int]:
    """The runs of cores 0…n-1 next to `run`: ending just before it, or starting just after it."""
    first, last = (run & -run).bit_length() - 1, run.bit_length() - 1
    return [_run(start, first - 1) for start in range(first)] + [_run(last + 1, end) for end in range(last + 1, n)]


def _absorb(objective: Objective, network: TensorNetwork, best: dict[int, tuple[Score, Operand, int, int]],
            absorbed: int, group: int, tree: _Tree, fold_weights: bool, memory_limit: int | None) -> bool:
    """One feature-map step: the map of state `absorbed` meets `group`'s tree; kept if it is the best way yet to
    reach `absorbed | group`. True if that state was not reached before."""
    score, fm = best[absorbed][0], best[absorbed][1]
    cost = pair_cost(network, fm, tree.operand)
    if memory_limit is not None and cost.elements > memory_limit:
        return False
    step = objective.step_cost(network, fm, tree.operand, cost, fold_weights)
    new = objective.combine(score, tree.score, step, cost.elements)
    target = absorbed | group
    if target not in best:
        best[target] = (new, cost.result, absorbed, group)
        return True
    if new < best[target][0]:
        best[target] = (new, cost.result, absorbed, group)
    return False


def _merge(objective: Objective, network: TensorNetwork, choice: _Tree | None, left: tuple[int, _Tree],
           right: tuple[int, _Tree], fold_weights: bool, memory_limit: int | None) -> _Tree | None:
    """`choice`, or the tree joining two weight-only subtrees (mask, tree) where it scores lower."""
    (lmask, lt), (rmask, rt) = left, right
    cost = pair_cost(network, lt.operand, rt.operand)
    if memory_limit is not None and cost.elements > memory_limit:
        return choice
    step = objective.step_cost(network, lt.operand, rt.operand, cost, fold_weights)
    score = objective.combine(lt.score, rt.score, step, cost.elements)
    score = (score[0], score[1], score[2] + cost.macs)
    if choice is None or score < choice.score:
        return _Tree(score, cost.result, [*lt.steps, *rt.steps, (lmask, rmask)])
    return choice


def _tree_pairs(network: TensorNetwork, tree: _Tree) -> list[tuple[int, int]]:
    """SSA pairs of one weight-only tree over the cores (`network.tensors[1:]`)."""
    ids = {1 << v: v + 1 for v in range(len(network.tensors) - 1)}
    pairs, nxt = [], len(network.tensors)
    for left, right in tree.steps:
        pairs.append((ids[left], ids[right]))
        ids[left | right] = nxt
        nxt += 1
    return pairs


def _spine_pairs(network: TensorNetwork, best: dict[int, tuple[Score, Operand, int, int]], trees: dict[int, _Tree],
                 full: int) -> list[tuple[int, int]]:
    """Turn a DP's choices into SSA pairs: each group's weight steps, then its feature step."""
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


class _Held:
    """Which indices each set of tensors leaves open, as bitmasks (bit t: `network.tensors[t]`; one bit per index)."""

    def __init__(self, network: TensorNetwork) -> None:
        bit = {name: 1 << k for k, name in enumerate(network.holders)}
        self.tensors = [sum(bit[i] for i in t.indices) for t in network.tensors]
        self.holders = {bit[name]: sum(1 << t for t in held) for name, held in network.holders.items()}
        self.output = sum(bit[i] for i in network.output)

    def open(self, tensors: int) -> int:
        """The indices still open once the tensors in the mask `tensors` are contracted together."""
        union, rest = 0, tensors
        while rest:
            low = rest & -rest
            union |= self.tensors[low.bit_length() - 1]
            rest ^= low
        kept, rest = union & self.output, union & ~self.output
        while rest:
            low = rest & -rest
            if self.holders[low] & ~tensors:
                kept |= low
            rest ^= low
        return kept


def predicted_steps(network: TensorNetwork, limit: int | None = None, weight_only: bool = False) -> int:
    """How many candidate steps `ExactSearch` prices for `network`: its weight-only trees, then its feature-map
    steps (the trees alone with `weight_only`), memory limits aside. Counting stops once past `limit`.

    Where every set of cores is a group (outer products, or a CP rank joining every core) these are the 3^n
    sub-mask pairs of both DPs; else the splits of connected groups and the groups each feature-map state the
    search reaches can absorb, counted without pricing them."""
    cores = leaf_operands(network)[1:]
    n = len(cores)
    everything = (1 << n) - 1
    neighbours = {v: sum(1 << u for u in range(n) if u != v and cores[u].indices & cores[v].indices)
                  for v in range(n)}
    if n <= OUTER_LIMIT or all(neighbours[v] == everything ^ (1 << v) for v in range(n)):
        weight = (3 ** n - 2 ** (n + 1) + 1) // 2  # unordered splits of every set into two non-empty halves
        return weight if weight_only else weight + 3 ** n - 2 ** n
    cap = None if limit is None else limit + 1
    groups = _connected_subsets(neighbours, n, cap)
    if cap is not None and len(groups) > cap:
        return len(groups)
    known = set(groups)
    held = _Held(network)
    indices = {g: held.open(g << 1) for g in groups}
    count = 0
    for group in groups:
        for left in _splits(group, groups, False):
            right = group ^ left
            if left < right and right in known and indices[left] & indices[right]:
                count += 1
        if cap is not None and count > cap:
            return count
    if weight_only:
        return count
    reached, frontier = {0}, [0]
    while frontier:
        state = frontier.pop()
        fm = held.open(state << 1 | 1)
        for group in groups:
            if group & state or not indices[group] & fm:
                continue
            count += 1
            if state | group not in reached:
                reached.add(state | group)
                frontier.append(state | group)
        if cap is not None and count > cap:
            return count
    return count


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
