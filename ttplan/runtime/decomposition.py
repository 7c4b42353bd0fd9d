"""TT-SVD of a dense conv kernel into the cores of a `TTFormat`, and the rebuild back to the dense kernel.

Layouts follow docs/conventions.md: channels split row-major over their modes; the rebuilt kernel is
`W[o_1…o_e, i_1…i_d, k_h, k_w]` reshaped to `[O, I, k_h, k_w]`. Each format is a chain of 3-way cores
`[r_left, n, r_right]` over a reordered kernel; the format says which (`TTFormat.chain_layout`), e.g.
classical `[K, I_1·O_1, …, I_d·O_d]`, hodec `[O_1, …, O_e, K, I_1, …, I_d]`.

Decomposition is sequential truncated SVD left to right (left-orthogonal cores, singular values pushed
right). Ranks above what an SVD can give are padded with zeros, which leaves the rebuild unchanged.
"""

from __future__ import annotations

import math

import torch

from ttplan.core.formats import ChainLayout, TTFormat
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError


def _check_format(fmt: TTFormat, spec: ConvSpec) -> ChainLayout:
    """Validate the format against the layer and return its chain view (`TTFormat.chain_layout`)."""
    fmt.validate(spec)
    return fmt.chain_layout(spec)


def _kernel_shape(spec: ConvSpec) -> tuple[int, ...]:
    """The dense shape `rebuild` returns: `[O, I]` for linear layers, else `[O, I, k_h, k_w]`."""
    if spec.linear:
        return (spec.out_channels, spec.in_channels)
    return (spec.out_channels, spec.in_channels, *spec.kernel_size)


def _check_weight(weight: torch.Tensor, spec: ConvSpec) -> None:
    """One-line error if the weight is not a floating tensor of the layer's kernel shape."""
    if not isinstance(weight, torch.Tensor):
        raise TTPlanError(f"weight of type {type(weight).__name__}: expected a torch.Tensor")
    full = (spec.out_channels, spec.in_channels, *spec.kernel_size)
    accepted = [full, _kernel_shape(spec)] if spec.linear else [full]
    if tuple(weight.shape) not in accepted:
        raise TTPlanError(
            f"weight of shape {list(weight.shape)}: the layer {spec.describe()} expects "
            + " or ".join(str(list(s)) for s in accepted)
        )
    if not weight.is_floating_point():
        raise TTPlanError(f"weight of dtype {weight.dtype}: expected a floating-point tensor")


def _work_dtype(weight: torch.Tensor) -> torch.dtype:
    """SVD precision: float64 wherever the device has it (MPS does not), so float32/bf16 weights lose nothing."""
    return torch.float32 if weight.device.type == "mps" else torch.float64


def _pad(core: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Zero-pad a `[a, n, b]` core to `[left, n, right]`; zero rows/columns add nothing to the chain product."""
    a, n, b = core.shape
    if (a, b) == (left, right):
        return core
    out = core.new_zeros(left, n, right)
    out[:a, :, :b] = core
    return out


def decompose(weight: torch.Tensor, fmt: TTFormat, spec: ConvSpec) -> list[torch.Tensor]:
    """TT-SVD of a dense kernel into the cores of `fmt`, shaped exactly as `fmt.cores(spec)`, in that order.

    Runs on the weight's device; the SVDs run in float64 (except on MPS) and the cores come back in the
    weight's dtype. The weight is detached: this is a projection, not a differentiable op.
    """
    _check_weight(weight, spec)
    chain = _check_format(fmt, spec)
    work = weight.detach().to(_work_dtype(weight))
    tensor = work.reshape(chain.kernel_modes).permute(chain.chain_axes).reshape(chain.chain_sizes)

    chain_cores: list[torch.Tensor] = []
    rest = tensor.reshape(1, -1)
    r_prev = 1  # rank actually achieved at the previous cut (<= the requested one)
    sizes, ranks = chain.chain_sizes, chain.chain_ranks
    for t in range(len(sizes) - 1):
        mat = rest.reshape(r_prev * sizes[t], -1)
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        r = min(ranks[t + 1], s.numel())
        chain_cores.append(_pad(u[:, :r].reshape(r_prev, sizes[t], r), ranks[t], ranks[t + 1]))
        rest = s[:r, None] * vh[:r]
        r_prev = r
    chain_cores.append(_pad(rest.reshape(r_prev, sizes[-1], 1), ranks[-2], 1))

    shapes = [c.shape for c in fmt.cores(spec)]
    return [c.reshape(shape).to(weight.dtype) for c, shape in zip(chain_cores, shapes)]


def rebuild(cores: list[torch.Tensor], fmt: TTFormat, spec: ConvSpec) -> torch.Tensor:
    """The dense kernel `[O, I, k_h, k_w]` (`[O, I]` for linear layers) from the cores; differentiable."""
    chain = _check_format(fmt, spec)
    fmt.check_cores([tuple(core.shape) for core in cores], spec)
    sizes, ranks, axes = chain.chain_sizes, chain.chain_ranks, chain.chain_axes
    full = cores[0].reshape(sizes[0], ranks[1])
    for t in range(1, len(cores)):
        core = cores[t].reshape(ranks[t], sizes[t] * ranks[t + 1])
        full = torch.tensordot(full, core, dims=1).reshape(-1, ranks[t + 1])
    permuted = full.reshape([chain.kernel_modes[p] for p in axes])
    inverse = [axes.index(a) for a in range(len(axes))]
    return permuted.permute(inverse).reshape(_kernel_shape(spec))


def relative_error(weight: torch.Tensor, cores: list[torch.Tensor], fmt: TTFormat, spec: ConvSpec) -> float:
    """‖W − rebuild(cores)‖_F / ‖W‖_F, evaluated in float64 (0 for a zero kernel rebuilt exactly)."""
    _check_weight(weight, spec)
    approx = rebuild(cores, fmt, spec).detach().to(torch.float64).reshape(weight.shape)
    dense = weight.detach().to(torch.float64)
    num = torch.linalg.vector_norm(dense - approx.to(dense.device)).item()
    den = torch.linalg.vector_norm(dense).item()
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def project(weight: torch.Tensor, fmt: TTFormat, spec: ConvSpec) -> torch.Tensor:
    """The ADMM projection Π: the closest-by-TT-SVD kernel in the format, shaped like `weight`."""
    return rebuild(decompose(weight, fmt, spec), fmt, spec).reshape(weight.shape)


__all__ = ["decompose", "project", "rebuild", "relative_error"]
