"""Find the conv and linear layers of any `nn.Module` by running it once, and count their dense cost.

`trace_layers` hooks every `nn.Conv2d` and `nn.Linear` that runs torch's own forward, runs one forward pass on
zeros of shape `(1, C, H, W)`, and records each layer's geometry with the input size it actually saw, in execution
order (padding as torch pads: `'same'` with an even window pads one more pixel after, and `padding_mode`). Only
those layers are what ttplan can decompose. `trace` also counts every other op that torch's `FlopCounterMode`
counts (`Conv1d`, `Conv3d`, `ConvTranspose*`, functional convs and matmuls, attention, a Conv2d subclass with its
own forward), by FlopCounterMode's own formulas, as `UntracedOp`s that stay dense:

- MACs: conv and linear multiply-accumulates at batch 1 (`H'W'·O·(I/groups)·K`; linear `rows·O·I`, where
  `rows` is every leading dimension of its input, e.g. the T tokens of a `(1, T, F)` input), summed over
  every call: a module called twice in one forward costs twice (its weight is counted once); untraced ops
  as FlopCounterMode counts them, halved. Bias adds, BN, activations, pooling and residual adds are not MACs
  and are not counted; this is how the literature counts ResNet/VGG "FLOPs" (which are MACs; docs/cost-model.md,
  "Counting"). So layers plus untraced ops are `FlopCounterMode`'s count halved, for any model.
- params: conv and linear weights plus their biases, and the parameters an untraced op reads. BN's affine
  parameters and any other parameter are excluded; `count_model_params` counts every parameter, so a report can
  give both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

KINDS = ("conv", "linear")
#: modules whose own parameters an untraced op of theirs counts, even where their forward transforms them first
LAYER_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


@dataclass(frozen=True)
class TracedLayer:
    """One conv/linear layer: `name + '.weight'` is its state_dict key; `spec` holds the geometry of its first call.

    `calls` holds the geometry of every call in execution order (a module used twice in a forward, possibly at
    two input sizes, has two); left empty it means the one call `spec`.
    """

    name: str
    kind: str
    spec: ConvSpec
    calls: tuple[ConvSpec, ...] = ()

    def __post_init__(self) -> None:
        if not self.calls:
            object.__setattr__(self, "calls", (self.spec,))

    @property
    def n_calls(self) -> int:
        """How many times the module ran in the traced forward pass."""
        return len(self.calls)

    @property
    def plannable(self) -> bool:
        """False for grouped convs, which ttplan cannot TT-decompose and planners leave dense."""
        return self.spec.groups == 1


@dataclass(frozen=True)
class UntracedOp:
    """An op ttplan does not plan, summed over one forward: `op` (an aten op) run by the module `name` (`''`: the
    model's own forward) of type `module`; it stays dense. MACs at batch B are `fixed_macs + B * macs_per_sample`
    (a product of weights alone does not grow with the batch); `params`: elements of the parameters it reads
    that no traced layer holds (each parameter counted once in a trace)."""

    name: str
    module: str
    op: str
    calls: int
    fixed_macs: int
    macs_per_sample: int
    params: int = 0

    def macs(self, batch: int = 1) -> int:
        """Exact MACs of every call at batch `batch`."""
        return self.fixed_macs + batch * self.macs_per_sample

    @property
    def label(self) -> str:
        """The module's name, or `(model)` for the model's own forward."""
        return self.name or "(model)"

    @property
    def reason(self) -> str:
        """Why it stays dense, in a few words."""
        return f"not planned: {self.op} in {self.module}"


@dataclass(frozen=True)
class ModelTrace:
    """What one traced forward pass found: the conv/linear layers and every other op FlopCounterMode counts."""

    layers: list[TracedLayer]
    untraced: list[UntracedOp] = field(default_factory=list)


def _ints(values: tuple[int, ...]) -> tuple[int, int]:
    """A module's (h, w) attribute as a plain pair of ints."""
    return (int(values[0]), int(values[1]))


def stock_kind(module: nn.Module) -> str | None:
    """`conv` or `linear` for an `nn.Conv2d` or `nn.Linear` running torch's own forward, else None: a subclass
    that overrides the forward may compute anything, so ttplan neither plans nor converts it."""
    kind = type(module)
    if isinstance(module, nn.Conv2d) and kind.forward is nn.Conv2d.forward \
            and kind._conv_forward is nn.Conv2d._conv_forward:
        return "conv"
    if isinstance(module, nn.Linear) and kind.forward is nn.Linear.forward:
        return "linear"
    return None


def conv_spec(conv: nn.Module, input_size: tuple[int, int]) -> ConvSpec:
    """The validated spec of an `nn.Conv2d` at an input size: its padding as torch pads (`'same'` with an even
    window pads one more pixel after an axis) and its padding mode; TTPlanError for any other module."""
    if stock_kind(conv) != "conv":
        raise TTPlanError(f"{type(conv).__name__} is not an nn.Conv2d running torch's own forward; ttplan converts "
                          "only those (keep this layer dense)")
    padding = conv.padding if isinstance(conv.padding, str) else _ints(conv.padding)
    return ConvSpec.make(
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=_ints(conv.kernel_size),
        stride=_ints(conv.stride),
        padding=padding,
        dilation=_ints(conv.dilation),
        input_size=input_size,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )


def _one_line(error: BaseException) -> str:
    """`Type: message` squeezed onto one line, for wrapping into a TTPlanError."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _storage(tensor: torch.Tensor) -> int | None:
    """An id of the memory a tensor views (the same for a parameter and its transposes; meta tensors too)."""
    try:
        return tensor.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError, AttributeError):
        return None


class _OpCounter(TorchDispatchMode):
    """Counts what `FlopCounterMode` counts (its formulas, after the same decompositions), by the innermost running
    module and op, skipping ops run inside a traced layer (its spec counts them)."""

    def __init__(self, params: dict[int, int]) -> None:
        super().__init__()
        self.running: list[tuple[nn.Module, str, bool]] = []  # (module, name, traced) running, innermost last
        self.params = params  # parameter storage -> its elements
        self.flops: dict[tuple[str, str, str], list[int]] = {}  # (name, type, op) -> [calls, flops]
        self.reads: dict[tuple[str, str, str], dict[int, None]] = {}  # the parameter storages each reads

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet not in flop_registry and func is not torch.ops.prim.device.default:
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if packet in flop_registry and not any(traced for _, _, traced in self.running):
            module, name = self.running[-1][:2] if self.running else (None, "")
            key = (name, type(module).__name__ if module is not None else "", packet.__name__)
            tally = self.flops.setdefault(key, [0, 0])
            tally[0] += 1
            tally[1] += int(flop_registry[packet](*args, **kwargs, out_val=out))
            read = self.reads.setdefault(key, {})
            tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            if isinstance(module, LAYER_MODULES):  # a conv/linear module's own weights, however its forward uses them
                tensors += list(module.parameters(recurse=False))
            for tensor in tensors:
                storage = _storage(tensor)
                if storage in self.params:
                    read[storage] = None
        return out


def _forward(model: nn.Module, shape: tuple[int, ...], counter: _OpCounter | None,
             on_layer: Callable[[str, str, nn.Module, torch.Tensor], None] | None) -> None:
    """One no-grad forward on zeros of `shape` in eval mode (training flags restored), every module hooked to keep
    the stack of running modules; `on_layer(name, kind, module, input)` for each call of a traced layer."""
    names = {module: name for name, module in model.named_modules()}
    running = counter.running if counter is not None else []

    def enter(module: nn.Module, args: tuple, kwargs: dict) -> None:
        running.append((module, names[module], stock_kind(module) is not None))

    def leave(module: nn.Module, args: tuple, kwargs: dict, _output: object) -> None:
        if running:
            running.pop()
        kind = stock_kind(module)
        if kind is not None and on_layer is not None and _output is not None:  # None: the forward raised
            on_layer(names[module], kind, module, args[0] if args else next(iter(kwargs.values())))

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    modes = {module: module.training for module in model.modules()}
    handles = []
    for module in names:
        try:
            pre = module.register_forward_pre_hook(enter, with_kwargs=True)
        except RuntimeError:  # a ScriptModule takes no hooks: its ops count for the module around it
            continue
        handles += [pre, module.register_forward_hook(leave, with_kwargs=True, always_call=True)]
    try:
        model.eval()
        with torch.no_grad():
            if counter is not None:
                with counter:
                    model(torch.zeros(shape, device=device, dtype=dtype))
            else:
                model(torch.zeros(shape, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training


def trace(model: nn.Module, input_size: tuple[int, int, int], count_ops: bool = True) -> ModelTrace:
    """The conv/linear layers of `model` in execution order (`trace_layers`) and, with `count_ops`, every other op
    `FlopCounterMode` counts (`UntracedOp`s, by module and op, in order of first run).

    Untraced ops are counted at batch 1 and, to tell what grows with the batch, again at batch 2 (where that pass
    fails, they are taken as proportional to the batch). A failing forward pass is one-line TTPlanError.
    """
    calls: dict[str, list[ConvSpec]] = {}
    kinds: dict[str, str] = {}

    def record(name: str, kind: str, module: nn.Module, x: torch.Tensor) -> None:
        kinds[name] = kind
        if kind == "conv":
            height, width = x.shape[-2:]
            spec = conv_spec(module, (int(height), int(width)))
        else:
            rows = x.numel() // module.in_features if module.in_features else 1
            spec = ConvSpec.make_linear(module.in_features, module.out_features, module.bias is not None,
                                        rows=max(1, rows))
        calls.setdefault(name, []).append(spec)

    params = {storage: p.numel() for p in model.parameters() if (storage := _storage(p)) is not None}
    counter = _OpCounter(params) if count_ops else None
    try:
        _forward(model, (1, *input_size), counter, record)
    except TTPlanError:
        raise
    except Exception as error:
        raise TTPlanError(
            f"running the model on zeros of shape {(1, *input_size)} failed ({_one_line(error)}); "
            "check the input size (C,H,W)"
        ) from error
    layers = [TracedLayer(name, kinds[name], specs[0], tuple(specs)) for name, specs in calls.items()]
    if counter is None or not counter.flops:
        return ModelTrace(layers)
    twice = _OpCounter(params)
    try:
        _forward(model, (2, *input_size), twice, None)
    except Exception:  # a model that runs at batch 1 only: untraced ops taken as proportional to the batch
        twice.flops = {key: [calls, 2 * flops] for key, (calls, flops) in counter.flops.items()}
    held = {_storage(p) for layer in layers for p in model.get_submodule(layer.name).parameters(recurse=False)}
    untraced = []
    for key, (n, flops) in counter.flops.items():
        one, two = flops // 2, twice.flops.get(key, [0, 0])[1] // 2  # MACs at batch 1 and 2
        fixed, per_sample = (2 * one - two, two - one) if one <= two <= 2 * one else (0, one)
        read = [storage for storage in counter.reads[key] if storage not in held]
        held.update(read)
        untraced.append(UntracedOp(key[0], key[1], key[2], n, fixed, per_sample, sum(params[s] for s in read)))
    return ModelTrace(layers, untraced)


def trace_layers(model: nn.Module, input_size: tuple[int, int, int]) -> list[TracedLayer]:
    """Conv2d and Linear layers of `model` in execution order, from one no-grad pass on zeros.

    The input is `zeros(1, *input_size)` on the device and dtype of the model's first parameter
    (so a model built under `torch.device('meta')` traces without memory). The model runs in eval
    mode, so BN running statistics are left untouched; each module's training flag is restored.
    A module called more than once is listed once, at its first call (it holds one weight), with the
    geometry of every call in `calls`. A linear layer's spec has one row per leading input element at
    batch 1: a Linear applied to `(1, T, F)` is planned and counted at T rows, as `FlopCounterMode` counts it.
    Layers that never run are not listed, nor subclasses with their own forward (`stock_kind`; `trace` counts
    them). A failing forward pass is raised as a one-line TTPlanError.
    """
    return trace(model, input_size, count_ops=False).layers


def layer_macs(spec: ConvSpec, batch: int = 1) -> int:
    """Dense MACs of one layer (grouped convs included): `spec.dense_macs`, which owns the count."""
    return spec.dense_macs(batch)


def layer_params(spec: ConvSpec) -> int:
    """Dense parameters of one layer (grouped convs included): `spec.dense_params`, which owns the count."""
    return spec.dense_params()


def traced_macs(layer: TracedLayer, batch: int = 1) -> int:
    """Dense MACs of every call of one traced layer (exact integers)."""
    return sum(layer_macs(spec, batch) for spec in layer.calls)


def dense_totals(layers: list[TracedLayer], batch: int = 1, untraced: list[UntracedOp] = ()) -> tuple[int, int]:
    """(MACs, params) of the traced conv and linear layers and the `untraced` ops, every call counted; BN and other
    parameters excluded."""
    return (
        sum(traced_macs(layer, batch) for layer in layers) + sum(op.macs(batch) for op in untraced),
        sum(layer_params(layer.spec) for layer in layers) + sum(op.params for op in untraced),
    )


def count_model_params(model: nn.Module) -> int:
    """Every parameter of the model (BN included, shared tensors once): the number papers usually quote."""
    return sum(parameter.numel() for parameter in model.parameters())
