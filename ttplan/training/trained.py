"""Trained weights for a generated file (`ttplan emit --weights`): read them, fix the formats they were trained in,
and write them in the emitted model's naming.

`--weights` names a train run folder (its `model_tt.pt`), a `model_tt.pt`, or any `.pt` holding a state_dict
(a `dense.pt`, a checkpoint, `model.state_dict()` of a dense model or of ttplan's TT model). A TT layer's state
is `NAME.cores.0`, `NAME.cores.1`, ... (and `NAME.bias`), as `TTConv2d` saves it and as the generated layers
read it. A `model_tt.pt` records its formats, so the file is planned in exactly those (`recorded_config`); a
bare state_dict's cores must fit the formats planned for them.

`emitted_state` turns the weights into the state_dict of the emitted model: trained cores are copied where the
layer is emitted in the format it was trained in; a layer emitted as TT whose weights are dense is decomposed
(TT-SVD, as `convert` would); a trained TT layer that the plan keeps dense (`--objective latency`, `--skip-slower`)
gets the dense kernel its cores rebuild. Biases, BatchNorm buffers and every other entry pass through unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ttplan.arch.config import DENSE, LayerConfig, format_entry, parse_entry
from ttplan.core.formats import TTFormat
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.models.trace import TracedLayer
from ttplan.runtime.decomposition import decompose, rebuild
from ttplan.runtime.state_check import state_mismatch
from ttplan.training.checkpoint import (
    TT_MODEL_KEYS,
    format_from_dict,
    load_state_dict,
    load_torch_file,
    load_tt_file,
)
from ttplan.training.run_folder import DENSE_WEIGHTS, TT_MODEL

#: a TT layer's core in a state_dict: `NAME.cores.N`
CORE_KEY = re.compile(r"^(?P<layer>.+)\.cores\.(?P<n>\d+)$")


@dataclass(frozen=True)
class Trained:
    """What `--weights` named: the file read and its state_dict; from a `model_tt.pt`, also the formats, model and
    input size the run recorded (None for a bare state_dict)."""

    path: Path
    state: dict[str, torch.Tensor]
    formats: dict[str, TTFormat] | None = None
    arch: str | None = None
    input_size: tuple[int, int, int] | None = None

    @property
    def tt_layers(self) -> list[str]:
        """The layers the state_dict holds as cores, in the state_dict's order."""
        found = (CORE_KEY.match(key) for key in self.state)
        return list(dict.fromkeys(match["layer"] for match in found if match))

    def where(self) -> str:
        """`--weights PATH`, for messages."""
        return f"--weights {self.path}"


def read_trained(path: str | Path) -> Trained:
    """The weights `--weights` names: a run folder (its model_tt.pt), a model_tt.pt, or a file holding a
    state_dict; anything else is one line saying what is accepted."""
    source = Path(path).expanduser()
    if source.is_dir():
        if not (source / TT_MODEL).is_file():
            dense = " (it holds a dense model: give its dense.pt)" if (source / DENSE_WEIGHTS).is_file() else ""
            raise TTPlanError(f"--weights {path}: the folder has no {TT_MODEL}{dense}; expected a finished train run "
                              f"folder, its {TT_MODEL}, or a .pt holding a state_dict")
        source = source / TT_MODEL
    data = load_torch_file(source, "--weights")
    if isinstance(data, dict) and all(key in data for key in TT_MODEL_KEYS):
        data = load_tt_file(source)
        formats = {name: format_from_dict(f, f"--weights {source}, layer {name!r}") for name, f in
                   data["formats"].items()}
        size = tuple(int(v) for v in data["input_size"])
        trained = Trained(source, dict(data["model"]), formats, str(data["arch"]), size)  # type: ignore[arg-type]
        stray = sorted(set(trained.tt_layers) ^ set(formats))
        if stray:
            what = ("is recorded as decomposed but has no cores" if stray[0] in formats
                    else "has cores but is not recorded as decomposed")
            raise TTPlanError(f"--weights {source}: layer {stray[0]!r} {what}; the file is damaged: use the run's own "
                              f"{TT_MODEL}")
        return trained
    return Trained(source, dict(load_state_dict(source, "--weights")))


def recorded_config(trained: Trained, layers: list[TracedLayer]) -> dict[str, LayerConfig]:
    """A plan config holding exactly the run's recorded formats: every other traced layer dense. Each recorded
    layer must be one of `layers` and its format must fit it, else one line."""
    assert trained.formats is not None
    specs = {layer.name: layer.spec for layer in layers}
    config = {layer.name: LayerConfig(format=DENSE) for layer in layers}
    for name, fmt in trained.formats.items():
        if name not in specs:
            shown = ", ".join(list(specs)[:6]) + (", ..." if len(specs) > 6 else "")
            raise TTPlanError(f"{trained.where()}: the run decomposed layer {name!r}, which this model does not have "
                              f"(its layers: {shown}); give the --arch and --input-size the run trained "
                              f"({trained.arch}, {','.join(map(str, trained.input_size or ()))})")
        try:
            fmt.validate(specs[name])
        except TTPlanError as error:
            raise TTPlanError(f"{trained.where()}: layer {name!r} was trained as {fmt.label} {list(fmt.ranks)}, "
                              f"which does not fit this model's {specs[name].describe()} ({error}); give the --arch "
                              f"the run trained ({trained.arch})") from None
        config[name] = parse_entry(name, format_entry(fmt, specs[name]))
    return config


def trained_formats(trained: Trained, planned: dict[str, TTFormat | None], specs: dict[str, ConvSpec]
                    ) -> dict[str, TTFormat]:
    """The format of each layer the weights hold as cores: recorded, else the one planned for it (`planned`: the
    plan's format of every layer, a rejected one included), which the cores' shapes must fit."""
    if trained.formats is not None:
        return dict(trained.formats)
    out: dict[str, TTFormat] = {}
    for name in trained.tt_layers:
        fmt = planned.get(name)
        if name not in specs or fmt is None:
            what = "has no such layer" if name not in specs else "gives it no TT format"
            raise TTPlanError(f"{trained.where()} holds TT cores for layer {name!r}, but this plan {what}: plan it "
                              "in the format it was trained in (--config, as given to ttplan train)")
        shapes = [tuple(core.shape) for core in _cores(trained.state, name)]
        try:
            fmt.check_cores(shapes, specs[name])
        except TTPlanError as error:
            raise TTPlanError(f"{trained.where()}: the cores of layer {name!r} do not fit the planned {fmt.label} "
                              f"ranks {list(fmt.ranks)} ({error}); plan it in the format it was trained in (--config)"
                              ) from None
        out[name] = fmt
    return out


def emitted_state(trained: Trained, model: nn.Module, specs: dict[str, ConvSpec], source: dict[str, TTFormat],
                  emitted: dict[str, TTFormat]) -> dict[str, torch.Tensor]:
    """The state_dict of `model` (the dense model, freshly built) converted as emitted: `source` gives the format
    of each layer the weights hold as cores, `emitted` the format of each layer the file makes TT. See the module
    docstring for what each layer gets; weights that do not fit `model` are one line."""
    state: dict[str, torch.Tensor] = {}
    trained_cores: dict[str, list[torch.Tensor]] = {}
    for key, value in trained.state.items():  # the dense view: each trained TT layer as the kernel it rebuilds
        match = CORE_KEY.match(key)
        if match is None:
            state[key] = value
        elif match["layer"] not in trained_cores:
            name = match["layer"]
            cores = trained_cores[name] = _cores(trained.state, name)
            kernel = rebuild([core.double() for core in cores], source[name], specs[name])
            state[f"{name}.weight"] = kernel.to(cores[0].dtype)
    _check_fits(trained, model, state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key[: -len(".weight")]
        fmt = emitted.get(name) if key.endswith(".weight") else None
        if fmt is None:
            out[key] = value
            continue
        cores = trained_cores[name] if source.get(name) == fmt else decompose(value, fmt, specs[name])
        out.update((f"{name}.cores.{n}", core.detach().contiguous()) for n, core in enumerate(cores))
    return out


def _cores(state: dict[str, torch.Tensor], name: str) -> list[torch.Tensor]:
    """`name.cores.0`, `name.cores.1`, ... of a state_dict, in order."""
    cores = []
    while f"{name}.cores.{len(cores)}" in state:
        cores.append(state[f"{name}.cores.{len(cores)}"])
    return cores


def _check_fits(trained: Trained, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """One line unless `state` (every TT layer rebuilt dense) has exactly `model`'s keys and shapes."""
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        run = f" (the run trained {trained.arch})" if trained.arch else ""
        raise TTPlanError(f"{trained.where()} does not fit this model: {mismatch}; give the weights of the same "
                          f"--arch{run}")


__all__ = ["CORE_KEY", "Trained", "emitted_state", "read_trained", "recorded_config", "trained_formats"]
