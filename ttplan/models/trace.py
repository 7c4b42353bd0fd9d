"""Find the conv and linear layers of any `nn.Module` by running it once, and count their dense cost.

`trace_layers` hooks every `nn.Conv2d` and `nn.Linear` that runs torch's own forward, runs one forward pass on
zeros of shape `(1, C, H, W)`, and records each layer's geometry with the input size it actually saw, in execution
order (padding as torch pads: `'same'` with an even window pads one more pixel after, and `padding_mode`). Only
those layers are what ttplan can decompose, so the dense totals count only them:

- MACs: conv and linear multiply-accumulates at batch 1 (`H'W'·O·(I/groups)·K`; linear `rows·O·I`, where
  `rows` is every leading dimension of its input, e.g. the T tokens of a `(1, T, F)` input), summed over
  every call: a module called twice in one forward costs twice (its weight is counted once).
  Bias adds, BN, activations, pooling and residual adds are not MACs and are not counted; this is
  how the literature counts ResNet/VGG "FLOPs" (which are MACs; docs/cost-model.md, "Counting").
- params: conv and linear weights plus their biases. BN's affine parameters and any other parameter
  are excluded; `count_model_params` counts every parameter, so a report can give both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

KINDS = ("conv", "linear")


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


def trace_layers(model: nn.Module, input_size: tuple[int, int, int]) -> list[TracedLayer]:
    """Conv2d and Linear layers of `model` in execution order, from one no-grad pass on zeros.

    The input is `zeros(1, *input_size)` on the device and dtype of the model's first parameter
    (so a model built under `torch.device('meta')` traces without memory). The model runs in eval
    mode, so BN running statistics are left untouched; each module's training flag is restored.
    A module called more than once is listed once, at its first call (it holds one weight), with the
    geometry of every call in `calls`. A linear layer's spec has one row per leading input element at
    batch 1: a Linear applied to `(1, T, F)` is planned and counted at T rows, as `FlopCounterMode` counts it.
    Layers that never run are not listed, nor subclasses with their own forward (`stock_kind`). A failing forward
    pass is raised as a one-line TTPlanError.
    """
    names = {module: name for name, module in model.named_modules()}
    calls: dict[str, list[ConvSpec]] = {}
    kinds: dict[str, str] = {}

    def hook(module: nn.Module, args: tuple, kwargs: dict, _output: torch.Tensor) -> None:
        name = names[module]
        x = args[0] if args else next(iter(kwargs.values()))
        if stock_kind(module) == "conv":
            height, width = x.shape[-2:]
            kinds[name] = "conv"
            spec = conv_spec(module, (int(height), int(width)))
        else:
            kinds[name] = "linear"
            rows = x.numel() // module.in_features if module.in_features else 1
            spec = ConvSpec.make_linear(module.in_features, module.out_features, module.bias is not None,
                                        rows=max(1, rows))
        calls.setdefault(name, []).append(spec)

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    modes = {module: module.training for module in model.modules()}
    handles = [
        module.register_forward_hook(hook, with_kwargs=True)
        for module in model.modules()
        if stock_kind(module) is not None
    ]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_size), device=device, dtype=dtype))
    except TTPlanError:
        raise
    except Exception as error:
        raise TTPlanError(
            f"running the model on zeros of shape {(1, *input_size)} failed ({_one_line(error)}); "
            "check the input size (C,H,W)"
        ) from error
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return [TracedLayer(name, kinds[name], specs[0], tuple(specs)) for name, specs in calls.items()]


def layer_macs(spec: ConvSpec, batch: int = 1) -> int:
    """Dense MACs of one layer (grouped convs included): `spec.dense_macs`, which owns the count."""
    return spec.dense_macs(batch)


def layer_params(spec: ConvSpec) -> int:
    """Dense parameters of one layer (grouped convs included): `spec.dense_params`, which owns the count."""
    return spec.dense_params()


def traced_macs(layer: TracedLayer, batch: int = 1) -> int:
    """Dense MACs of every call of one traced layer (exact integers)."""
    return sum(layer_macs(spec, batch) for spec in layer.calls)


def dense_totals(layers: list[TracedLayer], batch: int = 1) -> tuple[int, int]:
    """(MACs, params) of the traced conv and linear layers, every call counted; BN and other parameters excluded."""
    return (
        sum(traced_macs(layer, batch) for layer in layers),
        sum(layer_params(layer.spec) for layer in layers),
    )


def count_model_params(model: nn.Module) -> int:
    """Every parameter of the model (BN included, shared tensors once): the number papers usually quote."""
    return sum(parameter.numel() for parameter in model.parameters())
