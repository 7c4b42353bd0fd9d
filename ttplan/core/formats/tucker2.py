"""Tucker-2 as a TT format: hodec with exactly one input and one output mode, `B[1, O, r]`, `C`, `A[r, I, 1]`."""

from __future__ import annotations

from ttplan.core.formats.hodec import HodecTT
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError


class Tucker2TT(HodecTT):
    """Numerically hodec with one mode a side (and equal to that hodec format); its own name and checks."""

    name = "tucker2"

    @property
    def label(self) -> str:
        return "tucker2"

    @classmethod
    def _default_modes(cls, spec, order, in_modes, out_modes):
        """One mode a side: the channel counts themselves."""
        if order not in (None, 1):
            raise TTPlanError(f"order={order}: tucker2 has exactly one mode a side")
        return super()._default_modes(spec, 1, in_modes, out_modes)

    def validate_modes(self, spec: ConvSpec) -> None:
        """hodec's checks, and exactly one mode a side."""
        super().validate_modes(spec)
        if len(self.in_modes) != 1 or len(self.out_modes) != 1:
            raise TTPlanError(
                f"format='tucker2' takes one input and one output mode, got in_modes={list(self.in_modes)}, "
                f"out_modes={list(self.out_modes)}"
            )

    @classmethod
    def search_orders(cls, max_order: int) -> tuple[int, ...]:
        """One mode a side only."""
        return (1,)


__all__ = ["Tucker2TT"]
