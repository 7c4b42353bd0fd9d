"""Shared test helpers: seeded random layers and formats small enough for brute force."""

from __future__ import annotations

import math
import random

import pytest
import torch

from ttplan.core.formats import TTFormat, balanced_factors, get_format
from ttplan.core.spec import ConvSpec


def _split(n: int, d: int, rng: random.Random) -> tuple[int, ...]:
    """A random ordering of a balanced factorisation of n into d modes."""
    modes = list(balanced_factors(n, d))
    rng.shuffle(modes)
    return tuple(modes)


def random_layer(rng: random.Random, max_cores: int = 5) -> tuple[ConvSpec, TTFormat]:
    """A random small conv (stride, padding, dilation, non-square) and a random TT format for it."""
    while True:
        kh, kw = rng.choice([1, 2, 3]), rng.choice([1, 3, 5])
        dil = (rng.choice([1, 2]), 1)
        pad = (rng.randint(0, 2), rng.randint(0, 2))
        h = rng.randint(dil[0] * (kh - 1) + 1, 12)
        w = rng.randint(kw, 12)
        spec = ConvSpec.make(rng.choice([4, 6, 8, 12, 16]), rng.choice([4, 6, 8, 9, 16]), (kh, kw),
                             (rng.choice([1, 2]), rng.choice([1, 2, 3])), pad, dil, (h, w))
        kind = rng.choice(["classical", "hodec", "hodec"])
        if kind == "classical":
            d = rng.choice([1, 2])
            fmt = get_format("classical")(_split(spec.in_channels, d, rng), _split(spec.out_channels, d, rng), ())
        else:
            d, e = rng.choice([1, 2]), rng.choice([1, 2])
            fmt = get_format("hodec")(_split(spec.in_channels, d, rng), _split(spec.out_channels, e, rng), ())
        bounds = fmt.max_ranks(spec)
        if kind == "classical":
            ranks = tuple(rng.randint(1, max(1, min(b, 12))) for b in bounds[:-1]) + (1,)
        else:
            ranks = (1,) + tuple(rng.randint(2, max(2, min(b, 12))) if b > 1 else 1 for b in bounds[1:-1]) + (1,)
        fmt = fmt.with_ranks(ranks)
        cores = len(fmt.cores(spec))
        if cores <= max_cores and math.prod(fmt.in_modes) == spec.in_channels:
            fmt.validate(spec)
            return spec, fmt


def _missing(marker: str) -> str | None:
    """Why the tests marked `marker` cannot run here, or None where they can."""
    if marker == "requires_cuda":
        return None if torch.cuda.is_available() else "needs a CUDA device"
    from ttplan.runtime.kernels import kernel_status

    status = kernel_status()
    return None if status.available else f"needs the fused kernel built by a C compiler: {status.detail}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked `requires_cuda` or `requires_cc` where there is no CUDA device or no working C
    compiler (each checked once, and only if a collected test asks)."""
    for marker in ("requires_cuda", "requires_cc"):
        marked = [item for item in items if item.get_closest_marker(marker)]
        reason = _missing(marker) if marked else None
        for item in marked if reason else []:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One intra-op thread for the whole suite: tiny tensors run fastest so, and a busy machine cannot slow
    them by oversubscription; results do not depend on the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def keep_threads():
    """Put torch's thread count back after a test that changes it (`--threads`, `set_num_threads`)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_random_layer():
    """The `random_layer(rng, max_cores)` factory."""
    return random_layer


@pytest.fixture
def toy_format():
    """The `spatial-last` test format, registered for one test and forgotten after it."""
    from tests.helpers.toy_format import SpatialLastTT
    from ttplan.core.formats import register
    from ttplan.core.formats.registry import unregister

    register(SpatialLastTT)
    yield SpatialLastTT
    unregister(SpatialLastTT.name)
