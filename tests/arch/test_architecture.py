"""Whole-architecture plans: dense totals against the literature and torch's flop counter, published-style
hodec configs against the per-step formula of docs/cost-model.md, worse-than-dense flags and the JSON shape."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ttplan.arch.architecture import plan_architecture
from ttplan.arch.config import LayerConfig
from ttplan.arch.policy import Policy
from ttplan.errors import TTPlanError
from ttplan.models import load_model

# docs/cost-model.md "Reference figures": dense MACs and params (conv + linear layers)
LITERATURE = {
    "resnet20": (40.55e6, 0.27e6),
    "resnet56": (125.49e6, 0.85e6),
    "resnet18": (1.82e9, 11.69e6),
    "resnet50": (4.1e9, 25.6e6),
}


@pytest.mark.parametrize("name", list(LITERATURE))
def test_dense_totals_match_literature_and_torch(name) -> None:
    plan = plan_architecture(name, policy=Policy(min_channels=10**6))  # all dense: only the totals matter
    totals = plan.totals
    macs, params = LITERATURE[name]
    assert abs(totals.baseline_macs / macs - 1) < 0.01
    assert abs(totals.baseline_params / params - 1) < 0.01
    # independent counts: torch's flop counter on the dense forward pass (FLOPs = 2 x MACs), and the
    # weights of every Conv2d/Linear module
    model, size = load_model(name)
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *size))
    assert counter.get_total_flops() == 2 * totals.baseline_macs
    weights = sum(p.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) for p in m.parameters())
    assert weights == totals.baseline_params


def _hodec_published_macs(tt_shapes: list[int], ranks: list[int], e: int, hw: int, out_hw: int) -> int:
    """The hodec order of docs/cost-model.md, step by step: input cores A_d..A_1 at H*W, the conv with C at H'W',
    then the output cores B_e..B_1 at H'W'; the costs add."""
    out_modes, window, in_modes = tt_shapes[:e], tt_shapes[e], tt_shapes[e + 1:]
    d = len(in_modes)
    total = 0
    for j in range(d, 0, -1):  # A_j[r_{e+j}, I_j, r_{e+j+1}] meets a map holding i_1..i_j
        total += hw * math.prod(in_modes[:j]) * ranks[e + j] * ranks[e + j + 1]
    total += out_hw * window * ranks[e] * ranks[e + 1]  # the conv with C[r_e, K, r_{e+1}]
    for j in range(e, 0, -1):  # B_j[r_{j-1}, O_j, r_j] meets a map holding o_{j+1}..o_e and r_j
        total += out_hw * math.prod(out_modes[j - 1:]) * ranks[j - 1] * ranks[j]
    return total


def test_published_config_hodec_matches_the_per_step_formula() -> None:
    # published style for ResNet-56: two modes a side, tt_shapes out + [9] + in, ranks 1..1
    shapes = {16: [4, 4], 32: [8, 4], 64: [8, 8]}
    plan0 = plan_architecture("resnet56")
    config = {}
    for layer in plan0.layers:
        spec = layer.spec
        if layer.kind == "conv" and layer.name != "conv1":
            out_m, in_m = shapes[spec.out_channels], shapes[spec.in_channels][::-1]
            config[layer.name] = LayerConfig("hodec", tt_shapes=(*out_m, 9, *in_m), ranks=(1, 4, 12, 12, 4, 1))
    plan = plan_architecture("resnet56", config=config)
    checked = 0
    for layer in plan.layers:
        if layer.name not in config:
            assert layer.plan is None
            continue
        entry = config[layer.name]
        expected = _hodec_published_macs(list(entry.tt_shapes), list(entry.ranks), 2, layer.spec.in_pixels,
                                         layer.spec.out_pixels)
        assert layer.plan.schemes["hodec"].macs == expected
        assert layer.plan.best.macs <= layer.plan.schemes["hodec"].macs
        assert layer.params == layer.fmt.params(layer.spec)
        checked += 1
    assert checked == 54


def test_totals_add_up_and_json_keys() -> None:
    plan = plan_architecture("resnet20", policy=Policy(rank=4))
    data = plan.to_dict()
    layers = data["layers"]
    assert len(layers) == 20
    for row in layers:
        assert {"name", "baseline", "schemes", "best", "worse_than_dense"} <= set(row)
        assert {"macs", "params"} <= set(row["baseline"]) and {"macs", "params"} <= set(row["best"])
        if row["decomposed"]:
            assert row["schemes"]["hodec"]["macs"] >= row["best"]["macs"]
        else:
            assert row["best"]["macs"] == row["baseline"]["macs"] and row["dense_reason"]
    totals = data["totals"]
    assert totals["tt"]["macs"] == sum(row["best"]["macs"] for row in layers)
    assert totals["tt"]["params"] == sum(row["best"]["params"] for row in layers)
    assert totals["baseline"]["macs"] == sum(row["baseline"]["macs"] for row in layers) == 40_551_040
    assert totals["macs_reduction"] == pytest.approx(1 - totals["tt"]["macs"] / totals["baseline"]["macs"])
    # the dense-kept layers (first conv, linear) are inside the totals
    assert [row["name"] for row in layers if not row["decomposed"]] == ["conv1", "linear"]


def test_worse_than_dense_flag_and_skip_worse() -> None:
    policy = Policy(format="classical", rank=16, order=2)
    plan = plan_architecture("resnet20", policy=policy)
    worse = [layer for layer in plan.layers if layer.worse_than_dense]
    assert worse
    for layer in worse:
        published = layer.plan.schemes["classical"]
        assert published.macs > layer.baseline_macs or published.params > layer.baseline_params
    for layer in plan.layers:
        if layer.plan is not None and not layer.worse_than_dense:
            assert layer.plan.published.macs <= layer.baseline_macs
    skipped = plan_architecture("resnet20", policy=policy, skip_worse=True)
    for before, after in zip(plan.layers, skipped.layers):
        assert after.worse_than_dense == before.worse_than_dense
        if before.worse_than_dense:
            assert after.fmt is None and after.plan is None and "--skip-worse" in after.reason
            assert after.rejected == before.fmt
            assert after.macs == after.baseline_macs
        else:
            assert after.fmt == before.fmt


def test_batch_scales_feature_steps_only() -> None:
    one = plan_architecture("resnet20", batch=1)
    four = plan_architecture("resnet20", batch=4)
    assert four.totals.baseline_macs == 4 * one.totals.baseline_macs
    for a, b in zip(one.layers, four.layers):
        if a.plan is not None:
            assert b.plan.best.feature_macs <= 4 * a.plan.best.feature_macs + 4 * a.plan.best.weight_macs
            assert b.macs <= 4 * a.macs


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


def test_any_module_and_errors() -> None:
    plan = plan_architecture(Tiny(), (3, 16, 16), policy=Policy(order=2))
    assert [layer.name for layer in plan.layers] == ["stem", "body", "head"]
    assert plan.layers[1].fmt is not None and plan.layers[1].spec.output_size == (8, 8)
    assert plan.totals.baseline_params == (3 * 16 * 9 + 16) + 16 * 32 * 9 + (32 * 4 + 4)
    with pytest.raises(TTPlanError, match="input_size"):
        plan_architecture(Tiny())
    with pytest.raises(TTPlanError, match="did you mean 'resnet56'"):
        plan_architecture("resnet65")
    with pytest.raises(TTPlanError, match="batch"):
        plan_architecture("resnet20", batch=0)
