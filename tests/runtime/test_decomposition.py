"""TT-SVD: exactness at the exact ranks, layouts as in docs/conventions.md, truncation, padding, projection."""

from __future__ import annotations

import pytest
import torch

from ttplan.core.formats import TTFormat, make_format, max_rank_format
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.runtime.decomposition import decompose, project, rebuild, relative_error

# (kind, spec, in_modes, out_modes): square and non-square kernels, odd channel counts, 1x1 and linear layers
CASES = [
    ("classical", ConvSpec.make(6, 10, 3), (2, 3), (2, 5)),
    ("classical", ConvSpec.make(6, 10, (3, 1)), (3, 2), (5, 2)),
    ("classical", ConvSpec.make(12, 8, (1, 3)), (2, 3, 2), (2, 2, 2)),
    ("classical", ConvSpec.make(5, 7, (2, 3)), (5,), (7,)),
    ("hodec", ConvSpec.make(6, 10, 3), (2, 3), (2, 5)),
    ("hodec", ConvSpec.make(6, 10, (3, 5), input_size=8), (3, 2), (5, 2)),
    ("hodec", ConvSpec.make(8, 12, 3), (2, 2, 2), (3, 4)),
    ("tucker2", ConvSpec.make(6, 10, 3), (6,), (10,)),
    ("tucker2", ConvSpec.make(7, 5, (1, 3)), (7,), (5,)),
    ("ttm", ConvSpec.make_linear(12, 20), (3, 4), (4, 5)),
    ("ttm", ConvSpec.make(6, 10, 1), (2, 3), (2, 5)),
    ("classical", ConvSpec.make_linear(6, 10), (2, 3), (2, 5)),
]


def _ids(case) -> str:
    kind, spec, i, o = case
    return f"{kind}-{spec.describe().split(' ')[0]}-{spec.kernel_size[0]}x{spec.kernel_size[1]}-{i}-{o}"


def _kernel(spec: ConvSpec, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (spec.out_channels, spec.in_channels) if spec.linear else (
        spec.out_channels, spec.in_channels, *spec.kernel_size)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def _reference_rebuild(cores: list[torch.Tensor], fmt: TTFormat, spec: ConvSpec) -> torch.Tensor:
    """The conventions' formula written directly as one einsum, independent of the chain code."""
    letters = iter("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    d, e = len(fmt.in_modes), len(fmt.out_modes)
    o = [next(letters) for _ in range(e)]
    i = [next(letters) for _ in range(d)]
    kh, kw = next(letters), next(letters)
    r = [next(letters) for _ in range(len(fmt.ranks) + 1)]
    if fmt.name == "classical":
        terms = [kh + kw + r[0]] + [r[j] + i[j] + o[j] + r[j + 1] for j in range(d)]
        dense = torch.einsum(",".join(terms) + "->" + "".join(o + i) + kh + kw, *cores)
        return dense.reshape(spec.out_channels, spec.in_channels, *spec.kernel_size)
    if fmt.name == "ttm":
        terms = [r[j] + i[j] + o[j] + r[j + 1] for j in range(d)]
        dense = torch.einsum(",".join(terms) + "->" + "".join(o + i), *cores)
        return dense.reshape(spec.out_channels, spec.in_channels, *spec.kernel_size)
    terms = [r[j] + o[j] + r[j + 1] for j in range(e)]
    terms.append(r[e] + kh + kw + r[e + 1])
    terms += [r[e + 1 + j] + i[j] + r[e + 2 + j] for j in range(d)]
    dense = torch.einsum(",".join(terms) + "->" + "".join(o + i) + kh + kw, *cores)
    return dense.reshape(spec.out_channels, spec.in_channels, *spec.kernel_size)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_exact_at_max_ranks_and_shapes(case):
    kind, spec, in_modes, out_modes = case
    fmt = max_rank_format(kind, spec, in_modes, out_modes)
    w = _kernel(spec)
    cores = decompose(w, fmt, spec)
    assert [tuple(c.shape) for c in cores] == [c.shape for c in fmt.cores(spec)]
    assert relative_error(w, cores, fmt, spec) < 1e-10
    rebuilt = rebuild(cores, fmt, spec)
    assert rebuilt.shape == w.shape
    assert torch.allclose(rebuilt.reshape(-1), _reference_rebuild(cores, fmt, spec).reshape(-1), atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_rebuild_matches_conventions_on_random_cores(case):
    kind, spec, in_modes, out_modes = case
    fmt = max_rank_format(kind, spec, in_modes, out_modes)
    g = torch.Generator().manual_seed(1)
    cores = [torch.randn(c.shape, generator=g, dtype=torch.float64) for c in fmt.cores(spec)]
    ref = _reference_rebuild(cores, fmt, spec)
    assert torch.allclose(rebuild(cores, fmt, spec).reshape(ref.shape), ref, atol=1e-10)


def test_left_orthogonal_cores():
    spec = ConvSpec.make(6, 10, 3)
    fmt = make_format("classical", spec, in_modes=(2, 3), out_modes=(2, 5), ranks=(4, 6, 1))
    cores = decompose(_kernel(spec), fmt, spec)
    for core in cores[:-1]:
        mat = core.reshape(-1, core.shape[-1])
        assert torch.allclose(mat.T @ mat, torch.eye(core.shape[-1], dtype=mat.dtype), atol=1e-12)


@pytest.mark.parametrize("kind", ["classical", "hodec"])
def test_error_decreases_with_rank(kind):
    spec = ConvSpec.make(8, 12, 3)
    in_modes, out_modes = (2, 4), (3, 4)
    w = _kernel(spec, seed=3)
    errors = []
    for rank in (1, 2, 4, 8, 16, 32, 96):
        fmt = make_format(kind, spec, in_modes=in_modes, out_modes=out_modes, rank=rank)
        errors.append(relative_error(w, decompose(w, fmt, spec), fmt, spec))
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.5 and errors[-1] < 1e-10


def test_padding_above_exact_ranks_keeps_rebuild():
    spec = ConvSpec.make(8, 16, 3)
    exact = max_rank_format("hodec", spec, (2, 4), (4, 4))
    padded = make_format("hodec", spec, in_modes=(2, 4), out_modes=(4, 4), ranks=exact.rank_bounds(spec))
    assert padded.ranks != exact.ranks  # the bounds really are above the exact ranks here
    w = _kernel(spec, seed=4)
    cores = decompose(w, padded, spec)
    assert [tuple(c.shape) for c in cores] == [c.shape for c in padded.cores(spec)]
    assert relative_error(w, cores, padded, spec) < 1e-10
    # truncated and padded at once: same rebuild as the plain truncation
    low = make_format("classical", spec, in_modes=(2, 4), out_modes=(4, 4), ranks=(9, 2, 1))
    high = make_format("classical", spec, in_modes=(2, 4), out_modes=(4, 4), ranks=(64, 2, 1))
    assert high.ranks[0] > high.max_ranks(spec)[0]
    assert torch.allclose(project(w, high, spec), project(w, low, spec), atol=1e-12)


@pytest.mark.parametrize("kind,ranks", [("classical", (4, 5, 1)), ("hodec", (1, 2, 6, 4, 2, 1)), ("ttm", None)])
def test_projection_idempotent_and_in_format(kind, ranks):
    if kind == "ttm":
        spec = ConvSpec.make_linear(6, 10)
        fmt = make_format("ttm", spec, in_modes=(2, 3), out_modes=(2, 5), ranks=(1, 2, 1))
    else:
        spec = ConvSpec.make(6, 10, 3)
        fmt = make_format(kind, spec, in_modes=(2, 3), out_modes=(2, 5), ranks=ranks)
    w = _kernel(spec, seed=5)
    p = project(w, fmt, spec)
    assert p.shape == w.shape
    assert relative_error(w, decompose(w, fmt, spec), fmt, spec) > 1e-3  # really truncated
    assert torch.allclose(project(p, fmt, spec), p, atol=1e-12)
    assert relative_error(p, decompose(p, fmt, spec), fmt, spec) < 1e-10


def test_dtypes_follow_weight():
    spec = ConvSpec.make(6, 10, 3)
    fmt = max_rank_format("hodec", spec, (2, 3), (2, 5))
    for dtype, tol in ((torch.float32, 1e-6), (torch.bfloat16, 2e-2)):
        w = _kernel(spec, dtype=dtype)
        cores = decompose(w, fmt, spec)
        assert all(c.dtype == dtype for c in cores)
        assert relative_error(w, cores, fmt, spec) < tol
        assert project(w, fmt, spec).dtype == dtype


def test_linear_accepts_4d_weight_and_rebuild_is_differentiable():
    spec = ConvSpec.make_linear(12, 20)
    fmt = make_format("ttm", spec, in_modes=(3, 4), out_modes=(4, 5), ranks=(1, 3, 1))
    w = _kernel(spec)
    assert torch.allclose(project(w.reshape(20, 12, 1, 1), fmt, spec).reshape(20, 12), project(w, fmt, spec))
    cores = [c.clone().requires_grad_(True) for c in decompose(w, fmt, spec)]
    rebuild(cores, fmt, spec).pow(2).sum().backward()
    assert all(c.grad is not None and c.grad.abs().sum() > 0 for c in cores)


def test_errors_are_one_line():
    spec = ConvSpec.make(6, 10, 3)
    fmt = max_rank_format("classical", spec, (2, 3), (2, 5))
    with pytest.raises(TTPlanError, match=r"weight of shape \[10, 6, 1, 1\]") as err:
        decompose(torch.zeros(10, 6, 1, 1), fmt, spec)
    assert "\n" not in str(err.value)
    with pytest.raises(TTPlanError, match="expects"):
        project(torch.zeros(6, 10, 3, 3), fmt, spec)
    with pytest.raises(TTPlanError, match="2 cores given.*has 3"):
        rebuild(decompose(torch.zeros(10, 6, 3, 3), fmt, spec)[:2], fmt, spec)
    with pytest.raises(TTPlanError, match="core G1"):
        cores = decompose(torch.randn(10, 6, 3, 3), fmt, spec)
        rebuild([cores[0], cores[1][:1], cores[2]], fmt, spec)


def test_zero_kernel():
    spec = ConvSpec.make(6, 10, 3)
    fmt = make_format("classical", spec, in_modes=(2, 3), out_modes=(2, 5), rank=3)
    w = torch.zeros(10, 6, 3, 3)
    assert relative_error(w, decompose(w, fmt, spec), fmt, spec) == 0.0
