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


def first_line(error: BaseException) -> str:
    """An exception as one line, its type and the first line of its message (inductor's and the ONNX exporter's
    errors run to pages)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def compile_model(model: nn.Module, x: torch.Tensor, *, freezing: bool, layout_optimization: bool
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model` compiled by inductor with this setting (`dynamic=False`), compiled now by a first call on `x` under
    `torch.no_grad()`; a failure is one TTPlanError line (inductor's errors are long).

    The setting is patched into inductor's config while the first call compiles (freezing is read only from there),
    and passed as the backend's options too, so that models compiled with other settings in the same process keep
    their own graphs (dynamo caches compiled code per backend) and can be timed side by side without
    `torch._dynamo.reset()`. Call the result under `torch.no_grad()`, as it was compiled."""
    import torch._inductor.config as inductor_config

    setting = {"layout_optimization": layout_optimization, "freezing": freezing}
    with inductor_config.patch(**setting), torch.no_grad():
        compiled = torch.compile(model, dynamic=False, options=setting)
        try:
            compiled(x)
        except Exception as error:
            raise TTPlanError(f"torch.compile failed ({first_line(error)}); on the CPU inductor needs a C++ "
                              "compiler") from error
    return compiled


def time_compiled(dense: nn.Module, tt: nn.Module, x: torch.Tensor, rounds: int,
                  time_pair: Callable[..., tuple[float, float]], sync: Callable[[], None] = lambda: None
                  ) -> list[CompiledTiming]:
    """Compile both models with inductor's layout optimization on, then off, each without freezing, then with it
    (`compile_model`); time each pair interleaved."""
    import torch._dynamo

    timings = []
    for freezing, layout in ((False, True), (False, False), (True, True), (True, False)):
        torch._dynamo.reset()  # one setting's graphs at a time
        try:
            compiled_dense = compile_model(dense, x, freezing=freezing, layout_optimization=layout)
            compiled_tt = compile_model(tt, x, freezing=freezing, layout_optimization=layout)
        except TTPlanError as error:
            raise TTPlanError(f"--compile: {error}") from error.__cause__
        with torch.no_grad():
            dense_ms, tt_ms = time_pair(lambda d=compiled_dense: d(x), lambda t=compiled_tt: t(x), rounds, sync)
        timings.append(CompiledTiming(layout, dense_ms, tt_ms, freezing))
    torch._dynamo.reset()
    return timings


__all__ = ["CompiledTiming", "best_of_each", "compile_model", "first_line", "time_compiled"]
