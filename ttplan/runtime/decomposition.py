"""TT-SVD of a dense conv kernel into the cores of a `TTFormat`, and the rebuild back to the dense kernel.

Layouts follow docs/conventions.md: channels split row-major over their modes; the rebuilt kernel is
`W[o_1…o_e, i_1…i_d, k_h, k_w]` reshaped to `[O, I, k_h, k_w]`. Each format is a chain of 3-way cores
`[r_left, n, r_right]` over a reordered kernel:

- classical: `[K, I_1·O_1, …, I_d·O_d]` (S first, then `G_j` with `i_j` major, `o_j` minor);
- hodec / tucker2: `[O_1, …, O_e, K, I_1, …, I_d]` (the published `tt_shapes` order);
- ttm: `[I_1·O_1, …, I_d·O_d]`.

Decomposition is sequential truncated SVD left to right (left-orthogonal cores, singular values pushed
right). Ranks above what an SVD can give are padded with zeros, which leaves the rebuild unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ttplan.core.formats import TTFormat
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError


@dataclass(frozen=True)
class _Chain:
    """How a format sees the kernel: the permutation into chain order and the chain's sizes and ranks."""

    base: tuple[int, ...]  # W viewed as [O_1..O_e, I_1..I_d, k_h, k_w]
    perm: tuple[int, ...]  # axes of `base` in chain order
    sizes: tuple[int, ...]  # mode size of each chain core
    ranks: tuple[int, ...]  # len(sizes) + 1 ranks, 1 at both ends


def _chain(fmt: TTFormat, spec: ConvSpec) -> _Chain:
    """The chain view of `fmt` on `spec`'s kernel (which axes go to which core, in core order)."""
    kh, kw = spec.kernel_size
    d, e = len(fmt.in_modes), len(fmt.out_modes)
    base = (*fmt.out_modes, *fmt.in_modes, kh, kw)
    o_ax, i_ax, kh_ax, kw_ax = list(range(e)), [e + j for j in range(d)], e + d, e + d + 1
    pairs = [ax for j in range(min(d, e)) for ax in (i_ax[j], o_ax[j])]  # classical/ttm: d == e
    if fmt.kind == "classical":
        perm = (kh_ax, kw_ax, *pairs)
        ranks = (1, *fmt.ranks)
    elif fmt.kind == "ttm":
        perm = (*pairs, kh_ax, kw_ax)  # the window is 1x1 here, so it folds into the last core
        ranks = tuple(fmt.ranks)
    elif fmt.kind == "hodec":
        perm = (*o_ax, kh_ax, kw_ax, *i_ax)
        ranks = tuple(fmt.ranks)
    else:
        raise TTPlanError(f"format={fmt.kind!r}: expected classical, hodec or ttm")
    return _Chain(base, perm, fmt.tt_shapes(spec), ranks)


def _check_format(fmt: TTFormat, spec: ConvSpec) -> _Chain:
    """Validate the format against the layer and return its chain view."""
    fmt.validate(spec)
    return _chain(fmt, spec)


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
    bad = int((~torch.isfinite(weight.detach())).sum())
    if bad:
        raise TTPlanError(f"weight has {bad} non-finite entries (NaN or inf) of {weight.numel()}: a TT-SVD needs "
                          "finite weights")


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
    tensor = work.reshape(chain.base).permute(chain.perm).reshape(chain.sizes)

    chain_cores: list[torch.Tensor] = []
    rest = tensor.reshape(1, -1)
    r_prev = 1  # rank actually achieved at the previous cut (<= the requested one)
    for t in range(len(chain.sizes) - 1):
        mat = rest.reshape(r_prev * chain.sizes[t], -1)
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        r = min(chain.ranks[t + 1], s.numel())
        chain_cores.append(_pad(u[:, :r].reshape(r_prev, chain.sizes[t], r), chain.ranks[t], chain.ranks[t + 1]))
        rest = s[:r, None] * vh[:r]
        r_prev = r
    chain_cores.append(_pad(rest.reshape(r_prev, chain.sizes[-1], 1), chain.ranks[-2], 1))

    shapes = [c.shape for c in fmt.cores(spec)]
    return [c.reshape(shape).to(weight.dtype) for c, shape in zip(chain_cores, shapes)]


def rebuild(cores: list[torch.Tensor], fmt: TTFormat, spec: ConvSpec) -> torch.Tensor:
    """The dense kernel `[O, I, k_h, k_w]` (`[O, I]` for linear layers) from the cores; differentiable."""
    chain = _check_format(fmt, spec)
    expected = fmt.cores(spec)
    if len(cores) != len(expected):
        raise TTPlanError(
            f"{len(cores)} cores given: the {fmt.label} format has {len(expected)} "
            f"({', '.join(c.name for c in expected)})"
        )
    for core, want in zip(cores, expected):
        if tuple(core.shape) != want.shape:
            raise TTPlanError(f"core {want.name} of shape {list(core.shape)}: expected {list(want.shape)}")
    full = cores[0].reshape(chain.sizes[0], chain.ranks[1])
    for t in range(1, len(cores)):
        core = cores[t].reshape(chain.ranks[t], chain.sizes[t] * chain.ranks[t + 1])
        full = torch.tensordot(full, core, dims=1).reshape(-1, chain.ranks[t + 1])
    permuted = full.reshape([chain.base[p] for p in chain.perm])
    inverse = [chain.perm.index(a) for a in range(len(chain.perm))]
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
