"""The fixed, published contraction orders, as plans of the same type the search returns.

- classical (Garipov et al. 2016): convolve each input channel with `S`, then `G_1 … G_d`.
- hodec: input cores into the input at H×W from the far end (`A_d … A_1`), one conv with `C`,
  then the output cores at H'×W' outward from `C` (`B_e … B_1`).
- ttm (Novikov et al. 2015, for nn.Linear): the cores `G_1 … G_d` one after another.
- dense: rebuild the kernel from the cores (cheapest weight-only order), then one conv.
"""

from __future__ import annotations

from ttplan.core.contraction import ContractionPlan
from ttplan.core.network import TensorNetwork
from ttplan.core.search import ExactSearch
from ttplan.errors import TTPlanError


def _sequence(network: TensorNetwork, names: list[str], scheme: str, fold_weights: bool) -> ContractionPlan:
    """Absorb the named cores into the feature map one after another."""
    position = {t.name: n for n, t in enumerate(network.tensors)}
    pairs, fm, nxt = [], 0, len(network.tensors)
    for name in names:
        pairs.append((fm, position[name]))
        fm, nxt = nxt, nxt + 1
    return ContractionPlan(network, pairs, scheme, fold_weights)


def classical(network: TensorNetwork, fold_weights: bool = False) -> ContractionPlan:
    """Garipov et al.'s order: window first, then the channel cores left to right."""
    _require(network, "classical", ("classical",))
    d = len(network.fmt.in_modes)
    return _sequence(network, ["S", *(f"G{j}" for j in range(1, d + 1))], "classical", fold_weights)


def hodec(network: TensorNetwork, fold_weights: bool = False) -> ContractionPlan:
    """The published hodec order: A_d…A_1 at H×W, conv with C, then B_e…B_1 at H'×W'."""
    _require(network, "hodec", ("hodec",))
    d, e = len(network.fmt.in_modes), len(network.fmt.out_modes)
    names = [*(f"A{j}" for j in range(d, 0, -1)), "C", *(f"B{j}" for j in range(e, 0, -1))]
    return _sequence(network, names, "hodec", fold_weights)


def ttm(network: TensorNetwork, fold_weights: bool = False) -> ContractionPlan:
    """The TT-matrix order: the cores G_1…G_d one after another."""
    _require(network, "ttm", ("ttm",))
    d = len(network.fmt.in_modes)
    return _sequence(network, [f"G{j}" for j in range(1, d + 1)], "ttm", fold_weights)


def dense(network: TensorNetwork, fold_weights: bool = False) -> ContractionPlan:
    """Rebuild the kernel with the cheapest weight-only order, then one dense conv."""
    pairs = ExactSearch().rebuild_pairs(network)
    kernel = len(network.tensors) + len(pairs) - 1 if pairs else 1
    return ContractionPlan(network, [*pairs, (0, kernel)], "dense", fold_weights)


SCHEMES = {"classical": classical, "hodec": hodec, "ttm": ttm, "dense": dense}

#: every name a plan can be asked for by: the searched best, the format's published order, or a fixed scheme
PLAN_NAMES = ("best", "published", *SCHEMES)


def published_scheme(network: TensorNetwork) -> str:
    """The name of the format's own published order."""
    return network.fmt.kind


def schemes_for(network: TensorNetwork, fold_weights: bool = False) -> dict[str, ContractionPlan]:
    """The published order of the network's format and the dense rebuild, by name."""
    kind = published_scheme(network)
    return {kind: SCHEMES[kind](network, fold_weights), "dense": dense(network, fold_weights)}


def _require(network: TensorNetwork, scheme: str, kinds: tuple[str, ...]) -> None:
    if network.fmt.kind not in kinds:
        raise TTPlanError(f"scheme={scheme!r} needs a {' or '.join(kinds)} format, got {network.fmt.kind!r}")

