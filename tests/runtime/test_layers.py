"""`ttplan.runtime.layers`: TTConv2d / TTLinear against conv2d (rebuilt kernel), folding, dtypes, export, convert."""

from __future__ import annotations

import io
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.runtime_cases import (
    assert_close,
    assert_same_values_and_gradients,
    plans_for,
    random_case,
    random_linear,
)
from ttplan.core.formats import balanced_factors, make_format, max_rank_format
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.models import count_model_params, load_model, trace_layers
from ttplan.runtime.decomposition import rebuild, relative_error
from ttplan.runtime.layers import TTConv2d, TTLinear, convert


def _dense(layer: TTConv2d, x: torch.Tensor) -> torch.Tensor:
    """conv2d with the kernel rebuilt by `ttplan.runtime.decomposition.rebuild` from the layer's cores, plus bias."""
    spec = layer.spec
    kernel = rebuild(list(layer.cores), layer.fmt, spec)
    return F.conv2d(x, kernel, layer.bias, stride=spec.stride, padding=spec.padding, dilation=spec.dilation)


def _example() -> tuple[ConvSpec, object]:
    spec = ConvSpec.make(8, 6, (3, 2), (2, 1), (1, 0), 1, (9, 7), bias=True)
    return spec, make_format("hodec", spec, in_modes=(2, 4), out_modes=(3, 2), rank=3)


def test_ttconv2d_equals_conv2d_with_its_rebuilt_kernel_for_every_scheme_values_and_gradients():
    rng, gen = random.Random(404), torch.Generator().manual_seed(4)
    for _ in range(200):
        spec, fmt, batch = random_case(rng)
        x = torch.randn(batch, spec.in_channels, *spec.input_size, dtype=torch.float64, generator=gen)
        x.requires_grad_()
        for name in [*plans_for(spec, fmt, batch)]:
            layer = TTConv2d(spec, fmt, plan=name, dtype=torch.float64, batch=batch)
            assert [tuple(p.shape) for p in layer.cores] == [c.shape for c in fmt.cores(spec)]
            expected = _dense(layer, x)
            assert_same_values_and_gradients(layer(x), expected, [x, *layer.cores], gen)


def test_flop_counter_matches_the_plan_and_folded_weights_cost_only_feature_macs():
    rng, gen = random.Random(8), torch.Generator().manual_seed(8)
    for _ in range(40):
        spec, fmt, batch = random_case(rng)
        x = torch.randn(batch, spec.in_channels, *spec.input_size, generator=gen)
        for name in plans_for(spec, fmt, batch):
            layer = TTConv2d(spec, fmt, plan=name, batch=batch)
            with FlopCounterMode(display=False) as counter:
                layer(x)
            assert counter.get_total_flops() == 2 * layer.plan.macs
            folded = TTConv2d(spec, fmt, plan=name, fold_weights=True, batch=batch)
            with torch.no_grad():
                folded(x)  # warm the cache
                with FlopCounterMode(display=False) as counter:
                    folded(x)
            assert counter.get_total_flops() == 2 * folded.plan.feature_macs == folded.plan.flops


def test_folded_cache_follows_parameter_updates_and_training_keeps_gradients():
    spec, fmt = _example()
    layer = TTConv2d(spec, fmt, fold_weights=True, dtype=torch.float64)
    x = torch.randn(2, 8, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        before = layer(x)
        assert layer(x).equal(before)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    loss = layer(x).square().sum()  # grad enabled: weight steps recomputed, gradients reach the cores
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.cores)
    opt.step()
    with torch.no_grad():
        after = layer(x)
    assert not after.equal(before)
    assert_close(after, _dense(layer, x))
    fresh = TTConv2d(spec, fmt, fold_weights=True, dtype=torch.float64)
    with torch.no_grad():
        fresh(x)
        fresh.load_state_dict(layer.state_dict())
        assert_close(fresh(x), after)


def test_state_dict_round_trip_through_bytes():
    spec, fmt = _example()
    layer = TTConv2d(spec, fmt, plan="hodec")
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    assert sorted(state) == ["bias", *(f"cores.{n}" for n in range(len(layer.cores)))]
    other = TTConv2d(spec, fmt, plan="best")
    other.load_state_dict(state)
    x = torch.randn(3, 8, 9, 7)
    assert_close(other(x), layer(x), rel=1e-5)


@pytest.mark.parametrize("dtype, rel", [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)])
def test_float32_and_bfloat16(dtype, rel):
    spec, fmt = _example()
    layer = TTConv2d(spec, fmt, dtype=dtype)
    x = torch.randn(2, 8, 9, 7, dtype=dtype)
    out = layer(x)
    assert out.dtype == dtype
    ref = TTConv2d(spec, fmt, dtype=torch.float64)
    ref.load_state_dict({k: v.double() for k, v in layer.state_dict().items()})
    assert_close(out.double(), _dense(ref, x.double()), rel=rel)


def test_torch_export_and_compile():
    spec, fmt = _example()
    layer = TTConv2d(spec, fmt)
    x = torch.randn(2, 8, 9, 7)
    exported = torch.export.export(layer, (x,))
    assert_close(exported.module()(x), layer(x), rel=1e-6)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    assert_close(out, layer(x), rel=1e-6)
    out.sum().backward()
    assert all(p.grad is not None for p in layer.cores)


@pytest.mark.parametrize("kind, in_modes, out_modes", [("hodec", (2, 4), (3, 2)), ("classical", (4, 2), (2, 3)),
                                                       ("tucker2", (8,), (6,))])
def test_from_dense_is_exact_at_maximal_ranks_and_keeps_the_bias(kind, in_modes, out_modes):
    spec = ConvSpec.make(8, 6, 3, 1, 1, 1, 6, bias=True)
    fmt = max_rank_format(kind, spec, in_modes, out_modes)
    weight = torch.randn(6, 8, 3, 3, dtype=torch.float64)
    bias = torch.randn(6, dtype=torch.float64)
    layer = TTConv2d.from_dense(weight, bias, spec, fmt)
    assert_close(layer.to_dense(), weight)
    assert relative_error(weight, list(layer.cores), fmt, spec) < 1e-12
    assert layer.decomposition_error < 1e-12
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    assert_close(layer(x), F.conv2d(x, weight, bias, padding=1))


def test_truncated_from_dense_is_the_tt_svd_projection():
    spec = ConvSpec.make(8, 6, 3, 1, 1, 1, 6)
    fmt = make_format("hodec", spec, in_modes=(2, 4), out_modes=(3, 2), rank=2)
    weight = torch.randn(6, 8, 3, 3, dtype=torch.float64)
    layer = TTConv2d.from_dense(weight, None, spec, fmt)
    error = relative_error(weight, list(layer.cores), fmt, spec)
    assert 0 < error < 1 and layer.decomposition_error == pytest.approx(error)
    assert layer.bias is None


def test_ttlinear_in_the_ttm_format():
    rng = random.Random(3)
    for _ in range(20):
        spec, fmt, batch = random_linear(rng)
        weight = torch.randn(spec.out_channels, spec.in_channels, dtype=torch.float64)
        bias = torch.randn(spec.out_channels, dtype=torch.float64) if spec.bias else None
        layer = TTLinear.from_dense(weight, bias, spec, fmt)
        x = torch.randn(batch, 5, spec.in_channels, dtype=torch.float64)
        assert_close(layer(x), F.linear(x, layer.to_dense(), bias))


def test_bad_arguments_are_one_line_errors():
    spec, fmt = _example()
    with pytest.raises(TTPlanError, match="plan='fastest'"):
        TTConv2d(spec, fmt, plan="fastest")
    with pytest.raises(TTPlanError, match="scheme='classical' needs a classical"):
        TTConv2d(spec, fmt, plan="classical")
    with pytest.raises(TTPlanError, match="use TTLinear"):
        TTConv2d(ConvSpec.make_linear(8, 6), make_format("ttm", ConvSpec.make_linear(8, 6), rank=2, order=1))
    other = TTConv2d(ConvSpec.make(8, 6, 3, 1, 1, 1, 5), fmt)
    with pytest.raises(TTPlanError, match="was made for"):
        TTConv2d(spec, fmt, plan=other.plan)
    with pytest.raises(TTPlanError, match="needs the layer's spec and format"):
        TTConv2d.from_dense(torch.zeros(6, 8, 3, 2))


def _max_rank_formats(model: nn.Module, size: tuple[int, int, int]) -> dict:
    """Convs in hodec (one input mode for 3-channel stems; classical from 256 channels, whose TT-SVD is
    cheaper at maximal ranks) and the fc in ttm, all at maximal ranks."""
    formats = {}
    for layer in trace_layers(model, size):
        spec = layer.spec
        if layer.kind == "linear":
            formats[layer.name] = max_rank_format("ttm", spec, balanced_factors(spec.in_channels, 2),
                                                  balanced_factors(spec.out_channels, 2))
        elif spec.in_channels >= 256:
            formats[layer.name] = max_rank_format("classical", spec, balanced_factors(spec.in_channels, 2),
                                                  balanced_factors(spec.out_channels, 2))
        else:
            d = 1 if spec.in_channels < 8 else 2
            formats[layer.name] = max_rank_format("hodec", spec, balanced_factors(spec.in_channels, d),
                                                  balanced_factors(spec.out_channels, 2))
    return formats


def test_converted_resnet18_gives_the_dense_logits_and_the_planned_parameter_count():
    torch.manual_seed(0)
    model, _ = load_model("resnet18")
    model = model.double().eval()
    size = (3, 64, 64)
    formats = _max_rank_formats(model, size)
    tt = convert(model, formats, size)
    swapped = [tt.get_submodule(name) for name in formats]
    assert all(isinstance(m, (TTConv2d, TTLinear)) for m in swapped)
    assert isinstance(model.get_submodule("layer3.0.conv1"), nn.Conv2d)  # the original is untouched
    x = torch.randn(2, *size, dtype=torch.float64)
    with torch.no_grad():
        assert_close(tt(x), model(x), rel=1e-9)
    dense_layers = sum(model.get_submodule(name).weight.numel() + (model.get_submodule(name).bias.numel()
                       if model.get_submodule(name).bias is not None else 0) for name in formats)
    planned = sum(m.plan.params for m in swapped)
    assert count_model_params(tt) == count_model_params(model) - dense_layers + planned


def test_convert_keeps_dense_layers_named_none_and_rejects_unknown_names():
    model, size = load_model("resnet20")
    spec = next(layer.spec for layer in trace_layers(model, size) if layer.name == "layer1.0.conv1")
    fmt = make_format("hodec", spec, in_modes=(4, 4), out_modes=(4, 4), rank=4)
    tt = convert(model, {"layer1.0.conv1": fmt, "conv1": None}, size, scheme="published", fold_weights=True)
    assert isinstance(tt.get_submodule("layer1.0.conv1"), TTConv2d)
    assert isinstance(tt.get_submodule("conv1"), nn.Conv2d)
    assert tt.get_submodule("layer1.0.conv1").plan.name == "hodec"
    with pytest.raises(TTPlanError, match="layer 'layer9.conv'"):
        convert(model, {"layer9.conv": fmt}, size)
    with pytest.raises(TTPlanError, match="scheme='quick'"):
        convert(model, {"layer1.0.conv1": fmt}, size, scheme="quick")


def test_bias_adds_no_flops_and_channels_last_inputs_run():
    spec, fmt = _example()
    layer = TTConv2d(spec, fmt, dtype=torch.float64, batch=2)
    x = torch.randn(2, 8, 9, 7, dtype=torch.float64)
    with FlopCounterMode(display=False) as counter:
        out = layer(x)
    assert counter.get_total_flops() == 2 * layer.plan.macs
    assert_close(layer(x.contiguous(memory_format=torch.channels_last)), out)
    assert_close(layer(x[:, :, :, :].transpose(2, 3).contiguous().transpose(2, 3)), out)


@pytest.mark.slow
def test_a_compiled_layer_with_folded_weights_follows_its_cores():
    # under torch.compile the weight-only steps are traced, so changing a core in place changes the output
    spec = ConvSpec.make(8, 16, 3, stride=1, padding=1, input_size=6)
    layer = TTConv2d(spec, make_format("hodec", spec, rank=3), fold_weights=True, batch=4).eval()
    x = torch.randn(4, 8, 6, 6)
    compiled = torch.compile(layer, dynamic=False)
    try:
        with torch.no_grad():
            before = compiled(x)
            assert torch.allclose(before, layer(x), rtol=1e-4, atol=1e-5)
            layer.cores[0].mul_(2.0)  # the kernel doubles
            assert torch.allclose(compiled(x), 2.0 * before, rtol=1e-4, atol=1e-5)
            assert torch.allclose(compiled(x), F.conv2d(x, layer.to_dense(), padding=1), rtol=1e-4, atol=1e-5)
    finally:
        torch._dynamo.reset()
