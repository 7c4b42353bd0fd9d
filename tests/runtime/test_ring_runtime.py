"""Tensor-ring layers at run time: TTConv2d, generated code and convert equal conv2d with the ring's kernel;
FlopCounterMode counts the planned MACs; the ring SVD is exact at the exact ring ranks."""

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.ring_cp_cases import random_ring
from tests.helpers.runtime_cases import (
    assert_close,
    assert_every_order_equals_conv2d_with,
    assert_same_values_and_gradients,
    conv_with,
    plans_for,
    the_class,
)
from ttplan.core.formats import get_format, make_format
from ttplan.core.formats.ring import ring_exact_ranks
from ttplan.core.network import build_network
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.runtime.codegen import emit_layer
from ttplan.runtime.decomposition import decompose, project, relative_error
from ttplan.runtime.layers import TTConv2d

SPEC = ConvSpec.make(12, 8, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), input_size=(7, 6))


def ring_kernel(cores: list[torch.Tensor], fmt, spec: ConvSpec) -> torch.Tensor:
    """`W[O, I, k_h, k_w]` as one einsum over the ring (the closing rank's letter at both ends), independent of
    the library's chain code."""
    e, d = len(fmt.out_modes), len(fmt.in_modes)
    letters = iter("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ")
    r = [next(letters) for _ in range(e + d + 1)]
    r.append(r[0])
    outs, ins = [next(letters) for _ in range(e)], [next(letters) for _ in range(d)]
    kh, kw = next(letters), next(letters)
    terms = [r[j] + outs[j] + r[j + 1] for j in range(e)] + [r[e] + kh + kw + r[e + 1]]
    terms += [r[e + 1 + j] + ins[j] + r[e + 2 + j] for j in range(d)]
    dense = torch.einsum(",".join(terms) + "->" + "".join(outs + ins) + kh + kw, *cores)
    return dense.reshape(spec.out_channels, spec.in_channels, *spec.kernel_size)


@pytest.mark.slow
def test_ring_layers_equal_conv2d_with_the_ring_kernel_values_and_gradients():
    rng, gen = random.Random(21), torch.Generator().manual_seed(21)
    for _ in range(110):
        spec, fmt = random_ring(rng, max_cores=7)
        assert_every_order_equals_conv2d_with(ring_kernel, spec, fmt, rng.randint(1, 3), gen)


@pytest.mark.slow
def test_generated_ring_layers_equal_conv2d_and_count_the_planned_flops():
    rng, gen = random.Random(22), torch.Generator().manual_seed(22)
    for _ in range(100):
        spec, fmt = random_ring(rng, max_cores=7)
        batch = rng.randint(1, 3)
        x = torch.randn(batch, spec.in_channels, *spec.input_size, dtype=torch.float64, generator=gen)
        x.requires_grad_()
        for plan in plans_for(spec, fmt, batch).values():
            layer = the_class(emit_layer(plan))(dtype=torch.float64)
            cores = layer.cores()
            assert_close(layer.to_dense(), ring_kernel(cores, fmt, spec))
            expected = conv_with(x, ring_kernel(cores, fmt, spec), spec)
            assert_same_values_and_gradients(layer(x), expected, [x, *cores], gen)
            with FlopCounterMode(display=False) as counter:
                layer(x)
            assert counter.get_total_flops() == 2 * plan.macs
            lib = TTConv2d(spec, fmt, plan=plan, dtype=torch.float64)
            with FlopCounterMode(display=False) as counter:
                lib(x)
            assert counter.get_total_flops() == 2 * plan.macs


@pytest.mark.parametrize("closing", [1, 2, 3])
def test_tt_svd_of_a_ring_is_exact_at_the_exact_ring_ranks(closing):
    gen = torch.Generator().manual_seed(closing)
    ranks = ring_exact_ranks((2, 4, 6, 3, 4), closing)
    fmt = make_format("tr", SPEC, in_modes=(3, 4), out_modes=(2, 4), ranks=ranks)
    weight = torch.randn(8, 12, 3, 2, dtype=torch.float64, generator=gen)
    cores = decompose(weight, fmt, SPEC)
    assert_close(ring_kernel(cores, fmt, SPEC), weight)
    layer = the_class(emit_layer(optimize(build_network(SPEC, fmt, 2)))).from_dense(weight)
    assert_close(ring_kernel(layer.cores(), fmt, SPEC), weight)
    x = torch.randn(2, 12, 7, 6, dtype=torch.float64, generator=gen)
    assert_close(layer(x), conv_with(x, weight, SPEC))
    lib = TTConv2d.from_dense(weight, None, SPEC, fmt, plan="published")
    assert lib.decomposition_error < 1e-12
    assert_close(lib(x), conv_with(x, weight, SPEC))


def test_truncated_ring_tt_svd_is_a_projection_and_the_generated_one_agrees():
    gen = torch.Generator().manual_seed(5)
    fmt = make_format("tr", SPEC, in_modes=(3, 4), out_modes=(2, 4), ranks=(2, 2, 3, 3, 2, 2))
    weight = torch.randn(8, 12, 3, 2, dtype=torch.float64, generator=gen)
    once = project(weight, fmt, SPEC)
    assert_close(project(once, fmt, SPEC), once, rel=1e-8)  # the ring's own kernels are reproduced
    assert 0 < relative_error(weight, decompose(weight, fmt, SPEC), fmt, SPEC) < 1
    layer = the_class(emit_layer(optimize(build_network(SPEC, fmt)))).from_dense(weight)
    assert_close(layer.to_dense(), once, rel=1e-9)


def test_closing_rank_one_runs_exactly_as_hodec():
    rng, gen = random.Random(23), torch.Generator().manual_seed(23)
    for _ in range(20):
        spec, ring = random_ring(rng, max_cores=7, closing=1)
        hodec = get_format("hodec")(ring.in_modes, ring.out_modes, ring.ranks)
        weight = torch.randn(spec.out_channels, spec.in_channels, *spec.kernel_size, dtype=torch.float64,
                             generator=gen)
        a = TTConv2d.from_dense(weight, None, spec, ring)
        b = TTConv2d.from_dense(weight, None, spec, hodec)
        assert a.plan.macs == b.plan.macs and a.plan.params == b.plan.params
        for p, q in zip(a.cores, b.cores):
            assert torch.equal(p, q)
        x = torch.randn(2, spec.in_channels, *spec.input_size, dtype=torch.float64, generator=gen)
        assert torch.equal(a(x), b(x))
