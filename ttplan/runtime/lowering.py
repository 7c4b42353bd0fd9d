"""Run a contraction plan on tensors: each step lowered once to explicit reshapes, `mm`/`bmm` and one `conv2d`.

`lower(plan)` turns a `ContractionPlan` into a `Program`: a short list of instructions on named
tensors with every layout decided up front. The interpreter here (`fold`, `run_feature_steps`,
`run_plan`) and the code generator (`ttplan.runtime.codegen`) both walk that one program, so a step runs the
same way in `TTConv2d` and in generated code, and each step is exactly one matrix product or one
convolution (what `torch.utils.flop_counter` counts):

- a feature-map step is `mm` (`[M, K] @ [K, N]`) or `bmm` with the weight broadcast over the batch
  part of the feature map, whichever needs no copy of the feature map; if the contracted indices are
  not adjacent in the feature map, it is permuted once so that they are. With `Lowering(mix="conv")`
  a step on a map laid out `[b, K, s]` (a pure channel mixing) runs as a 1x1 `conv2d` instead, which
  oneDNN/cuDNN often run faster, especially on channels-last maps;
- with `Lowering(channels_last=True)` the map is NHWC throughout: `(b, s, …)` in memory, so a channel mixing
  is one `mm` over all pixels (`[B·H·W, K] @ [K, N]`), the conv reads and writes channels-last tensors
  (views, no copies) and the output is a channels-last `[B, O, H', W']`, as a channels-last model expects;
- the conv step is one `torch.nn.functional.conv2d` with the layer's stride, padding and dilation (padding that
  conv2d cannot do -- torch's `'same'` for an even window, a `padding_mode` other than zeros -- is one `F.pad` of
  the map right before it, as `nn.Conv2d` pads its input: a channel mixing commutes with padding, so it is exact):
  input channels = the indices both operands share, batch = B x the feature map's other indices,
  output channels = the weight operand's other indices;
- a weight-only step (core with core) is one `mm` or `bmm` likewise; an outer product is a product with K = 1;
- an index both operands hold and keep open (a hyperedge rank, CP) is a batch axis of both: one `bmm` over it,
  or for the conv step a grouped conv (depthwise over the rank).
- the weight operand of every feature-map step is laid out (reshaped and permuted) among the weight-only
  instructions, so with folded weights that copy happens once at load, not in every forward.

Feature maps are tensors whose axes follow an index order (each `MatMul`/`Conv` records its result's): `b`, the
channel/rank indices, and `s` (H·W flattened, split into `h`, `w` only for the conv). The input
`[B, I, H, W]` is `(b, i_1…i_d, s)` as it lies in memory (docs/conventions.md: channels split row-major), or
`(b, s, i_1…i_d)` with `channels_last`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ttplan.core.contraction import WINDOWS, ContractionPlan
from ttplan.core.network import index_order
from ttplan.errors import TTPlanError
from ttplan.runtime.epilogue import epilogue
from ttplan.runtime.kernels.frozen import FrozenTucker
from ttplan.runtime.kernels.tucker import capturing, fused_available, tucker_conv2d

#: name of the input feature map in a program
INPUT = "x"
#: symbolic sizes filled in at run time from the input (b = batch, h/w = current map, s = h·w)
RUNTIME = ("b", "h", "w", "s")


#: how a channel-mixing feature-map step runs: `bmm`/`mm` on a view, or a 1x1 `conv2d`
MIXES = ("bmm", "conv")


@dataclass(frozen=True)
class Lowering:
    """Choices of op and memory layout that keep the same steps and MACs: how channel mixings run and
    whether the feature map is kept channels-last (NHWC in memory from input to output)."""

    mix: str = "bmm"
    channels_last: bool = False
    fused: bool = False
    #: with `fused`: keep the fused op `ttplan::tucker_conv2d` where torch.jit.trace or torch.export (and so ONNX
    #: export) capture the layer, so the captured model needs ttplan at run time; by default they capture stock ops
    export_fused: bool = False

    def __post_init__(self) -> None:
        if self.mix not in MIXES:
            raise TTPlanError(f"mix={self.mix!r}: expected one of {', '.join(MIXES)}")
        if self.fused and self.channels_last:
            raise TTPlanError("fused=True with channels_last=True: the fused kernel reads and writes NCHW maps; "
                              "expected fused=False for channels-last maps")
        if self.export_fused and not self.fused:
            raise TTPlanError("export_fused=True without fused=True: only a fused layer has a fused op to export")

    @property
    def label(self) -> str:
        return self.mix + ("+nhwc" if self.channels_last else "") + ("+fused" if self.fused else "")


def default_lowering(channels_last: bool = False, fused: bool = False) -> Lowering:
    """The lowering a layer runs unless autotune measured another: bmm mixings on NCHW maps (or the fused kernel),
    1x1-conv mixings on NHWC maps. On NHWC maps a mixing sums the last indices of every pixel, thin products (K and
    N of 2-8 per pixel group in ResNet-18's default plans) that oneDNN's 1x1 conv on the channels-last view ran
    faster than `mm` on the development machine with two threads (not always with one: `ttplan bench lowerings`
    measures both on yours)."""
    return Lowering("conv" if channels_last else "bmm", channels_last, fused)


#: every lowering, for autotuning: each mix on NCHW and NHWC maps, and the fused kernel (NCHW)
LOWERINGS = (*(Lowering(mix, last) for mix in MIXES for last in (False, True)), Lowering(fused=True))
#: the lowerings of each memory format: NCHW maps, or channels-last (NHWC) maps from input to output
NCHW_LOWERINGS = tuple(lowering for lowering in LOWERINGS if not lowering.channels_last)
NHWC_LOWERINGS = tuple(lowering for lowering in LOWERINGS if lowering.channels_last)


@dataclass(frozen=True)
class Reshape:
    """`out = src.reshape(src_layout sizes).permute(perm).reshape(groups)`; then `.permute(after)` if given.

    `groups` lists, per output axis, the indices merged into it (an empty group is an axis of 1);
    `contiguous`: the result is made contiguous (weights prepared for a feature-map product).
    """

    step: int
    out: str
    src: str
    src_layout: tuple[str, ...]
    perm: tuple[int, ...] | None
    groups: tuple[tuple[str, ...], ...]
    after: tuple[int, ...] | None = None
    contiguous: bool = False


@dataclass(frozen=True)
class MatMul:
    """`out = left @ right` as one `mm`, or as one `bmm` with `left` ([N, K]) broadcast over `batch`; with
    `shared`, one `bmm` of `left` [G, N, K] and `right` [G, K, Q] (a rank both keep open: a hyperedge).

    `layout` is the index order of the result's axes once unflattened. `conv1x1`: run as
    `conv2d(right [B, K, H, W], left [N, K, 1, 1])` instead (the same products, counted the same);
    `nhwc`: that conv's channels-last result is kept as its `[B, H, W, N]` view.
    """

    step: int
    out: str
    left: str
    right: str
    layout: tuple[str, ...]
    batch: tuple[str, ...] | None = None
    shared: bool = False
    conv1x1: bool = False
    nhwc: bool = False


@dataclass(frozen=True)
class Conv:
    """`out = conv2d(src, weight)` with the layer's stride, padding and dilation; the map becomes H'×W'.

    `groups` are the indices both operands keep open (a hyperedge rank): a grouped conv, depthwise when the
    window factor holds nothing else. `axes` says which map axes (height, width) the window covers: a separable
    window's `k_h×1` conv has stride, padding and dilation 1, 0, 1 along the width, and the `1×k_w` conv likewise.
    `nhwc`: the source is a channels-last view and the result is kept as its `[B, H', W', C']` view.
    """

    step: int
    out: str
    src: str
    weight: str
    layout: tuple[str, ...]
    groups: tuple[str, ...] = ()
    axes: tuple[bool, bool] = (True, True)
    nhwc: bool = False


@dataclass(frozen=True)
class Fused:
    """The feature-map steps `parts` -- a channel mixing of the input (`mix_in`), the conv (`weight`) and a channel
    mixing (`mix_out`), either mixing possibly absent -- as one `ttplan::tucker_conv2d` call, one pass per image
    (`ttplan.runtime.kernels`), where that kernel may run; elsewhere `parts` run as they are. Same MACs either way.
    """

    step: int
    out: str
    src: str
    mix_in: str | None
    weight: str
    mix_out: str | None
    layout: tuple[str, ...]
    parts: tuple[Reshape | MatMul | Conv, ...]
    #: the mixings' groups (`tucker_conv2d`'s `in_groups`, `out_groups`): blocks of input channels `mix_in` mixes alike
    #: (the leading input modes it keeps open), interleaved conv channels `mix_out` mixes alike (the trailing output
    #: modes it keeps open)
    in_groups: int = 1
    out_groups: int = 1


Instruction = Reshape | MatMul | Conv | Fused


@dataclass(frozen=True)
class Program:
    """A plan lowered to instructions: weight-only ones (`fold`) and feature-map ones (`forward`).

    `cores`: parameter names in `fmt.cores(spec)` order (the leaves); `folded`: the names the
    feature instructions read besides the input, i.e. what `fold` returns; `output`: the result's name;
    `sizes`: the size of every channel, rank and window index (`kh`, `kw` too).
    """

    plan: ContractionPlan
    cores: tuple[str, ...]
    weight: tuple[Instruction, ...]
    feature: tuple[Instruction, ...]
    folded: tuple[str, ...]
    output: str
    sizes: dict[str, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    lowering: Lowering = Lowering()
    #: `F.pad`'s (left, right, top, bottom) before the conv where conv2d cannot pad as the layer does, in `pad_mode`
    pad: tuple[int, int, int, int] | None = None
    pad_mode: str = "constant"


def _contiguous_block(order: tuple[str, ...], block: set[str]) -> tuple[int, int] | None:
    """(start, end) if the indices of `block` sit next to each other in `order`, else None."""
    where = [n for n, name in enumerate(order) if name in block]
    if not where:
        return (len(order), len(order))
    if where[-1] - where[0] + 1 != len(where):
        return None
    return (where[0], where[-1] + 1)


class _Lowering:
    """Walks the plan's steps and records instructions and the index order of every tensor.

    Layouts are chosen so that copies are rare: the feature map keeps its order while the indices a
    step sums are adjacent in it; a weight's new indices go where they will be summed soonest; when
    the feature map must be permuted (or enters the conv, where it is smallest), its other indices are
    ordered so that those summed soonest end up next to the new ones.
    """

    def __init__(self, plan: ContractionPlan, lowering: Lowering, summed_first: bool = False) -> None:
        net = plan.network
        self.plan = plan
        self.lowering = lowering
        self.summed_first = summed_first
        self.nhwc = lowering.channels_last
        self.sizes = {name: idx.size for name, idx in net.indices.items() if name not in ("b", "s")}
        self.sizes.update(kh=net.spec.kernel_size[0], kw=net.spec.kernel_size[1])
        self.layouts: dict[str, tuple[str, ...]] = {}
        self.names: dict[int, str] = {}
        self.weight: list[Instruction] = []
        self.feature: list[Instruction] = []
        self.at = plan.contracted_at()
        self.partners: dict[int, set[str]] = {}
        for name, number in self.at.items():
            self.partners.setdefault(number, set()).add(name)
        in_modes = net.in_modes
        self.names[0] = INPUT
        self.layouts[INPUT] = ("b", "s", *in_modes) if self.nhwc else ("b", *in_modes, "s")
        for n, tensor in enumerate(net.tensors[1:], start=1):
            self.names[n] = tensor.name
            self.layouts[tensor.name] = tensor.indices

    def _soonest_last(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """`names` with those never summed first (in their order), then by the step that sums them, latest first."""
        never = len(self.plan.steps) + 1
        return tuple(sorted(names, key=lambda i: -self.at.get(i, never)))

    def _arrange(self, new: tuple[str, ...], before: tuple[str, ...], tail: bool = False) -> tuple[str, ...]:
        """Order the indices a product creates, which land right after `before`: those summed together with one
        of `before` first (they will be adjacent to it), then the never-summed ones in index order, then the rest;
        with `summed_first`, the rest (soonest summed first) before the never-summed ones, so that a later product
        puts what it creates where they were (an output mode ahead of the others, say).

        `tail`: they land at the end of an NHWC map, where a product sums the last indices: the soonest summed
        go last (after the never-summed ones, or with `summed_first` before them, latest first)."""
        never = sorted((i for i in new if i not in self.at), key=index_order)
        if tail:
            summed = sorted((i for i in new if i in self.at), key=lambda i: -self.at[i])
            return (*summed, *never) if self.summed_first else (*never, *summed)
        near = [i for i in new if i in self.at and self.partners[self.at[i]] & set(before)]
        rest = [i for i in new if i in self.at and i not in near]
        if self.summed_first:
            return (*near, *sorted(rest, key=lambda i: self.at[i]), *never)
        return (*near, *never, *rest)

    def run(self) -> Program:
        net, plan = self.plan.network, self.plan
        fm = 0
        for step in plan.steps:
            a, b = step.left, step.right
            if step.kind == "weight":
                name = "_".join(part.lower() for part in step.name.split("·"))
                self.names[step.result] = name
                self._matmul(step.number, self.names[a], self.names[b], name, self.weight, feature=False,
                             kept=frozenset(step.indices))
                continue
            if fm not in (a, b):
                raise TTPlanError(f"plan {plan.name!r} step {step.number}: the feature map is not an operand")
            other = self.names[b if a == fm else a]
            if step.kind == "conv":
                self._conv(step.number, self.names[fm], other, "t", frozenset(step.indices))
            else:
                self._matmul(step.number, self.names[fm], other, "t", self.feature, feature=True,
                             kept=frozenset(step.indices))
            fm = step.result
            self.names[fm] = "t"
        self._output(self.names[fm])
        used: list[str] = []
        written = {INPUT}
        for ins in self.feature:
            for name in _reads(ins):
                if name not in written and name not in used:
                    used.append(name)
            written.add(ins.out)
        return Program(plan, tuple(t.name for t in net.tensors[1:]), tuple(self.weight), tuple(self.feature),
                       tuple(used), "y", self.sizes, net.spec.stride, net.spec.padding, net.spec.dilation,
                       self.lowering, net.spec.explicit_pad, net.spec.pad_mode)

    def _matmul(self, number: int, a: str, w: str, out: str, sink: list, feature: bool,
                kept: frozenset[str] = frozenset()) -> None:
        """One contraction as `mm`/`bmm`; `a` keeps its order where it can (b first for the feature map)."""
        la, lw = self.layouts[a], self.layouts[w]
        shared = set(la) & set(lw)
        if shared & kept:
            self._batched(number, a, w, out, sink, feature, shared, kept)
            return
        block = _contiguous_block(la, shared)
        perm = None
        if feature and self.nhwc and block is not None and block[1] != len(la):
            # an NHWC map is summed over its last indices, as one mm over all pixels; else it is permuted
            order = (*(i for i in la if i not in shared), *(i for i in la if i in shared))
            perm, la, block = _perm(la, order), order, (len(la) - len(shared), len(la))
        if block is None:
            keep_last = feature and la[-1] == "s"
            head = self._soonest_last(tuple(i for i in la if i not in shared and not (keep_last and i == "s")))
            order = (*head, *(i for i in la if i in shared), *(("s",) if keep_last else ()))
            perm = _perm(la, order)
            la = order
            block = _contiguous_block(la, shared)
        assert block is not None
        p, k, q = la[: block[0]], la[block[0]: block[1]], la[block[1]:]
        w_only = self._arrange(tuple(i for i in lw if i not in shared), p, tail=feature and self.nhwc)
        # operands are reshaped into temporaries that the product consumes at once, so names repeat:
        # the feature map stays `t`; a weight-only step multiplies `lhs` by `rhs`. The weight operand of a
        # feature-map step is laid out among the weight-only instructions, as `w<step>` (folded once at load).
        if feature:
            a2, w2, wsink = "t", f"w{number}", self.weight
        else:
            (a2, w2), wsink = ("lhs", "rhs") if not q else ("rhs", "lhs"), sink
        # a channel mixing of an NHWC map (b, pre…, s, g…, k…): in memory that is a channels-last [B·pre, K, H, W·G]
        # whose channels are the summed indices, so a partial mixing (g… kept open) is a 1x1 conv on that view too
        nhwc_mix = self.nhwc and not q and p[:1] == ("b",) and "s" in p
        if feature and self.lowering.mix == "conv" and (nhwc_mix or (p == ("b",) and q == ("s",))):  # a 1x1 conv
            layout = (*p, *w_only, *q)
            wsink.append(Reshape(number, w2, w, lw, _perm(lw, (*w_only, *k)), (w_only, k, (), ()), contiguous=True))
            if nhwc_mix:  # on the channels-last view [B·pre, K, H, W·G], its result kept as (b, pre…, s, g…, n…)
                at = p.index("s")
                view = (p[:at], ("h",), ("w", *p[at + 1:]), k)
                sink.append(Reshape(number, a2, a, self.layouts[a], perm, view, after=(0, 3, 1, 2)))
            else:  # on [B, K, H, W]
                sink.append(Reshape(number, a2, a, self.layouts[a], perm, (p, k, ("h",), ("w",))))
            sink.append(MatMul(number, out, w2, a2, layout, batch=("b",), conv1x1=True, nhwc=nhwc_mix))
        elif not q:  # [P, K] @ [K, N]
            layout = (*p, *w_only)
            sink.append(Reshape(number, a2, a, self.layouts[a], perm, (p, k)))
            wsink.append(Reshape(number, w2, w, lw, _perm(lw, (*k, *w_only)), (k, w_only), contiguous=feature))
            sink.append(MatMul(number, out, a2, w2, layout))
        elif not p:  # [N, K] @ [K, Q]
            layout = (*w_only, *q)
            wsink.append(Reshape(number, w2, w, lw, _perm(lw, (*w_only, *k)), (w_only, k), contiguous=feature))
            sink.append(Reshape(number, a2, a, self.layouts[a], perm, (k, q)))
            sink.append(MatMul(number, out, w2, a2, layout))
        else:  # for each of P: [N, K] @ [K, Q]
            layout = (*p, *w_only, *q)
            wsink.append(Reshape(number, w2, w, lw, _perm(lw, (*w_only, *k)), (w_only, k), contiguous=feature))
            sink.append(Reshape(number, a2, a, self.layouts[a], perm, (p, k, q)))
            sink.append(MatMul(number, out, w2, a2, layout, batch=p))
        self.layouts[out] = layout

    def _batched(self, number: int, a: str, w: str, out: str, sink: list, feature: bool, shared: set[str],
                 kept: frozenset[str]) -> None:
        """A step whose operands share indices that stay open (a hyperedge rank): one `bmm` over them,
        `[G, N, K] @ [G, K, P]` with G the kept shared indices, K the summed ones, P and N the rest of each side."""
        la, lw = self.layouts[a], self.layouts[w]
        g = tuple(i for i in la if i in shared and i in kept)
        k = tuple(i for i in la if i in shared and i not in kept)
        p = tuple(i for i in la if i not in shared)
        n = self._arrange(tuple(i for i in lw if i not in shared), p)
        a2, w2 = ("t", "w") if feature else ("rhs", "lhs")
        sink.append(Reshape(number, w2, w, lw, _perm(lw, (*g, *n, *k)), (g, n, k)))
        sink.append(Reshape(number, a2, a, la, _perm(la, (*g, *k, *p)), (g, k, p)))
        sink.append(MatMul(number, out, w2, a2, (*g, *n, *p), shared=True))
        self.layouts[out] = (*g, *n, *p)

    def _conv(self, number: int, fm: str, w: str, out: str, kept: frozenset[str] = frozenset()) -> None:
        """The conv step: `[B·rest, (G, shared), H, W]` convolved with `[(G, w_only), shared, k_h, k_w]` in groups
        over G, the shared indices that stay open (none but for a hyperedge rank: then a depthwise conv)."""
        lf, lw = self.layouts[fm], self.layouts[w]
        both = tuple(i for i in lf if i in set(lw))
        groups = tuple(i for i in both if i in kept)
        shared = tuple(i for i in both if i not in kept)
        batch = ("b", *self._soonest_last(tuple(i for i in lf if i not in both and i not in ("b", "s"))))
        w_only = self._arrange(tuple(i for i in lw if i not in both and i not in WINDOWS), batch)
        windows = tuple(i for i in WINDOWS if i in lw)
        axes = (any(WINDOWS[i][0] for i in windows), any(WINDOWS[i][1] for i in windows))
        channels = (*groups, *shared)
        if self.nhwc:  # the conv reads a channels-last view [B, C, H, W] of the map (b…, s, c…) and keeps its
            # channels-last result as the view (b…, s, c'…)
            target, layout = (*batch, "s", *channels), (*batch, "s", *groups, *w_only)
            shape, after = (batch, ("h",), ("w",), channels), (0, 3, 1, 2)
        else:
            target, layout = (*batch, *channels, "s"), (*batch, *groups, *w_only, "s")
            shape, after = (batch, channels, ("h",), ("w",)), None
        self.feature.append(Reshape(number, "t", fm, lf, _perm(lf, target), shape, after=after))
        # `k` holds k_h·k_w, split into the kernel's two axes; `kh` / `kw` alone leave the other axis 1
        kernel = (("kh",) if axes[0] else (), ("kw",) if axes[1] else ())
        self.weight.append(Reshape(number, f"w{number}", w, lw, _perm(lw, (*groups, *w_only, *shared, *windows)),
                                   ((*groups, *w_only), shared, *kernel), contiguous=True))
        self.feature.append(Conv(number, out, "t", f"w{number}", layout, groups, axes, nhwc=self.nhwc))
        self.layouts[out] = layout

    def _output(self, fm: str) -> None:
        """The result as `[B, O, H', W']` (a channels-last view when the map ends as `(b, s, o…)`, which the
        NHWC lowering makes it)."""
        net = self.plan.network
        lf = self.layouts[fm]
        outs = net.out_modes
        if lf == ("b", "s", *outs) or self.nhwc:
            target = ("b", "s", *outs)
            self.feature.append(Reshape(0, "y", fm, lf, _perm(lf, target), (("b",), ("h",), ("w",), outs),
                                        after=(0, 3, 1, 2)))
        else:
            target = ("b", *outs, "s")
            self.feature.append(Reshape(0, "y", fm, lf, _perm(lf, target), (("b",), outs, ("h",), ("w",))))
        self.layouts["y"] = ("b", *outs, "s")


def _perm(layout: tuple[str, ...], target: tuple[str, ...]) -> tuple[int, ...] | None:
    """The permutation taking `layout` to `target` (same indices), or None if it is the identity."""
    perm = tuple(layout.index(i) for i in target)
    return None if perm == tuple(range(len(perm))) else perm


def _reads(ins: Instruction) -> tuple[str, ...]:
    """Names an instruction reads."""
    if isinstance(ins, Fused):
        return tuple(name for part in ins.parts for name in _reads(part))
    if isinstance(ins, Reshape):
        return (ins.src,)
    if isinstance(ins, MatMul):
        return (ins.left, ins.right)
    return (ins.src, ins.weight)


def lower(plan: ContractionPlan, lowering: Lowering | None = None) -> Program:
    """Lower a plan to instructions (ops and layout per `lowering`, default bmm on NCHW maps).

    The order of the indices each product creates is chosen for the whole program: both arrangements
    (`_Lowering._arrange`) are lowered and the one that copies fewer feature-map elements is kept (the first
    on a tie). A copy is a pass over the map that saves no MACs, so it is the one layout cost worth counting.
    """
    lowering = lowering or Lowering()
    programs = [_Lowering(plan, lowering, summed_first).run() for summed_first in (False, True)]
    program = min(programs, key=copied_elements)
    return fuse(program) if lowering.fused else program


#: the spatial groups of a map reshaped for a product: flattened (bmm) or as height and width (a conv)
FLAT, PLANE = (("s",),), (("h",), ("w",))


def _view(ins: Instruction, tail: tuple[tuple[str, ...], ...]) -> bool:
    """A reshape that is a view of a contiguous map (no permute) as `[B, channels, *tail]`: `b` alone first, every
    channel or rank index in one group, the spatial groups `tail` last."""
    return (isinstance(ins, Reshape) and ins.perm is None and ins.after is None and len(ins.groups) == 2 + len(tail)
            and ins.groups[0] == ("b",) and ins.groups[2:] == tail)


def _mixing(view: Instruction, product: Instruction, sizes: dict[str, int], side: str) -> int | None:
    """The groups of `product` if it is a channel mixing of the NCHW map `view` views, else None: `[N, K] @ [b, K, s]`
    per image (bmm or 1x1 conv; 1 group); or, on the input `side`, `[N, K] @ [(b kept), K, s]`, the map's leading
    channel indices kept open (their product of groups); or, on the output side, `[N, K] @ [b, K, (kept s)]`, its
    trailing ones (`Fused.in_groups`, `out_groups`)."""
    if not (isinstance(product, MatMul) and not product.shared and not product.nhwc and product.right == view.out
            and isinstance(view, Reshape) and view.perm is None and view.after is None):
        return None
    if product.conv1x1:
        return 1 if product.batch == ("b",) and _view(view, PLANE) else None
    groups = view.groups
    if len(groups) != 3 or groups[0][:1] != ("b",) or groups[2][-1:] != ("s",) or product.batch != groups[0]:
        return None
    if (side == "in" and groups[2] != ("s",)) or (side == "out" and groups[0] != ("b",)):
        return None
    return group_size(groups[0][1:] if side == "in" else groups[2][:-1], sizes)


def fuse(program: Program) -> Program:
    """`program` with its feature-map steps as one `Fused` instruction where they are a channel mixing of the input,
    the conv and a channel mixing (either mixing may be absent, either may be grouped: `_mixing`) on NCHW maps, all
    reshapes views; else unchanged. These are exactly the plans `ttplan.core.fusion.fused_form` describes (tested)."""
    feature = program.feature
    if program.lowering.channels_last or program.pad is not None or len(feature) < 3 or not _view(feature[-1], PLANE):
        return program  # the kernel pads zeros symmetrically, as conv2d does
    body = feature[:-1]  # the last instruction reshapes the result to [B, O, H', W']
    convs = [n for n, ins in enumerate(body) if isinstance(ins, Conv)]
    if len(convs) != 1 or convs[0] not in (1, 3):
        return program
    at = convs[0]
    conv, into = body[at], body[at - 1]
    if conv.groups or conv.axes != (True, True) or conv.nhwc or conv.src != into.out or not _view(into, PLANE):
        return program
    before, after = body[: at - 1], body[at + 1:]
    in_groups = _mixing(*before, program.sizes, "in") if before else 1
    out_groups = 1
    if after:
        out_groups = _mixing(*after, program.sizes, "out") if len(after) == 2 and after[0].src == conv.out else None
    if in_groups is None or out_groups is None:
        return program
    if (before[0] if before else into).src != INPUT or into.src != (before[1].out if before else INPUT):
        return program
    last = after[1] if after else conv
    fused = Fused(conv.step, last.out, INPUT, before[1].left if before else None, conv.weight,
                  after[1].left if after else None, last.layout, body, in_groups, out_groups)
    return replace(program, feature=(fused, feature[-1]))


def parts(instructions: tuple[Instruction, ...]) -> tuple[Reshape | MatMul | Conv, ...]:
    """The instructions with each `Fused` one replaced by the stock instructions it stands for."""
    return tuple(part for ins in instructions for part in (ins.parts if isinstance(ins, Fused) else (ins,)))


def copied_elements(program: Program) -> int:
    """Feature-map elements per image that the forward copies to permute them (a reshape that is not a view)."""
    spec = program.plan.network.spec
    size = list(spec.input_size)
    total = 0
    for ins in parts(program.feature):
        if isinstance(ins, Reshape) and ins.perm is not None:
            total += size[0] * size[1] * math.prod(program.sizes[i] for i in ins.src_layout if i not in RUNTIME)
        elif isinstance(ins, Conv):  # a separable window's conv changes only the axis it covers
            size = [spec.output_size[a] if ins.axes[a] else size[a] for a in (0, 1)]
    return total


def _as_program(plan: ContractionPlan | Program) -> Program:
    """A program as given, or the plan lowered."""
    return plan if isinstance(plan, Program) else lower(plan)


def group_size(group: tuple[str, ...], sizes: dict[str, int]) -> int:
    """Product of the sizes of a group of indices (1 for an empty group); a plain loop, which dynamo traces."""
    size = 1
    for name in group:
        size *= sizes[name]
    return size


def execute(program: Program, instructions: tuple[Instruction, ...], env: dict[str, torch.Tensor],
            sizes: dict[str, int], owned: bool = False,
            tail: tuple[torch.Tensor | None, torch.Tensor | None, bool, torch.Tensor | None] | None = None) -> bool:
    """Run instructions on `env` (names to tensors), updating the map size after the conv. `owned`: the weights in
    `env` are new tensors whenever their values change (a layer's folded operands; `tucker_conv2d`). `tail`: (scale,
    bias, relu, residual) for the fused kernel to apply as it stores the result of a `Fused` instruction, the
    program's last product; returns whether it did."""
    applied = False
    for ins in instructions:
        if isinstance(ins, Fused):
            applied = _run_fused(program, ins, env, sizes, owned, tail)
        elif isinstance(ins, Reshape):
            src = env[ins.src]
            if ins.perm is not None:
                src = src.reshape([sizes[i] for i in ins.src_layout]).permute(ins.perm)
            out = src.reshape([group_size(g, sizes) for g in ins.groups])
            out = out.permute(ins.after) if ins.after is not None else out
            env[ins.out] = out.contiguous() if ins.contiguous else out
        elif isinstance(ins, MatMul):
            left, right = env[ins.left], env[ins.right]
            if ins.shared:
                env[ins.out] = torch.bmm(left, right)
            elif ins.conv1x1:
                out = F.conv2d(right, left)
                env[ins.out] = out.permute(0, 2, 3, 1) if ins.nhwc else out
            elif ins.batch is None:
                env[ins.out] = torch.mm(left, right)
            else:
                env[ins.out] = torch.bmm(left.expand(right.shape[0], -1, -1), right)
        else:
            stride, padding, dilation = conv_arguments(program, ins)
            # the conv's weight is made contiguous: some CPU kernels' backward needs it (free when it already is)
            weight = env[ins.weight].contiguous()
            src, pad = env[ins.src], conv_pad(program, ins)
            if pad is not None:
                src = F.pad(src, pad, mode=program.pad_mode)
            out = F.conv2d(src, weight, stride=stride, padding=padding, dilation=dilation,
                           groups=group_size(ins.groups, sizes))
            _map_size_from(out, sizes)
            env[ins.out] = out.permute(0, 2, 3, 1) if ins.nhwc else out
    return applied


def fused_operands(ins: Fused, env: dict[str, torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """The input, `[R1, C]` mixing, conv weight and `[O, R2]` mixing a `Fused` instruction hands the kernel."""
    def matrix(name: str | None) -> torch.Tensor | None:  # a 1x1 conv's [N, K, 1, 1] weight as [N, K]
        if name is None:
            return None
        weight = env[name]
        return weight if weight.dim() == 2 else weight.reshape(weight.shape[0], -1)

    return env[ins.src], matrix(ins.mix_in), env[ins.weight], matrix(ins.mix_out)


def _run_fused(program: Program, ins: Fused, env: dict[str, torch.Tensor], sizes: dict[str, int],
               owned: bool = False,
               tail: tuple[torch.Tensor | None, torch.Tensor | None, bool, torch.Tensor | None] | None = None) -> bool:
    """The fused kernel where it may run (CPU, float32, no gradient needed, built), with the `tail` (scale, bias, relu,
    residual) in its output pass, else the stock instructions; stock ones too where a graph is captured for use
    elsewhere (`capturing`), unless `export_fused`. Returns whether the kernel applied the tail."""
    x, wa, g, wc = fused_operands(ins, env)
    scale, bias, relu, residual = tail if tail is not None else (None, None, False, None)
    if ((capturing() and not program.lowering.export_fused)
            or not fused_available(*(t for t in (x, wa, g, wc, scale, bias, residual) if t is not None))):
        execute(program, ins.parts, env, sizes)
        return False
    out = tucker_conv2d(x, wa, g, wc, list(program.stride), list(program.padding), list(program.dilation),
                        scale=scale, bias=bias, relu=relu, residual=residual, in_groups=ins.in_groups,
                        out_groups=ins.out_groups, owned_weights=owned)
    _map_size_from(out, sizes)
    env[ins.out] = out
    return tail is not None


def bind_fused(program: Program, folded: dict[str, torch.Tensor], scale: torch.Tensor | None,
               bias: torch.Tensor | None, relu: bool) -> FrozenTucker | None:
    """The whole forward of `program` as one bound kernel call (a frozen layer's: `FrozenTucker`) with these folded
    operands and epilogue, where the forward is one `Fused` instruction (and the view to `[B, O, H', W']`) and the
    kernel runs these tensors; else None."""
    ins = program.feature[0] if program.feature else None
    if not isinstance(ins, Fused) or len(program.feature) != 2:
        return None
    _, wa, g, wc = fused_operands(ins, {INPUT: None, **folded})
    if not fused_available(*(t for t in (wa, g, wc, scale, bias) if t is not None)):
        return None
    return FrozenTucker(wa, g, wc, list(program.stride), list(program.padding), list(program.dilation), scale=scale,
                        bias=bias, relu=relu, in_groups=ins.in_groups, out_groups=ins.out_groups)


def _map_size_from(out: torch.Tensor, sizes: dict[str, int]) -> None:
    """Record the map's size after the conv, from its NCHW result `[.., .., H', W']`."""
    sizes["h"], sizes["w"] = int(out.shape[-2]), int(out.shape[-1])
    sizes["s"] = sizes["h"] * sizes["w"]


def conv_arguments(program: Program, ins: Conv) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Stride, padding and dilation of a conv instruction: the layer's along the axes its window covers (padding 0
    where `conv_pad` pads the map instead)."""
    def along(values: tuple[int, int], neutral: int) -> tuple[int, int]:
        return tuple(v if on else neutral for v, on in zip(values, ins.axes))  # type: ignore[return-value]

    padding = (0, 0) if program.pad is not None else along(program.padding, 0)
    return along(program.stride, 1), padding, along(program.dilation, 1)


def conv_pad(program: Program, ins: Conv) -> tuple[int, int, int, int] | None:
    """`F.pad`'s (left, right, top, bottom) of the map before a conv instruction, along the axes its window covers,
    where the layer pads as conv2d cannot (`Program.pad`); else None."""
    if program.pad is None:
        return None
    left, right, top, bottom = program.pad
    return (left, right, 0, 0) if not ins.axes[0] else (0, 0, top, bottom) if not ins.axes[1] else program.pad


def by_step(instructions: tuple[Instruction, ...]) -> list[tuple[int, tuple[Instruction, ...]]]:
    """Instructions grouped by the plan step they implement, in order (step 0: the final reshape)."""
    groups: list[tuple[int, list[Instruction]]] = []
    for ins in instructions:
        if not groups or groups[-1][0] != ins.step:
            groups.append((ins.step, []))
        groups[-1][1].append(ins)
    return [(step, tuple(group)) for step, group in groups]


def _check_cores(program: Program, cores: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> None:
    """One-line error unless the cores have the format's count and shapes (`TTFormat.check_cores`)."""
    net = program.plan.network
    net.fmt.check_cores([tuple(core.shape) for core in cores], net.spec)


def fold(plan: ContractionPlan | Program, cores: list[torch.Tensor] | tuple[torch.Tensor, ...]
         ) -> dict[str, torch.Tensor]:
    """Run the weight-only steps: the operands the feature-map steps read, by name (cores, or merged cores)."""
    program = _as_program(plan)
    _check_cores(program, cores)
    env = dict(zip(program.cores, cores))
    execute(program, program.weight, env, dict(program.sizes))
    return {name: env[name] for name in program.folded}


def run_feature_steps(plan: ContractionPlan | Program, x: torch.Tensor, folded: dict[str, torch.Tensor],
                      owned: bool = False, *, scale: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                      relu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """Run the feature-map steps on `x` `[B, I, H, W]` with folded operands; returns `[B, O, H', W']`. `owned`: the
    caller makes new folded tensors whenever their values change (`TTConv2d`'s fold cache), so the fused kernel
    keeps their packs by identity alone. Then the epilogue (`ttplan.runtime.epilogue`): times `scale`, plus `bias`,
    plus `residual` (`[B, O, H', W']`, checked), ReLU with `relu`; the bias, the residual and the ReLU in the fused
    kernel's output pass where it runs the last product."""
    program = _as_program(plan)
    spec = program.plan.network.spec
    if x.dim() != 4 or x.shape[1] != spec.in_channels:
        raise TTPlanError(f"input of shape {list(x.shape)}: expected [B, {spec.in_channels}, H, W]")
    sizes = dict(program.sizes)
    # the batch as torch gives it: an int in eager, a symbol while torch.export captures a dynamic batch (int()
    # would fix it at the example's); the map's size is planned, so fixed
    sizes["b"], sizes["h"], sizes["w"] = x.shape[0], int(x.shape[2]), int(x.shape[3])
    sizes["s"] = sizes["h"] * sizes["w"]
    if program.lowering.channels_last:  # (b, s, i…): a view of a channels-last input (else the first reshape copies)
        x = x.permute(0, 2, 3, 1)
    env = {INPUT: x, **folded}
    tail = (scale, bias, relu, residual) if (scale is not None or bias is not None or relu or residual is not None) \
        else None
    if residual is not None:
        _check_residual(program, residual, sizes)
    applied = execute(program, program.feature, env, sizes, owned, tail)
    y = env[program.output]
    if applied or (scale is None and bias is None and not relu and residual is None):
        return y
    return epilogue(y, scale, bias, relu, residual)


def _check_residual(program: Program, residual: torch.Tensor, sizes: dict[str, int]) -> None:
    """One-line error unless `residual` has the layer's output shape for this input (sizes: the input's)."""
    spec = program.plan.network.spec
    height, width = (
        (sizes[axis] + 2 * spec.padding[a] + spec.extra_padding[a] - spec.dilation[a] * (spec.kernel_size[a] - 1) - 1)
        // spec.stride[a] + 1 for a, axis in enumerate(("h", "w")))
    want = [sizes["b"], spec.out_channels, height, width]
    if not isinstance(residual, torch.Tensor) or list(residual.shape) != want:
        what = f"of shape {list(residual.shape)}" if isinstance(residual, torch.Tensor) else \
            f"a {type(residual).__name__}"
        raise TTPlanError(f"residual {what}: expected the layer's output shape {want}")


def run_plan(plan: ContractionPlan | Program, x: torch.Tensor, cores: list[torch.Tensor] | tuple[torch.Tensor, ...],
             spec=None) -> torch.Tensor:
    """The layer `x [B, I, H, W] -> [B, O, H', W']` computed by the plan's steps, in order (no bias).

    `spec` is accepted for symmetry with the other entry points; the plan's own spec is used and a
    different one is an error.
    """
    program = _as_program(plan)
    if spec is not None and replace(spec, bias=False) != replace(program.plan.network.spec, bias=False):
        raise TTPlanError(f"spec {spec.describe()} differs from the plan's {program.plan.network.spec.describe()}")
    return run_feature_steps(program, x, fold(program, cores))


__all__ = [
    "LOWERINGS",
    "MIXES",
    "Conv",
    "Fused",
    "Instruction",
    "Lowering",
    "MatMul",
    "Program",
    "Reshape",
    "by_step",
    "conv_arguments",
    "conv_pad",
    "copied_elements",
    "execute",
    "fold",
    "fuse",
    "fused_operands",
    "group_size",
    "lower",
    "parts",
    "run_feature_steps",
    "run_plan",
]
