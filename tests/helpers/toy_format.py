"""A format written the way a new one would be: one TTFormat subclass, registered by a test fixture.

`spatial-last` chains the output cores, then the input cores, then the window core last:
`B_j[r, O_j, r]`, `A_j[r, I_j, r]`, `C[r, k_h, k_w, 1]` over `W[o_1…o_e, i_1…i_d, k_h, k_w]` as it is.
Nothing outside this module and the registry knows about it.
"""

from __future__ import annotations

from ttplan.core.formats import CoreShape, TTFormat
from ttplan.core.spec import ConvSpec


class SpatialLastTT(TTFormat):
    """Output cores, input cores, then the window core, in one open chain."""

    name = "spatial-last"
    published_scheme = "spatial-last"

    def tt_shapes(self, spec: ConvSpec) -> tuple[int, ...]:
        return (*self.out_modes, *self.in_modes, spec.window)

    def cores(self, spec: ConvSpec) -> tuple[CoreShape, ...]:
        rank = self._rank_axis(spec)
        e, d = len(self.out_modes), len(self.in_modes)
        out = []
        for j, (letter, mode, size) in enumerate(
            [("B", f"o{n + 1}", m) for n, m in enumerate(self.out_modes)]
            + [("A", f"i{n + 1}", m) for n, m in enumerate(self.in_modes)]
        ):
            (left, la), (right, ra) = rank(j), rank(j + 1)
            number = j + 1 if letter == "B" else j - e + 1
            out.append(CoreShape(f"{letter}{number}", (self.ranks[j], size, self.ranks[j + 1]),
                                 (*left, mode, *right), (la, mode, ra)))
        (left, la), (right, ra) = rank(e + d), rank(e + d + 1)
        kh, kw = spec.kernel_size
        out.append(CoreShape("C", (self.ranks[e + d], kh, kw, 1), (*left, "k"), (la, "kh", "kw", ra)))
        return tuple(out)

    def _chain_axes(self, e: int, d: int) -> tuple[int, ...]:
        return tuple(range(e + d + 2))

    def published_order(self) -> tuple[str, ...]:
        """The window first, then the input cores from the far end, then the output cores."""
        d, e = len(self.in_modes), len(self.out_modes)
        return ("C", *(f"A{j}" for j in range(d, 0, -1)), *(f"B{j}" for j in range(e, 0, -1)))
