"""The fixed, published contraction orders, as plans of the same type the search returns.

Each format names its published scheme and the order it absorbs the cores in (`TTFormat.published_order`):
classical (Garipov et al. 2016) convolves each input channel with `S`, then `G_1 … G_d`; hodec runs the input cores
at H×W from the far end, one conv with `C`, then the output cores at H'×W'; ttm (Novikov et al. 2015) absorbs `G_1
… G_d` in turn; tr (Wang et al. 2018) merges the input cores, absorbs them, convolves with `C` and absorbs the
merged output cores. `dense` rebuilds the kernel from the cores (cheapest weight-only order), then runs one conv;
it applies to every format. `merged` (not a published scheme: a candidate for measuring) is the published order
with each run of cores between window cores merged first, so the feature map meets one wide product per run.
"""

from __future__ import annotations

from ttplan.core.contraction import WINDOWS, ContractionPlan
from ttplan.core.formats import format_names, get_format, published_schemes
from ttplan.core.network import TensorNetwork
from ttplan.core.search import ExactSearch
from ttplan.errors import TTPlanError

DENSE = "dense"


def _sequence(network: TensorNetwork, names: tuple[str | tuple[str, ...], ...], scheme: str,
              fold_weights: bool) -> ContractionPlan:
    """Absorb the named cores into the feature map one after another; a tuple of names is merged first, left to
    right (weight-only steps), and absorbed as one."""
    position = {t.name: n for n, t in enumerate(network.tensors)}
    pairs, fm, nxt = [], 0, len(network.tensors)
    for entry in names:
        group = (entry,) if isinstance(entry, str) else tuple(entry)
        merged = position[group[0]]
        for name in group[1:]:
            pairs.append((merged, position[name]))
            merged, nxt = nxt, nxt + 1
        pairs.append((fm, merged))
        fm, nxt = nxt, nxt + 1
    return ContractionPlan(network, pairs, scheme, fold_weights)


def published(network: TensorNetwork, fold_weights: bool = False) -> ContractionPlan:
    """The network's format's own published order."""
    fmt = network.fmt
    return _sequence(network, fmt.published_order(), fmt.published_scheme, fold_weights)


def dense(network: TensorNetwork, fold_weights: bool = False) -> ContractionPlan:
    """Rebuild the kernel with the cheapest weight-only order (the bounded search's past its limit), then one dense
    conv."""
    pairs, bounded = ExactSearch().rebuild(network)
    kernel = len(network.tensors) + len(pairs) - 1 if pairs else 1
    return ContractionPlan(network, [*pairs, (0, kernel)], DENSE, fold_weights, bounded=bounded)


def merged(network: TensorNetwork, fold_weights: bool = False) -> ContractionPlan | None:
    """The published order with every run of cores between window cores merged (weight-only) and absorbed as one:
    hodec's input cores, the window core, its output cores. Few feature-map passes, each a wide product, at some
    MACs: the order a channels-last map runs fastest when thin products are slow. None for a format without a
    window core (a linear layer: merging everything is the `dense` rebuild)."""
    entries = network.fmt.published_order()
    names = [name for entry in entries for name in ((entry,) if isinstance(entry, str) else entry)]
    window = {t.name for t in network.tensors[1:] if set(t.indices) & set(WINDOWS)}
    if not window:
        return None
    order: list[str | tuple[str, ...]] = []
    run: list[str] = []
    for name in [*names, None]:
        if name is not None and name not in window:
            run.append(name)
            continue
        if run:
            order.append(run[0] if len(run) == 1 else tuple(run))
        if name is not None:
            order.append(name)
        run = []
    return _sequence(network, tuple(order), "merged", fold_weights)


def scheme_names() -> tuple[str, ...]:
    """Every scheme a plan may be asked for by name: the registered formats' published ones, then dense."""
    return (*published_schemes(), DENSE)


def scheme(name: str, network: TensorNetwork, fold_weights: bool = False) -> ContractionPlan:
    """A scheme by name: `dense`, or the published order of a format whose scheme it is."""
    if name == DENSE:
        return dense(network, fold_weights)
    if name not in scheme_names():
        raise TTPlanError(f"scheme={name!r}: expected one of {', '.join(scheme_names())}")
    fmt = network.fmt
    if fmt.published_scheme != name:
        owners = [n for n in format_names() if get_format(n).published_scheme == name]
        raise TTPlanError(f"scheme={name!r} needs a {' or '.join(owners)} format, got {fmt.label!r}")
    return published(network, fold_weights)

def plan_names() -> tuple[str, ...]:
    """Every name a plan can be asked for by: the searched best, the format's published order, or a scheme."""
    return ("best", "published", *scheme_names())


def published_scheme(network: TensorNetwork) -> str:
    """The name of the format's own published order."""
    return network.fmt.published_scheme


def schemes_for(network: TensorNetwork, fold_weights: bool = False) -> dict[str, ContractionPlan]:
    """The published order of the network's format and the dense rebuild, by name."""
    return {network.fmt.published_scheme: published(network, fold_weights), DENSE: dense(network, fold_weights)}


__all__ = ["DENSE", "dense", "merged", "published", "published_scheme", "scheme", "scheme_names", "schemes_for"]
