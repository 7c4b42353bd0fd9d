"""The hodec TT format: output-mode cores, the spatial core in the middle, input-mode cores.

Cores in the published order `out_modes + [K] + in_modes`: `B_j[r, O_j, r]`, `C[r, k_h, k_w, r]`,
`A_j[r, I_j, r]`; ranks of length `len(tt_shapes)+1` with 1 at both ends. With one mode a side it is
Tucker-2 (`tucker2.py` names that case as a format of its own; the two compare equal).
"""

from __future__ import annotations

import math

from ttplan.core.formats.base import CoreShape, TTFormat
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError


def split_tt_shapes(spec: ConvSpec, tt_shapes: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Read the published style `tt_shapes = out_modes + [K] + in_modes`: (in_modes, out_modes)."""
    for p, size in enumerate(tt_shapes):
        if (
            size == spec.window
            and math.prod(tt_shapes[:p]) == spec.out_channels
            and math.prod(tt_shapes[p + 1 :]) == spec.in_channels
            and p > 0
            and p < len(tt_shapes) - 1
        ):
            return tuple(tt_shapes[p + 1 :]), tuple(tt_shapes[:p])
    raise TTPlanError(
        f"tt_shapes={list(tt_shapes)}: expected out_modes + [{spec.window}] + in_modes with products "
        f"{spec.out_channels} and {spec.in_channels} (e.g. out modes of {spec.out_channels}, then "
        f"{spec.window}, then in modes of {spec.in_channels})"
    )


class HodecTT(TTFormat):
    """Output cores `B_1…B_e`, the window core `C`, input cores `A_1…A_d`, in one open chain."""

    name = "hodec"
    published_scheme = "hodec"
    tt_shapes_spelling = True

    @property
    def label(self) -> str:
        """`tucker2` with one mode a side, else `hodec`."""
        return "tucker2" if len(self.in_modes) == 1 and len(self.out_modes) == 1 else "hodec"

    def tt_shapes(self, spec: ConvSpec) -> tuple[int, ...]:
        """`out_modes + [K] + in_modes`."""
        return (*self.out_modes, spec.window, *self.in_modes)

    def cores(self, spec: ConvSpec) -> tuple[CoreShape, ...]:
        """`B_j[r, O_j, r]`, `C[r, k_h, k_w, r]`, `A_j[r, I_j, r]`."""
        kh, kw = spec.kernel_size
        rank = self._rank_axis(spec)
        e = len(self.out_modes)
        out: list[CoreShape] = []
        for j in range(e):
            (left, la), (right, ra) = rank(j), rank(j + 1)
            out.append(CoreShape(f"B{j + 1}", (self.ranks[j], self.out_modes[j], self.ranks[j + 1]),
                                 (*left, f"o{j + 1}", *right), (la, f"o{j + 1}", ra)))
        (left, la), (right, ra) = rank(e), rank(e + 1)
        out.append(CoreShape("C", (self.ranks[e], kh, kw, self.ranks[e + 1]), (*left, "k", *right),
                             (la, "kh", "kw", ra)))
        for j in range(len(self.in_modes)):
            t = e + 1 + j
            (left, la), (right, ra) = rank(t), rank(t + 1)
            out.append(CoreShape(f"A{j + 1}", (self.ranks[t], self.in_modes[j], self.ranks[t + 1]),
                                 (*left, f"i{j + 1}", *right), (la, f"i{j + 1}", ra)))
        return tuple(out)

    def _chain_axes(self, e: int, d: int) -> tuple[int, ...]:
        """`o_1…o_e, k_h, k_w, i_1…i_d`: the published `tt_shapes` order."""
        return (*range(e), e + d, e + d + 1, *(e + j for j in range(d)))

    def published_order(self) -> tuple[str, ...]:
        """`A_d…A_1` into the input at H×W, one conv with `C`, then `B_e…B_1` at H'×W'."""
        d, e = len(self.in_modes), len(self.out_modes)
        return (*(f"A{j}" for j in range(d, 0, -1)), "C", *(f"B{j}" for j in range(e, 0, -1)))

    @classmethod
    def _from_tt_shapes(cls, spec: ConvSpec, tt_shapes: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return split_tt_shapes(spec, tt_shapes)

    def to_config(self, spec: ConvSpec) -> dict:
        """The published `tt_shapes` + `ranks` spelling."""
        return {"format": self.label, "tt_shapes": list(self.tt_shapes(spec)), "ranks": list(self.ranks)}

    def describe(self, spec: ConvSpec) -> str:
        """`hodec 4·8·8·9·4·4·8`: the label and the tt_shapes."""
        return f"{self.label} {'·'.join(map(str, self.tt_shapes(spec)))}"


def hodec_from_tt_shapes(spec: ConvSpec, tt_shapes: tuple[int, ...], ranks: tuple[int, ...]) -> HodecTT:
    """The hodec format of the published spelling `tt_shapes = out_modes + [K] + in_modes` and `ranks`."""
    in_modes, out_modes = split_tt_shapes(spec, tuple(tt_shapes))
    return HodecTT(in_modes, out_modes, tuple(ranks))


__all__ = ["HodecTT", "hodec_from_tt_shapes", "split_tt_shapes"]
