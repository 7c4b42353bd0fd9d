"""A fused layer's kernel call bound once, for frozen models: only the map and the residual change from call to call.

`tucker_conv2d` checks every argument and looks the weights' packs up on each call, comparing values: on a batch-1
ResNet-56 layer that costs about as much as the kernel's own work. A `FrozenTucker` checks the weights and packs them
once, and a call checks only what can differ (the map's type, dtype, device and shape, the residual's) before
calling the kernel (`reports/latency_best.md`: the eager NCHW rows against the eager NCHW, frozen ones). It is
what a TT layer's `freeze()` keeps; the layer says when the bound weights are still its own.
"""

from __future__ import annotations

import torch

from ttplan.runtime.kernels.build import load
from ttplan.runtime.kernels.tucker import Bound, _check_all, _plain_eager, pack


class FrozenTucker:
    """`tucker_conv2d(x, wa, g, wc, ..., residual=residual)` with every argument but `x` and `residual` bound and the
    weights packed. A call returns None wherever the bound call does not apply, so the caller runs its own path: a
    map that is not a plain CPU float32 tensor, an unseen shape that the kernel refuses, something watching ops
    (`FlopCounterMode`, tracing, `torch.compile`, which must see the registered op)."""

    def __init__(self, wa: torch.Tensor | None, g: torch.Tensor, wc: torch.Tensor | None, stride: list[int],
                 padding: list[int], dilation: list[int], *, scale: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None, relu: bool = False, in_groups: int = 1, out_groups: int = 1) -> None:
        self.weights = tuple(None if w is None else w.detach() for w in (wa, g, wc))
        self.scale, self.bias = (None if t is None else t.detach().contiguous() for t in (scale, bias))
        self.stride, self.padding, self.dilation = list(stride), list(padding), list(dilation)
        self.relu, self.in_groups, self.out_groups = bool(relu), int(in_groups), int(out_groups)
        self.packs = tuple(None if w is None else pack(w, cache=False) for w in self.weights)
        self.shapes: dict[torch.Size, tuple[tuple[int, ...], Bound]] = {}  # input shape -> output's, bound layer

    def __getstate__(self) -> dict:
        """Copied or pickled without the bound C layers, which are bound again on first use."""
        return {**self.__dict__, "shapes": {}}

    def bound(self, x: torch.Tensor) -> tuple[tuple[int, ...], Bound] | None:
        """The output's shape for a map shaped as `x` and the kernel's layer bound for it, or None where the kernel
        would not take it (checked and bound once per shape)."""
        entry = self.shapes.get(x.shape)
        if entry is None:
            wa, g, wc = self.weights
            try:
                shape = _check_all(x, wa, g, wc, self.stride, self.padding, self.dilation, self.bias, None,
                                   self.scale, self.in_groups, self.out_groups)
            except ValueError:
                return None
            library = load()[0]
            if library is None:
                return None
            if len(self.shapes) >= 64:  # a server fed ever new shapes keeps a bounded table
                self.shapes.clear()
            entry = self.shapes[x.shape] = (tuple(shape), Bound(
                library, x.shape[1], x.shape[2], x.shape[3], self.weights, self.packs, self.stride, self.padding,
                self.dilation, (shape[2], shape[3]), self.scale, self.bias, self.relu, self.in_groups,
                self.out_groups))
        return entry

    def bound_for(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], Bound] | None:
        """`bound` for a float32 CPU map of this shape that the caller has not made yet (an intermediate of a chain of
        layers run by one kernel call, `ttplan.runtime.frozen_blocks`)."""
        entry = self.shapes.get(shape)
        return entry if entry is not None else self.bound(torch.empty(shape))

    def output_shape(self, x: torch.Tensor) -> list[int] | None:
        """The output's shape for a map shaped as `x`, or None where the kernel would not take it."""
        entry = self.bound(x)
        return None if entry is None else list(entry[0])

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor | None:
        """The layer's output for the map `x` (plus `residual`, of the output's shape), or None where this bound call
        does not apply."""
        if type(x) is not torch.Tensor or x.dtype is not torch.float32 or not x.is_cpu:
            return None
        if not _plain_eager((x, residual)):
            return None
        entry = self.bound(x)
        if entry is None:
            return None
        shape, call = entry
        if residual is not None:
            if (type(residual) is not torch.Tensor or residual.dtype is not torch.float32 or not residual.is_cpu
                    or residual.shape != shape):
                return None
            residual = residual.contiguous()
        y = torch.empty(*shape, dtype=torch.float32)  # (sizes as arguments: half a µs sooner than one sequence)
        call(x.contiguous(), y, residual, torch.get_num_threads())
        return y


__all__ = ["FrozenTucker"]
