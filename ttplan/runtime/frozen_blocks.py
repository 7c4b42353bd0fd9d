"""A frozen residual block as one call: `conv2(conv1(x), residual=x)` with both convs frozen TT layers.

After `fuse_residuals` (`ttplan.runtime.batchnorm`), a ResNet basic block with an identity shortcut is a
`torch.fx.GraphModule` whose whole forward is two TT layers, the second adding the block's input and applying the
ReLU in its epilogue. Frozen (`ttplan.freeze`), each layer's forward is one bound kernel call, and what is left
around the two calls is Python: the block's and each layer's module call, their forwards, their checks, a sizeable
share of a batch-1 ResNet-56's forward. `bind_blocks` gives each such block a forward that runs the two layers'
bound kernel calls directly, each after its layer's `frozen_state` (which refolds where torch counted a change);
with gradients on, under `torch.compile`, where either call declines (another dtype, a dispatch mode, tracing) or a
hook watches either layer, the block runs its own graph, so counts, captures, hooks and training are unchanged.
Blocks of any other graph are left as they are. `torch.jit.script` unbinds a block before it scripts it
(TorchScript compiles the block's graph), and a copy (`copy.deepcopy`: fx builds a block again from its graph)
keeps its layers frozen but not its blocks bound: `ttplan.freeze` binds them again.

A stock `nn.Sequential` with two or more bound blocks in a row (a ResNet stage's identity blocks) gets a
`FrozenChain` forward, which runs each such run as one kernel call (`ttplan_tucker_chain`): what is left per layer is
its `frozen_state` check. A run goes block by block wherever any of its blocks would not take its bound path.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _module

from ttplan.runtime.kernels.build import load
from ttplan.runtime.kernels.tucker import _plain_eager, run_chain


def _layers(block: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """The block's two TT layers where its graph is exactly `x -> first(x) -> second(., residual=x) -> output`, both
    TT layers that freeze (`frozen_state`, `frozen_forward`), else None."""
    graph = getattr(block, "graph", None)
    if not isinstance(block, torch.fx.GraphModule) or graph is None:
        return None
    nodes = list(graph.nodes)
    if [node.op for node in nodes] != ["placeholder", "call_module", "call_module", "output"]:
        return None
    x, first, second, output = nodes
    if (first.args != (x,) or first.kwargs or second.args != (first,) or second.kwargs != {"residual": x}
            or output.args != (second,)):
        return None
    layers = block.get_submodule(first.target), block.get_submodule(second.target)
    if not all(callable(getattr(layer, name, None)) for layer in layers for name in ("frozen_forward", "frozen_state")):
        return None
    return layers


def _watched(layer: nn.Module) -> bool:
    """Whether a hook would see the layer's call: its own or a global one."""
    return bool(layer._forward_hooks or layer._forward_pre_hooks or _module._global_forward_hooks
                or _module._global_forward_pre_hooks)


def _inference(x: torch.Tensor) -> bool:
    """Whether a call on `x` may take the bound path: plain eager inference (no compiler, no gradient, a plain
    tensor); the compiler is asked first, so that dynamo stops there."""
    return (not getattr(torch.compiler, "is_compiling", bool)() and not torch.is_grad_enabled()
            and type(x) is torch.Tensor)


class _Binding:
    """What a module runs in place of its own forward: this object's `forward`, held as the module's instance
    `forward` (a bound method, whose code torch.compile can look up), with `unbind` as its `__prepare_scriptable__`,
    so that `torch.jit.script` scripts the module's own forward."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def bind(self) -> None:
        self.module.forward, self.module.__prepare_scriptable__ = self.forward, self.unbind

    def unbind(self) -> nn.Module:
        """The module with its own forward again."""
        self.module.__dict__.pop("forward", None)
        self.module.__dict__.pop("__prepare_scriptable__", None)
        return self.module

    @classmethod
    def of(cls, module: nn.Module) -> _Binding | None:
        """The binding of this class whose forward `module` runs, or None."""
        owner = getattr(module.__dict__.get("forward"), "__self__", None)
        return owner if isinstance(owner, cls) else None


class FrozenBlock(_Binding):
    """A bound block: its `forward` runs the two layers' frozen calls, or the block's own graph where they decline.
    `unbind` (`bind_blocks(..., False)` for one block) is also what `torch.jit.script` calls first, so a frozen model
    scripts each block's graph."""

    def __init__(self, block: nn.Module, first: nn.Module, second: nn.Module) -> None:
        super().__init__(block)
        self.first, self.second = first, second

    @property
    def block(self) -> nn.Module:
        return self.module

    def serves(self) -> bool:
        """Whether both layers take their bound calls: frozen, and no hook watching either."""
        first, second = self.first, self.second
        return first._frozen is not None and second._frozen is not None and not (_watched(first) or _watched(second))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = self.first, self.second
        # the layers' bound calls themselves (each layer's frozen_forward, less the gradient checks: with gradients
        # on, each layer decides in its own forward), refolded first where torch counted a change (frozen_state)
        if _inference(x) and self.serves():
            call = first.frozen_state()[3]
            y = call(x) if call is not None else None
            if y is not None:
                call = second.frozen_state()[3]
                out = call(y, x) if call is not None else None
                return out if out is not None else second(y, residual=x)
        return type(self.module).forward(self.module, x)


class FrozenChain(_Binding):
    """A stock `nn.Sequential`'s forward that runs each run of at least two consecutive bound blocks among its children
    (a ResNet stage's identity blocks) as one kernel call (`run_chain`): no Python, allocation or foreign call per
    layer, only each layer's `frozen_state` check. A run falls back to its blocks one by one wherever one of them
    would not take its bound path (`FrozenBlock.forward`'s conditions, checked for every block, and no hook on the
    block itself), or a block is no longer bound (a copy: `ttplan.freeze` binds it again), or a block changes the
    map's shape."""

    def __init__(self, sequential: nn.Sequential, runs: list[tuple[int, int]]) -> None:
        super().__init__(sequential)
        self.runs = {start: end for start, end in runs}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        children = list(self.module._modules.values())
        at = 0
        while at < len(children):
            end = self.runs.get(at)
            y = self._chain(children[at:end], x) if end is not None else None
            if y is not None:
                x, at = y, end
            else:
                x, at = children[at](x), at + 1
        return x

    @staticmethod
    def _chain(blocks: list[nn.Module], x: torch.Tensor) -> torch.Tensor | None:
        """The run's output by one kernel call, or None where any block would not take its bound path."""
        if not _inference(x) or x.dtype is not torch.float32 or not x.is_cpu or not _plain_eager((x,)):
            return None
        library = load()[0]
        if library is None:
            return None
        shape, layers, inner = x.shape, [], None  # the bound C layers, held for the call (their handles run)
        for block in blocks:
            bound = FrozenBlock.of(block)
            if (bound is None or bound.module is not block or block._forward_hooks or block._forward_pre_hooks
                    or not bound.serves()):
                return None
            first, second = bound.first.frozen_state()[3], bound.second.frozen_state()[3]
            one = first.bound_for(shape) if first is not None else None
            two = second.bound_for(one[0]) if one is not None and second is not None else None
            if two is None or two[0] != shape or (inner is not None and one[0] != inner):
                return None  # (an identity block keeps the shape; every intermediate is alike, in one buffer)
            inner = one[0]
            layers += (one[1], two[1])
        # block outputs alternate between two buffers, the last is the result: never a block's own input
        x = x.contiguous()
        out = torch.empty(*shape, dtype=torch.float32)
        spare = torch.empty(*shape, dtype=torch.float32) if len(blocks) > 1 else None
        outs = [out if (len(blocks) - 1 - i) % 2 == 0 else spare for i in range(len(blocks))]
        run_chain(library, [layer.handle for layer in layers], x, torch.empty(*inner, dtype=torch.float32), outs,
                  torch.get_num_threads())
        return out


def _runs(sequential: nn.Module) -> list[tuple[int, int]]:
    """[start, end) of each run of at least two consecutive bound blocks among a stock `nn.Sequential`'s children."""
    if type(sequential) is not nn.Sequential:
        return []
    runs, start = [], None
    children = list(sequential._modules.values())
    for at, child in enumerate([*children, None]):
        if child is not None and bound_block(child) is not None:
            start = at if start is None else start
            continue
        if start is not None and at - start >= 2:
            runs.append((start, at))
        start = None
    return runs


def bind_blocks(model: nn.Module, frozen: bool = True) -> int:
    """Give each residual block of `model` whose forward is two frozen TT layers (module docstring) a `FrozenBlock`
    forward, and each stock `nn.Sequential` holding runs of such blocks a `FrozenChain` forward; `frozen=False` takes
    them away. Returns how many blocks are bound (0 with `frozen=False`)."""
    bound = 0
    for module in model.modules():
        old = _Binding.of(module)
        if old is not None:
            old.unbind()
        layers = _layers(module) if frozen else None
        if layers is not None and all(layer._frozen is not None for layer in layers):
            FrozenBlock(module, *layers).bind()
            bound += 1
    for module in model.modules() if frozen else ():
        runs = _runs(module)
        if runs:
            FrozenChain(module, runs).bind()
    return bound


def bound_chain(module: nn.Module) -> FrozenChain | None:
    """The `FrozenChain` whose forward `module` runs (`bind_blocks`), or None."""
    return FrozenChain.of(module)


def bound_block(module: nn.Module) -> FrozenBlock | None:
    """The `FrozenBlock` whose forward `module` runs (`bind_blocks`), or None."""
    return FrozenBlock.of(module)


__all__ = ["FrozenBlock", "FrozenChain", "bind_blocks", "bound_block", "bound_chain"]
