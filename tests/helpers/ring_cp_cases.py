"""Random tensor-ring and CP layers small enough for brute force and fast float64 runtime checks."""

from __future__ import annotations

import math
import random

from tests.helpers.factors import random_factors
from ttplan.core.contraction import GEOMETRY, ContractionPlan
from ttplan.core.formats import TTFormat, get_format
from ttplan.core.network import TensorNetwork
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError


def random_spec(rng: random.Random) -> ConvSpec:
    """A random small conv: stride, padding, dilation, non-square kernels and inputs."""
    while True:
        kernel = (rng.choice([1, 2, 3]), rng.choice([1, 2, 3, 5]))
        try:
            return ConvSpec.make(
                rng.choice([1, 2, 4, 6, 8, 12]), rng.choice([1, 2, 3, 4, 6, 8, 9]), kernel,
                (rng.choice([1, 2, 3]), rng.choice([1, 2])), (rng.randint(0, 2), rng.randint(0, 2)),
                (rng.choice([1, 2]), rng.choice([1, 1, 2])), (rng.randint(1, 11), rng.randint(1, 9)))
        except TTPlanError:
            continue


def random_ring(rng: random.Random, max_cores: int = 5, spec: ConvSpec | None = None,
                closing: int | None = None) -> tuple[ConvSpec, TTFormat]:
    """A random `tr` format (closing rank 1 to 4 unless given, interior ranks up to the bounds) on a random or
    given layer."""
    while True:
        layer = spec or random_spec(rng)
        d, e = rng.randint(1, 3), rng.randint(1, 3)
        if d + e + 1 > max_cores:
            continue
        modes = random_factors(layer.in_channels, d, rng), random_factors(layer.out_channels, e, rng)
        probe = get_format("tr")(*modes, ())
        close = closing or rng.randint(1, 4)
        bounds = probe.with_ranks((close,)).rank_bounds(layer)
        ranks = (close, *(rng.randint(1, min(b, 6)) for b in bounds[1:-1]), close)
        fmt = probe.with_ranks(ranks)
        try:
            fmt.validate(layer)
        except TTPlanError:
            continue
        assert math.prod(fmt.in_modes) == layer.in_channels
        return layer, fmt


def random_cp(rng: random.Random, max_cores: int = 5, spec: ConvSpec | None = None,
              kind: str = "cp") -> tuple[ConvSpec, TTFormat]:
    """A random `cp` (or `cp-separable`) format (one to three modes a side, rank 1 to 8) on a random or given
    layer."""
    windows = 2 if kind == "cp-separable" else 1
    while True:
        layer = spec or random_spec(rng)
        d, e = rng.randint(1, 3), rng.randint(1, 3)
        if d + e + windows > max_cores:
            continue
        modes = random_factors(layer.in_channels, d, rng), random_factors(layer.out_channels, e, rng)
        probe = get_format(kind)(*modes, ())
        fmt = probe.with_ranks((rng.randint(1, min(8, probe.max_ranks(layer)[0])),))
        fmt.validate(layer)
        return layer, fmt


def recount(network: TensorNetwork, plan: ContractionPlan) -> list[int]:
    """Each step's MACs from the index sizes alone: an index stays open while a tensor outside the step or the
    output holds it; a feature step runs at the map size reached so far (an axis is at its output size once a
    window over it, `k` for both or `kh` / `kw` for one, is summed) and a conv step multiplies by the windows it
    sums."""
    spec = network.spec
    holders = {name: {n for n, t in enumerate(network.tensors) if name in t.indices} for name in network.indices}
    live = {n: (set(t.indices), {n}) for n, t in enumerate(network.tensors)}
    height = width = False
    nxt, out = len(network.tensors), []
    for a, b in plan.pairs:
        (ia, la), (ib, lb) = live.pop(a), live.pop(b)
        union, leaves = ia | ib, la | lb
        kept = {i for i in union if i in network.output or not holders[i] <= leaves}
        channels = math.prod(network.indices[i].size for i in union if i not in GEOMETRY)
        if 0 not in leaves:
            out.append(math.prod(network.indices[i].size for i in union))
        else:
            summed = [i for i in ("k", "kh", "kw") if i in union and i not in kept]
            height = height or "k" in summed or "kh" in summed
            width = width or "k" in summed or "kw" in summed
            h = spec.output_size[0] if height else spec.input_size[0]
            w = spec.output_size[1] if width else spec.input_size[1]
            out.append(network.batch * h * w * channels * math.prod(network.indices[i].size for i in summed))
        live[nxt] = (kept, leaves)
        nxt += 1
    return out
