"""Runtime TT layers that execute any contraction plan, and `convert` to swap them into a dense model.

`TTConv2d` (and `TTLinear` for `nn.Linear`, a 1x1 conv on a 1x1 map) hold the cores as parameters
in `fmt.cores(spec)` order and shapes and run the plan through `ttplan.runtime.lowering` (the same lowering
the generated code uses). Weight-only steps run once per forward; with `fold_weights=True` their
results are cached while no gradient is recorded and recomputed as soon as a core changes (the cache
compares each core's dtype, device, shape and values with a copy: `ttplan.runtime.fold_cache`), so training,
`load_state_dict` and `.data` writes keep working and inference pays only the feature-map MACs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch
from torch import nn

from ttplan.core.contraction import ContractionPlan
from ttplan.core.formats import TTFormat, format_names, make_format
from ttplan.core.latency import LatencyProfile
from ttplan.core.layer import best_order, one_order
from ttplan.core.network import build_network
from ttplan.core.schemes import plan_names, scheme
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.models.trace import conv_spec, stock_kind, trace_layers
from ttplan.runtime.batchnorm import fold_batchnorm
from ttplan.runtime.decomposition import decompose, rebuild, relative_error
from ttplan.runtime.epilogue import scale_operand, scale_site
from ttplan.runtime.fold_cache import cached_fold, key_unchanged, tensors_key
from ttplan.runtime.frozen_blocks import bind_blocks
from ttplan.runtime.lowering import Lowering, Program, bind_fused, fold, lower, run_feature_steps

#: plan names accepted as strings: the search, a fixed scheme, or the format's own published order
PLAN_NAMES = plan_names()


def resolve_plan(spec: ConvSpec, fmt: TTFormat, plan: ContractionPlan | str = "best", fold_weights: bool = False,
                 batch: int = 1, objective: str = "macs", profile: LatencyProfile | None = None) -> ContractionPlan:
    """The plan a layer runs: searched (`best`, minimising `objective`), a fixed scheme by name, or a given plan
    checked against the layer."""
    if isinstance(plan, ContractionPlan):
        net = plan.network
        if net.fmt != fmt or replace(net.spec, bias=False) != replace(spec, bias=False):
            raise TTPlanError(
                f"plan {plan.name!r} was made for {net.spec.describe()} {net.fmt}, not {spec.describe()} {fmt}"
            )
        if plan.fold_weights != fold_weights:
            plan = ContractionPlan(net, plan.pairs, plan.name, fold_weights)
        return plan
    if plan not in PLAN_NAMES:
        raise TTPlanError(f"plan={plan!r}: expected a ContractionPlan or one of {', '.join(PLAN_NAMES)}")
    network = build_network(spec, fmt, batch)
    if plan == "best":
        return best_order(network, fold_weights=fold_weights, objective=objective, profile=profile)
    return scheme(fmt.published_scheme if plan == "published" else plan, network, fold_weights)


def _check_layer_args(cls: str, spec: object, fmt: object) -> None:
    """One-line errors for a spec or format of the wrong type, and for grouped convs (not decomposable)."""
    if not isinstance(spec, ConvSpec):
        raise TTPlanError(f"{cls}: spec={spec!r} is a {type(spec).__name__}, expected a ConvSpec, "
                          "e.g. ConvSpec.make(64, 64, 3, padding=1, input_size=32)")
    if not isinstance(fmt, TTFormat):
        raise TTPlanError(f"{cls}: fmt={fmt!r} is a {type(fmt).__name__}, expected a TTFormat, "
                          "e.g. make_format('hodec', spec, rank=8)")
    if spec.groups != 1:
        raise TTPlanError(f"{cls}: spec has groups={spec.groups}; only groups=1 convs can be TT-decomposed, so keep "
                          "a grouped conv as nn.Conv2d")


def _layer_format(where: str, spec: ConvSpec, fmt: TTFormat | str, **spelling: object) -> TTFormat:
    """`fmt` itself when built, else the format of that name built for `spec` from `spelling` (`make_format`)."""
    given = {key: value for key, value in spelling.items() if value is not None}
    if isinstance(fmt, TTFormat):
        if given:
            key = next(iter(given))
            raise TTPlanError(f"{where}: {key}={given[key]!r} with a built format ({fmt.label}); give the format "
                              f"by name (format={fmt.name!r}) to build it with {key}, or drop {key}")
        return fmt
    if not isinstance(fmt, str):
        raise TTPlanError(f"{where}: format={fmt!r} ({type(fmt).__name__}): expected a TTFormat or a format name, "
                          f"one of {', '.join(format_names(linear=spec.linear))}")
    if fmt not in format_names(linear=spec.linear):
        kind = "an nn.Linear" if spec.linear else "an nn.Conv2d"
        raise TTPlanError(f"{where}: format={fmt!r}; expected one of {', '.join(format_names(linear=spec.linear))} "
                          f"for {kind}")
    if "rank" not in given and "ranks" not in given:
        raise TTPlanError(f"{where}: format={fmt!r} needs its ranks: give rank=R (uniform, clipped to what the "
                          "layer allows) or ranks=[...]")
    return make_format(fmt, spec, **given)  # type: ignore[arg-type]


class _TTLayer(nn.Module):
    """What TT conv and linear layers share: cores, bias, plan, folding cache, dense round trip."""

    def __init__(self, spec: ConvSpec, fmt: TTFormat, plan: ContractionPlan | str = "best",
                 fold_weights: bool = False, device=None, dtype=None, *, batch: int = 1,
                 lowering: Lowering | None = None) -> None:
        super().__init__()
        _check_layer_args(type(self).__name__, spec, fmt)
        fmt.validate(spec)
        self.spec, self.fmt = spec, fmt
        self.fold_weights = bool(fold_weights)
        self.plan = resolve_plan(spec, fmt, plan, self.fold_weights, batch)
        self.program: Program = lower(self.plan, lowering)
        factory = {"device": device, "dtype": dtype}
        self.core_names = tuple(core.name for core in fmt.cores(spec))
        self.cores = nn.ParameterList(nn.Parameter(torch.empty(core.shape, **factory)) for core in fmt.cores(spec))
        if spec.bias:
            self.bias = nn.Parameter(torch.empty(spec.out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        #: what a folded BatchNorm left (`ttplan.runtime.batchnorm`): a per-output-channel scale (a buffer, None
        #: when there is none), multiplied into the folded operand `scale_site` names where there is one, else run
        #: after the products with the bias and, with `apply_relu`, a ReLU (`ttplan.runtime.epilogue`)
        self.register_buffer("out_scale", None)
        self.apply_relu = False
        self.scale_site = scale_site(self.program)
        #: (copies of the cores and the scale, folded operands): `ttplan.runtime.fold_cache.cached_fold`
        self._folded: tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]] | None = None
        #: what `freeze` keeps: (the watched tensors' key, apply_relu, folded operands, the bound kernel call or None)
        self._frozen: tuple | None = None
        #: ‖W − rebuild‖ / ‖W‖ of the TT-SVD when built by `from_dense` (0 at maximal ranks), else None
        self.decomposition_error: float | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gaussian cores scaled so the rebuilt kernel has the variance of `nn.Conv2d`'s default init."""
        fan_in = self.spec.in_channels * self.spec.window
        target = 1.0 / (3.0 * fan_in)  # kaiming_uniform(a=sqrt(5)): bound 1/sqrt(fan_in)
        chain = math.prod(idx.size for idx in self.plan.network.indices.values() if idx.kind == "rank")
        std = (target / chain) ** (0.5 / len(self.cores))
        with torch.no_grad():
            for core in self.cores:
                core.normal_(0.0, std)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(fan_in)
                self.bias.uniform_(-bound, bound)

    @property
    def out_channels(self) -> int:
        return self.spec.out_channels

    @property
    def linear(self) -> bool:
        return self.spec.linear

    def _fold(self, cores: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """The weight-only steps, and the output scale multiplied into its operand where it has one."""
        folded = fold(self.program, cores)
        site, scale = self.scale_site, self.out_scale
        if scale is not None and site is not None:
            folded[site.operand] = scale_operand(folded[site.operand], scale, site)
        return folded

    def folded(self) -> dict[str, torch.Tensor]:
        """The operands the feature-map steps read: recomputed, or cached when folding and not recording grads (and
        refolded when a core or the output scale changes). Under torch.compile, torch.export and torch.jit.trace
        they are recomputed (traced into the graph), so a captured model never holds a stale cache as constants:
        comparing values is nothing a graph can guard."""
        cores = tuple(self.cores)
        recording = torch.is_grad_enabled() and any(core.requires_grad for core in cores)
        compiling = getattr(torch.compiler, "is_compiling", bool)()  # torch >= 2.3; true under torch.export too
        if recording or compiling or torch.jit.is_tracing():
            return self._fold(cores)
        if self._frozen is not None:
            return self.frozen_state()[2]
        if not self.fold_weights:
            return self._fold(cores)
        watched = cores if self.out_scale is None else (*cores, self.out_scale)
        self._folded = cached_fold(self._folded, watched, lambda: self._fold(cores))
        return self._folded[1]

    def watched(self) -> list[torch.Tensor]:
        """The tensors the folded operands and the epilogue come from: the parameters and the output scale."""
        return [t for t in (*self._parameters.values(), *self.cores, *self._buffers.values()) if t is not None]

    def freeze(self, frozen: bool = True) -> _TTLayer:
        """For inference: fold the weights once and keep them without the fold cache's value checks, until a core,
        the bias or the output scale changes as torch counts changes (another tensor or storage, an in-place op: an
        optimizer step, `load_state_dict`, `.to()`), which folds them again; a write through `.data` counts no
        change: freeze again after one. Where the forward is one fused kernel call, the call is bound too
        (`ttplan.runtime.kernels.FrozenTucker`). `frozen=False` undoes it. Returns the layer."""
        if not frozen:
            self._frozen = None
            return self
        with torch.inference_mode(False), torch.no_grad():  # this order: inference_mode(False) turns grads on
            folded = self._fold(tuple(self.cores))
            scale = self.out_scale if self.scale_site is None else None
            call = bind_fused(self.program, folded, scale, self.bias, self.apply_relu)
        self._frozen = (tensors_key(self.watched()), self.apply_relu, folded, call)
        return self

    def frozen_state(self) -> tuple:
        """What `freeze` keeps, frozen again first where a watched tensor or `apply_relu` changed since."""
        if self._frozen[1] != self.apply_relu or not key_unchanged(self._frozen[0], self.watched()):
            self.freeze()
        return self._frozen

    def frozen_forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor | None:
        """The frozen layer's bound kernel call where it applies (no gradient to record, not compiling; the call
        itself declines other maps and dispatch modes), else None."""
        # torch.compile traces the layer's own path (the registered op, the weight-only steps in the graph)
        if self._frozen is None or getattr(torch.compiler, "is_compiling", bool)() or type(x) is not torch.Tensor:
            return None
        if self._frozen[3] is None or torch.is_grad_enabled() and (
                x.requires_grad or (residual is not None and residual.requires_grad)
                or any(t.requires_grad for t in self.watched())):
            return None
        call = self.frozen_state()[3]
        return None if call is None else call(x, residual)

    def _run(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, I, H, W] -> [B, O, H', W']` by the plan, then the epilogue: the output scale where the weights do not
        hold it, the bias, the `residual` (`[B, O, H', W']`), the ReLU (`ttplan.runtime.epilogue`; in the fused
        kernel's output pass where it runs). A frozen layer runs its bound call where it can (`freeze`)."""
        y = self.frozen_forward(x, residual)
        if y is not None:
            return y
        scale = self.out_scale if self.scale_site is None else None
        return run_feature_steps(self.program, x, self.folded(), owned=True,  # new tensors on every refold
                                 scale=scale, bias=self.bias, relu=self.apply_relu, residual=residual)

    def to_dense(self) -> torch.Tensor:
        """The rebuilt kernel: `[O, I, k_h, k_w]` for a conv, `[O, I]` for a linear layer (differentiable), with each
        output channel times the output scale where a BatchNorm was folded in (`out_scale`): the layer computes the
        dense conv with this kernel, plus the bias (then the ReLU, with `apply_relu`)."""
        kernel = rebuild(list(self.cores), self.fmt, self.spec)
        if self.out_scale is None:
            return kernel
        return kernel * self.out_scale.reshape(-1, *([1] * (kernel.dim() - 1)))

    @classmethod
    def from_dense(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, spec: ConvSpec | None = None,
                   fmt: TTFormat | None = None, plan: ContractionPlan | str = "best", fold_weights: bool = False,
                   *, batch: int = 1, lowering: Lowering | None = None, decompose_weight: bool = True):
        """A layer whose cores are the TT-SVD of `weight` in `fmt` (exact at maximal ranks); the bias is kept.
        `decompose_weight=False`: the same layer with its cores as the constructor makes them, for a caller that
        loads trained cores next (no SVD)."""
        if spec is None or fmt is None:
            raise TTPlanError("from_dense needs the layer's spec and format: from_dense(weight, bias, spec, fmt)")
        spec = replace(spec, bias=bias is not None)
        layer = cls(spec, fmt, plan, fold_weights, device=weight.device, dtype=weight.dtype, batch=batch,
                    lowering=lowering)
        with torch.no_grad():
            if bias is not None:
                layer.bias.copy_(bias.detach())
        if not decompose_weight:
            return layer
        cores = decompose(weight, fmt, spec)
        with torch.no_grad():
            for param, core in zip(layer.cores, cores):
                param.copy_(core)
        layer.decomposition_error = relative_error(weight, cores, fmt, spec)
        return layer

    def extra_repr(self) -> str:
        fmt = self.fmt
        return (f"{self.spec.describe()}, format={fmt.label}, in_modes={list(fmt.in_modes)}, "
                f"out_modes={list(fmt.out_modes)}, ranks={list(fmt.ranks)}, plan={self.plan.name!r}, "
                f"macs={self.plan.macs:,} at batch {self.plan.network.batch}, fold_weights={self.fold_weights}, "
                f"lowering={self.program.lowering.label}" + self._epilogue_repr())

    def _epilogue_repr(self) -> str:
        """What a folded BatchNorm (and ReLU) left the layer, for `extra_repr`."""
        if self.out_scale is None and not self.apply_relu:
            return ""
        site = self.scale_site
        where = "none" if self.out_scale is None else f"in {site.operand}" if site is not None else "epilogue"
        return f", folded batchnorm (scale {where}{', relu' if self.apply_relu else ''})"


class TTConv2d(_TTLayer):
    """A TT-decomposed `nn.Conv2d` that runs `plan` (`best`, a scheme name, or a `ContractionPlan`).

    Cores are `self.cores` (an `nn.ParameterList` in `fmt.cores(spec)` order and shapes); `batch` only
    picks the order the search optimises for, any batch and input size run.
    """

    def __init__(self, spec: ConvSpec, fmt: TTFormat, plan: ContractionPlan | str = "best",
                 fold_weights: bool = False, device=None, dtype=None, *, batch: int = 1,
                 lowering: Lowering | None = None) -> None:
        _check_layer_args("TTConv2d", spec, fmt)
        if spec.linear:
            raise TTPlanError(f"TTConv2d got a linear layer ({spec.describe()}); use TTLinear")
        super().__init__(spec, fmt, plan, fold_weights, device, dtype, batch=batch, lowering=lowering)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, format: TTFormat | str = "hodec",
                  input_size: int | tuple[int, int] | None = None, scheme: ContractionPlan | str = "best",
                  fold_weights: bool = False, *, rank: int | None = None, ranks: Sequence[int] | None = None,
                  in_modes: Sequence[int] | None = None, out_modes: Sequence[int] | None = None,
                  order: int | None = None, tt_shapes: Sequence[int] | None = None, batch: int = 1,
                  lowering: Lowering | None = None) -> TTConv2d:
        """The TT-SVD of `conv`, planned at `input_size` (H, W) and run by `scheme` (`best`, a scheme name or a
        `ContractionPlan`); every geometry field is taken from the module (padding as torch pads, its padding mode).

        `format` is a `TTFormat`, or a format name built with `rank`/`ranks` and optionally
        `in_modes`/`out_modes`/`order`/`tt_shapes` (`make_format`). The layer computes `conv` with its kernel
        replaced by `to_dense()` (exactly at maximal ranks). TTPlanError for what ttplan cannot run exactly: a
        grouped conv, a subclass's forward.

        >>> import torch, ttplan
        >>> conv = torch.nn.Conv2d(64, 64, 3, padding=1)
        >>> layer = ttplan.TTConv2d.from_conv(conv, format="hodec", rank=16, input_size=32)
        >>> layer.fmt.in_modes, layer.fmt.ranks
        ((4, 4, 4), (1, 16, 16, 16, 16, 16, 16, 1))
        >>> f"{layer.plan.macs:,} MACs vs {layer.spec.dense_macs():,} dense"
        '4,497,408 MACs vs 37,748,736 dense'
        >>> layer(torch.randn(2, 64, 32, 32)).shape
        torch.Size([2, 64, 32, 32])
        """
        if input_size is None:
            raise TTPlanError("from_conv: input_size=None; expected the input height and width the layer is "
                              "planned at, an int or (H, W), e.g. input_size=32")
        spec = conv_spec(conv, input_size)  # type: ignore[arg-type]  # ConvSpec.make checks it, int or (H, W)
        fmt = _layer_format("from_conv", spec, format, rank=rank, ranks=ranks, in_modes=in_modes,
                            out_modes=out_modes, order=order, tt_shapes=tt_shapes)
        return cls.from_dense(conv.weight, conv.bias, spec, fmt, scheme, fold_weights, batch=batch,
                              lowering=lowering)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The layer on `x`; with `residual` (a map of the output's shape), `relu(conv(x) + bias + residual)` (the ReLU
        with `apply_relu`): a ResNet block's add and ReLU in the layer's epilogue (`fold_batchnorm(residual=True)`)."""
        return self._run(x, residual)


class TTLinear(_TTLayer):
    """A TT-decomposed `nn.Linear` (usually the ttm format): inputs `[..., I]`, outputs `[..., O]`."""

    def __init__(self, spec: ConvSpec, fmt: TTFormat, plan: ContractionPlan | str = "best",
                 fold_weights: bool = False, device=None, dtype=None, *, batch: int = 1,
                 lowering: Lowering | None = None) -> None:
        _check_layer_args("TTLinear", spec, fmt)
        if not spec.linear:
            raise TTPlanError(f"TTLinear got a conv layer ({spec.describe()}); use TTConv2d")
        super().__init__(spec, fmt, plan, fold_weights, device, dtype, batch=batch, lowering=lowering)

    @classmethod
    def from_linear(cls, linear: nn.Linear, format: TTFormat | str = "ttm",
                    scheme: ContractionPlan | str = "best", fold_weights: bool = False, *,
                    rank: int | None = None, ranks: Sequence[int] | None = None,
                    in_modes: Sequence[int] | None = None, out_modes: Sequence[int] | None = None,
                    order: int | None = None, batch: int = 1, lowering: Lowering | None = None) -> TTLinear:
        """The TT-SVD of `linear` (its bias kept), in `format`: a `TTFormat`, or a format name built with
        `rank`/`ranks` and optionally `in_modes`/`out_modes`/`order` (`make_format`); `scheme` as in `from_conv`.

        >>> import torch, ttplan
        >>> linear = torch.nn.Linear(512, 256)
        >>> layer = ttplan.TTLinear.from_linear(linear, format="ttm", rank=8)
        >>> layer.fmt.in_modes, layer.fmt.out_modes
        ((8, 8, 8), (4, 8, 8))
        >>> layer(torch.randn(3, 512)).shape
        torch.Size([3, 256])
        """
        if stock_kind(linear) != "linear":
            raise TTPlanError(f"from_linear: {type(linear).__name__} is not an nn.Linear running torch's own "
                              "forward; ttplan converts only those (keep this layer dense)")
        spec = ConvSpec.make_linear(linear.in_features, linear.out_features, linear.bias is not None)
        fmt = _layer_format("from_linear", spec, format, rank=rank, ranks=ranks, in_modes=in_modes,
                            out_modes=out_modes, order=order, tt_shapes=None)
        return cls.from_dense(linear.weight, linear.bias, spec, fmt, scheme, fold_weights, batch=batch,
                              lowering=lowering)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = self._run(x.reshape(-1, self.spec.in_channels, 1, 1))
        return y.reshape(*lead, self.spec.out_channels)


def _swap(model: nn.Module, name: str, layer: nn.Module) -> None:
    """Replace the submodule `name` (dotted) of `model` by `layer`."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, layer)


def check_model(model: object) -> None:
    """A one-line TTPlanError unless `model` is an `nn.Module` (a preset name gets the call that builds it)."""
    if not isinstance(model, nn.Module):
        hint = f"; build the preset with ttplan.models.load_model({model!r})" if isinstance(model, str) else ""
        raise TTPlanError(f"convert: model={model!r} is a {type(model).__name__}, expected a torch nn.Module{hint}")


def convert(model: nn.Module, formats: dict[str, TTFormat | None], input_size: tuple[int, int, int],
            scheme: str = "best", fold_weights: bool = False, *, plans: dict[str, ContractionPlan] | None = None,
            lowerings: dict[str, Lowering] | None = None, fold_bn: bool | None = None,
            decompose_weights: bool = True) -> nn.Module:
    """A deep copy of `model` with each named conv (and linear) layer replaced by its TT-SVD in the given format.

    `formats` maps traced layer names (`layer3.0.conv1`, `fc`) to a `TTFormat` (`None` keeps a layer
    dense); `input_size` (C, H, W) is what the layers are traced and planned at; `scheme` is `best`,
    `published` (each format's own order), `dense` or a format's scheme name, unless `plans` gives a
    layer's plan; `lowerings` a layer's ops and layout. Biases are kept; the copy keeps the model's
    device, dtype and training mode.

    `fold_bn`: fold each BatchNorm2d (and the ReLU after it) that alone reads a TT layer's output into that layer,
    `nn.Identity` in the copy (`ttplan.runtime.batchnorm.fold_batchnorm`); by default (None) where the weights are
    folded for inference (`fold_weights`) and `model` is in eval mode. A model in training mode is never folded.

    `decompose_weights=False` skips the TT-SVDs, leaving each TT layer's cores as its constructor makes them, for a
    caller that loads trained cores next (`ttplan.load`: the SVDs of the weights it replaces took most of a
    ResNet-18's load).
    """
    check_model(model)
    if not isinstance(formats, Mapping) or not all(isinstance(name, str) for name in formats):
        raise TTPlanError(f"convert: formats={formats!r} is a {type(formats).__name__}, expected a dict of layer "
                          "name -> TTFormat (or None), e.g. {'layer1.0.conv1': make_format('hodec', spec, rank=8)}")
    wrong = [name for name, fmt in formats.items() if fmt is not None and not isinstance(fmt, TTFormat)]
    if wrong:
        value = formats[wrong[0]]
        raise TTPlanError(f"convert: formats[{wrong[0]!r}]={value!r} is a {type(value).__name__}, expected a "
                          "TTFormat or None (keep dense)")
    if scheme not in PLAN_NAMES:
        raise TTPlanError(f"scheme={scheme!r}: expected one of {', '.join(PLAN_NAMES)}")
    traced = {layer.name: layer for layer in trace_layers(model, input_size)}
    unknown = [name for name in formats if name not in traced]
    if unknown:
        modules = dict(model.named_modules())
        what = f" ({type(modules[unknown[0]]).__name__})" if unknown[0] in modules else ""
        raise TTPlanError(
            f"layer {unknown[0]!r}{what} is not an nn.Conv2d/nn.Linear (running torch's own forward) that runs on "
            f"input {tuple(input_size)}; layers: {', '.join(traced) or 'none'}"
        )
    out = copy.deepcopy(model)
    for name, fmt in formats.items():
        if fmt is None:
            continue
        layer = traced[name]
        module = out.get_submodule(name)
        cls = TTConv2d if layer.kind == "conv" else TTLinear
        plan = (plans or {}).get(name, scheme)
        if plan == "best" and len(set(layer.calls)) > 1:  # called at several sizes: one order for all (as planned)
            plan = one_order([resolve_plan(call, fmt, "best", fold_weights) for call in layer.calls])[0]
        tt = cls.from_dense(module.weight, module.bias, layer.spec, fmt, plan, fold_weights,
                            lowering=(lowerings or {}).get(name), decompose_weight=decompose_weights)
        tt.train(module.training)
        _swap(out, name, tt)
    if (fold_weights if fold_bn is None else fold_bn) and not out.training:
        fold_batchnorm(out, inplace=True)
    return out


def freeze(model: nn.Module, frozen: bool = True) -> nn.Module:
    """`model` itself with every TT layer frozen for inference (`TTConv2d.freeze`): the weights folded once and
    trusted until torch counts a change, each fused layer's kernel call bound, so a small layer spends a few µs
    outside its products instead of tens, and each residual block that is just two such layers one call
    (`ttplan.runtime.frozen_blocks`). ttplan's layers and those of a file `ttplan emit` wrote alike (theirs have
    the same `freeze`). A write through `.data` counts no change: freeze again after one; `frozen=False` undoes it.
    One-line error where `model` holds no TT layer."""
    check_model(model)
    layers = [module for module in model.modules() if isinstance(module, _TTLayer)
              or (hasattr(type(module), "cores_spec") and callable(getattr(module, "freeze", None)))]
    if not layers:
        raise TTPlanError(f"freeze: {type(model).__name__} holds no TT layer (convert it first: ttplan.convert, or "
                          "the convert of a file ttplan emit wrote)")
    for layer in layers:
        layer.freeze(frozen)
    bind_blocks(model, frozen)
    return model


__all__ = ["PLAN_NAMES", "TTConv2d", "TTLinear", "check_model", "convert", "freeze", "resolve_plan"]
