"""Channel modes: split a channel count into balanced factors (the default modes of every format)."""

from __future__ import annotations

import math

from ttplan.errors import TTPlanError

DEFAULT_ORDER = 3  # modes per side when none are given


def balanced_factors(n: int, d: int) -> tuple[int, ...]:
    """Factor `n` into `d` factors > 1 as equal as possible (smallest spread of logs), descending.

    Descending matters for the classical format: large input modes first, large output modes last
    (see `default_modes`).
    """
    if d < 1:
        raise TTPlanError(f"order={d}: expected at least 1 mode")
    if d == 1:
        return (n,)
    primes: list[int] = []
    m, p = n, 2
    while p * p <= m:
        while m % p == 0:
            primes.append(p)
            m //= p
        p += 1
    if m > 1:
        primes.append(m)
    if len(primes) < d:
        raise TTPlanError(
            f"order={d}: {n} = {'·'.join(map(str, primes)) or '1'} cannot be split into {d} modes > 1; "
            f"use an order of at most {max(len(primes), 1)} or give the modes explicitly"
        )
    best: tuple[float, tuple[int, ...]] | None = None
    divisors = [q for q in range(2, n + 1) if n % q == 0]
    target = math.log(n) / d

    def search(rest: int, k: int, lo: int, acc: tuple[int, ...]) -> None:
        nonlocal best
        if k == 1:
            if rest >= lo:
                cand = (*acc, rest)
                spread = sum((math.log(f) - target) ** 2 for f in cand)
                if best is None or spread < best[0]:
                    best = (spread, cand)
            return
        for q in divisors:
            if q < lo:
                continue
            if q ** k > rest:
                break
            if rest % q == 0:
                search(rest // q, k - 1, q, (*acc, q))

    search(n, d, 2, ())
    assert best is not None
    return tuple(sorted(best[1], reverse=True))


__all__ = ["DEFAULT_ORDER", "balanced_factors"]
