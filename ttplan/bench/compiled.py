"""Dense against TT under `torch.compile` (inductor), each compiled with and without its layout optimization.

Inductor's layout optimization turns conv-heavy graphs channels-last. That helps a dense ResNet, and
hurts a TT model, whose reshapes between convs then each cost a layout conversion: on the machine of
`reports/latency_models.md` it made the compiled TT ResNet-56 slower than the eager one. So both models
are compiled both ways, each pair timed interleaved, and the fair comparison is the best of each.
Compiled TT layers trace their weight-only steps into the graph (`folded_weights` under compile), so a
compiled model never reads a stale fold; that cost is in the TT time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ttplan.errors import TTPlanError


@dataclass(frozen=True)
class CompiledTiming:
    """Median ms of the compiled dense and TT models, both compiled with one inductor layout setting."""

    layout_optimization: bool
    dense_ms: float
    tt_ms: float

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.tt_ms


def best_of_each(timings: list[CompiledTiming]) -> tuple[CompiledTiming, CompiledTiming]:
    """The setting at which dense is fastest, and the one at which TT is."""
    return min(timings, key=lambda t: t.dense_ms), min(timings, key=lambda t: t.tt_ms)


def time_compiled(dense: nn.Module, tt: nn.Module, x: torch.Tensor, rounds: int,
                  time_pair: Callable[..., tuple[float, float]], sync: Callable[[], None] = lambda: None
                  ) -> list[CompiledTiming]:
    """Compile both models with inductor's layout optimization on, then off; time each pair interleaved."""
    import torch._dynamo
    import torch._inductor.config as inductor_config

    timings = []
    for layout in (True, False):
        torch._dynamo.reset()  # else a model compiled under the other setting is reused
        with inductor_config.patch(layout_optimization=layout), torch.no_grad():
            compiled_dense = torch.compile(dense, dynamic=False)
            compiled_tt = torch.compile(tt, dynamic=False)
            try:
                compiled_dense(x)
                compiled_tt(x)
            except Exception as error:  # inductor's errors are long; the first line says what failed
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise TTPlanError(f"--compile: torch.compile failed ({type(error).__name__}: {first}); on the CPU "
                                  "inductor needs a C++ compiler") from error
            dense_ms, tt_ms = time_pair(lambda d=compiled_dense: d(x), lambda t=compiled_tt: t(x), rounds, sync)
        timings.append(CompiledTiming(layout, dense_ms, tt_ms))
    torch._dynamo.reset()
    return timings


__all__ = ["CompiledTiming", "best_of_each", "time_compiled"]
