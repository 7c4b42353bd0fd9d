"""BatchNorm folded into the TT conv layer it follows, for inference: `fold_batchnorm(model)`.

An eval-mode `nn.BatchNorm2d` is a per-channel affine map, `y * scale + shift` with `scale = gamma / sqrt(var + eps)`
and `shift = beta - mean * scale`. Where it reads a TT conv layer's output and nothing else reads that output, the
layer takes it over: the scale becomes the layer's output scale (`out_scale`, multiplied into a weight operand that
holds every output mode where the plan has one, else applied after the last product: `ttplan.runtime.epilogue`), the
shift plus the old bias times the scale becomes its bias, and the BatchNorm becomes `nn.Identity`. Where a ReLU module
then reads the BatchNorm's output alone, the layer applies the ReLU too (`apply_relu`) and the ReLU becomes
`nn.Identity`. Nothing changes the planned MACs: a scale, a bias and a ReLU are no products (docs/cost-model.md).

"Reads" is what `torch.fx` sees: the model is traced symbolically with the TT layers as leaves, and a layer, its
BatchNorm and its ReLU are folded only where each module is called once and each call's result has one user, the
next. A model fx cannot trace keeps every BatchNorm, without an error. Only an eval-mode model is folded: in training
a BatchNorm normalises by the batch's statistics and updates its running ones, which no fixed scale reproduces, so a
model in training mode keeps its BatchNorms (and one BatchNorm left in training mode in an eval model keeps its own).

`batchnorm_chains`, `absorb_batchnorm` and `fold_chains` use torch alone and take the layer class as an argument:
generated code embeds their source (`FOLD_SOURCE`) and its `convert` folds an eval model with them, as
`ttplan.runtime.layers.convert(..., fold_weights=True)` does.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import replace

import torch
from torch import nn

from ttplan.errors import TTPlanError


def batchnorm_chains(model: nn.Module, layer_type: type) -> list[tuple[str, str, str | None]]:
    """(layer, BatchNorm, ReLU or None) module names where an eval-mode `nn.BatchNorm2d` reads a conv layer of
    `layer_type` whose output nothing else reads, each module called once (`torch.fx`, the layers as leaves); the
    ReLU where an `nn.ReLU` module, called once, alone reads the BatchNorm's output. [] where fx cannot trace the
    model (a forward that branches on values, say)."""
    class LayerLeaves(torch.fx.Tracer):
        def is_leaf_module(self, module: nn.Module, name: str) -> bool:
            return isinstance(module, layer_type) or super().is_leaf_module(module, name)

    try:
        graph = LayerLeaves().trace(model)
    except Exception:  # whatever stops symbolic tracing: the model keeps its BatchNorms
        return []
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def only_reader(node, kind: type):
        """The one node using `node`'s result, where it is a call of a stock `kind` module (called once, no hooks)
        on that result alone; else None."""
        if len(node.users) != 1:
            return None
        user = next(iter(node.users))
        module = modules.get(user.target) if user.op == "call_module" else None
        if (module is None or type(module).forward is not kind.forward or not isinstance(module, kind)
                or calls[user.target] != 1 or user.args != (node,) or user.kwargs
                or module._forward_hooks or module._forward_pre_hooks):
            return None
        return user

    chains: list[tuple[str, str, str | None]] = []
    for node in graph.nodes:
        layer = modules.get(node.target) if node.op == "call_module" else None
        if (not isinstance(layer, layer_type) or getattr(layer, "linear", False) or calls[node.target] != 1
                or layer.apply_relu or layer._forward_hooks):
            continue
        norm = only_reader(node, nn.BatchNorm2d)
        if norm is None:
            continue
        bn = modules[norm.target]
        if bn.training or bn.running_mean is None or bn.running_var is None or bn.num_features != layer.out_channels:
            continue  # batch statistics (in training, or none tracked), or another width: not a fixed affine map
        relu = only_reader(norm, nn.ReLU)
        chains.append((node.target, norm.target, None if relu is None else relu.target))
    return chains


def absorb_batchnorm(layer: nn.Module, bn: nn.BatchNorm2d) -> None:
    """Make `layer` compute `bn(layer(x))` (`bn` in eval mode): its output scale times `bn`'s scale, its bias (zero
    where it had none) times that scale plus `bn`'s shift; computed in float64, stored in the layer's dtype."""
    weight = next(layer.parameters())
    with torch.no_grad():
        wide = torch.float64
        scale = torch.rsqrt(bn.running_var.to(wide) + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.to(wide)
        shift = -bn.running_mean.to(wide) * scale
        if bn.bias is not None:
            shift = shift + bn.bias.to(wide)
        old = layer.out_scale if layer.out_scale is not None else torch.ones_like(scale)
        bias = layer.bias.to(wide) * scale if layer.bias is not None else torch.zeros_like(scale)
        layer.out_scale = (old.to(wide) * scale).to(device=weight.device, dtype=weight.dtype)
        layer.bias = nn.Parameter((bias + shift).to(device=weight.device, dtype=weight.dtype),
                                  requires_grad=weight.requires_grad)


def fold_chains(model: nn.Module, layer_type: type, relu: bool = True) -> list[tuple[str, str, str | None]]:
    """Fold in place every chain `batchnorm_chains` finds: the BatchNorm into its layer (`absorb_batchnorm`) and,
    with `relu`, the ReLU after it into the layer's epilogue, each replaced by `nn.Identity`; returns the chains (the
    ReLU None where it was not folded)."""
    def identity(name: str) -> None:
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, nn.Identity())

    folded = []
    for layer_name, bn_name, relu_name in batchnorm_chains(model, layer_type):
        layer = model.get_submodule(layer_name)
        absorb_batchnorm(layer, model.get_submodule(bn_name))
        identity(bn_name)
        if relu and relu_name is not None:
            layer.apply_relu = True
            identity(relu_name)
        folded.append((layer_name, bn_name, relu_name if relu else None))
    return folded


#: the functions generated code embeds (it imports torch only): their own source here
FOLD_SOURCE = "".join("\n\n" + inspect.getsource(function)
                      for function in (batchnorm_chains, absorb_batchnorm, fold_chains))


def fold_batchnorm(model: nn.Module, *, inplace: bool = False, relu: bool = True) -> nn.Module:
    """`model` with each eval-mode BatchNorm2d that alone reads a `TTConv2d`'s output folded into that layer, and, with
    `relu`, the ReLU module that alone reads the BatchNorm's output too (see the module docstring); the BatchNorms and
    ReLUs folded are `nn.Identity` in the result. A deep copy, or `model` itself with `inplace`.

    Only for inference: a model in training mode is returned unchanged (copied unless `inplace`), every BatchNorm
    kept; so is a model `torch.fx` cannot trace. Outputs equal the unfolded eval model's up to float rounding, and
    the MACs are the planned ones. `ttplan.runtime.layers.convert(..., fold_weights=True)` and the generated
    `convert` fold an eval model so.

    >>> import torch, ttplan
    >>> from ttplan.runtime.batchnorm import fold_batchnorm
    >>> dense = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16),
    ...                             torch.nn.ReLU()).eval()
    >>> tt = ttplan.convert(dense, {"0": {"format": "hodec", "rank": 4}}, input_size=(16, 8, 8))
    >>> folded = fold_batchnorm(tt)
    >>> [type(m).__name__ for m in folded]
    ['TTConv2d', 'Identity', 'Identity']
    """
    from ttplan.runtime.layers import TTConv2d, _TTLayer, check_model

    check_model(model)
    if not isinstance(inplace, bool) or not isinstance(relu, bool):
        raise TTPlanError(f"fold_batchnorm: inplace={inplace!r}, relu={relu!r}: expected bools")
    out = model if inplace else copy.deepcopy(model)
    if out.training:
        return out
    for layer_name, _, _ in fold_chains(out, _TTLayer, relu):
        layer = out.get_submodule(layer_name)
        if isinstance(layer, TTConv2d):
            layer.spec = replace(layer.spec, bias=True)
    return out


__all__ = ["FOLD_SOURCE", "absorb_batchnorm", "batchnorm_chains", "fold_batchnorm", "fold_chains"]
