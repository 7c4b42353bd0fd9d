"""Which plans the fused kernel runs: a channel mixing of the input, the conv, a channel mixing, in one pass.

A plan is fusable when its feature-map steps are, in order, at most one mixing, exactly one conv over the
joint window and at most one mixing, none sharing an index with the map that both keep open (no hyperedge). The
conv sums every channel or rank index the map holds (the map is `[B, C, H, W]`, a plain matrix over channels). A
mixing either sums every one too, or is grouped: the input mixing sums the trailing input modes and keeps the
leading ones (`in_groups` blocks of channels, each mixed alike), the output mixing sums the conv's ranks and keeps
the trailing output modes, creating the leading ones (`out_groups` interleaved channels). That is the folded Tucker-2
shape of hodec's and tucker2's merged orders, and often of the searched best order; the grouped mixings are what
hodec's best orders leave when a boundary rank is smaller than the modes it joins.
`ttplan.runtime.lowering.fuse` lowers exactly these plans to one `ttplan::tucker_conv2d` call (tested).
`fusion_wanted` is the planning decision whether layers may run fused at all; whether a C compiler is found is a
probe of the machine (`ttplan.runtime.kernels.build.find_compiler`), which its caller makes and passes in.
Torch-free: the planner uses it to predict a fused layer's time.
"""

from __future__ import annotations

from dataclasses import dataclass

from ttplan.core.contraction import GEOMETRY, ContractionPlan, channel_product, leaf_operands, pair_cost
from ttplan.errors import TTPlanError

#: the fused kernel's register tile (rows x columns of a product it computes at once; `tucker.c`'s MR and NR)
TILE = (8, 32)
#: a mixing that sums at most this many channels per result channel runs thin, row by row, with no tile (`tucker.c`'s
#: THIN_K): exactly its MACs
THIN = 4
#: the feature-map step kinds a fusable plan may have, in order
SHAPES = (("conv",), ("feature", "conv"), ("conv", "feature"), ("feature", "conv", "feature"))


@dataclass(frozen=True)
class FusedForm:
    """A fusable plan's three products: `[R1, C]` mixing (r1 0: none), `[R2, R1 or C, k_h, k_w]` conv, `[O, R2]`
    mixing (o 0: none), at batch `batch`; a grouped mixing (`in_groups`, `out_groups` above 1) is `[R1/G, C/G]` applied
    to each of G blocks of channels, and `[O/J, R2/J]` to each of J interleaved ones (`ttplan.runtime.kernels`)."""

    batch: int
    c: int
    r1: int
    r2: int
    o: int
    window: int
    in_pixels: int
    out_pixels: int
    in_groups: int = 1
    out_groups: int = 1

    @property
    def out_channels(self) -> int:
        return self.o or self.r2

    @property
    def weight_elements(self) -> int:
        return self.r1 * self.c + self.r2 * (self.r1 or self.c) * self.window + self.o * self.r2

    @property
    def macs(self) -> int:
        """The three products' MACs: what the FLOP counter counts (halved)."""
        conv = self.batch * self.out_pixels * self.r2 * (self.r1 or self.c) * self.window
        return conv + self.batch * (self.in_pixels * self.r1 * self.c // self.in_groups
                                    + self.out_pixels * self.o * self.r2 // self.out_groups)

    @property
    def tile_macs(self) -> int:
        """The MACs the kernel's register tiles run: each product's rows and columns (pixels per image) rounded up
        to whole tiles, the padding computed and dropped; a thin mixing (at most `THIN` channels summed) runs exactly
        its MACs. What its time follows, for small maps in particular."""
        def up(n: int, to: int) -> int:
            return -(-n // to) * to

        rows, cols = TILE
        g, j = self.in_groups, self.out_groups
        conv = up(self.r2, rows) * (self.r1 or self.c) * self.window * up(self.out_pixels, cols)
        mix_in = (0 if not self.r1 else self.r1 * (self.c // g) * self.in_pixels if self.c // g <= THIN
                  else g * up(self.r1 // g, rows) * (self.c // g) * up(self.in_pixels, cols))
        mix_out = (0 if not self.o else self.o * (self.r2 // j) * self.out_pixels if self.r2 // j <= THIN
                   else up(self.o // j, rows) * (self.r2 // j) * up(j * self.out_pixels, cols))
        return self.batch * (conv + mix_in + mix_out)


def fused_form(plan: ContractionPlan) -> FusedForm | None:
    """The plan's three products if the fused kernel can run it (module docstring), else None."""
    net = plan.network
    spec = net.spec
    if spec.groups != 1 or spec.linear or spec.explicit_pad is not None:
        return None  # the kernel pads zeros symmetrically, as conv2d does
    ins, outs = net.in_modes, net.out_modes
    ops = dict(enumerate(leaf_operands(net)))
    steps = []  # (kind, channels of the result, product of the map's channels it keeps open)
    for step in plan.steps:
        a, b = ops.pop(step.left), ops.pop(step.right)
        cost = pair_cost(net, a, b)
        ops[step.result] = cost.result
        if cost.kind == "weight":
            continue
        fm, other = (a, b) if a.feature else (b, a)
        channels = fm.indices - GEOMETRY
        kept = channels & cost.result.indices
        if not channels - kept <= other.indices or kept & other.indices:
            return None  # an index the map holds that the other operand neither sums nor leaves alone: a hyperedge
        if kept:
            conv_seen = any(kind == "conv" for kind, _, _ in steps)
            new = (cost.result.indices - GEOMETRY) - kept
            if cost.kind == "conv":
                return None  # a map index left open through the conv: a grouped conv
            if not conv_seen and set(kept) != set(ins[: len(kept)]):
                return None  # the input mixing keeps the leading input modes open, or none
            if conv_seen and not (set(kept) == set(outs[len(outs) - len(kept):])
                                  and set(new) == set(outs[: len(outs) - len(kept)])):
                return None  # the output mixing keeps the trailing output modes open and creates the leading ones
        if cost.kind == "conv" and not ("k" in fm.indices and "k" in other.indices):
            return None  # one axis of a separable window
        steps.append((cost.kind, channel_product(net, cost.result.indices), channel_product(net, kept)))
    kinds = tuple(kind for kind, _, _ in steps)
    if kinds not in SHAPES:
        return None
    at = kinds.index("conv")
    before = steps[:at]
    after = steps[at + 1:]
    r1, in_groups = (before[0][1], before[0][2]) if before else (0, 1)
    o, out_groups = (spec.out_channels, after[0][2]) if after else (0, 1)
    return FusedForm(net.batch, spec.in_channels, r1, steps[at][1], o, spec.window, spec.in_pixels,
                     spec.out_pixels, in_groups, out_groups)


def fusion_wanted(fused: bool | None, channels_last: bool, compiler: bool) -> bool:
    """Whether planning may run layers by the fused kernel: as asked, else (None) wherever it can be built, i.e. for
    NCHW maps where a C compiler is found (`compiler`: the caller's probe, `find_compiler() is not None`). Nothing is
    compiled here: a failed build falls back to stock ops."""
    if fused and channels_last:
        raise TTPlanError("fused=True (--fuse) with channels_last=True (--channels-last): the fused kernel runs NCHW "
                          "maps; drop one of them")
    return (not channels_last and compiler) if fused is None else fused


__all__ = ["SHAPES", "THIN", "TILE", "FusedForm", "fused_form", "fusion_wanted"]
