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


def fuse_residuals(model: nn.Module, layer_type: type) -> list[str]:
    """Fuse, in place, each residual add (and the ReLU after it) that a conv layer of `layer_type` feeds into that
    layer's epilogue; returns the layers' names. The pattern, in the `torch.fx` graph of a submodule (the TT layers as
    leaves): the layer, called once on one input, then `nn.Identity` modules (folded BatchNorms), each result read by
    the next alone, then an add (`+`, `+=`, `torch.add`, `.add`/`.add_`, no alpha) of it and another node, then,
    where the add's result has that one reader, a ReLU (an `nn.ReLU` module called once, `F.relu`, `torch.relu`,
    `.relu()`). The layer node then takes the other operand as `residual` and `apply_relu` is set where the ReLU was
    there; the add, the ReLU and the Identity calls leave the graph, and so does every other call of a stock
    `nn.Identity` in that graph (a module call per forward that returns its input). Each submodule (not `model`
    itself), deepest first, whose graph holds the pattern becomes a `torch.fx.GraphModule` of its class's name,
    holding the same children, parameters and buffers (the state_dict keys do not change). A submodule fx cannot
    trace, or one in training mode, stays as it is. For inference: the layer's epilogue is
    `relu(conv(x) * scale + bias + residual)`."""
    class LayerLeaves(torch.fx.Tracer):
        def is_leaf_module(self, module: nn.Module, name: str) -> bool:
            return isinstance(module, layer_type) or super().is_leaf_module(module, name)

    def is_add(target) -> bool:  # `+`, `+=` (operator.add, operator.iadd: no import here) or torch.add
        return target is torch.add or (getattr(target, "__module__", None) in ("_operator", "operator")
                                       and getattr(target, "__name__", None) in ("add", "iadd"))

    relus = (torch.relu, torch.nn.functional.relu)
    names = [name for name, module in model.named_modules() if name and not isinstance(module, layer_type)
             and any(isinstance(inner, layer_type) for inner in module.modules())]
    fused: list[str] = []
    for name in sorted(names, key=lambda name: -name.count(".")):
        block = model.get_submodule(name)
        if block.training:
            continue
        try:
            graph = LayerLeaves().trace(block)
        except Exception:  # whatever stops symbolic tracing: the block stays as it is
            continue
        modules = dict(block.named_modules())
        calls: dict[str, int] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1

        def module_call(node, kind: type, arg, modules=modules, calls=calls) -> bool:
            """`node` calls a stock `kind` module on `arg` alone, that module called once, with no hooks."""
            module = modules.get(node.target) if node.op == "call_module" else None
            return (isinstance(module, kind) and type(module).forward is kind.forward and calls[node.target] == 1
                    and node.args == (arg,) and not node.kwargs and not module._forward_hooks
                    and not module._forward_pre_hooks)

        found = []
        for node in graph.nodes:
            layer = modules.get(node.target) if node.op == "call_module" else None
            if (not isinstance(layer, layer_type) or getattr(layer, "linear", False) or calls[node.target] != 1
                    or layer.apply_relu or layer.training or layer._forward_hooks or layer._forward_pre_hooks
                    or len(node.args) != 1 or node.kwargs):
                continue
            chain = [node]
            while len(chain[-1].users) == 1 and module_call(next(iter(chain[-1].users)), nn.Identity, chain[-1]):
                chain.append(next(iter(chain[-1].users)))
            end = chain[-1]
            if len(end.users) != 1:
                continue
            add = next(iter(end.users))
            if not ((add.op == "call_function" and is_add(add.target))
                    or (add.op == "call_method" and add.target in ("add", "add_") and add.args[:1] == (end,))):
                continue
            if len(add.args) != 2 or add.kwargs or end not in add.args:
                continue
            other = add.args[1] if add.args[0] is end else add.args[0]
            if not isinstance(other, torch.fx.Node) or other is end or other.op == "get_attr":
                continue
            if len(add.users) != 1:  # the sum read elsewhere too: the add stays
                continue
            user = next(iter(add.users))
            relu = user if (module_call(user, nn.ReLU, add)
                            or (user.op == "call_function" and user.target in relus and user.args == (add,)
                                and set(user.kwargs) <= {"inplace"})
                            or (user.op == "call_method" and user.target in ("relu", "relu_") and user.args == (add,)
                                and not user.kwargs)) else None
            found.append((chain, add, other, relu))
        if not found:
            continue
        for chain, add, other, relu in found:
            layer_node = chain[0]
            add.prepend(layer_node)  # after the residual's producer, which comes before the add
            layer_node.kwargs = {"residual": other}
            (relu if relu is not None else add).replace_all_uses_with(layer_node)
            for node in [relu, add, *reversed(chain[1:])]:
                if node is not None:
                    graph.erase_node(node)
            modules[layer_node.target].apply_relu = relu is not None
            fused.append(f"{name}.{layer_node.target}")
        for node in list(graph.nodes):  # the other calls of a stock nn.Identity (folded BatchNorms and ReLUs, an
            module = modules.get(node.target) if node.op == "call_module" else None  # identity shortcut) go too
            if (isinstance(module, nn.Identity) and type(module).forward is nn.Identity.forward and len(node.args) == 1
                    and not node.kwargs and not module._forward_hooks and not module._forward_pre_hooks):
                node.replace_all_uses_with(node.args[0])
                graph.erase_node(node)
        for node in graph.nodes:  # fx renders annotations by mangled names TorchScript cannot resolve: Tensor
            node.type = None
        graph.lint()
        rewritten = torch.fx.GraphModule(block, graph, class_name=type(block).__name__)
        for child in list(rewritten._modules):  # the block's own children, as they were: same names, same order
            delattr(rewritten, child)
        for child, module in block.named_children():
            rewritten.add_module(child, module)
        for key, param in block.named_parameters(recurse=False):
            if key not in rewritten._parameters:
                rewritten.register_parameter(key, param)
        for key, buffer in block.named_buffers(recurse=False):
            if key not in rewritten._buffers:
                rewritten.register_buffer(key, buffer, persistent=key not in block._non_persistent_buffers_set)
        rewritten.train(block.training)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, rewritten)
    return fused


#: the functions generated code embeds (it imports torch only): their own source here
FOLD_SOURCE = "".join("\n\n" + inspect.getsource(function)
                      for function in (batchnorm_chains, absorb_batchnorm, fold_chains, fuse_residuals))


def fold_batchnorm(model: nn.Module, *, inplace: bool = False, relu: bool = True, residual: bool = True) -> nn.Module:
    """`model` with each eval-mode BatchNorm2d that alone reads a `TTConv2d`'s output folded into that layer, and, with
    `relu`, the ReLU module that alone reads the BatchNorm's output too (see the module docstring); the BatchNorms and
    ReLUs folded are `nn.Identity` in the result. With `residual` (and `relu`), a residual add that a TT conv feeds and
    the ReLU after it go into that layer's epilogue too (`fuse_residuals`: the layer takes the add's other operand as
    its `residual` input; each block holding one becomes a `torch.fx.GraphModule` of the same name, children and
    state_dict keys). A deep copy, or `model` itself with `inplace`.

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
    if not all(isinstance(flag, bool) for flag in (inplace, relu, residual)):
        raise TTPlanError(f"fold_batchnorm: inplace={inplace!r}, relu={relu!r}, residual={residual!r}: expected bools")
    out = model if inplace else copy.deepcopy(model)
    if out.training:
        return out
    for layer_name, _, _ in fold_chains(out, _TTLayer, relu):
        layer = out.get_submodule(layer_name)
        if isinstance(layer, TTConv2d):
            layer.spec = replace(layer.spec, bias=True)
    if residual and relu:
        fuse_residuals(out, TTConv2d)
    return out


__all__ = ["FOLD_SOURCE", "absorb_batchnorm", "batchnorm_chains", "fold_batchnorm", "fold_chains", "fuse_residuals"]
