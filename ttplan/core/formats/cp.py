"""The CP format (Lebedev et al. 2015): `K[o, i, h, w] = Σ_r U_o[o, r] · U_i[i, r] · U_s[(h, w), r]`.

Factors in the order `B_1…B_e` (output modes, `[O_j, R]`), the window factor `C` (`[k_h, k_w, R]`), `A_1…A_d`
(input modes, `[I_j, R]`): with more than one mode a side it is the CP of the reshaped kernel. Every factor holds
the one rank index `r`, a hyperedge of the network: it stays open until the last factor is absorbed, and a step
that keeps it runs once per rank (the window factor's step is a depthwise conv over R channels). `ranks` is `(R,)`.

CP is not an exact projection: `ttplan.runtime.decomposition` fits it by ALS and reports the error.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ttplan.core.formats.base import CoreShape, FactorLayout, TTFormat
from ttplan.core.formats.hodec import split_tt_shapes
from ttplan.core.spec import ConvSpec

#: the name of the rank index every CP factor holds
RANK = "r"


class CPFormat(TTFormat):
    """One factor per output mode, the window factor, one per input mode, all joined by the rank `r`."""

    name = "cp"
    published_scheme = "cp"
    family = "cp"
    spatial = "joint"
    rank_note = " (one rank R, shared by every factor)"
    bound_note = "the product of every factor's size but the largest"
    tt_shapes_spelling = True

    def tt_shapes(self, spec: ConvSpec) -> tuple[int, ...]:
        """The factors' mode sizes in order: `out_modes + [K] + in_modes`."""
        return (*self.out_modes, spec.window, *self.in_modes)

    @property
    def rank(self) -> int:
        """The CP rank R."""
        return self.ranks[0]

    def cores(self, spec: ConvSpec) -> tuple[CoreShape, ...]:
        """`B_j[O_j, R]`, `C[k_h, k_w, R]`, `A_j[I_j, R]`, each holding the rank index `r`."""
        kh, kw = spec.kernel_size
        rank = self.ranks[0] if self.ranks else 1
        out = [CoreShape(f"B{j + 1}", (m, rank), (f"o{j + 1}", RANK), (f"o{j + 1}", RANK))
               for j, m in enumerate(self.out_modes)]
        out.append(CoreShape("C", (kh, kw, rank), ("k", RANK), ("kh", "kw", RANK)))
        out += [CoreShape(f"A{j + 1}", (m, rank), (f"i{j + 1}", RANK), (f"i{j + 1}", RANK))
                for j, m in enumerate(self.in_modes)]
        return tuple(out)

    def rank_size(self, index: str) -> int:
        return self.ranks[0]

    def _stored(self, chain: tuple) -> tuple:
        return (chain[0],)

    def free_positions(self, spec: ConvSpec) -> tuple[int, ...]:
        return (0,)

    def fill_ranks(self, spec: ConvSpec, choose: Callable[[int], int]) -> tuple[int, ...]:
        return (choose(0),)

    def max_ranks(self, spec: ConvSpec) -> tuple[int, ...]:
        """The rank at which the factors hold as many parameters as the dense kernel (within `rank_bounds`).

        CP has no exact rank to compute (nor an exact projection); this is the scale policies and budgets take
        fractions of: a fraction f of it keeps about f of the kernel's parameters.
        """
        shapes = self.tt_shapes(spec)
        return (min(self.rank_bounds(spec)[0], -(-math.prod(shapes) // sum(shapes))),)

    def rank_bounds(self, spec: ConvSpec) -> tuple[int, ...]:
        """The generic bound on a CP rank: the product of every factor size but the largest."""
        shapes = self.tt_shapes(spec)
        return (math.prod(shapes) // max(shapes),)

    def _chain_axes(self, e: int, d: int) -> tuple[int, ...]:
        """`o_1…o_e, k_h, k_w, i_1…i_d`: the factors' order."""
        return (*range(e), e + d, e + d + 1, *(e + j for j in range(d)))

    def kernel_layout(self, spec: ConvSpec) -> FactorLayout:
        """The kernel as factors on one rank: each factor's axes of `W[o…, i…, k_h, k_w]` and its size."""
        kh, kw = spec.kernel_size
        e, d = len(self.out_modes), len(self.in_modes)
        groups = (*((j,) for j in range(e)), (e + d, e + d + 1), *((e + j,) for j in range(d)))
        return FactorLayout((*self.out_modes, *self.in_modes, kh, kw), groups, self.tt_shapes(spec), self.rank)

    def published_order(self) -> tuple[str | tuple[str, ...], ...]:
        """Lebedev et al.: a 1×1 conv to R channels (the input factors merged), the depthwise conv with `C`, a
        1×1 conv to the outputs (the output factors merged)."""
        d, e = len(self.in_modes), len(self.out_modes)
        inputs = tuple(f"A{j}" for j in range(1, d + 1))
        outputs = tuple(f"B{j}" for j in range(1, e + 1))
        return (inputs if d > 1 else inputs[0], "C", outputs if e > 1 else outputs[0])

    @classmethod
    def _from_tt_shapes(cls, spec: ConvSpec, tt_shapes: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return split_tt_shapes(spec, tt_shapes)

    @classmethod
    def _default_modes(cls, spec, order, in_modes, out_modes):
        """One mode a side (the plain CP of `[O, I, K]`) unless an order or modes are given."""
        return super()._default_modes(spec, order or (None if in_modes or out_modes else 1), in_modes, out_modes)

    def describe(self, spec: ConvSpec) -> str:
        return f"{self.label} R={self.rank} {'·'.join(map(str, self.tt_shapes(spec)))}"


class SeparableCP(CPFormat):
    """CP with the window split as Lebedev et al. do: `C_h[k_h, R]` and `C_w[k_w, R]`, run as a depthwise `k_h×1`
    conv then a depthwise `1×k_w` conv (the window indices `kh` and `kw`, each with its axis's stride)."""

    name = "cp-separable"
    spatial = "separable"
    tt_shapes_spelling = False

    def tt_shapes(self, spec: ConvSpec) -> tuple[int, ...]:
        """The factors' mode sizes in order: `out_modes + [k_h, k_w] + in_modes`."""
        return (*self.out_modes, *spec.kernel_size, *self.in_modes)

    def cores(self, spec: ConvSpec) -> tuple[CoreShape, ...]:
        """`B_j[O_j, R]`, `Ch[k_h, R]`, `Cw[k_w, R]`, `A_j[I_j, R]`, each holding the rank index `r`."""
        joint = super().cores(spec)
        e = len(self.out_modes)
        kh, kw = spec.kernel_size
        rank = self.ranks[0] if self.ranks else 1
        window = (CoreShape("Ch", (kh, rank), ("kh", RANK), ("kh", RANK)),
                  CoreShape("Cw", (kw, rank), ("kw", RANK), ("kw", RANK)))
        return (*joint[:e], *window, *joint[e + 1:])

    def kernel_layout(self, spec: ConvSpec) -> FactorLayout:
        """One factor per output mode, `k_h`, `k_w` and input mode."""
        kh, kw = spec.kernel_size
        e, d = len(self.out_modes), len(self.in_modes)
        groups = (*((j,) for j in range(e)), (e + d,), (e + d + 1,), *((e + j,) for j in range(d)))
        return FactorLayout((*self.out_modes, *self.in_modes, kh, kw), groups, self.tt_shapes(spec), self.rank)

    def published_order(self) -> tuple[str | tuple[str, ...], ...]:
        """Lebedev et al.: the input factors merged, the depthwise `k_h×1` and `1×k_w` convs, the output factors."""
        inputs, _, outputs = super().published_order()
        return (inputs, "Ch", "Cw", outputs)


__all__ = ["RANK", "CPFormat", "SeparableCP"]
