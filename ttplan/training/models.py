"""The models of a training run: which layers it decomposes (a config and `ttplan plan`'s policy, by the rule `plan`
uses for the layers a config does not name), the dense weights it may start from, and the fine-tuned TT model it
saves and `load_tt_model` rebuilds."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ttplan.arch.config import load_config
from ttplan.arch.policy import formats_for, unnamed_rule
from ttplan.core.formats import TTFormat
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.models import load_model, trace_layers
from ttplan.runtime.decomposition import balance
from ttplan.runtime.state_check import state_mismatch
from ttplan.training.checkpoint import format_from_dict, load_state_dict, load_tt_file
from ttplan.training.config import TrainConfig
from ttplan.training.run_folder import DENSE_WEIGHTS, TT_MODEL


def resolve_formats(cfg: TrainConfig, model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, TTFormat]:
    """The TT format of every layer the run decomposes, decided as `ttplan plan` decides them (`formats_for`): the
    config's entries, and the layers it does not name dense or by the policy (`cfg.unnamed`); the policy's alone
    without a config."""
    if not cfg.decomposes:
        return {}
    layers = trace_layers(model, input_size)
    config = load_config(cfg.config) if cfg.config is not None else None
    policy = cfg.make_policy()
    decided = formats_for(layers, policy, config, cfg.unnamed)
    formats = {name: fmt for name, fmt in decided.items() if fmt is not None}
    if not formats:
        if config is None:
            raise TTPlanError(f"the policy ({policy.describe()}) keeps every layer dense: give a layer config "
                              "(--config)")
        rest = ("" if unnamed_rule(cfg.unnamed, True) == "dense"
                else f" and the policy ({policy.describe()}) keeps the others dense")
        raise TTPlanError(f"config {cfg.config!r} keeps every layer dense{rest}: name at least one layer with a TT "
                          "format")
    return formats


def recorded_formats(state: dict[str, Any], layers: dict[str, ConvSpec], path: Path) -> dict[str, TTFormat]:
    """The formats a checkpoint recorded, checked against the model's layers."""
    out: dict[str, TTFormat] = {}
    for name, data in state["formats"].items():
        fmt = format_from_dict(data, f"checkpoint {str(path)!r}, layer {name!r}")
        if name not in layers:
            raise TTPlanError(f"checkpoint {str(path)!r} records layer {name!r}, which the model does not have")
        fmt.validate(layers[name])
        out[name] = fmt
    return out


def init_weights(model: nn.Module, path: str) -> None:
    """Load dense weights from `path`: a run folder (its dense.pt), a dense.pt/checkpoint, or a bare state_dict."""
    source = Path(path).expanduser()
    if source.is_dir():
        source = source / DENSE_WEIGHTS
        if not source.is_file():
            raise TTPlanError(f"init folder {path!r} has no {DENSE_WEIGHTS}: give a run folder whose dense "
                              "phase finished, or a .pt file with a dense state_dict")
    state = load_state_dict(source, "init checkpoint")
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        raise TTPlanError(f"init checkpoint {str(source)!r} does not fit the dense model: {mismatch}; give the dense "
                          "weights of the same --arch")
    model.load_state_dict(state)


def convert_model(model: nn.Module, formats: dict[str, TTFormat], input_size: tuple[int, int, int], scheme: str,
                  decompose_weights: bool = True):
    """A copy of `model` with the named layers replaced by TT layers decomposed from it (`decompose_weights=False`:
    cores left as made, for trained ones loaded next)."""
    from ttplan.runtime.layers import convert

    return convert(model, formats, input_size, scheme=scheme, decompose_weights=decompose_weights)


def balance_cores(model: nn.Module, names: Iterable[str]) -> None:
    """Each named TT layer's cores at equal norms, the same kernel (`decomposition.balance`): what training does right
    after decomposing, so SGD does not see one core carrying the whole scale."""
    with torch.no_grad():
        for name in names:
            layer = model.get_submodule(name)
            for param, core in zip(layer.cores, balance(list(layer.cores))):
                param.copy_(core)


def load_tt_model(path: str | Path, device: str = "cpu") -> nn.Module:
    """The fine-tuned TT model saved by a run (`RUN/model_tt.pt`, or the run folder), ready for inference."""
    return load_tt_run(path, device)[0]


def load_tt_run(path: str | Path, device: str = "cpu") -> tuple[nn.Module, tuple[int, int, int]]:
    """`load_tt_model`'s model (eval, on `device`) and the input size `(C, H, W)` the run recorded."""
    path = Path(path)
    if path.is_dir():
        path = path / TT_MODEL
    data = load_tt_file(path)
    model, input_size = load_model(str(data["arch"]), tuple(data["input_size"]))
    formats = {name: format_from_dict(f, f"TT model {str(path)!r}, layer {name!r}")
               for name, f in data["formats"].items()}
    # the trained cores replace whatever convert puts there: no TT-SVD of the untrained weights
    tt = convert_model(model, formats, input_size, data.get("scheme", "best"), decompose_weights=False)
    try:
        tt.load_state_dict(data["model"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TTPlanError(f"TT model {str(path)!r} does not fit the model it names ({first})") from None
    return tt.to(device).eval(), input_size


def load(path: str | Path, device: str = "cpu") -> nn.Module:
    """The trained TT model of a `ttplan train` run (its folder, or its `model_tt.pt`), in eval mode on `device`:
    the model its `--arch` builds, each decomposed layer a `TTConv2d`/`TTLinear` holding the fine-tuned cores."""
    return load_tt_model(path, device)
