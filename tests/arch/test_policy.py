"""The default policy: skip rules, rank fraction and uniform rank, config precedence, reasons for dense layers."""

from __future__ import annotations

import math

import pytest

from ttplan.arch.config import LayerConfig
from ttplan.arch.policy import Policy, decide, formats_for, unnamed_rule
from ttplan.core.formats import get_format, make_format
from ttplan.errors import TTPlanError
from ttplan.models import load_model, trace_layers


@pytest.fixture(scope="module")
def resnet18_layers():
    model, size = load_model("resnet18")
    return trace_layers(model, size)


@pytest.fixture(scope="module")
def resnet20_layers():
    model, size = load_model("resnet20")
    return trace_layers(model, size)


def test_default_skips_first_conv_1x1_and_linear(resnet18_layers) -> None:
    decisions = decide(resnet18_layers, Policy())
    assert decisions["conv1"].fmt is None and decisions["conv1"].reason == "first conv"
    assert decisions["layer2.0.downsample.0"].reason == "1x1 conv"
    assert decisions["fc"].fmt is None and "--linear" in decisions["fc"].reason
    decomposed = [n for n, d in decisions.items() if d.fmt is not None]
    # ResNet-18: 16 3x3 convs in the blocks, all decomposed
    assert len(decomposed) == 16
    assert all(".conv" in n for n in decomposed)


def test_rank_fraction_of_the_exact_ranks(resnet20_layers) -> None:
    fmt = formats_for(resnet20_layers, Policy(rank_fraction=0.5))["layer3.1.conv1"]
    # 64 -> 64 3x3, three modes a side: 4*4*4; chain 4,4,4,9,4,4,4. Exact ranks at the cuts are
    # min(product left, product right): 4, 16, 64, 64, 16, 4. Half of each, rounded up.
    assert fmt.in_modes == fmt.out_modes == (4, 4, 4)
    exact = [min(math.prod([4, 4, 4, 9, 4, 4, 4][:t]), math.prod([4, 4, 4, 9, 4, 4, 4][t:])) for t in range(1, 7)]
    assert exact == [4, 16, 64, 64, 16, 4]
    assert fmt.ranks == (1, *(math.ceil(r / 2) for r in exact), 1)
    quarter = formats_for(resnet20_layers, Policy(rank_fraction=0.3, order=2))["layer3.1.conv1"]
    # 8*8 | 9 | 8*8: exact 8, 64, 64, 8 -> ceil(0.3x): 3, 20, 20, 3
    assert quarter.ranks == (1, 3, 20, 20, 3, 1)


def test_uniform_rank_matches_make_format(resnet20_layers) -> None:
    policy = Policy(rank=12, order=2)
    formats = formats_for(resnet20_layers, policy)
    for layer in resnet20_layers:
        if formats[layer.name] is not None:
            assert formats[layer.name] == make_format("hodec", layer.spec, rank=12, order=2)


def test_skip_switches(resnet20_layers) -> None:
    everything = decide(resnet20_layers, Policy(skip_first=False, linear=True, order=2))
    # 3 input channels cannot be split into 2 modes: dense, and it says why
    assert everything["conv1"].fmt is None and "cannot be split" in everything["conv1"].reason
    assert everything["linear"].fmt.name == "ttm"
    assert everything["linear"].fmt.in_modes == (8, 8) and everything["linear"].fmt.out_modes == (2, 5)
    narrow = decide(resnet20_layers, Policy(min_channels=32))
    assert narrow["layer1.0.conv1"].reason == "fewer than 32 channels"
    assert narrow["layer2.0.conv1"].reason == "fewer than 32 channels"  # 16 -> 32
    assert narrow["layer2.0.conv2"].fmt is not None
    tucker = formats_for(resnet20_layers, Policy(format="tucker2"))["layer2.0.conv2"]
    assert tucker.label == "tucker2" and tucker.ranks == (1, 16, 16, 1)


def test_config_wins_over_the_policy(resnet20_layers) -> None:
    config = {"conv1": LayerConfig("hodec", tt_shapes=(4, 4, 9, 3), ranks=(1, 4, 3, 3, 1)),
              "layer1.0.conv1": LayerConfig("dense")}
    decisions = decide(resnet20_layers, Policy(), config, unnamed="policy")
    assert decisions["conv1"].fmt == get_format("hodec")((3,), (4, 4), (1, 4, 3, 3, 1))
    assert decisions["conv1"].source == "config"
    assert decisions["layer1.0.conv1"].fmt is None and decisions["layer1.0.conv1"].reason == "dense in config"
    assert decisions["layer1.0.conv2"].source == "policy" and decisions["layer1.0.conv2"].fmt is not None


def test_the_layers_a_config_does_not_name_stay_dense_unless_sent_to_the_policy(resnet20_layers) -> None:
    """Issue #24: `plan --config` sent the unnamed layers to the policy while `train --config` kept them dense. One
    rule now: dense by default where a config is given, the policy with `unnamed="policy"` or without a config."""
    config = {"layer1.0.conv2": LayerConfig("hodec", rank=4)}
    decisions = decide(resnet20_layers, Policy(), config)
    assert [name for name, d in decisions.items() if d.fmt is not None] == ["layer1.0.conv2"]
    assert decisions["layer2.0.conv1"].reason == "not in config" and decisions["layer2.0.conv1"].source == "config"
    mixed = decide(resnet20_layers, Policy(), config, unnamed="policy")
    assert mixed["layer2.0.conv1"].fmt is not None and mixed["conv1"].reason == "first conv"
    assert decide(resnet20_layers, Policy()) == decide(resnet20_layers, Policy(), None, "policy")
    assert unnamed_rule(None, config=True) == "dense" and unnamed_rule(None, config=False) == "policy"
    assert unnamed_rule(None, config=True, budget=True) == "policy"  # the budget searches them


@pytest.mark.parametrize("unnamed, config, budget, match", [
    ("all", True, False, "unnamed='all': expected one of policy, dense"),
    ("dense", False, False, "--unnamed dense without --config"),
    ("dense", True, True, "--unnamed dense with a budget target"),
])
def test_unusable_unnamed_rules_are_one_line(unnamed, config, budget, match) -> None:
    with pytest.raises(TTPlanError, match=match):
        unnamed_rule(unnamed, config, budget)


@pytest.mark.parametrize("kwargs, match", [
    ({"format": "ttm"}, "format='ttm'"),
    ({"rank_fraction": 0.0}, "rank_fraction"),
    ({"rank_fraction": 1.5}, "rank_fraction"),
    ({"rank": 0}, "rank=0"),
    ({"min_channels": 0}, "min_channels"),
])
def test_bad_policies(kwargs, match) -> None:
    with pytest.raises(TTPlanError, match=match):
        Policy(**kwargs)
