"""The TT-matrix format (Novikov et al. 2015) for `nn.Linear`: `G_j[r_{j-1}, I_j, O_j, r_j]`, `r_0 = r_d = 1`.

The chain reads the weight as `[I_1·O_1, …, I_d·O_d]`; the 1x1 window folds into the last core.
"""

from __future__ import annotations

from ttplan.core.formats.base import CoreShape, TTFormat, paired_modes
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError


class TTMatrix(TTFormat):
    """One core per (input, output) mode pair, no window core: for linear layers and 1x1 convs."""

    name = "ttm"
    published_scheme = "ttm"
    linear = True
    paired = True

    def tt_shapes(self, spec: ConvSpec) -> tuple[int, ...]:
        """`[I_1·O_1, …, I_d·O_d]`."""
        return tuple(i * o for i, o in zip(self.in_modes, self.out_modes))

    def cores(self, spec: ConvSpec) -> tuple[CoreShape, ...]:
        """`G_j[r_{j-1}, I_j, O_j, r_j]`."""
        return tuple(self._paired_cores(spec))

    def _chain_axes(self, e: int, d: int) -> tuple[int, ...]:
        """`i_j, o_j` for each pair, then the 1x1 window (folded into the last core)."""
        return (*(ax for j in range(d) for ax in (e + j, j)), e + d, e + d + 1)

    def published_order(self) -> tuple[str, ...]:
        """The cores `G_1…G_d` one after another."""
        return tuple(f"G{j}" for j in range(1, len(self.in_modes) + 1))

    @classmethod
    def _default_modes(cls, spec, order, in_modes, out_modes):
        """Balanced modes, input modes descending, output modes ascending (both sides the same count)."""
        return paired_modes(spec, order, in_modes, out_modes)

    def validate_modes(self, spec: ConvSpec) -> None:
        """The shared mode checks, and a 1x1 window."""
        super().validate_modes(spec)
        if not spec.linear and spec.window != 1:
            raise TTPlanError(f"format='ttm' is for nn.Linear layers; this conv has a {spec.kernel_size} kernel")

    @classmethod
    def search_orders(cls, max_order: int) -> tuple[int, ...]:
        """Two to `max_order` mode pairs."""
        return tuple(range(2, max_order + 1))


__all__ = ["TTMatrix"]
