"""Which plans the fused kernel runs: a channel mixing of the input, the conv, a channel mixing, in one pass.

A plan is fusable when its feature-map steps are, in order, at most one mixing, exactly one conv over the
joint window and at most one mixing, each summing every channel or rank index the map holds (so the map is
`[B, C, H, W]` before each, a plain matrix over channels) and keeping none of them open (no hyperedge).
That is the folded Tucker-2 shape of hodec's and tucker2's merged orders, and often of the searched best order.
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
#: the feature-map step kinds a fusable plan may have, in order
SHAPES = (("conv",), ("feature", "conv"), ("conv", "feature"), ("feature", "conv", "feature"))


@dataclass(frozen=True)
class FusedForm:
    """A fusable plan's three products: `[R1, C]` mixing (r1 0: none), `[R2, R1 or C, k_h, k_w]` conv, `[O, R2]`
    mixing (o 0: none), at batch `batch`."""

    batch: int
    c: int
    r1: int
    r2: int
    o: int
    window: int
    in_pixels: int
    out_pixels: int

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
        return conv + self.batch * (self.in_pixels * self.r1 * self.c + self.out_pixels * self.o * self.r2)

    @property
    def tile_macs(self) -> int:
        """The MACs the kernel's register tiles run: each product's rows and columns (pixels per image) rounded up
        to whole tiles, the padding computed and dropped. What its time follows, for small maps in particular."""
        def up(n: int, to: int) -> int:
            return -(-n // to) * to

        rows, cols = TILE
        conv = up(self.r2, rows) * (self.r1 or self.c) * self.window * up(self.out_pixels, cols)
        mix_in = up(self.r1, rows) * self.c * up(self.in_pixels, cols) if self.r1 else 0
        mix_out = up(self.o, rows) * self.r2 * up(self.out_pixels, cols) if self.o else 0
        return self.batch * (conv + mix_in + mix_out)


def fused_form(plan: ContractionPlan) -> FusedForm | None:
    """The plan's three products if the fused kernel can run it (module docstring), else None."""
    net = plan.network
    spec = net.spec
    if spec.groups != 1 or spec.linear or spec.explicit_pad is not None:
        return None  # the kernel pads zeros symmetrically, as conv2d does
    ops = dict(enumerate(leaf_operands(net)))
    steps = []
    for step in plan.steps:
        a, b = ops.pop(step.left), ops.pop(step.right)
        cost = pair_cost(net, a, b)
        ops[step.result] = cost.result
        if cost.kind == "weight":
            continue
        fm, other = (a, b) if a.feature else (b, a)
        channels = fm.indices - GEOMETRY
        if not channels <= other.indices or channels & cost.result.indices:
            return None  # a map index left open: the map is not [B, C, H, W] for this product
        if cost.kind == "conv" and not ("k" in fm.indices and "k" in other.indices):
            return None  # one axis of a separable window
        steps.append((cost.kind, channel_product(net, cost.result.indices)))
    kinds = tuple(kind for kind, _ in steps)
    if kinds not in SHAPES:
        return None
    sizes = dict(steps[: kinds.index("conv")] + [("conv", steps[kinds.index("conv")][1])])
    r1 = sizes.get("feature", 0)
    o = spec.out_channels if kinds[-1] == "feature" else 0
    return FusedForm(net.batch, spec.in_channels, r1, sizes["conv"], o, spec.window, spec.in_pixels,
                     spec.out_pixels)


def fusion_wanted(fused: bool | None, channels_last: bool, compiler: bool) -> bool:
    """Whether planning may run layers by the fused kernel: as asked, else (None) wherever it can be built, i.e. for
    NCHW maps where a C compiler is found (`compiler`: the caller's probe, `find_compiler() is not None`). Nothing is
    compiled here: a failed build falls back to stock ops."""
    if fused and channels_last:
        raise TTPlanError("fused=True (--fuse) with channels_last=True (--channels-last): the fused kernel runs NCHW "
                          "maps; drop one of them")
    return (not channels_last and compiler) if fused is None else fused


__all__ = ["SHAPES", "TILE", "FusedForm", "fused_form", "fusion_wanted"]
