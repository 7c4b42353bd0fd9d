"""BatchNorm folded into the TT conv it follows, for inference (`fold_batchnorm`, `convert(..., fold_weights=True)`):
the folded ResNets equal the unfolded eval models (random BN statistics) on stock ops in both memory formats and on
the fused kernel, count exactly the planned MACs, and only BatchNorms that fx shows reading a TT layer's output
alone, in an eval model, are folded."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.batchnorm import batchnorms, randomize_batchnorms
from tests.helpers.runtime_cases import assert_close
from ttplan.arch.architecture import ArchPlan, plan_architecture
from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.schemes import merged
from ttplan.core.spec import ConvSpec
from ttplan.models import load_model
from ttplan.runtime.batchnorm import batchnorm_chains, fold_batchnorm
from ttplan.runtime.layers import TTConv2d, convert
from ttplan.runtime.lowering import Lowering

BATCH = 2
SPEC = ConvSpec.make(16, 16, 3, padding=1, input_size=8)
FMT = make_format("hodec", SPEC, in_modes=(4, 4), out_modes=(4, 4), rank=4)


@functools.cache
def resnet(arch: str) -> tuple[nn.Module, tuple[int, int, int], ArchPlan]:
    """The preset in eval mode with random BatchNorms, and its default policy's plan at batch `BATCH`, folded."""
    torch.manual_seed(0)
    dense, size = load_model(arch)
    randomize_batchnorms(dense).eval()
    return dense, size, plan_architecture(dense, size, batch=BATCH, fold_weights=True)


#: (order, lowering): the searched order, whose output cores ResNet's layers absorb one by one (the scale runs after
#: the last product), and the merged one, whose last operand holds every output channel (the scale goes into it)
WAYS = {
    "best-nchw": ("best", Lowering()),
    "best-nhwc": ("best", Lowering("conv", channels_last=True)),
    "merged-nchw": ("merged", Lowering()),
    "merged-nhwc": ("merged", Lowering("bmm", channels_last=True)),
    "merged-fused": ("merged", Lowering(fused=True)),
}


def converted(arch: str, way: str, fold_bn: bool | None = None) -> nn.Module:
    dense, size, plan = resnet(arch)
    order, lowering = WAYS[way]
    layers = [layer for layer in plan.layers if layer.decomposed]
    plans = {layer.name: layer.plan.best if order == "best" else merged(build_network(layer.spec, layer.fmt, BATCH),
                                                                         fold_weights=True) for layer in layers}
    model = convert(dense, {layer.name: layer.fmt for layer in layers}, size, fold_weights=True, plans=plans,
                    lowerings=dict.fromkeys(plans, lowering), fold_bn=fold_bn)
    return model.to(memory_format=torch.channels_last) if lowering.channels_last else model


def way_input(way: str, size: tuple[int, int, int]) -> torch.Tensor:
    """A seeded input batch in the memory format the way's models run in."""
    x = torch.randn(BATCH, *size, generator=torch.Generator().manual_seed(1))
    return x.contiguous(memory_format=torch.channels_last) if WAYS[way][1].channels_last else x


@pytest.mark.parametrize("way", [pytest.param(way, marks=pytest.mark.requires_cc) if "fused" in way else way
                                 for way in WAYS])
@pytest.mark.parametrize("arch", ["resnet20", "resnet56"])
def test_folded_resnets_equal_the_unfolded_eval_models_and_count_the_planned_macs(arch, way):
    dense, size, plan = resnet(arch)
    unfolded, folded = converted(arch, way, fold_bn=False), converted(arch, way)
    tt = [module for module in folded.modules() if isinstance(module, TTConv2d)]
    assert batchnorms(unfolded) == batchnorms(dense) and batchnorms(folded) == batchnorms(dense) - len(tt)
    assert all(layer.out_scale is not None and layer.bias is not None for layer in tt)
    in_weights = {layer.scale_site is not None for layer in tt}
    assert in_weights == ({True} if way.startswith("merged") else {False})
    x = way_input(way, size)
    with torch.no_grad():
        expected = unfolded(x)
        assert_close(folded(x), expected, rel=1e-4)
        assert_close(folded(x), expected, rel=1e-4)  # again, from the fold caches
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        folded(x)
    modules = dict(folded.named_modules())  # the TT layers' MACs as they run (the merged orders are not the plan's)
    assert counter.get_total_flops() == 2 * sum(modules[layer.name].plan.macs if layer.decomposed else layer.macs
                                                for layer in plan.layers)


def test_the_default_plan_folded_counts_exactly_twice_its_planned_macs():
    dense, size, plan = resnet("resnet20")
    folded = convert(dense, plan.formats(), size, fold_weights=True, plans=dict(plan.plans()))
    assert batchnorms(folded) == 1  # the first conv's, dense
    x = torch.randn(BATCH, *size)
    with torch.no_grad():
        folded(x)  # folds the weights: the weight-only steps run once, at load
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        folded(x)
    assert counter.get_total_flops() == 2 * plan.totals.tt_macs


def test_folded_model_with_gradients_on_equals_it_without_and_backpropagates():
    dense, size, _ = resnet("resnet20")
    unfolded, folded = converted("resnet20", "best-nchw", fold_bn=False), converted("resnet20", "best-nchw")
    x = torch.randn(BATCH, *size)
    with torch.no_grad():
        expected = unfolded(x)
    out = folded(x)
    assert_close(out.detach(), expected, rel=1e-4)
    out.sum().backward()
    assert all(p.grad is not None for n, p in folded.named_parameters() if "layer1.0.conv1" in n)


def test_a_model_in_training_mode_keeps_its_batchnorms():
    dense, size, plan = resnet("resnet20")
    training = convert(dense.train(), plan.formats(), size, fold_weights=True, plans=dict(plan.plans()))
    dense.eval()
    assert training.training and batchnorms(training) == batchnorms(dense)
    assert batchnorms(fold_batchnorm(training)) == batchnorms(dense)
    assert not any(module.out_scale is not None for module in training.modules() if isinstance(module, TTConv2d))


def test_fold_batchnorm_copies_unless_in_place_and_folds_once():
    dense, size, plan = resnet("resnet20")
    unfolded = converted("resnet20", "best-nchw", fold_bn=False)
    folded = fold_batchnorm(unfolded)
    assert batchnorms(unfolded) == batchnorms(dense) and batchnorms(folded) < batchnorms(dense)
    x = torch.randn(BATCH, *size)
    with torch.no_grad():
        once = folded(x)
        assert torch.equal(fold_batchnorm(folded)(x), once)  # nothing left to fold
        assert fold_batchnorm(unfolded, inplace=True) is unfolded and batchnorms(unfolded) == batchnorms(folded)
        assert torch.equal(unfolded(x), once)


def tt(conv: nn.Conv2d) -> TTConv2d:
    return TTConv2d.from_conv(conv, FMT, 8, fold_weights=True)


class TwoReaders(nn.Module):
    """The TT layer's output read by its BatchNorm and by the shortcut sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = tt(nn.Conv2d(16, 16, 3, padding=1, bias=False))
        self.bn = nn.BatchNorm2d(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


class Branches(nn.Module):
    """A forward that branches on values: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = tt(nn.Conv2d(16, 16, 3, padding=1, bias=False))
        self.bn = nn.BatchNorm2d(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return y if y.sum() > 0 else -y


class SharedReLU(nn.Module):
    """One ReLU module called twice (as the ResNets' blocks do): the BatchNorm folds, the ReLU stays."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = tt(nn.Conv2d(16, 16, 3, padding=1, bias=False))
        self.bn = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.relu(self.bn(self.conv(x))) - 1)


def sequential() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(tt(nn.Conv2d(16, 16, 3, padding=1)), nn.BatchNorm2d(16), nn.ReLU(),
                         tt(nn.Conv2d(16, 16, 3, padding=1, bias=False)), nn.BatchNorm2d(16))


@pytest.mark.parametrize("build", [TwoReaders, Branches, SharedReLU, sequential],
                         ids=["two-readers", "untraceable", "shared-relu", "sequential"])
def test_only_batchnorms_that_alone_read_a_tt_layer_fold(build):
    torch.manual_seed(0)
    model = randomize_batchnorms(build(), seed=4).eval()
    x = torch.randn(2, 16, 8, 8)
    folded = fold_batchnorm(model)
    kinds = [type(module).__name__ for _, module in folded.named_children()]
    expected = {TwoReaders: ["TTConv2d", "BatchNorm2d"], Branches: ["TTConv2d", "BatchNorm2d"],
                SharedReLU: ["TTConv2d", "Identity", "ReLU"]}.get(build, ["TTConv2d", "Identity", "Identity",
                                                                          "TTConv2d", "Identity"])
    assert kinds == expected
    with torch.no_grad():
        assert_close(folded(x), model(x), rel=1e-5)
    if build is sequential:
        assert folded[0].apply_relu and not folded[3].apply_relu
        assert batchnorm_chains(model, TTConv2d) == [("0", "1", "2"), ("3", "4", None)]
        assert [type(m).__name__ for m in fold_batchnorm(model, relu=False)] == [
            "TTConv2d", "Identity", "ReLU", "TTConv2d", "Identity"]


def test_a_batchnorm_in_training_mode_in_an_eval_model_is_not_folded():
    model = randomize_batchnorms(sequential()).eval()
    model[4].train()
    folded = fold_batchnorm(model)
    assert [type(m).__name__ for m in folded] == ["TTConv2d", "Identity", "Identity", "TTConv2d", "BatchNorm2d"]


def test_a_folded_layer_exported_and_traced_equals_eager():
    model = randomize_batchnorms(sequential()).eval()
    folded = fold_batchnorm(model)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        expected = folded(x)
        exported = torch.export.export(folded, (x,)).module()
        traced = torch.jit.trace(folded, x)
        for captured in (exported, traced):
            assert_close(captured(x), expected, rel=1e-5)
