"""ADMM training towards a TT format (Yin et al. 2021), as a library object any training loop can use.

Minimise `loss(W) + ρ/2·‖W − Z + U‖²` over the dense weights `W`; after each epoch `Z ← Π(W + U)` (TT-SVD to
the target format and ranks, then rebuild) and `U ← U + W − Z`. Usage:

    admm = ADMM(model, [ADMMLayer("layer1.0.conv1", fmt, spec)], rho=1e-3)
    for epoch in range(epochs):
        for x, y in loader:
            loss = criterion(model(x), y) + admm.penalty()
            ...
        admm.update(epoch)

When ρ changes (a schedule), the scaled dual is rescaled, `U ← U·ρ_old/ρ_new`, so the unscaled dual `ρU`, the
force the constraint has built up, is unchanged (Boyd et al. 2011, §3.4.1). Without it a growing ρ multiplies
that force by the growth at every step of the schedule, and the dense model is thrown off.

`RhoSchedule.auto` is the default schedule of `ttplan train`: ρ needs no tuning because it is set from what
decides its effect, the learning rate, the momentum and the number of steps in an epoch (docs/training.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ttplan.core.formats import TTFormat
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.runtime.decomposition import decompose, project


@dataclass
class ADMMLayer:
    """One layer to constrain: its qualified module name, the target format, and its geometry."""

    name: str
    fmt: TTFormat
    spec: ConvSpec


#: the auto schedule's pull: each SGD step's penalty gradient moves W this share of the way to Z − U (lr·ρ)
PULL = 0.02
#: and ρ grows by this factor over the whole ADMM phase, so its last updates hold W on the format
GROWTH = 16.0


@dataclass(frozen=True)
class RhoSchedule:
    """ρ after `k` ADMM updates: `start · growth**k`. A plain object, so runs can record it."""

    start: float
    growth: float = 1.0

    def __call__(self, update: int) -> float:
        return self.start * self.growth**update

    @classmethod
    def auto(cls, lr: float, updates: int) -> RhoSchedule:
        """The default: `lr·ρ = PULL` at the start, growing geometrically to `GROWTH` times that over `updates`
        Z/U updates. What ρ does depends on the step size it is applied with, so it is set from the rate.
        """
        if not (lr > 0 and math.isfinite(lr)) or updates < 1:
            raise TTPlanError(f"lr={lr!r}, updates={updates!r}: expected a positive rate and update count")
        return cls(start=PULL / lr, growth=GROWTH ** (1.0 / max(1, updates - 1)))


def _layer_names(model: nn.Module) -> list[str]:
    """Qualified names of the model's conv and linear layers, for error messages."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n]


def _find_module(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    """The module called `name` (a trailing `.weight` is accepted) and its normalised name."""
    candidates = [name]
    if name.endswith(".weight"):
        candidates.append(name[: -len(".weight")])
    elif name == "weight":
        candidates.append("")
    for cand in candidates:
        try:
            return cand, model.get_submodule(cand)
        except AttributeError:
            continue
    names = _layer_names(model)
    listing = ", ".join(names) if names else "(none)"
    raise TTPlanError(f"layer {name!r} is not in the model; its conv/linear layers are: {listing}")


class ADMM:
    """ADMM state (Z, U, ρ, epoch counter) for a set of layers of one model; no global state."""

    def __init__(
        self,
        model: nn.Module,
        layers: list[ADMMLayer],
        rho: float | Callable[[int], float] = 1e-3,
    ) -> None:
        """Resolve the layers, set `Z = Π(W)` and `U = 0` on each weight's device, and ρ (or ρ(0))."""
        if not layers:
            raise TTPlanError("layers=[]: give at least one ADMMLayer to constrain")
        self.model = model
        self._schedule: Callable[[int], float] | None = rho if callable(rho) else None
        self.epoch = 0
        self.rho = self._check_rho(rho(0) if callable(rho) else rho)
        self.layers: dict[str, ADMMLayer] = {}
        self._modules: dict[str, nn.Module] = {}
        for layer in layers:
            name, module = _find_module(model, layer.name)
            if name in self.layers:
                raise TTPlanError(f"layer {layer.name!r} is listed twice")
            if not isinstance(getattr(module, "weight", None), torch.Tensor):
                raise TTPlanError(f"layer {layer.name!r} ({type(module).__name__}) has no weight tensor")
            self.layers[name] = layer
            self._modules[name] = module
        self.Z: dict[str, torch.Tensor] = {}
        self.U: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name in self.layers:
                w = self._weight(name).detach()
                self.Z[name] = self._project(name, w)
                self.U[name] = torch.zeros_like(w)

    @staticmethod
    def _check_rho(value: float) -> float:
        """ρ must be a positive finite number."""
        rho = float(value)
        if not (rho > 0.0 and rho != float("inf")):
            raise TTPlanError(f"rho={value!r}: expected a positive number (about 1e-3 is usual)")
        return rho

    def _weight(self, name: str) -> torch.Tensor:
        """The layer's current weight (looked up each time, so a replaced parameter is still seen)."""
        return self._modules[name].weight

    def _project(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """Π for one layer; shape errors name the layer."""
        layer = self.layers[name]
        try:
            return project(w, layer.fmt, layer.spec)
        except TTPlanError as err:
            raise TTPlanError(f"layer {name!r}: {err}") from None

    def _sync(self, name: str) -> None:
        """Follow the weight if the model was moved or cast after construction."""
        w = self._weight(name)
        for store in (self.Z, self.U):
            if store[name].device != w.device or store[name].dtype != w.dtype:
                store[name] = store[name].to(device=w.device, dtype=w.dtype)

    def penalty(self) -> torch.Tensor:
        """Σ ρ/2·‖W − Z + U‖² over the layers: add it to the loss (differentiable in W)."""
        total: torch.Tensor | None = None
        for name in self.layers:
            self._sync(name)
            term = (self._weight(name) - self.Z[name] + self.U[name]).pow(2).sum()
            total = term if total is None else total + term.to(total.device)
        assert total is not None
        return 0.5 * self.rho * total

    def update(self, epoch: int | None = None) -> None:
        """End of an epoch: `Z ← Π(W + U)`, `U ← U + W − Z`; then ρ follows its schedule, if any.

        `epoch` is the index of the epoch just finished (0-based); the counter becomes `epoch + 1`
        (or goes up by one when omitted) and a scheduled ρ becomes `rho(counter)`.
        """
        with torch.no_grad():
            for name in self.layers:
                self._sync(name)
                w = self._weight(name).detach()
                z = self._project(name, w + self.U[name])
                self.U[name] = self.U[name] + w - z
                self.Z[name] = z
        self.epoch = self.epoch + 1 if epoch is None else int(epoch) + 1
        if self._schedule is not None:
            old, self.rho = self.rho, self._check_rho(self._schedule(self.epoch))
            if self.rho != old:
                for name in self.layers:
                    self.U[name] = self.U[name] * (old / self.rho)

    def distances(self) -> dict[str, float]:
        """Relative distance ‖W − Z‖/‖W‖ per layer: how far each weight still is from its format."""
        out: dict[str, float] = {}
        with torch.no_grad():
            for name in self.layers:
                self._sync(name)
                w = self._weight(name).detach().to(torch.float64)
                num = torch.linalg.vector_norm(w - self.Z[name].to(torch.float64)).item()
                den = torch.linalg.vector_norm(w).item()
                out[name] = num / den if den > 0 else (0.0 if num == 0 else float("inf"))
        return out

    def cores(self) -> dict[str, list[torch.Tensor]]:
        """TT cores of each current weight (the step after ADMM: decompose W, then fine-tune the TT model)."""
        out: dict[str, list[torch.Tensor]] = {}
        for name, layer in self.layers.items():
            out[name] = decompose(self._weight(name).detach(), layer.fmt, layer.spec)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Z, U, ρ and the epoch counter (copies), enough to resume training exactly."""
        return {
            "Z": {n: z.detach().clone() for n, z in self.Z.items()},
            "U": {n: u.detach().clone() for n, u in self.U.items()},
            "rho": self.rho,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved; layer names and shapes must match this ADMM's layers."""
        missing = [k for k in ("Z", "U", "rho", "epoch") if k not in state]
        if missing:
            raise TTPlanError(f"ADMM state lacks {', '.join(missing)}: expected keys Z, U, rho, epoch")
        for key in ("Z", "U"):
            if set(state[key]) != set(self.layers):
                raise TTPlanError(
                    f"ADMM state {key} holds layers {sorted(state[key])}, but this ADMM has {sorted(self.layers)}"
                )
            for name, value in state[key].items():
                if tuple(value.shape) != tuple(self._weight(name).shape):
                    raise TTPlanError(
                        f"ADMM state {key}[{name!r}] has shape {list(value.shape)}, "
                        f"expected {list(self._weight(name).shape)}"
                    )
        for name in self.layers:
            w = self._weight(name)
            self.Z[name] = state["Z"][name].detach().to(device=w.device, dtype=w.dtype).clone()
            self.U[name] = state["U"][name].detach().to(device=w.device, dtype=w.dtype).clone()
        self.rho = self._check_rho(state["rho"])
        self.epoch = int(state["epoch"])


__all__ = ["ADMM", "ADMMLayer", "RhoSchedule"]
