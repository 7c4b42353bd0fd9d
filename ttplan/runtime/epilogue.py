"""What a TT layer does to its result after the planned products: a per-output-channel scale, a bias and a ReLU.

A BatchNorm folded into the layer (`ttplan.runtime.batchnorm`) leaves it a scale and a shift per output channel,
and a ReLU after it may follow. The scale goes where it costs nothing per forward: into a weight operand that holds
every output mode (`scale_site`), multiplied in when the weights are folded; a per-channel scale commutes with every
product that does not sum an output index, and none does. Where no operand holds them all (each output core absorbed
on its own), the scale, the bias and the ReLU run after the last product as one elementwise pass over the result
(`epilogue`), in place where no gradient is recorded. None of it is a multiply-accumulate of a product, and
`FlopCounterMode` counts none of it (it counts matrix products and convolutions): a folded layer still counts exactly
its planned MACs (docs/cost-model.md). A ResNet block's add of its shortcut and the ReLU after it join the same
epilogue (`ttplan.runtime.batchnorm.fuse_residuals`): the layer takes the shortcut as its `residual` input and adds it
after the bias, before the ReLU. `TTConv2d` runs both; generated code renders the first and embeds the
second (`EPILOGUE_SOURCE`: it imports torch only). Where the fused kernel runs a layer's last product, it adds the
bias and the residual and applies the ReLU itself as it stores each tile (its scale is always in the weights), so no
pass remains.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the lowering runs the epilogue: it imports this module, which reads its programs
    from ttplan.runtime.lowering import Program


@dataclass(frozen=True)
class ScaleSite:
    """A folded operand that holds every output mode, and how a `[O]` scale multiplies it: the operand viewed as
    `view` (its runs of adjacent output modes and of other indices, each merged into one axis), the scale reshaped to
    the output modes and permuted by `perm` into their order there (None: already in it), then reshaped to
    `broadcast` (`view` with 1 on the other axes)."""

    operand: str
    view: tuple[int, ...]
    modes: tuple[int, ...]
    perm: tuple[int, ...] | None
    broadcast: tuple[int, ...]


def operand_layouts(program: Program) -> dict[str, tuple[str, ...]]:
    """The index order of every weight tensor a program names (cores, weight-only results, laid-out operands), as it
    lies in memory; a name reused by the weight instructions (`lhs`, `rhs`) keeps its last layout."""
    from ttplan.runtime.lowering import MatMul, Reshape

    layouts = {tensor.name: tensor.indices for tensor in program.plan.network.tensors[1:]}
    for ins in program.weight:
        if isinstance(ins, Reshape):
            layouts[ins.out] = tuple(i for group in ins.groups for i in group)
        elif isinstance(ins, MatMul):
            layouts[ins.out] = ins.layout
    return layouts


def scale_site(program: Program) -> ScaleSite | None:
    """Where a per-output-channel scale can be multiplied into the weights: the smallest operand the feature-map steps
    read that the weight-only instructions lay out (not a core read as it is) and that holds every output mode; None
    where there is none, and the scale runs in the `epilogue`. A fused program always has one (its last product's
    rows are the output channels)."""
    fmt = program.plan.network.fmt
    outs = program.plan.network.out_modes
    layouts = operand_layouts(program)
    best: ScaleSite | None = None
    for name in program.folded:
        layout = layouts.get(name)
        if name in program.cores or layout is None or not set(outs) <= set(layout):
            continue
        runs: list[tuple[bool, int]] = []  # (output modes?, size) of each run of adjacent indices of one kind
        for i in layout:
            if runs and runs[-1][0] == (i in outs):
                runs[-1] = (runs[-1][0], runs[-1][1] * program.sizes[i])
            else:
                runs.append((i in outs, program.sizes[i]))
        perm = tuple(outs.index(i) for i in layout if i in outs)
        site = ScaleSite(name, tuple(size for _, size in runs), tuple(fmt.out_modes),
                         None if perm == tuple(range(len(perm))) else perm,
                         tuple(size if out else 1 for out, size in runs))
        if best is None or _elements(site) < _elements(best):
            best = site
    return best


def _elements(site: ScaleSite) -> int:
    size = 1
    for n in site.view:
        size *= n
    return size


def scale_operand(weight: torch.Tensor, scale: torch.Tensor, site: ScaleSite) -> torch.Tensor:
    """`weight` (the operand `site` names) with every output channel's entries multiplied by `scale` `[O]`: a new
    tensor of the same shape and layout."""
    factor = scale if site.perm is None else scale.reshape(site.modes).permute(site.perm)
    return (weight.reshape(site.view) * factor.reshape(site.broadcast)).reshape(weight.shape)


def epilogue(y: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None, relu: bool,
             residual: torch.Tensor | None = None) -> torch.Tensor:
    """`y` `[B, O, H, W]` times `scale` plus `bias` per output channel (either may be None), plus `residual` (a map of
    `y`'s shape, or None), then ReLU if `relu`: one pass (`addcmul`) for scale and bias, one `add` for the residual, in
    place on `y` where no gradient is recorded, else new tensors (always while torch.jit.trace records, whose check
    reruns the code with gradients off and must see the same ops, and under torch.compile, where the in-place `out=`
    forms kept inductor from fusing the epilogue into one kernel: compiled, the TT model lost its gain)."""
    compiling = False  # under torch.compile (torch >= 2.3) out of place: inductor fuses the pass itself
    if not torch.jit.is_scripting():  # TorchScript compiles neither this branch nor torch.compiler
        compiling = getattr(torch.compiler, "is_compiling", bool)()
    inplace = not torch.jit.is_tracing() and not compiling and (not torch.is_grad_enabled() or not (
        y.requires_grad or (scale is not None and scale.requires_grad) or (bias is not None and bias.requires_grad)
        or (residual is not None and residual.requires_grad)))
    if scale is not None and bias is not None:
        if inplace:
            torch.addcmul(bias.view(1, -1, 1, 1), y, scale.view(1, -1, 1, 1), out=y)
        else:
            y = torch.addcmul(bias.view(1, -1, 1, 1), y, scale.view(1, -1, 1, 1))
    elif scale is not None:
        y = y.mul_(scale.view(1, -1, 1, 1)) if inplace else y * scale.view(1, -1, 1, 1)
    elif bias is not None:
        y = y.add_(bias.view(1, -1, 1, 1)) if inplace else y + bias.view(1, -1, 1, 1)
    if residual is not None:
        if residual.shape != y.shape:
            raise ValueError("residual of shape " + str(list(residual.shape)) + ": expected the layer's output shape "
                             + str(list(y.shape)))
        y = y.add_(residual) if inplace else y + residual
    if relu:
        y = y.relu_() if inplace else torch.relu(y)
    return y


#: `epilogue` as generated code embeds it (that code imports torch only; this module's own source)
EPILOGUE_SOURCE = "\n\n" + inspect.getsource(epilogue)


__all__ = ["EPILOGUE_SOURCE", "ScaleSite", "epilogue", "operand_layouts", "scale_operand", "scale_site"]
