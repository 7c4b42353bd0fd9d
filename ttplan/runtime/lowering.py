"""Run a contraction plan on tensors: each step lowered once to explicit reshapes, `mm`/`bmm` and one `conv2d`.

`lower(plan)` turns a `ContractionPlan` into a `Program`: a short list of instructions on named
tensors with every layout decided up front. The interpreter here (`fold`, `run_feature_steps`,
`run_plan`) and the code generator (`ttplan.runtime.codegen`) both walk that one program, so a step runs the
same way in `TTConv2d` and in generated code, and each step is exactly one matrix product or one
convolution (what `torch.utils.flop_counter` counts):

- a feature-map step is `mm` (`[M, K] @ [K, N]`) or `bmm` with the weight broadcast over the batch
  part of the feature map, whichever needs no copy of the feature map; if the contracted indices are
  not adjacent in the feature map, it is permuted once so that they are;
- the conv step is one `torch.nn.functional.conv2d` with the layer's stride, padding and dilation:
  input channels = the indices both operands share, batch = B x the feature map's other indices,
  output channels = the weight operand's other indices;
- a weight-only step (core with core) is one `mm` or `bmm` likewise; an outer product is a product with K = 1.

Feature maps are tensors whose axes follow an index order (each `MatMul`/`Conv` records its result's): `b`, the
channel/rank indices, and `s` (H·W flattened, split into `h`, `w` only for the conv). The input
`[B, I, H, W]` is `(b, i_1…i_d, s)` as it lies in memory (docs/conventions.md: channels split row-major).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ttplan.core.contraction import ContractionPlan
from ttplan.core.network import index_order
from ttplan.errors import TTPlanError

#: name of the input feature map in a program
INPUT = "x"
#: symbolic sizes filled in at run time from the input (b = batch, h/w = current map, s = h·w)
RUNTIME = ("b", "h", "w", "s")


@dataclass(frozen=True)
class Reshape:
    """`out = src.reshape(src_layout sizes).permute(perm).reshape(groups)`; then `.permute(after)` if given.

    `groups` lists, per output axis, the indices merged into it (an empty group is an axis of 1).
    """

    step: int
    out: str
    src: str
    src_layout: tuple[str, ...]
    perm: tuple[int, ...] | None
    groups: tuple[tuple[str, ...], ...]
    after: tuple[int, ...] | None = None


@dataclass(frozen=True)
class MatMul:
    """`out = left @ right` as one `mm`, or as one `bmm` with `left` ([N, K]) broadcast over `batch`.

    `layout` is the index order of the result's axes once unflattened.
    """

    step: int
    out: str
    left: str
    right: str
    layout: tuple[str, ...]
    batch: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Conv:
    """`out = conv2d(src, weight)` with the layer's stride, padding and dilation; the map becomes H'×W'."""

    step: int
    out: str
    src: str
    weight: str
    layout: tuple[str, ...]


Instruction = Reshape | MatMul | Conv


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

    def __init__(self, plan: ContractionPlan) -> None:
        net = plan.network
        self.plan = plan
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
        in_modes = tuple(f"i{j}" for j in range(1, len(net.fmt.in_modes) + 1))
        self.names[0] = INPUT
        self.layouts[INPUT] = ("b", *in_modes, "s")
        for n, tensor in enumerate(net.tensors[1:], start=1):
            self.names[n] = tensor.name
            self.layouts[tensor.name] = tensor.indices

    def _soonest_last(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """`names` with those never summed first (in their order), then by the step that sums them, latest first."""
        never = len(self.plan.steps) + 1
        return tuple(sorted(names, key=lambda i: -self.at.get(i, never)))

    def _arrange(self, new: tuple[str, ...], before: tuple[str, ...]) -> tuple[str, ...]:
        """Order the indices a product creates, which land right after `before`: those summed together with one
        of `before` first (they will be adjacent to it), then the never-summed ones in index order, then the rest."""
        near = [i for i in new if i in self.at and self.partners[self.at[i]] & set(before)]
        never = sorted((i for i in new if i not in self.at), key=index_order)
        rest = [i for i in new if i in self.at and i not in near]
        return (*near, *never, *rest)

    def run(self) -> Program:
        net, plan = self.plan.network, self.plan
        fm = 0
        for step in plan.steps:
            a, b = step.left, step.right
            if step.kind == "weight":
                name = "_".join(part.lower() for part in step.name.split("·"))
                self.names[step.result] = name
                self._matmul(step.number, self.names[a], self.names[b], name, self.weight, feature=False)
                continue
            if fm not in (a, b):
                raise TTPlanError(f"plan {plan.name!r} step {step.number}: the feature map is not an operand")
            other = self.names[b if a == fm else a]
            if step.kind == "conv":
                self._conv(step.number, self.names[fm], other, "t")
            else:
                self._matmul(step.number, self.names[fm], other, "t", self.feature, feature=True)
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
                       tuple(used), "y", self.sizes, net.spec.stride, net.spec.padding, net.spec.dilation)

    def _matmul(self, number: int, a: str, w: str, out: str, sink: list, feature: bool) -> None:
        """One contraction as `mm`/`bmm`; `a` keeps its order where it can (b first for the feature map)."""
        la, lw = self.layouts[a], self.layouts[w]
        shared = set(la) & set(lw)
        block = _contiguous_block(la, shared)
        perm = None
        if block is None:
            keep_last = feature and la[-1] == "s"
            head = self._soonest_last(tuple(i for i in la if i not in shared and not (keep_last and i == "s")))
            order = (*head, *(i for i in la if i in shared), *(("s",) if keep_last else ()))
            perm = _perm(la, order)
            la = order
            block = _contiguous_block(la, shared)
        assert block is not None
        p, k, q = la[: block[0]], la[block[0]: block[1]], la[block[1]:]
        w_only = self._arrange(tuple(i for i in lw if i not in shared), p)
        # operands are reshaped into temporaries that the product consumes at once, so names repeat:
        # the feature map stays `t` and its weight `w`; a weight-only step multiplies `lhs` by `rhs`
        if feature:
            a2, w2 = "t", "w"
        else:
            a2, w2 = ("lhs", "rhs") if not q else ("rhs", "lhs")
        if not q:  # [P, K] @ [K, N]
            layout = (*p, *w_only)
            sink.append(Reshape(number, a2, a, self.layouts[a], perm, (p, k)))
            sink.append(Reshape(number, w2, w, lw, _perm(lw, (*k, *w_only)), (k, w_only)))
            sink.append(MatMul(number, out, a2, w2, layout))
        elif not p:  # [N, K] @ [K, Q]
            layout = (*w_only, *q)
            sink.append(Reshape(number, w2, w, lw, _perm(lw, (*w_only, *k)), (w_only, k)))
            sink.append(Reshape(number, a2, a, self.layouts[a], perm, (k, q)))
            sink.append(MatMul(number, out, w2, a2, layout))
        else:  # for each of P: [N, K] @ [K, Q]
            layout = (*p, *w_only, *q)
            sink.append(Reshape(number, w2, w, lw, _perm(lw, (*w_only, *k)), (w_only, k)))
            sink.append(Reshape(number, a2, a, self.layouts[a], perm, (p, k, q)))
            sink.append(MatMul(number, out, w2, a2, layout, batch=p))
        self.layouts[out] = layout

    def _conv(self, number: int, fm: str, w: str, out: str) -> None:
        """The conv step: `[B·rest, shared, H, W]` convolved with `[w_only, shared, k_h, k_w]`."""
        lf, lw = self.layouts[fm], self.layouts[w]
        shared = tuple(i for i in lf if i in set(lw))
        batch = ("b", *self._soonest_last(tuple(i for i in lf if i not in shared and i not in ("b", "s"))))
        w_only = self._arrange(tuple(i for i in lw if i not in shared and i != "k"), batch)
        target = (*batch, *shared, "s")
        layout = (*batch, *w_only, "s")
        self.feature.append(Reshape(number, "t", fm, lf, _perm(lf, target), (batch, shared, ("h",), ("w",))))
        self.feature.append(Reshape(number, "w", w, lw, _perm(lw, (*w_only, *shared, "k")),
                                    (w_only, shared, ("kh",), ("kw",))))
        self.feature.append(Conv(number, out, "t", "w", layout))
        self.layouts[out] = layout

    def _output(self, fm: str) -> None:
        """The result as `[B, O, H', W']` (a channels-last view when the map ends as `(b, s, o…)`)."""
        net = self.plan.network
        lf = self.layouts[fm]
        outs = tuple(f"o{j}" for j in range(1, len(net.fmt.out_modes) + 1))
        if lf == ("b", "s", *outs):
            self.feature.append(Reshape(0, "y", fm, lf, None, (("b",), ("h",), ("w",), outs), after=(0, 3, 1, 2)))
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
    if isinstance(ins, Reshape):
        return (ins.src,)
    if isinstance(ins, MatMul):
        return (ins.left, ins.right)
    return (ins.src, ins.weight)


def lower(plan: ContractionPlan) -> Program:
    """Lower a plan to instructions; raises TTPlanError for a plan that does not end in `[b, s, o…]`."""
    return _Lowering(plan).run()


def _as_program(plan: ContractionPlan | Program) -> Program:
    """A program as given, or the plan lowered."""
    return plan if isinstance(plan, Program) else lower(plan)


def group_size(group: tuple[str, ...], sizes: dict[str, int]) -> int:
    """Product of the sizes of a group of indices (1 for an empty group); a plain loop, which dynamo traces."""
    size = 1
    for name in group:
        size *= sizes[name]
    return size


def _execute(program: Program, instructions: tuple[Instruction, ...], env: dict[str, torch.Tensor],
             sizes: dict[str, int]) -> None:
    """Run instructions on `env` (names to tensors), updating the map size after the conv."""
    for ins in instructions:
        if isinstance(ins, Reshape):
            src = env[ins.src]
            if ins.perm is not None:
                src = src.reshape([sizes[i] for i in ins.src_layout]).permute(ins.perm)
            out = src.reshape([group_size(g, sizes) for g in ins.groups])
            env[ins.out] = out.permute(ins.after) if ins.after is not None else out
        elif isinstance(ins, MatMul):
            left, right = env[ins.left], env[ins.right]
            if ins.batch is None:
                env[ins.out] = torch.mm(left, right)
            else:
                env[ins.out] = torch.bmm(left.expand(right.shape[0], -1, -1), right)
        else:
            out = F.conv2d(env[ins.src], env[ins.weight], stride=program.stride, padding=program.padding,
                           dilation=program.dilation)
            sizes["h"], sizes["w"] = int(out.shape[-2]), int(out.shape[-1])
            sizes["s"] = sizes["h"] * sizes["w"]
            env[ins.out] = out


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
    _execute(program, program.weight, env, dict(program.sizes))
    return {name: env[name] for name in program.folded}


def run_feature_steps(plan: ContractionPlan | Program, x: torch.Tensor, folded: dict[str, torch.Tensor]
                      ) -> torch.Tensor:
    """Run the feature-map steps on `x` `[B, I, H, W]` with folded operands; returns `[B, O, H', W']`."""
    program = _as_program(plan)
    spec = program.plan.network.spec
    if x.dim() != 4 or x.shape[1] != spec.in_channels:
        raise TTPlanError(f"input of shape {list(x.shape)}: expected [B, {spec.in_channels}, H, W]")
    sizes = dict(program.sizes)
    sizes["b"], sizes["h"], sizes["w"] = int(x.shape[0]), int(x.shape[2]), int(x.shape[3])
    sizes["s"] = sizes["h"] * sizes["w"]
    env = {INPUT: x, **folded}
    _execute(program, program.feature, env, sizes)
    return env[program.output]


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
    "Conv",
    "Instruction",
    "MatMul",
    "Program",
    "Reshape",
    "fold",
    "group_size",
    "lower",
    "run_feature_steps",
    "run_plan",
]
