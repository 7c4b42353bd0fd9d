"""Random ordered factorisations of channel counts into modes, for the random layer cases (torch-free)."""

from __future__ import annotations

import random


def random_factors(n: int, parts: int, rng: random.Random) -> tuple[int, ...]:
    """A random ordered factorisation of `n` into `parts` factors (a factor of 1 is allowed)."""
    divisors = [q for q in range(1, n + 1) if n % q == 0]
    out = []
    for _ in range(parts - 1):
        q = rng.choice(divisors)
        out.append(q)
        n //= q
        divisors = [v for v in range(1, n + 1) if n % v == 0]
    return (*out, n)
