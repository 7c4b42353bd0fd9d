"""`convert`: a copy of a dense model with its layers swapped for TT layers, as an `ArchPlan`, a config or a dict of
formats says (the top-level `ttplan.convert`; `ttplan.runtime.layers.convert` takes the formats alone)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ttplan.arch.architecture import ArchPlan
from ttplan.arch.config import LayerConfig, layer_key, load_config, parse_entry, resolve_formats
from ttplan.core.contraction import ContractionPlan
from ttplan.core.formats import TTFormat
from ttplan.errors import TTPlanError
from ttplan.models.trace import trace_layers
from ttplan.runtime.layers import check_model
from ttplan.runtime.layers import convert as convert_formats
from ttplan.runtime.lowering import Lowering


def convert(model: nn.Module, plan_or_config: ArchPlan | str | Path | Mapping,
            input_size: tuple[int, int, int] | None = None, scheme: str = "best", fold_weights: bool | None = None, *,
            plans: dict[str, ContractionPlan] | None = None,
            lowerings: dict[str, Lowering] | None = None) -> nn.Module:
    """A deep copy of `model` with each layer that `plan_or_config` decomposes replaced by its TT-SVD.

    `plan_or_config`: an `ArchPlan` (`plan_architecture`: its formats, orders and lowerings; `input_size` and
    `fold_weights` default to the plan's, and a channels-last plan gives a channels-last model), a config file
    (JSON/YAML) or a dict of config entries (`{"layer1.0.conv1": {"format": "hodec", "rank": 8}}`), or a dict of
    layer name -> `TTFormat` (`None` keeps a layer dense). `input_size` (C, H, W) is what the layers are traced
    and planned at; `scheme` is `best`, `published`, `dense` or a format's scheme name; `plans` and `lowerings`
    give a layer's order and ops (not with an `ArchPlan`, which has its own). Biases are kept; the copy keeps the
    model's device, dtype and training mode. With folded weights, each BatchNorm of an eval model that alone reads a
    TT layer's output is folded into that layer (`ttplan.runtime.batchnorm.fold_batchnorm`); a model in training mode
    keeps its BatchNorms.

    >>> import torch, ttplan
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
    ...                             torch.nn.Conv2d(32, 32, 3, padding=1))
    >>> tt = ttplan.convert(model, {"2": {"format": "hodec", "rank": 4}}, input_size=(3, 16, 16))
    >>> tt[2].fmt.label, tt[2].fmt.ranks
    ('hodec', (1, 4, 4, 4, 4, 4, 4, 1))
    >>> tt(torch.randn(1, 3, 16, 16)).shape
    torch.Size([1, 32, 16, 16])
    """
    check_model(model)
    if isinstance(plan_or_config, ArchPlan):
        return _by_plan(model, plan_or_config, input_size, scheme, fold_weights, plans, lowerings)
    if input_size is None:
        raise TTPlanError("convert: input_size=None; expected the model's input (C, H, W), e.g. (3, 32, 32) "
                          "(only an ArchPlan carries its own)")
    formats = layer_formats(model, plan_or_config, input_size)
    return convert_formats(model, formats, input_size, scheme, bool(fold_weights), plans=plans,
                           lowerings=lowerings)


def layer_formats(model: nn.Module, config: str | Path | Mapping,
                  input_size: tuple[int, int, int]) -> dict[str, TTFormat | None]:
    """Layer name -> format of a config file, a dict of config entries, or a dict of formats (None: dense), for
    `model` traced at `input_size`; what `convert` and `ADMMCompression` decompose."""
    if isinstance(config, (str, Path)):
        return _configured(model, load_config(config), input_size)
    if isinstance(config, Mapping) and not all(value is None or isinstance(value, TTFormat)
                                               for value in config.values()):
        return _from_entries(model, config, input_size)
    if not isinstance(config, Mapping):
        raise TTPlanError(f"convert: plan_or_config={config!r} is a {type(config).__name__}, expected an ArchPlan "
                          "(ttplan.plan_architecture), a config path, or a dict of layer name -> TTFormat or config "
                          "entry")
    return dict(config)  # the runtime checks it, naming what is accepted


def _from_entries(model: nn.Module, entries: Mapping, input_size: tuple[int, int, int]) -> dict[str, TTFormat | None]:
    """A dict mixing formats and config entries as formats: each entry parsed as a config file's would be."""
    formats: dict[str, TTFormat | None] = {}
    config: dict[str, LayerConfig] = {}
    for raw, value in entries.items():
        if not isinstance(raw, str):
            raise TTPlanError(f"convert: layer name {raw!r} is a {type(raw).__name__}, expected a str such as "
                              "'layer1.0.conv1'")
        name = layer_key(raw)
        if name in formats or name in config:
            raise TTPlanError(f"convert: layer {name!r} is given twice (with and without '.weight')")
        if value is None or isinstance(value, TTFormat):
            formats[name] = value
        else:
            config[name] = value if isinstance(value, LayerConfig) else parse_entry(raw, value)
    return {**formats, **_configured(model, config, input_size)}


def _configured(model: nn.Module, config: dict[str, LayerConfig], input_size: tuple[int, int, int]) -> dict:
    """The formats of config entries for `model`'s layers traced at `input_size` (`resolve_formats`'s checks)."""
    return resolve_formats(config, trace_layers(model, tuple(input_size)))  # type: ignore[arg-type]


def _by_plan(model: nn.Module, plan: ArchPlan, input_size: tuple[int, int, int] | None, scheme: str,
             fold_weights: bool | None, plans: dict | None, lowerings: dict | None) -> nn.Module:
    """`model` converted as `plan` decomposes it: each layer's format, its order at `scheme` and its lowering."""
    if plans is not None or lowerings is not None:
        raise TTPlanError("convert: plans= or lowerings= with an ArchPlan, which holds each layer's order and "
                          "lowering; pass its formats (plan.formats()) to choose your own")
    if input_size is not None and tuple(input_size) != tuple(plan.input_size):
        raise TTPlanError(f"convert: input_size={tuple(input_size)} but the plan was made at {plan.input_size}; "
                          "drop input_size, or plan again at that size")
    orders = dict(plan.plans(scheme))
    ops = {name: Lowering(**{**lowering, "fused": lowering["fused"] and scheme == "best"})
           for name, lowering in plan.lowerings().items()}
    fold = plan.fold_weights if fold_weights is None else fold_weights
    formats = {layer.name: layer.fmt for layer in plan.layers if layer.decomposed}
    out = convert_formats(model, formats, plan.input_size, scheme, fold, plans=orders, lowerings=ops)
    return out.to(memory_format=torch.channels_last) if plan.channels_last else out


__all__ = ["convert", "layer_formats"]
