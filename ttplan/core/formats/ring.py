"""The tensor-ring format (Wang et al. 2018, "Wide compression: tensor ring nets"): hodec's cores closed into a ring.

Cores in the hodec layout `out_modes + [K] + in_modes`: `B_j[r, O_j, r]`, `C[r, k_h, k_w, r]`, `A_j[r, I_j, r]`,
with ranks `r_0, …, r_N` and `r_0 == r_N` the closing rank that joins `A_d` back to `B_1`. With a closing rank of
1 the ring is open and the network is exactly hodec's (same indices, costs and numerics); above 1 the closing
rank is one index `r0` held by `B_1` and `A_d`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ttplan.core.formats.hodec import HodecTT
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError


def ring_exact_ranks(shapes: tuple[int, ...], closing: int) -> tuple[int, ...]:
    """Ranks at which the ring SVD (`ttplan.runtime.decomposition`) reproduces any tensor of `shapes`.

    The first SVD has rank `q = min(n_1, n_2·…·n_N)`, split as `r_0 · r_1 >= q`; each later cut `t` needs
    `min(r_1 · n_2·…·n_t, n_{t+1}·…·n_N · r_0)`. With `closing = 1` these are TT-SVD's exact ranks.
    """
    q = min(shapes[0], math.prod(shapes[1:]))
    first = -(-q // closing)
    inner = [min(first * math.prod(shapes[1:t]), math.prod(shapes[t:]) * closing) for t in range(2, len(shapes))]
    return (closing, first, *inner, closing)


class TensorRingTT(HodecTT):
    """Hodec's cores `B_1…B_e, C, A_1…A_d` in a ring closed by the rank `r_0 == r_N`."""

    name = "tr"
    published_scheme = "tr"
    rank_note = " (r_0 == r_N, the closing rank)"
    bound_note = ("inside the ring the larger of hodec's bound and the exact ring rank; the closing rank the product "
                  "of the two modes it joins")

    @property
    def label(self) -> str:
        return "tr"

    @property
    def closing(self) -> int:
        """The closing rank `r_0` (1 when the ranks are not known yet)."""
        return self.ranks[0] if self.ranks else 1

    def _rank_axis(self, spec: ConvSpec) -> Callable[[int], tuple[tuple[str, ...], str]]:
        """Interior ranks as for hodec; both ends are the one index `r0`, absent when the closing rank is 1."""
        n = len(self.tt_shapes(spec))
        closed = self.closing > 1

        def rank(j: int) -> tuple[tuple[str, ...], str]:
            if j in (0, n):
                return (("r0",), "r0") if closed else ((), "1")
            return ((f"r{j}",), f"r{j}")

        return rank

    def free_positions(self, spec: ConvSpec) -> tuple[int, ...]:
        """Every rank is chosen, the closing one included (both ends hold it)."""
        return tuple(range(len(self.tt_shapes(spec)) + 1))

    def max_ranks(self, spec: ConvSpec) -> tuple[int, ...]:
        """Exact ring ranks at the balanced closing rank `⌈√q⌉` (`q` the first cut's rank; `ring_exact_ranks`)."""
        shapes = self.tt_shapes(spec)
        q = min(shapes[0], math.prod(shapes[1:]))
        return ring_exact_ranks(shapes, math.isqrt(q - 1) + 1)

    def rank_bounds(self, spec: ConvSpec) -> tuple[int, ...]:
        """Interior: the hodec bound, or the exact ring rank at this closing rank if larger; the closing rank:
        the product of the two modes it joins (`O_1 · I_d`)."""
        shapes = self.tt_shapes(spec)
        exact, near = self._cuts(spec)
        ring = ring_exact_ranks(shapes, self.closing)
        closing = shapes[0] * shapes[-1]
        inner = (max(a, b, c) for a, b, c in zip(exact, near, ring[1:-1]))
        return (closing, *inner, closing)

    def validate_ranks(self, spec: ConvSpec) -> None:
        """The per-position checks, and the ring closes: `r_0 == r_N`."""
        super().validate_ranks(spec)
        if self.ranks[0] != self.ranks[-1]:
            raise TTPlanError(
                f"ranks={list(self.ranks)}: a tensor ring closes on itself, so r_0 ({self.ranks[0]}) must equal "
                f"r_N ({self.ranks[-1]})"
            )

    def published_order(self) -> tuple[str | tuple[str, ...], ...]:
        """Wang et al.: the input cores merged, into the input at H×W; the conv with `C`; the output cores merged."""
        d, e = len(self.in_modes), len(self.out_modes)
        inputs = tuple(f"A{j}" for j in range(1, d + 1))
        outputs = tuple(f"B{j}" for j in range(1, e + 1))
        return (inputs if d > 1 else inputs[0], "C", outputs if e > 1 else outputs[0])


__all__ = ["TensorRingTT", "ring_exact_ranks"]
