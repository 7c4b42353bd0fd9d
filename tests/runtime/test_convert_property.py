"""Property: random models with every `nn.Conv2d` option convert exactly at maximal ranks (library `convert` and the
emitted `convert`), run the MACs planned, and keep dense what ttplan cannot run exactly."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.random_models import RandomConvNet
from tests.helpers.runtime_cases import load_source
from ttplan.arch.architecture import plan_architecture
from ttplan.arch.policy import Policy
from ttplan.runtime.codegen import emit_model
from ttplan.runtime.layers import TTConv2d, convert

#: formats whose TT-SVD is exact at maximal ranks (CP's ALS is not)
EXACT_FORMATS = ("hodec", "classical", "tucker2", "tr")


def macs(model: nn.Module, x: torch.Tensor) -> int:
    """FlopCounterMode's count of one forward, halved."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


def relative(y: torch.Tensor, reference: torch.Tensor) -> float:
    return ((y - reference).abs().max() / reference.abs().max()).item()


def check(seed: int) -> None:
    model = RandomConvNet(seed).eval()
    size = model.input_size
    fmt = random.Random(seed).choice(EXACT_FORMATS)
    plan = plan_architecture(model, size, policy=Policy(format=fmt, rank_fraction=1.0,
                                                        order=None if fmt == "tucker2" else 2, skip_first=False,
                                                        skip_1x1=False))
    x = torch.randn(2, *size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        reference = model(x)
    assert plan.totals.baseline_macs == macs(model, x[:1]), seed
    modules = dict(model.named_modules())
    for layer in plan.layers:
        conv = modules[layer.name]
        with torch.no_grad():
            out = conv(torch.zeros(1, conv.in_channels, *layer.spec.input_size))
        assert layer.spec.output_size == tuple(out.shape[-2:]), (seed, layer.name)
        if conv.groups != 1:  # cannot be exact: dense, saying why
            assert not layer.decomposed and "grouped" in layer.reason, (seed, layer.name)
    plans = dict(plan.plans())
    if not plans:  # every layer grouped: nothing to convert
        return
    library = convert(model, plan.formats(), size, plans=plans)
    emitted = load_source(emit_model(plan.plans(), "a random model"))["convert"](model)
    for converted in (library, emitted):
        kept = {name for name, m in converted.named_modules() if type(m) is nn.Conv2d}
        assert kept == {layer.name for layer in plan.layers if not layer.decomposed}, seed
        with torch.no_grad():
            assert relative(converted(x), reference) <= 1e-4, (seed, plan.layers)
        assert macs(converted, x[:1]) == plan.totals.tt_macs, seed
    for layer in plan.layers:  # one layer at a time, from the module
        if layer.decomposed:
            conv = modules[layer.name]
            tt = TTConv2d.from_conv(conv, layer.fmt, layer.spec.input_size)
            inputs = torch.randn(1, conv.in_channels, *layer.spec.input_size, generator=torch.Generator())
            with torch.no_grad():
                assert relative(tt(inputs), conv(inputs)) <= 1e-4, (seed, layer.name)


@pytest.mark.parametrize("seed", range(6))
def test_random_conv_models_convert_exactly_at_maximal_ranks(seed):
    check(seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6, 80))
def test_more_random_conv_models_convert_exactly_at_maximal_ranks(seed):
    check(seed)
