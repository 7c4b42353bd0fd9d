"""TT-SVD of a dense conv kernel into the cores of a `TTFormat`, and the rebuild back to the dense kernel.

Layouts follow docs/conventions.md: channels split row-major over their modes; the rebuilt kernel is
`W[o_1…o_e, i_1…i_d, k_h, k_w]` reshaped to `[O, I, k_h, k_w]`. Each format is a chain of 3-way cores
`[r_left, n, r_right]` over a reordered kernel; the format says which (`TTFormat.chain_layout`), e.g.
classical `[K, I_1·O_1, …, I_d·O_d]`, hodec `[O_1, …, O_e, K, I_1, …, I_d]`.

Decomposition is sequential truncated SVD left to right (left-orthogonal cores, singular values pushed right); a
ring (equal end ranks above 1) splits the first SVD's rank into the closing rank and the next. Ranks above what an
SVD can give are padded with zeros, which leaves the rebuild unchanged.
"""

from __future__ import annotations

import math

import torch

from ttplan.core.formats import ChainLayout, FactorLayout, TTFormat
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.runtime.algorithms import CP_ITERATIONS, CP_TOLERANCE, cp_als, khatri_rao, tt_svd


def _check_format(fmt: TTFormat, spec: ConvSpec) -> ChainLayout | FactorLayout:
    """Validate the format against the layer and return its kernel view (`TTFormat.kernel_layout`)."""
    fmt.validate(spec)
    return fmt.kernel_layout(spec)


def _factor_view(work: torch.Tensor, layout: FactorLayout) -> torch.Tensor:
    """The kernel as a tensor with one axis per factor."""
    return work.reshape(layout.kernel_modes).permute(layout.axes).reshape(layout.factor_sizes)


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


def decompose(weight: torch.Tensor, fmt: TTFormat, spec: ConvSpec) -> list[torch.Tensor]:
    """TT-SVD (ring SVD for a ring, CP-ALS for factors on one rank) of a dense kernel into the cores of `fmt`, shaped
    as `fmt.cores(spec)`, in order.

    Runs on the weight's device; the SVDs run in float64 (except on MPS) and the cores come back in the
    weight's dtype. The weight is detached: this is a projection, not a differentiable op.
    """
    _check_weight(weight, spec)
    chain = _check_format(fmt, spec)
    work = weight.detach().to(_work_dtype(weight))
    shapes = [c.shape for c in fmt.cores(spec)]
    if isinstance(chain, FactorLayout):
        factors, _ = cp_als(_factor_view(work, chain), chain.rank)
        return [f.reshape(shape).to(weight.dtype) for f, shape in zip(factors, shapes)]
    tensor = work.reshape(chain.kernel_modes).permute(chain.chain_axes).reshape(chain.chain_sizes)


    chain_cores = tt_svd(tensor, chain.chain_ranks)
    return [c.reshape(shape).to(weight.dtype) for c, shape in zip(chain_cores, shapes)]


def balance(cores: list[torch.Tensor]) -> list[torch.Tensor]:
    """The same kernel with every core at the same Frobenius norm (their geometric mean).

    Every format's kernel is linear in each core, and each core appears once, so scaling the cores by factors
    whose product is 1 leaves the kernel unchanged. TT-SVD leaves the whole scale in its last core; balanced,
    SGD sees gradients of one size across the cores. A zero core leaves the cores as they are.
    """
    norms = [float(torch.linalg.vector_norm(core.detach().double())) for core in cores]
    if not cores or min(norms) == 0.0 or not all(math.isfinite(n) for n in norms):
        return list(cores)
    mean = math.exp(sum(math.log(n) for n in norms) / len(norms))
    return [core * (mean / n) for core, n in zip(cores, norms)]


def rebuild(cores: list[torch.Tensor], fmt: TTFormat, spec: ConvSpec) -> torch.Tensor:
    """The dense kernel `[O, I, k_h, k_w]` (`[O, I]` for linear layers) from the cores; differentiable."""
    chain = _check_format(fmt, spec)
    fmt.check_cores([tuple(core.shape) for core in cores], spec)
    if isinstance(chain, FactorLayout):
        factors = [core.reshape(size, chain.rank) for core, size in zip(cores, chain.factor_sizes)]
        view = [chain.kernel_modes[a] for a in chain.axes]
        full, axes = khatri_rao(factors).sum(-1).reshape(view), chain.axes
        return full.permute([axes.index(a) for a in range(len(axes))]).reshape(_kernel_shape(spec))
    sizes, ranks, axes = chain.chain_sizes, chain.chain_ranks, chain.chain_axes
    full = cores[0].reshape(ranks[0] * sizes[0], ranks[1])
    for t in range(1, len(cores)):
        core = cores[t].reshape(ranks[t], sizes[t] * ranks[t + 1])
        full = torch.mm(full, core).reshape(-1, ranks[t + 1])
    # the trace over the closing rank (a plain reshape for an open chain, whose ends are 1)
    full = full.reshape(ranks[0], -1, ranks[-1]).diagonal(dim1=0, dim2=2).sum(-1)
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
    """The ADMM projection Π: the closest-by-TT-SVD kernel in the format (by CP-ALS for CP: a local optimum, not
    an exact projection), shaped like `weight`."""
    return rebuild(decompose(weight, fmt, spec), fmt, spec).reshape(weight.shape)


__all__ = ["CP_ITERATIONS", "CP_TOLERANCE", "balance", "cp_als", "decompose", "project", "rebuild", "relative_error",
           "tt_svd"]
