"""CP layers at run time: TTConv2d and generated code equal conv2d with the CP kernel (values and gradients), the
depthwise step is a grouped conv FlopCounterMode counts as planned, and CP-ALS recovers low-rank kernels."""

import random

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.ring_cp_cases import random_cp
from tests.helpers.runtime_cases import (
    assert_close,
    assert_every_order_equals_conv2d_with,
    assert_same_values_and_gradients,
    conv_with,
    plans_for,
    the_class,
)
from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.runtime.codegen import emit_layer
from ttplan.runtime.decomposition import cp_als, decompose, project, rebuild, relative_error
from ttplan.runtime.layers import TTConv2d, convert

SPEC = ConvSpec.make(12, 8, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), input_size=(7, 6))


def cp_kernel(cores: list[torch.Tensor], fmt, spec: ConvSpec) -> torch.Tensor:
    """`W[O, I, k_h, k_w]` as one einsum with the rank letter in every factor, independent of the library."""
    e, d = len(fmt.out_modes), len(fmt.in_modes)
    letters = iter("abcdefghijklmnopq")
    outs, ins = [next(letters) for _ in range(e)], [next(letters) for _ in range(d)]
    kh, kw = next(letters), next(letters)
    window = [kh + "z", kw + "z"] if fmt.spatial == "separable" else [kh + kw + "z"]
    terms = [o + "z" for o in outs] + window + [i + "z" for i in ins]
    dense = torch.einsum(",".join(terms) + "->" + "".join(outs + ins) + kh + kw, *cores)
    return dense.reshape(spec.out_channels, spec.in_channels, *spec.kernel_size)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cp", "cp-separable"])
def test_cp_layers_equal_conv2d_with_the_cp_kernel_values_and_gradients(kind):
    rng, gen = random.Random(41), torch.Generator().manual_seed(41)
    for _ in range(110):
        spec, fmt = random_cp(rng, max_cores=7, kind=kind)
        assert_every_order_equals_conv2d_with(cp_kernel, spec, fmt, rng.randint(1, 3), gen)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cp", "cp-separable"])
def test_generated_cp_layers_equal_conv2d_and_flops_are_the_planned_macs(kind):
    rng, gen = random.Random(42), torch.Generator().manual_seed(42)
    for _ in range(100):
        spec, fmt = random_cp(rng, max_cores=7, kind=kind)
        batch = rng.randint(1, 3)
        x = torch.randn(batch, spec.in_channels, *spec.input_size, dtype=torch.float64, generator=gen)
        x.requires_grad_()
        for plan in plans_for(spec, fmt, batch).values():
            lib = TTConv2d(spec, fmt, plan=plan, dtype=torch.float64)
            generated = the_class(emit_layer(plan))(dtype=torch.float64)
            cores = generated.cores()
            expected = conv_with(x, cp_kernel(cores, fmt, spec), spec)
            assert_same_values_and_gradients(generated(x), expected, [x, *cores], gen)
            for layer in (lib, generated):
                with FlopCounterMode(display=False) as counter:
                    layer(x)
                assert counter.get_total_flops() == 2 * plan.macs
    fmt = make_format(kind, SPEC, rank=5)
    source = emit_layer(optimize(build_network(SPEC, fmt, 2)))
    assert "groups=5" in source
    if kind == "cp-separable":  # a k_h x 1 conv strided along the height only, then a 1 x k_w conv
        assert "stride=(2, 1), padding=(1, 0), dilation=(1, 1), groups=5" in source
        assert "stride=(1, 1), padding=(0, 1), dilation=(1, 2), groups=5" in source


def test_cp_als_recovers_kernels_of_its_rank_and_states_its_error():
    gen = torch.Generator().manual_seed(43)
    for kind, in_modes, out_modes, rank in [("cp", (12,), (8,), 3), ("cp", (3, 4), (2, 4), 4),
                                            ("cp", (2, 2, 3), (8,), 2), ("cp-separable", (3, 4), (8,), 3)]:
        fmt = make_format(kind, SPEC, in_modes=in_modes, out_modes=out_modes, rank=rank)
        cores = [torch.randn(c.shape, dtype=torch.float64, generator=gen) for c in fmt.cores(SPEC)]
        weight = rebuild(cores, fmt, SPEC)
        fitted = decompose(weight, fmt, SPEC)
        assert relative_error(weight, fitted, fmt, SPEC) < 1e-4
        layer = TTConv2d.from_dense(weight, None, SPEC, fmt, plan="published")
        assert layer.decomposition_error < 1e-4
        generated = the_class(emit_layer(optimize(build_network(SPEC, fmt)))).from_dense(weight)
        for a, b in zip(generated.cores(), fitted):
            assert_close(a, b, rel=1e-8)  # the same ALS as the library's
    # a random kernel is far from rank 2: ALS improves on its start and reports what is left
    weight = torch.randn(8, 12, 3, 2, dtype=torch.float64, generator=gen)
    fmt = make_format("cp", SPEC, rank=2)
    error = relative_error(weight, decompose(weight, fmt, SPEC), fmt, SPEC)
    assert 0.5 < error < 1
    assert cp_als(weight.reshape(8, 12, 6), 2, iterations=1)[1] == 1
    projected = project(weight, fmt, SPEC)
    assert (torch.linalg.vector_norm(weight - projected) / weight.norm()).item() == pytest.approx(error, rel=1e-9)


def test_convert_runs_a_model_in_cp_and_tr():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(12, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, (3, 1), stride=2)).double()
    x = torch.randn(2, 12, 9, 9, dtype=torch.float64)
    spec0 = ConvSpec.make(12, 8, 3, 1, 1, input_size=9, bias=True)
    spec2 = ConvSpec.make(8, 16, (3, 1), 2, 0, input_size=9, bias=True)
    for kind, options in [("cp", {"rank": 500}), ("tr", {"rank": 64})]:
        formats = {"0": make_format(kind, spec0, **options), "2": make_format(kind, spec2, **options)}
        tt = convert(model, formats, (12, 9, 9))
        assert isinstance(tt[0], TTConv2d) and isinstance(tt[2], TTConv2d)
        assert tt[0].decomposition_error < 1e-3 and tt[2].decomposition_error < 1e-3
        assert_close(tt(x), model(x), rel=1e-3)
