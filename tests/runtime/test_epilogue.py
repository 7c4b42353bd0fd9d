"""The output scale, bias and ReLU after a TT layer's products: the scale goes into a weight operand that holds every
output mode where a plan has one (any order of the modes there), else into one pass after the last product; either
way the layer computes `conv(x) * scale + bias`, counts no extra FLOP, and runs in place only where no gradient is
recorded."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.runtime_cases import assert_close, plans_for, random_case, random_linear
from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.schemes import merged
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.runtime.epilogue import ScaleSite, epilogue, operand_layouts, scale_operand, scale_site
from ttplan.runtime.layers import TTConv2d, TTLinear
from ttplan.runtime.lowering import LOWERINGS, Fused, Lowering, lower

SPEC = ConvSpec.make(16, 16, 3, padding=1, input_size=8)
FMT = make_format("hodec", SPEC, in_modes=(4, 4), out_modes=(4, 2, 2), rank=4)


def test_a_merged_order_scales_its_last_operand_and_a_chain_of_output_cores_runs_the_epilogue():
    network = build_network(SPEC, FMT, 2)
    fused = lower(merged(network, fold_weights=True), Lowering(fused=True))
    site = scale_site(fused)
    assert site is not None and set(operand_layouts(fused)[site.operand]) >= {"o1", "o2", "o3"}
    best = lower(optimize(network, fold_weights=True))
    layouts = operand_layouts(best)
    held = [name for name in best.folded if {"o1", "o2", "o3"} <= set(layouts[name])]
    assert (scale_site(best) is None) == (not held)


def test_scale_operand_multiplies_each_output_channel_in_any_order_of_the_modes():
    """An operand laid out (r, o2, i, o1): the scale [O] = [o1 * o2] reaches each entry by its own (o1, o2)."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 2, 5, 4, generator=gen)  # (r, o2, i, o1), o1 = 4, o2 = 2
    scale = torch.randn(8, generator=gen)
    site = ScaleSite("w", (3, 2, 5, 4), (4, 2), (1, 0), (1, 2, 1, 4))
    expected = weight * scale.reshape(4, 2).permute(1, 0).reshape(1, 2, 1, 4)
    assert torch.equal(scale_operand(weight.reshape(6, 20), scale, site), expected.reshape(6, 20))


def layer_cases(count: int, seed: int):
    """Random conv layers (every scheme and the best order, every lowering in turn) and linear layers."""
    rng = random.Random(seed)
    for n in range(count):
        if n % 4 == 3:
            spec, fmt, batch = random_linear(rng)
            plan = plans_for(spec, fmt, batch)["best"]
            yield TTLinear(spec, fmt, plan, fold_weights=n % 2 == 0, dtype=torch.float64), batch
            continue
        spec, fmt, batch = random_case(rng)
        for plan in plans_for(spec, fmt, batch, fold_weights=n % 2 == 0).values():
            if plan.executable:
                lowering = LOWERINGS[n % len(LOWERINGS)]
                yield TTConv2d(spec, fmt, plan, plan.fold_weights, dtype=torch.float64, lowering=lowering), batch


def test_every_plan_and_lowering_computes_the_products_times_the_scale_plus_the_bias():
    """Whichever operand takes the scale (or none), the layer equals its unscaled self times the scale plus the bias,
    with and without gradients, and after the scale changes (the fold cache watches it)."""
    gen = torch.Generator().manual_seed(1)
    sites = set()
    for layer, batch in layer_cases(24, seed=5):
        layer.eval()
        spec = layer.spec
        shape = (batch, spec.in_channels) if spec.linear else (batch, spec.in_channels, *spec.input_size)
        x = torch.randn(shape, generator=gen, dtype=next(layer.parameters()).dtype)
        if layer.program.lowering.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            plain = layer(x) - (layer.bias.view(-1, *([1] * (x.dim() - 2))) if layer.bias is not None else 0)
        scale = torch.randn(spec.out_channels, generator=gen, dtype=x.dtype)
        bias = torch.randn(spec.out_channels, generator=gen, dtype=x.dtype)
        layer.out_scale, layer.bias = scale.clone(), torch.nn.Parameter(bias.clone())
        view = (-1,) + (1,) * (x.dim() - 2)
        expected = plain * scale.view(view) + bias.view(view)
        with torch.no_grad():
            assert_close(layer(x), expected)
            assert_close(layer(x), expected)  # from the fold cache
        assert_close(layer(x).detach(), expected)  # recording gradients: new tensors
        layer.out_scale.mul_(2)
        with torch.no_grad():
            assert_close(layer(x), plain * (2 * scale).view(view) + bias.view(view))
        layer.apply_relu = True
        with torch.no_grad():
            assert_close(layer(x), torch.relu(plain * (2 * scale).view(view) + bias.view(view)))
        sites.add(layer.scale_site is None)
        if any(isinstance(ins, Fused) for ins in layer.program.feature):  # its kernel then adds the bias: no pass left
            assert layer.scale_site is not None
    assert sites == {True, False}  # both ways were taken


def test_the_epilogue_runs_in_place_without_gradients_and_counts_no_flop():
    gen = torch.Generator().manual_seed(2)
    y = torch.randn(2, 5, 7, 3, generator=gen).permute(0, 3, 1, 2)  # a channels-last view, as the NHWC lowering ends
    scale, bias = torch.randn(3, generator=gen), torch.randn(3, generator=gen)
    expected = torch.relu(y * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = epilogue(y, scale, bias, True)
    assert out.data_ptr() == y.data_ptr() and out.stride() == y.stride()
    assert_close(out, expected, rel=1e-6)
    assert counter.get_total_flops() == 0
    y = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
    out = epilogue(y, scale, bias, True)
    assert out.data_ptr() != y.data_ptr()
    out.sum().backward()
    assert torch.equal(y.grad, scale.view(1, -1, 1, 1).expand_as(y) * (out > 0))


@pytest.mark.parametrize("parts", [(True, False, False), (False, True, False), (False, False, True)])
def test_the_epilogue_applies_each_part_alone(parts):
    scale_on, bias_on, relu = parts
    y = torch.randn(2, 3, 4, 4)
    scale, bias = torch.randn(3), torch.randn(3)
    expected = y * (scale.view(1, -1, 1, 1) if scale_on else 1) + (bias.view(1, -1, 1, 1) if bias_on else 0)
    expected = torch.relu(expected) if relu else expected
    with torch.no_grad():
        out = epilogue(y.clone(), scale if scale_on else None, bias if bias_on else None, relu)
    assert_close(out, expected, rel=1e-6)


def test_the_epilogue_is_out_of_place_under_torch_compile(monkeypatch):
    """In place, `addcmul(out=)`, `add_` and `relu_` kept inductor from fusing the epilogue: a compiled ResNet-56 TT
    model ran no faster than eager. Under torch.compile the epilogue makes new tensors, which inductor fuses."""
    from ttplan.runtime.epilogue import epilogue

    y, scale, bias, residual = (torch.randn(2, 4, 3, 3), torch.rand(4), torch.randn(4), torch.randn(2, 4, 3, 3))
    expected = torch.relu(y * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1) + residual)
    with torch.no_grad():
        kept = y.clone()
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        out = epilogue(y, scale, bias, True, residual)
        assert out.data_ptr() != y.data_ptr() and torch.equal(y, kept)
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)
        inplace = epilogue(y, scale, bias, True, residual)
        assert inplace.data_ptr() == y.data_ptr()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(inplace, expected)
