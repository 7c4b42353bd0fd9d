"""`ADMMCompression`: ADMM towards a layer config in *your* training loop, then the TT model, in three verbs.

    >>> admm = ADMMCompression(model, "budget.json", input_size=(1, 28, 28), lr=0.01, epochs=3)  # doctest: +SKIP
    >>> for epoch in range(3):                                                                  # doctest: +SKIP
    ...     for x, y in loader:
    ...         loss = F.cross_entropy(model(x), y) + admm.penalty()
    ...         opt.zero_grad(); loss.backward(); opt.step()
    ...     admm.step()
    >>> tt_model = admm.decompose()                                                             # doctest: +SKIP

It is `ttplan train`'s own ADMM (`ttplan.training.admm.ADMM`) with the layers resolved from a config, the
default ρ schedule, and the decomposition `ttplan train` does (TT-SVD, balanced cores).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ttplan.arch.apply import layer_formats
from ttplan.core.formats import TTFormat
from ttplan.errors import TTPlanError
from ttplan.models import trace_layers
from ttplan.training.admm import ADMM, ADMMLayer, RhoSchedule
from ttplan.training.models import balance_cores


class ADMMCompression:
    """ADMM state for the config's decomposed layers of `model`; `penalty()` each batch, `step()` each epoch."""

    def __init__(self, model: nn.Module, config: str | Path | Mapping, input_size: tuple[int, int, int],
                 *, lr: float | None = None, epochs: int | None = None, rho: float | None = None,
                 scheme: str = "best") -> None:
        """Resolve the layers at `input_size` (C, H, W). ρ: `rho` if given, else the default schedule for the
        training `lr` over `epochs` (ADMM updates), as `ttplan train` sets it."""
        self.model = model
        self.input_size = tuple(input_size)
        self.scheme = scheme
        layers = trace_layers(model, self.input_size)
        self.formats: dict[str, TTFormat] = {name: fmt for name, fmt in
                                             layer_formats(model, config, self.input_size).items() if fmt is not None}
        if not self.formats:
            raise TTPlanError("the config keeps every layer dense: name at least one layer with a TT format")
        specs = {layer.name: layer.spec for layer in layers}
        if rho is not None:
            schedule: float | RhoSchedule = float(rho)
        elif lr is not None and epochs is not None:
            schedule = RhoSchedule.auto(lr=lr, updates=epochs)
        else:
            raise TTPlanError("give rho=..., or lr=... and epochs=... for the default schedule")
        self.admm = ADMM(model, [ADMMLayer(name, fmt, specs[name]) for name, fmt in self.formats.items()],
                         rho=schedule)

    def penalty(self) -> torch.Tensor:
        """ρ/2·Σ‖W − Z + U‖²: add it to the batch's loss."""
        return self.admm.penalty()

    def step(self) -> None:
        """After an epoch (or every N steps): Z ← Π(W + U), U ← U + W − Z, ρ to its next value."""
        self.admm.update()

    def distances(self) -> dict[str, float]:
        """‖W − Z‖/‖W‖ per layer: how far each weight still is from its format."""
        return self.admm.distances()

    def decompose(self) -> nn.Module:
        """A copy of the model with the config's layers as TT layers decomposed from the current weights."""
        from ttplan.runtime.layers import convert

        tt = convert(self.model, self.formats, self.input_size, scheme=self.scheme)
        balance_cores(tt, self.formats)
        return tt


__all__ = ["ADMMCompression"]
