"""The exact search against brute force on one network: the checks every format's search tests share."""

from __future__ import annotations

import random

from ttplan.core.contraction import ContractionPlan
from ttplan.core.network import TensorNetwork
from ttplan.core.search import optimize


def assert_best_is_brute_force(net: TensorNetwork, fold: bool) -> ContractionPlan:
    """The searched order costs what brute-force enumeration finds; returns it for further checks."""
    best = optimize(net, fold_weights=fold)
    brute = optimize(net, "brute-force", fold_weights=fold)
    assert best.macs == brute.macs, (net.spec, net.fmt, best.pairs, brute.pairs)
    return best


def assert_exact_under_a_memory_limit(net: TensorNetwork, rng: random.Random) -> None:
    """Under a random feasible memory limit the search still equals brute force and respects the limit."""
    least = optimize(net, "memory").largest_intermediate
    limit = rng.randint(least, max(least, optimize(net).largest_intermediate))
    best = optimize(net, memory_limit=limit)
    assert best.macs == optimize(net, "brute-force", memory_limit=limit).macs
    assert best.largest_intermediate <= limit
