"""Random TT layers and their reference results, shared by the runtime tests (lowering, layers, codegen, CUDA)."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.factors import random_factors
from ttplan.core.contraction import ContractionPlan
from ttplan.core.formats import TTFormat, get_format, make_format
from ttplan.core.network import build_network
from ttplan.core.schemes import schemes_for
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.runtime.decomposition import rebuild
from ttplan.runtime.layers import TTConv2d
from ttplan.runtime.lowering import Program, fold, run_feature_steps, run_plan


def load_source(source: str) -> dict:
    """Execute generated source in a fresh namespace."""
    namespace: dict = {"__name__": "generated"}
    exec(compile(source, "generated.py", "exec"), namespace)
    return namespace


def random_case(rng: random.Random, max_cores: int = 7) -> tuple[ConvSpec, TTFormat, int]:
    """A random small conv (stride, padding, dilation, non-square, odd sizes), a random format and a batch.

    Ranks are drawn up to `rank_bounds`, so some exceed the exact TT rank (zero padding in TT-SVD)
    and interior ranks of 1 occur.
    """
    while True:
        kernel = (rng.choice([1, 2, 3]), rng.choice([1, 2, 3, 5]))
        stride = (rng.choice([1, 2, 3]), rng.choice([1, 2]))
        padding = (rng.randint(0, 2), rng.randint(0, 2))
        dilation = (rng.choice([1, 2]), rng.choice([1, 1, 2]))
        size = (rng.randint(1, 11), rng.randint(1, 9))
        channels = (rng.choice([1, 2, 3, 4, 6, 8, 12]), rng.choice([1, 2, 4, 5, 6, 8, 9]))
        try:
            spec = ConvSpec.make(*channels, kernel, stride, padding, dilation, size)
        except TTPlanError:
            continue
        kind = rng.choice(["classical", "hodec", "hodec", "tucker2"])
        if kind == "classical":
            d = rng.randint(1, 3)
            in_modes, out_modes = random_factors(spec.in_channels, d, rng), random_factors(spec.out_channels, d, rng)
        elif kind == "tucker2":
            in_modes, out_modes = (spec.in_channels,), (spec.out_channels,)
        else:
            in_modes = random_factors(spec.in_channels, rng.randint(1, 3), rng)
            out_modes = random_factors(spec.out_channels, rng.randint(1, 3), rng)
        base = "classical" if kind == "classical" else "hodec"
        bounds = get_format(base)(in_modes, out_modes, ()).rank_bounds(spec)
        if base == "classical":
            ranks = (*(rng.randint(1, min(b, 10)) for b in bounds[:-1]), 1)
        else:
            ranks = (1, *(rng.randint(1, min(b, 10)) for b in bounds[1:-1]), 1)
        fmt = get_format(base)(in_modes, out_modes, ranks)
        if len(fmt.cores(spec)) > max_cores:
            continue
        fmt.validate(spec)
        return spec, fmt, rng.randint(1, 3)


def random_linear(rng: random.Random) -> tuple[ConvSpec, TTFormat, int]:
    """A random nn.Linear in the ttm format."""
    spec = ConvSpec.make_linear(rng.choice([4, 6, 8, 12]), rng.choice([2, 6, 9, 10]), bias=rng.random() < 0.5)
    d = rng.randint(1, 3)
    in_modes, out_modes = random_factors(spec.in_channels, d, rng), random_factors(spec.out_channels, d, rng)
    bounds = get_format("ttm")(in_modes, out_modes, ()).rank_bounds(spec)
    fmt = make_format("ttm", spec, in_modes=in_modes, out_modes=out_modes,
                      ranks=(1, *(rng.randint(1, min(b, 6)) for b in bounds[1:-1]), 1))
    return spec, fmt, rng.randint(1, 4)


def plans_for(spec: ConvSpec, fmt: TTFormat, batch: int, fold_weights: bool = False) -> dict[str, ContractionPlan]:
    """Every fixed scheme of the format and the searched best order."""
    network = build_network(spec, fmt, batch)
    plans = dict(schemes_for(network, fold_weights))
    plans["best"] = optimize(network, fold_weights=fold_weights)
    return plans


def conv_with(x: torch.Tensor, kernel: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    """`conv2d` of `x` with a dense `kernel` at the layer's stride, padding and dilation (no bias)."""
    return F.conv2d(x, kernel, stride=spec.stride, padding=spec.padding, dilation=spec.dilation)


def reference(x: torch.Tensor, cores: list[torch.Tensor], spec: ConvSpec, fmt: TTFormat) -> torch.Tensor:
    """The dense conv with the kernel rebuilt by `ttplan.runtime.decomposition.rebuild` (independent of execute)."""
    kernel = rebuild(cores, fmt, spec).reshape(spec.out_channels, spec.in_channels, *spec.kernel_size)
    return conv_with(x, kernel, spec)


def the_class(source: str):
    """The one layer class a generated module exports."""
    namespace = load_source(source)
    (name,) = namespace["__all__"]
    return namespace[name]


def assert_counts_planned_flops(program: Program, x: torch.Tensor, cores: list[torch.Tensor]) -> None:
    """FlopCounterMode: a whole run is 2 x (feature + weight MACs), the feature steps after folding 2 x feature."""
    plan = program.plan
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run_plan(program, x, cores)
    assert counter.get_total_flops() == 2 * (plan.feature_macs + plan.weight_macs)
    with torch.no_grad():
        folded = fold(program, cores)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run_feature_steps(program, x, folded)
    assert counter.get_total_flops() == 2 * plan.feature_macs


def random_tensors(spec: ConvSpec, fmt: TTFormat, batch: int, gen: torch.Generator, dtype=torch.float64):
    """Random input and cores (requiring grad)."""
    x = torch.randn(batch, spec.in_channels, *spec.input_size, dtype=dtype, generator=gen, requires_grad=True)
    cores = [torch.randn(c.shape, dtype=dtype, generator=gen).requires_grad_() for c in fmt.cores(spec)]
    return x, cores


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-10) -> None:
    scale = max(expected.abs().max().item(), 1e-30)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= rel * scale


def assert_folded_model_deploys(folded: torch.nn.Module, unfolded: torch.nn.Module, x: torch.Tensor) -> None:
    """A folded model equals its unfolded twin, and so do its torch.jit.script, torch.jit.trace and torch.export
    captures."""
    with torch.no_grad():
        expected = folded(x)
        assert_close(expected, unfolded(x), rel=1e-4)
        scripted = torch.jit.script(folded)
        traced = torch.jit.trace(folded, x)
        exported = torch.export.export(folded, (x,)).module()
        for captured in (scripted, traced, exported):
            assert_close(captured(x), expected, rel=1e-5)


def assert_same_values_and_gradients(out: torch.Tensor, expected: torch.Tensor, inputs: list[torch.Tensor],
                                     gen: torch.Generator) -> None:
    """`out` equals `expected`, and so do their gradients with respect to `inputs` along one random probe."""
    assert_close(out, expected)
    probe = torch.randn(expected.shape, dtype=expected.dtype, generator=gen)
    got = torch.autograd.grad((out * probe).sum(), inputs)
    want = torch.autograd.grad((expected * probe).sum(), inputs)
    for a, b in zip(got, want):
        assert_close(a, b)


def assert_every_order_equals_conv2d_with(kernel_of, spec: ConvSpec, fmt: TTFormat, batch: int,
                                          gen: torch.Generator) -> None:
    """Every order of `fmt` as a float64 TTConv2d equals conv2d with `kernel_of(cores, fmt, spec)` (a kernel built
    independently of the library), values and gradients, and `rebuild` gives that kernel too."""
    x = torch.randn(batch, spec.in_channels, *spec.input_size, dtype=torch.float64, generator=gen)
    x.requires_grad_()
    for name in plans_for(spec, fmt, batch):
        layer = TTConv2d(spec, fmt, plan=name, dtype=torch.float64, batch=batch)
        cores = list(layer.cores)
        kernel = kernel_of(cores, fmt, spec)
        assert_close(rebuild(cores, fmt, spec), kernel)
        assert_same_values_and_gradients(layer(x), conv_with(x, kernel, spec), [x, *cores], gen)


def forbid_svd(monkeypatch) -> None:
    """Make any TT-SVD by `ttplan.runtime.layers` fail the test: for paths that load trained cores instead."""
    import ttplan.runtime.layers as layers

    def no_svd(*args, **kwargs):
        raise AssertionError("a TT-SVD ran")

    monkeypatch.setattr(layers, "decompose", no_svd)
