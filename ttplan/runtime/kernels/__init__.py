"""Fused CPU kernels that ttplan builds on the user's machine: optional, with stock torch ops as the fallback.

`build` compiles and loads the C source with the C compiler found at run time (cached per machine);
`tucker` registers the fused op `ttplan::tucker_conv2d` (a 1x1 mixing, a k_h x k_w conv and a 1x1 mixing in one
pass per image) with torch, its shape function and its FLOP formula;
`frozen` binds one layer's call once, for frozen models. docs/latency.md says when it is used.
"""

from ttplan.runtime.kernels.build import KernelStatus, kernel_status
from ttplan.runtime.kernels.frozen import FrozenTucker
from ttplan.runtime.kernels.tucker import fused_available, tucker_conv2d

__all__ = ["FrozenTucker", "KernelStatus", "fused_available", "kernel_status", "tucker_conv2d"]
