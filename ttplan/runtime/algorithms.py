"""The decomposition algorithms in plain torch (no other import), one implementation each: the library calls them
(`ttplan.runtime.decomposition`) and a generated file embeds their source (`inspect.getsource`, codegen).

Each runs in float64 (float32 on MPS, which has no float64) and returns the input's dtype.
"""

from __future__ import annotations

import math

import torch

#: CP-ALS: at most this many sweeps over the factors ...
CP_ITERATIONS = 200
#: ... stopping once the relative error improves by less than this in one sweep
CP_TOLERANCE = 1e-7


def tt_svd(chain: torch.Tensor, ranks: tuple[int, ...]) -> list[torch.Tensor]:
    """Sequential truncated SVDs of `chain` (one axis per core) into cores `[r_t, n_t, r_t+1]` joined by `ranks`.

    `ranks[0] == ranks[-1]` is the closing rank: 1 gives the open chain's TT-SVD; above 1 the first SVD's rank
    is split as `r_0 * r_1` and `r_0` is carried to the far end (the tensor-ring SVD), so the ring's trace
    rebuilds the tensor. Ranks above what an SVD can give are padded with zeros (the product is unchanged).
    """
    work = chain.detach().to(torch.float32 if chain.device.type == "mps" else torch.float64)
    sizes, closing = tuple(work.shape), ranks[0]
    cores = []
    rest = work.reshape(1, -1)
    for t, size in enumerate(sizes[:-1]):
        u, s, vh = torch.linalg.svd(rest.reshape(rest.shape[0] * size, -1), full_matrices=False)
        width = closing * ranks[1] if t == 0 else ranks[t + 1]
        r = min(width, s.numel())
        u, rest = u[:, :r], s[:r, None] * vh[:r]
        if t == 0 and closing > 1:  # split the first rank as (r_0, r_1); move r_0 to the far end of the rest
            u = torch.cat([u, u.new_zeros(u.shape[0], width - r)], dim=1)
            rest = torch.cat([rest, rest.new_zeros(width - r, rest.shape[1])], dim=0)
            cores.append(u.reshape(size, closing, ranks[1]).permute(1, 0, 2))
            rest = rest.reshape(closing, ranks[1], -1).permute(1, 2, 0).reshape(ranks[1], -1)
        else:
            cores.append(u.reshape(-1, size, r))
    cores.append(rest.reshape(rest.shape[0], sizes[-1], closing))
    padded = []
    for t, core in enumerate(cores):
        full = core.new_zeros(ranks[t], core.shape[1], ranks[t + 1])
        full[: core.shape[0], :, : core.shape[2]] = core
        padded.append(full.to(chain.dtype))
    return padded


def tt_chain(cores: list[torch.Tensor]) -> torch.Tensor:
    """Contract cores `[r_t, n_t, r_t+1]` left to right into the tensor of shape `(n_1, ..., n_m)`, tracing over
    the closing rank of a ring (the equal end ranks; 1 for an open chain). Differentiable."""
    closing = cores[0].shape[0]
    full = cores[0].reshape(-1, cores[0].shape[-1])
    for core in cores[1:]:
        full = (full @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[-1])
    full = full.reshape(closing, -1, closing).diagonal(dim1=0, dim2=2).sum(-1)
    return full.reshape([core.shape[1] for core in cores])


def khatri_rao(factors: list[torch.Tensor]) -> torch.Tensor:
    """Column-wise Kronecker product `[n_1 * ... * n_m, R]` of factors `[n_j, R]`, the last factor's rows fastest."""
    out = factors[0]
    for factor in factors[1:]:
        out = (out[:, None, :] * factor[None, :, :]).reshape(-1, out.shape[1])
    return out


def cp_als(tensor: torch.Tensor, rank: int, iterations: int = CP_ITERATIONS, tolerance: float = CP_TOLERANCE
           ) -> tuple[list[torch.Tensor], int]:
    """CP of `tensor` (one factor `[n_j, R]` per axis) by alternating least squares: (factors, sweeps run).

    Starts from each unfolding's leading left singular vectors (seeded random columns past its rank), so it is
    deterministic; stops after `iterations` sweeps or when the relative error improves by less than `tolerance`.
    CP has no exact projection: the result is a local optimum.
    """
    work = tensor.detach().to(torch.float32 if tensor.device.type == "mps" else torch.float64)
    shape, m = tuple(work.shape), work.dim()
    unfold = [work.movedim(n, 0).reshape(shape[n], -1) for n in range(m)]
    gen = torch.Generator(device=work.device).manual_seed(0)
    factors = []
    for n in range(m):
        u = torch.linalg.svd(unfold[n], full_matrices=False)[0][:, :rank]
        extra = torch.randn(shape[n], rank - u.shape[1], generator=gen, dtype=work.dtype, device=work.device)
        factors.append(torch.cat([u, extra / math.sqrt(shape[n])], dim=1))
    norm = torch.linalg.vector_norm(work).item()
    error, sweeps = math.inf, 0
    for sweeps in range(1, iterations + 1):  # noqa: B007  (the count is returned)
        for n in range(m):
            others = [factors[j] for j in range(m) if j != n]
            gram = torch.ones(rank, rank, dtype=work.dtype, device=work.device)
            for factor in others:
                gram = gram * (factor.T @ factor)
            mttkrp = unfold[n] @ khatri_rao(others) if others else unfold[n]
            factors[n] = torch.linalg.lstsq(gram, mttkrp.T).solution.T if others else mttkrp
            if n < m - 1:  # keep the scale in the last factor; the next solve absorbs this one's
                scale = torch.linalg.vector_norm(factors[n], dim=0)
                factors[n] = factors[n] / torch.where(scale > 0, scale, torch.ones_like(scale))
        # |T - X|^2 = |T|^2 - 2<T, X> + |X|^2, with <T, X> from the last solve's MTTKRP
        full = torch.ones(rank, rank, dtype=work.dtype, device=work.device)
        for factor in factors:
            full = full * (factor.T @ factor)
        residual = max(norm ** 2 - 2 * (factors[-1] * mttkrp).sum().item() + full.sum().item(), 0.0)
        new = math.sqrt(residual) / norm if norm > 0 else 0.0
        if error - new < tolerance:
            break
        error = new
    return [factor.to(tensor.dtype) for factor in factors], sweeps


#: what a generated file embeds, in order (each function's source, then the constants its defaults name)
EMBEDDED_CHAIN = (tt_svd, tt_chain)
EMBEDDED_CP = (khatri_rao, cp_als)

__all__ = ["CP_ITERATIONS", "CP_TOLERANCE", "EMBEDDED_CHAIN", "EMBEDDED_CP", "cp_als", "khatri_rao", "tt_chain",
           "tt_svd"]
