"""Every geometry field of a conv runs as torch runs it (issue #25, items 2, 4 and 5): padding modes and torch's
'same' padding (an even window pads one more pixel after) in `TTConv2d`, `TTConv2d.from_conv`, `convert` and the
emitted layers; and the emitted `convert` refuses a layer whose geometry is not the one planned."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.ring_cp_cases import random_cp
from tests.helpers.runtime_cases import assert_close, load_source, plans_for, random_case, the_class
from ttplan.arch.architecture import plan_architecture
from ttplan.arch.policy import Policy
from ttplan.arch.report import render
from ttplan.core.formats import make_format
from ttplan.core.spec import PADDING_MODES, ConvSpec
from ttplan.errors import TTPlanError
from ttplan.runtime.codegen import emit_layer, emit_model
from ttplan.runtime.decomposition import rebuild
from ttplan.runtime.layers import TTConv2d, convert
from ttplan.runtime.lowering import LOWERINGS

EXACT = Policy(rank_fraction=1.0, skip_first=False)


def relative(y: torch.Tensor, reference: torch.Tensor) -> float:
    assert y.shape == reference.shape
    return ((y - reference).abs().max() / reference.abs().max()).item()


def macs(model: nn.Module, x: torch.Tensor) -> int:
    """FlopCounterMode's count of one forward, halved."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def padded(rng: random.Random, spec: ConvSpec) -> tuple[ConvSpec, nn.Conv2d] | None:
    """`spec` with a random padding mode and, at stride 1, torch's 'same' half the time; with the nn.Conv2d of
    those options (None where torch refuses them, e.g. a reflect pad as wide as the map)."""
    padding = "same" if spec.stride == (1, 1) and rng.random() < 0.5 else spec.padding
    mode = rng.choice(PADDING_MODES)
    conv = nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride, padding, spec.dilation,
                     bias=False, padding_mode=mode, dtype=torch.float64)
    try:
        conv(torch.zeros(1, spec.in_channels, *spec.input_size, dtype=torch.float64))
    except RuntimeError:
        return None
    return ConvSpec.make(spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride, padding,
                         spec.dilation, spec.input_size, padding_mode=mode), conv


def cases(rng: random.Random, count: int):
    """Random layers (chains, CP and a separable CP window) with random padding modes and 'same' paddings."""
    while count:
        kind = rng.choice(["chain", "chain", "cp", "cp-separable"])
        spec, fmt = random_case(rng)[:2] if kind == "chain" else random_cp(rng, max_cores=6, kind=kind)
        made = padded(rng, spec)
        if made is None:
            continue
        count -= 1
        yield made[0], fmt, made[1]


def test_every_order_and_lowering_pads_as_nn_conv2d():
    """Values and FLOPs of every order, lowering and emitted layer equal nn.Conv2d with the padding mode and 'same'
    padding (the kernel rebuilt from the cores); F.pad is not a MAC."""
    rng, gen = random.Random(25), torch.Generator().manual_seed(25)
    for spec, fmt, conv in cases(rng, 24):
        x = torch.randn(2, spec.in_channels, *spec.input_size, dtype=torch.float64, generator=gen)
        for name, plan in plans_for(spec, fmt, 2).items():
            for lowering in LOWERINGS:
                layer = TTConv2d(spec, fmt, plan, dtype=torch.float64, lowering=lowering)
                with torch.no_grad():
                    conv.weight.copy_(layer.to_dense())
                    assert_close(layer(x), conv(x), rel=1e-9)
                assert macs(layer, x) == plan.macs, (spec.describe(), name, lowering)
            generated = the_class(emit_layer(plan, lowering=rng.choice(LOWERINGS)))(dtype=torch.float64)
            with torch.no_grad():
                conv.weight.copy_(rebuild(generated.cores(), fmt, spec).reshape(conv.weight.shape))
                assert_close(generated(x), conv(x), rel=1e-9)
            assert macs(generated, x) == plan.macs


def _modes_model(mode: str) -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, padding_mode=mode), nn.ReLU(),
                         nn.Conv2d(16, 16, (3, 5), padding=(2, 1), dilation=(2, 1), padding_mode=mode)).eval()


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_are_planned_and_converted_exactly(mode):
    """Item 2: the plan says the mode, and library and emitted layers pad as the dense layers do."""
    model, size = _modes_model(mode), (16, 9, 8)
    plan = plan_architecture(model, size, policy=EXACT)
    assert all(layer.decomposed and mode in layer.spec.describe() for layer in plan.layers)
    assert f"pads by F.pad ({mode}, left/right/top/bottom 1/1/1/1)" in render(plan, "csv")
    x = torch.randn(2, *size)
    with torch.no_grad():
        reference = model(x)
        library = convert(model, plan.formats(), size, plans=dict(plan.plans()))
        emitted = load_source(emit_model(plan.plans(), "padding modes"))["convert"](model)
        for converted in (library, emitted):
            assert relative(converted(x), reference) <= 1e-4
            assert macs(converted, x[:1]) == plan.totals.tt_macs


def test_same_padding_with_an_even_window_is_planned_and_converted_as_torch_pads():
    """Item 5: `Conv2d(32, 32, 4, padding="same")` at 16x16 outputs 16x16 (torch pads 1 before and 2 after each
    axis): 4,194,304 MACs, planned, converted and emitted at that size."""
    torch.manual_seed(5)
    model, size = nn.Sequential(nn.Conv2d(32, 32, 4, padding="same")).eval(), (32, 16, 16)
    plan = plan_architecture(model, size, policy=EXACT)
    (layer,) = plan.layers
    assert layer.spec.output_size == (16, 16) and "16x16->16x16" in layer.spec.describe()
    assert layer.baseline_macs == 4_194_304 == plan.totals.baseline_macs == macs(model, torch.zeros(1, *size))
    x = torch.randn(2, *size)
    with torch.no_grad():
        reference = model(x)
        library = convert(model, plan.formats(), size, plans=dict(plan.plans()))
        emitted = load_source(emit_model(plan.plans(), "same padding"))["convert"](model)
        single = TTConv2d.from_conv(model[0], layer.fmt, (16, 16))
        for converted in (library, emitted, nn.Sequential(single)):
            assert relative(converted(x), reference) <= 1e-4  # shape (2, 32, 16, 16) included
        assert macs(library, x[:1]) == macs(emitted, x[:1]) == plan.totals.tt_macs


def _emitted_for(conv: nn.Conv2d, size: tuple[int, int, int]) -> dict:
    plan = plan_architecture(nn.Sequential(conv), size, policy=Policy(rank=4, skip_first=False))
    return load_source(emit_model(plan.plans(), "one conv"))


class StandardisedConv(nn.Conv2d):
    """A Conv2d subclass with a forward of its own (weight standardisation): a TT layer would drop what it adds."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
        return self._conv_forward(x, weight, self.bias)


@pytest.mark.parametrize("other, field", [
    (nn.Conv2d(16, 16, (1, 9), padding=(0, 4)), "kernel_size"),  # as many weights: 2,304
    (nn.Conv2d(16, 16, 3, padding=2, dilation=2), "dilation"),
    (nn.Conv2d(16, 16, 3, stride=2, padding=1), "stride"),
    (nn.Conv2d(8, 32, 3, padding=1), "in_channels"),  # as many weights again
    (nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect"), "padding_mode"),
    (nn.Conv2d(16, 16, 3, padding=0), "padding"),
    (nn.Conv2d(16, 16, 3, padding=1, groups=2), "groups"),
    (StandardisedConv(16, 16, 3, padding=1), "StandardisedConv"),
    (nn.Linear(16, 16), "nn.Linear"),
])
def test_the_emitted_convert_refuses_a_layer_of_another_geometry(other, field):
    """Item 4: every geometry field is checked (not the weight's element count), before anything is replaced."""
    namespace = _emitted_for(nn.Conv2d(16, 16, 3, padding=1), (16, 8, 8))
    model = nn.Sequential(other)
    with pytest.raises(ValueError, match=field):
        namespace["convert"](model)
    assert model[0] is other


def test_the_emitted_convert_takes_the_layer_it_was_planned_for_however_spelled():
    """'same' with an odd window is padding 1 before and after: the same layer as padding=1."""
    namespace = _emitted_for(nn.Conv2d(16, 16, 3, padding=1), (16, 8, 8))
    for conv in (nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding="same", bias=False)):
        converted = namespace["convert"](nn.Sequential(conv))
        assert type(converted[0]).__name__.startswith("TT")
        assert converted(torch.zeros(1, 16, 8, 8)).shape == (1, 16, 8, 8)


def test_library_paths_check_the_geometry_against_the_plan():
    """Item 4 in the library: `convert` with plans made for another padding mode, `from_conv` on a grouped conv or a
    subclass with its own forward: one-line TTPlanError, nothing converted."""
    size = (16, 9, 8)
    reflect, zeros = _modes_model("reflect"), _modes_model("zeros")
    plan = plan_architecture(reflect, size, policy=EXACT)
    with pytest.raises(TTPlanError, match="was made for"):
        convert(zeros, plan.formats(), size, plans=dict(plan.plans()))
    spec = ConvSpec.make(16, 16, 3, padding=1, input_size=8)
    fmt = make_format("hodec", spec, rank=4)
    with pytest.raises(TTPlanError, match="groups"):
        TTConv2d.from_conv(nn.Conv2d(16, 16, 3, padding=1, groups=2), fmt, 8)
    with pytest.raises(TTPlanError, match="own forward"):
        TTConv2d.from_conv(StandardisedConv(16, 16, 3, padding=1), fmt, 8)
    with pytest.raises(TTPlanError, match="StandardisedConv"):
        convert(nn.Sequential(StandardisedConv(16, 16, 3, padding=1)), {"0": fmt}, (16, 8, 8))
