"""The classical TT format of a conv kernel (Garipov et al. 2016): the window core first, then paired cores.

Cores `S[k_h, k_w, r_0]`, `G_j[r_{j-1}, I_j, O_j, r_j]` with `r_d = 1`; ranks = (r_0, …, r_{d-1}, 1).
The chain reads the kernel as `[K, I_1·O_1, …, I_d·O_d]` (`i_j` major, `o_j` minor in each core).
"""

from __future__ import annotations

from ttplan.core.formats.base import CoreShape, TTFormat, paired_modes
from ttplan.core.spec import ConvSpec


class ClassicalTT(TTFormat):
    """Garipov et al.'s layout: `S` over the window, then one core per (input, output) mode pair."""

    name = "classical"
    published_scheme = "classical"
    paired = True
    rank_note = " (r_0..r_{d-1}, then 1)"

    def tt_shapes(self, spec: ConvSpec) -> tuple[int, ...]:
        """`[K, I_1·O_1, …, I_d·O_d]`."""
        return (spec.window, *(i * o for i, o in zip(self.in_modes, self.out_modes)))

    def cores(self, spec: ConvSpec) -> tuple[CoreShape, ...]:
        """`S[k_h, k_w, r_0]`, then `G_j[r_{j-1}, I_j, O_j, r_j]`."""
        kh, kw = spec.kernel_size
        index, axis = self._rank_axis(spec)(0)
        window = CoreShape("S", (kh, kw, self.ranks[0]), ("k", *index), ("kh", "kw", axis))
        return (window, *self._paired_cores(spec))

    def _stored(self, chain: tuple) -> tuple:
        """The chain's leading rank (before `S`) is always 1 and not stored."""
        return tuple(chain[1:])

    def _chain_ranks(self) -> tuple[int, ...]:
        return (1, *self.ranks)

    def _chain_axes(self, e: int, d: int) -> tuple[int, ...]:
        """`k_h, k_w`, then `i_j, o_j` for each pair."""
        return (e + d, e + d + 1, *(ax for j in range(d) for ax in (e + j, j)))

    def published_order(self) -> tuple[str, ...]:
        """Window first, then the channel cores left to right."""
        return ("S", *(f"G{j}" for j in range(1, len(self.in_modes) + 1)))

    @classmethod
    def _default_modes(cls, spec, order, in_modes, out_modes):
        """Balanced modes, large input modes first and large output modes last (both sides the same count)."""
        return paired_modes(spec, order, in_modes, out_modes)

    @classmethod
    def search_orders(cls, max_order: int) -> tuple[int, ...]:
        """Two to `max_order` mode pairs."""
        return tuple(range(2, max_order + 1))


__all__ = ["ClassicalTT"]
