"""Ops ttplan does not plan (issue #25, item 6) are counted dense, by FlopCounterMode's formulas: Conv1d, Conv3d,
ConvTranspose2d, functional convs and matmuls with a module's parameters, a Conv2d subclass with its own forward.
Totals equal FlopCounterMode / 2 for any model, and the report lists what is not planned."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.cli import run
from ttplan.arch.architecture import plan_architecture
from ttplan.arch.policy import Policy
from ttplan.arch.report import render
from ttplan.models import dense_totals, trace, trace_layers


class StandardisedConv(nn.Conv2d):
    """A Conv2d subclass with a forward of its own: ttplan cannot run it as a TT layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
        return self._conv_forward(x, weight, self.bias)


class Mixed(nn.Module):
    """Conv2d layers ttplan plans, and every kind of op it does not."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.seq = nn.Conv1d(16, 24, 3, padding=1)
        self.volume = nn.Conv3d(1, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.kernel = nn.Parameter(torch.randn(16, 16, 3, 3))
        self.u, self.v = nn.Parameter(torch.randn(24, 4)), nn.Parameter(torch.randn(4, 24))  # a low-rank weight
        self.std = StandardisedConv(16, 16, 3, padding=1)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(torch.relu(self.stem(x)))
        x = F.conv2d(x, self.kernel, padding=1)  # a functional conv with the module's parameter
        x = self.std(x)
        volume = self.volume(x[:, :1].unsqueeze(1)).mean()
        tokens = self.seq(x.flatten(2)).transpose(1, 2)  # (B, HW, 24)
        tokens = tokens @ (self.u @ self.v)  # u @ v: weights only, the same at any batch
        up = self.up(x).mean()
        return self.head(tokens.mean(1)) + volume + up


def torch_macs(model: nn.Module, input_size: tuple[int, ...], batch: int = 1) -> int:
    """FlopCounterMode's count of one eval-mode forward, halved (ttplan traces in eval mode)."""
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(batch, *input_size))
    return counter.get_total_flops() // 2


def test_every_op_flop_counter_counts_is_in_the_dense_totals():
    torch.manual_seed(0)
    model, size = Mixed(), (3, 8, 8)
    traced = trace(model, size)
    assert [layer.name for layer in traced.layers] == ["stem", "body", "head"]
    ops = {(op.label, op.module, op.op) for op in traced.untraced}
    assert ops == {("(model)", "Mixed", "convolution"), ("std", "StandardisedConv", "convolution"),
                   ("volume", "Conv3d", "convolution"), ("seq", "Conv1d", "convolution"),
                   ("(model)", "Mixed", "mm"), ("(model)", "Mixed", "bmm"), ("up", "ConvTranspose2d", "convolution")}
    by_module = {op.module: op for op in traced.untraced}
    assert by_module["Conv1d"].macs() == 64 * 24 * 16 * 3  # L * O * I * k
    weights = next(op for op in traced.untraced if op.op == "mm")
    assert (weights.fixed_macs, weights.macs_per_sample) == (24 * 4 * 24, 0)  # u @ v does not grow with the batch
    counted = {"stem", "body", "seq", "volume", "up", "std", "head"}
    params = sum(p.numel() for name, p in model.named_parameters() if name.split(".")[0] in counted)
    params += model.kernel.numel() + model.u.numel() + model.v.numel()
    assert params == sum(p.numel() for p in model.parameters())  # every parameter here is a conv/linear operand
    for batch in (1, 3):
        assert dense_totals(traced.layers, batch, traced.untraced) == (torch_macs(model, size, batch), params)
        plan = plan_architecture(model, size, batch=batch, policy=Policy(rank=4))
        totals = plan.totals
        assert totals.baseline_macs == torch_macs(model, size, batch) and totals.baseline_params == params
        untraced = sum(op.macs(batch) for op in traced.untraced)
        assert totals.untraced_macs == untraced and totals.tt_macs == sum(layer.macs for layer in plan.layers) \
            + untraced  # kept dense in the planned model too
    assert trace_layers(model, size) == traced.layers


def test_the_report_lists_what_it_does_not_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mixedmod.py").write_text(
        "from tests.models.test_untraced_ops import Mixed\n\n\ndef build():\n    return Mixed()\n")
    result = run(["plan", "mixedmod:build", "--input-size", "3,8,8", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = {(row["name"], row["op"]): row for row in data["untraced"]}
    assert rows[("seq", "convolution")]["macs"] == 64 * 24 * 16 * 3
    assert rows[("seq", "convolution")]["dense_reason"] == "not planned: convolution in Conv1d"
    assert data["totals"]["untraced"]["macs"] == sum(row["macs"] for row in rows.values())
    assert data["totals"]["baseline"]["macs"] == torch_macs(Mixed(), (3, 8, 8))
    plan = plan_architecture(Mixed(), (3, 8, 8))
    text = render(plan)
    assert "not planned: convolution in ConvTranspose2d" in text and "ops ttplan does not plan" in text
    assert "not planned: convolution in StandardisedConv" in render(plan, "csv")


def test_a_model_of_traced_layers_only_has_nothing_untraced():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(512, 4))
    traced = trace(model, (3, 8, 8))
    assert traced.untraced == [] and len(traced.layers) == 2



def test_a_scripted_submodule_is_counted_for_the_module_around_it():
    """A ScriptModule takes no hooks: its conv is an untraced op of its parent, and the totals still match."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), torch.jit.script(nn.Conv2d(8, 8, 3, padding=1)))
    traced = trace(model, (3, 8, 8))
    assert [layer.name for layer in traced.layers] == ["0"]
    assert [(op.label, op.op) for op in traced.untraced] == [("(model)", "convolution")]
    assert dense_totals(traced.layers, 2, traced.untraced)[0] == torch_macs(model, (3, 8, 8), 2)


def test_a_budget_counts_the_ops_it_does_not_plan():
    """A budget's baseline and fixed costs include the untraced ops: its targets are reductions of the same totals."""
    from ttplan.arch.budget import prepare_budget

    torch.manual_seed(0)
    model, size = Mixed(), (3, 8, 8)
    result = prepare_budget(model, size, target_macs_reduction=0.01).solve()
    assert result.plan.totals.baseline_macs == torch_macs(model, size)
    assert result.plan.totals.untraced_macs > 0 and result.plan.totals.tt_macs <= result.target_macs
