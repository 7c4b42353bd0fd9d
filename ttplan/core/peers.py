"""Peers, side by side: the layer as a plain einsum with an unfolded (im2col) input.

opt_einsum and cotengra see the layer as `X_unf[b, s', k, i_1…i_d] ⊗ cores -> Y[b, s', o_1…o_e]`:
the input is unfolded to every output pixel and window offset (H'W'·K per channel), so every
contraction that touches the input is charged H'W'·K rather than H·W, and they cannot know that
the stride shrinks the map only at the conv step. Their orders are re-costed here under
ttplan's model (`ContractionPlan`) next to their own im2col cost.
"""

from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import dataclass

import opt_einsum

from ttplan.core.contraction import ContractionPlan
from ttplan.core.network import TensorNetwork
from ttplan.errors import TTPlanError

OPT_EINSUM_METHODS = ("optimal", "dp", "greedy")


@dataclass(frozen=True)
class PeerResult:
    """One peer's order: its own (im2col) cost, the same order under ttplan's model, and its time."""

    name: str
    pairs: tuple[tuple[int, int], ...]
    im2col_macs: int
    plan: ContractionPlan
    seconds: float

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {
            "name": self.name,
            "im2col_macs": self.im2col_macs,
            "ttplan_macs": self.plan.macs,
            "executable": self.plan.executable,
            "seconds": self.seconds,
            "path": [list(p) for p in self.pairs],
        }


def im2col_sizes(network: TensorNetwork) -> dict[str, int]:
    """Index sizes of the im2col einsum: the spatial index is the output resolution throughout."""
    sizes = {name: idx.size for name, idx in network.indices.items()}
    sizes["s"] = network.spec.out_pixels
    return sizes


def im2col_equation(network: TensorNetwork) -> tuple[str, list[tuple[int, ...]]]:
    """The layer as an einsum string over single letters, with the operand shapes."""
    letters = {name: opt_einsum.get_symbol(n) for n, name in enumerate(network.indices)}
    sizes = im2col_sizes(network)
    terms = ["".join(letters[i] for i in t.indices) for t in network.tensors]
    out = "".join(letters[i] for i in network.output)
    shapes = [tuple(sizes[i] for i in t.indices) for t in network.tensors]
    return f"{','.join(terms)}->{out}", shapes


def im2col_expression(network: TensorNetwork) -> str:
    """The im2col einsum with ttplan's index names, e.g. `X_unf[b,s',k,i1] · C[r1,k,r2] · … -> Y[b,s',o1]`."""
    def name(index: str) -> str:
        return "s'" if index == "s" else index

    terms = [
        f"{'X_unf' if t.is_input else t.name}[{','.join(name(i) for i in t.indices)}]" for t in network.tensors
    ]
    return " · ".join(terms) + f" -> Y[{','.join(name(i) for i in network.output)}]"


def im2col_macs(network: TensorNetwork, pairs: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> int:
    """MACs of an order when the input is unfolded: every step costs the product of its indices."""
    sizes = im2col_sizes(network)
    live = {n: (frozenset(t.indices), frozenset({n})) for n, t in enumerate(network.tensors)}
    nxt, total = len(live), 0
    for a, b in pairs:
        (ia, la), (ib, lb) = live.pop(a), live.pop(b)
        union, leaves = ia | ib, la | lb
        total += math.prod(sizes[i] for i in union)
        # an index stays open while the output or a tensor not yet contracted holds it (hyperedges too)
        live[nxt] = (frozenset(i for i in union if i in network.output or not network.holders[i] <= leaves), leaves)
        nxt += 1
    return total


def linear_to_ssa(path: list[tuple[int, ...]], count: int) -> tuple[tuple[int, int], ...]:
    """Convert an opt_einsum-style path (positions in a shrinking list) to SSA pairs."""
    ids = list(range(count))
    nxt, pairs = count, []
    for step in path:
        if len(step) != 2:
            raise TTPlanError(f"path step {step}: only pairwise contractions can be compared")
        a, b = sorted(step)
        pairs.append((ids[a], ids[b]))
        del ids[b], ids[a]
        ids.append(nxt)
        nxt += 1
    return tuple(pairs)


def opt_einsum_peer(network: TensorNetwork, method: str = "optimal") -> PeerResult:
    """opt_einsum's order for the im2col einsum, re-costed by ttplan."""
    if method not in OPT_EINSUM_METHODS:
        raise TTPlanError(f"method={method!r}: expected one of {', '.join(OPT_EINSUM_METHODS)}")
    equation, shapes = im2col_equation(network)
    start = time.perf_counter()
    path, _ = opt_einsum.contract_path(equation, *shapes, shapes=True, optimize=method)
    seconds = time.perf_counter() - start
    pairs = linear_to_ssa(list(path), len(shapes))
    plan = ContractionPlan(network, pairs, f"opt_einsum-{method}")
    return PeerResult(f"opt_einsum-{method}", pairs, im2col_macs(network, pairs), plan, seconds)


def cotengra_available() -> bool:
    """Whether cotengra is installed (it is optional)."""
    return importlib.util.find_spec("cotengra") is not None


def cotengra_peer(network: TensorNetwork, method: str = "optimal") -> PeerResult:
    """cotengra's order for the im2col einsum, re-costed by ttplan (needs `pip install cotengra`)."""
    if not cotengra_available():
        raise TTPlanError("cotengra is not installed: pip install cotengra (or leave it out of --compare)")
    import cotengra

    sizes = im2col_sizes(network)
    inputs = [tuple(t.indices) for t in network.tensors]
    start = time.perf_counter()
    tree = cotengra.array_contract_tree(inputs, tuple(network.output), sizes, optimize=method)
    seconds = time.perf_counter() - start
    pairs = linear_to_ssa([tuple(p) for p in tree.get_path()], len(inputs))
    plan = ContractionPlan(network, pairs, f"cotengra-{method}")
    return PeerResult(f"cotengra-{method}", pairs, im2col_macs(network, pairs), plan, seconds)


def compare_peers(network: TensorNetwork) -> list[PeerResult]:
    """opt_einsum `optimal` (up to 10 tensors) and `dp`, and cotengra `optimal` where installed; their `greedy`
    optimizers instead where ttplan's own exact search is past its bound (`ttplan.core.search.STEP_LIMIT`): the
    exhaustive ones explode there just as it does (CP with 6 modes a side: 43 s and 64 s; 7: minutes more)."""
    from ttplan.core.search import STEP_LIMIT, predicted_steps

    exhaustive = predicted_steps(network, STEP_LIMIT) <= STEP_LIMIT
    results = []
    if len(network.tensors) <= 10 and exhaustive:
        results.append(opt_einsum_peer(network, "optimal"))
    results.append(opt_einsum_peer(network, "dp" if exhaustive else "greedy"))
    if cotengra_available():
        results.append(cotengra_peer(network, "optimal" if exhaustive else "greedy"))
    return results
