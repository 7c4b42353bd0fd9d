"""A module called at two input sizes runs one order (issue #25, item 7): the planned MACs are what the converted
and emitted models execute (FlopCounterMode), the order the least costly over the calls."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.runtime_cases import load_source
from ttplan.arch.architecture import plan_architecture
from ttplan.arch.policy import Policy
from ttplan.arch.report import render
from ttplan.core.contraction import ContractionPlan
from ttplan.core.layer import plan_layer
from ttplan.runtime.codegen import emit_model
from ttplan.runtime.layers import convert


class TwoSizes(nn.Module):
    """One 32-channel conv run at 32x32 and again at 4x4, where its best orders differ."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(32, 32, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.avg_pool2d(self.conv(x), 8))


def macs(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def test_a_module_called_at_two_sizes_runs_the_order_it_was_planned_with():
    torch.manual_seed(7)
    model, size = TwoSizes().eval(), (32, 32, 32)
    plan = plan_architecture(model, size, policy=Policy(rank=8, skip_first=False))
    (layer,) = plan.layers
    large, small = layer.calls
    assert (large.input_size, small.input_size) == ((32, 32), (4, 4))
    own = [plan_layer(spec, layer.fmt).best for spec in layer.calls]
    assert own[0].pairs != own[1].pairs  # each size alone would run another order
    assert layer.call_plans[0].best.pairs == layer.call_plans[1].best.pairs
    # the order kept is the cheaper of the two over both calls
    summed = {p.pairs: sum(ContractionPlan(q.network, p.pairs).macs for q in own) for p in own}
    assert layer.macs == min(summed.values()) == plan.totals.tt_macs
    assert "2 calls per forward, each counted; one order for all" in render(plan, "csv")
    x = torch.randn(1, *size)
    library = convert(model, plan.formats(), size)  # searching 'best' itself
    planned = convert(model, plan.formats(), size, plans=dict(plan.plans()))
    emitted = load_source(emit_model(plan.plans(), "two sizes"))["convert"](model)
    for converted in (library, planned, emitted):
        assert macs(converted, x) == plan.totals.tt_macs
