"""Dense against TT under `torch.compile` (inductor), with and without its layout optimization and freezing.

Inductor's layout optimization turns conv-heavy graphs channels-last. That helps a dense ResNet, and
hurts a TT model, whose reshapes between convs then each cost a layout conversion. Without freezing,
compiled TT layers trace their weight-only steps into the graph (`folded_weights` under compile), so a
compiled model never reads a stale fold, and pays for the fold every forward. Freezing
(`torch._inductor.config.freezing`, inference only) takes parameters as constants: inductor folds the
weight-only steps once, and prepacks the convs' weights, for the dense model too; a core changed after
compiling is then not seen. So both models are compiled all four ways, each pair timed interleaved, and
the fair comparison is the best of each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ttplan.errors import TTPlanError


@dataclass(frozen=True)
class CompiledTiming:
    """Median ms of the compiled dense and TT models, both compiled with one inductor setting."""

    layout_optimization: bool
    dense_ms: float
    tt_ms: float
    freezing: bool = False

    @property
    def setting(self) -> str:
        """The inductor setting in words: `layout optimization on, freezing off`."""
        return (f"layout optimization {'on' if self.layout_optimization else 'off'}, "
                f"freezing {'on' if self.freezing else 'off'}")

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.tt_ms


def best_of_each(timings: list[CompiledTiming]) -> tuple[CompiledTiming, CompiledTiming]:
    """The setting at which dense is fastest, and the one at which TT is."""
    return min(timings, key=lambda t: t.dense_ms), min(timings, key=lambda t: t.tt_ms)


def time_compiled(dense: nn.Module, tt: nn.Module, x: torch.Tensor, rounds: int,
                  time_pair: Callable[..., tuple[float, float]], sync: Callable[[], None] = lambda: None
                  ) -> list[CompiledTiming]:
    """Compile both models with inductor's layout optimization on, then off, each without freezing, then with it;
    time each pair interleaved."""
    import torch._dynamo
    import torch._inductor.config as inductor_config

    timings = []
    for freezing, layout in ((False, True), (False, False), (True, True), (True, False)):
        torch._dynamo.reset()  # else a model compiled under another setting is reused
        with inductor_config.patch(layout_optimization=layout, freezing=freezing), torch.no_grad():
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
        timings.append(CompiledTiming(layout, dense_ms, tt_ms, freezing))
    torch._dynamo.reset()
    return timings


__all__ = ["CompiledTiming", "best_of_each", "time_compiled"]
