"""The same checks on a CUDA device (skipped without one): TT layers, generated code, FLOPs, TT-SVD."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.runtime_cases import load_source, plans_for, random_case
from ttplan.core.formats import make_format, max_rank_format
from ttplan.core.network import build_network
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.runtime.codegen import emit_layer
from ttplan.runtime.decomposition import decompose, project, rebuild, relative_error
from ttplan.runtime.layers import TTConv2d

pytestmark = pytest.mark.requires_cuda
CUDA = torch.device("cuda")


def _reference(layer: TTConv2d, x: torch.Tensor) -> torch.Tensor:
    kernel = rebuild(list(layer.cores), layer.fmt, layer.spec)
    s = layer.spec
    return F.conv2d(x, kernel, layer.bias, stride=s.stride, padding=s.padding, dilation=s.dilation)


def test_ttconv2d_on_cuda_equals_conv2d_and_counts_planned_flops():
    rng, gen = random.Random(77), torch.Generator(device=CUDA).manual_seed(7)
    for _ in range(60):
        spec, fmt, batch = random_case(rng)
        x = torch.randn(batch, spec.in_channels, *spec.input_size, dtype=torch.float64, device=CUDA, generator=gen)
        for name in plans_for(spec, fmt, batch):
            layer = TTConv2d(spec, fmt, plan=name, dtype=torch.float64, device=CUDA, batch=batch)
            with FlopCounterMode(display=False) as counter:
                out = layer(x)
            assert counter.get_total_flops() == 2 * layer.plan.macs
            torch.testing.assert_close(out, _reference(layer, x), rtol=1e-9, atol=1e-9)


def test_generated_layer_runs_on_cuda():
    spec = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)
    fmt = make_format("hodec", spec, tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(1, 16, 16, 16, 16, 16, 16, 1))
    namespace = load_source(emit_layer(optimize(build_network(spec, fmt))))
    cls = namespace[namespace["__all__"][0]]
    weight = torch.randn(256, 128, 3, 3, dtype=torch.float64, device=CUDA)  # float64: no TF32 rounding
    layer = cls.from_dense(weight).to(CUDA, torch.float64)
    x = torch.randn(4, 128, 28, 28, dtype=torch.float64, device=CUDA)
    expected = F.conv2d(x, layer.to_dense(), stride=2, padding=1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-9, atol=1e-9)


def test_tt_svd_on_cuda_is_exact_at_max_ranks_and_projection_idempotent():
    spec = ConvSpec.make(64, 64, 3, 1, 1, input_size=8)
    fmt = max_rank_format("hodec", spec, (4, 4, 4), (4, 4, 4))
    weight = torch.randn(64, 64, 3, 3, dtype=torch.float64, device=CUDA)
    cores = decompose(weight, fmt, spec)
    assert all(c.device.type == "cuda" for c in cores)
    assert relative_error(weight, cores, fmt, spec) < 1e-10
    low = make_format("hodec", spec, in_modes=(4, 4, 4), out_modes=(4, 4, 4), rank=8)
    once = project(weight, low, spec)
    torch.testing.assert_close(project(once, low, spec), once, rtol=1e-8, atol=1e-8)
