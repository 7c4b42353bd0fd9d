"""Exact dense and planned counts for any model: every call of a shared module, every token of a linear,
exact integers at any batch, and `module:callable` importable from the current directory."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.cli import run
from tests.helpers.random_models import RandomNet, module_source
from ttplan.arch.architecture import plan_architecture
from ttplan.core.formats import make_format
from ttplan.core.layer import plan_layer
from ttplan.core.spec import ConvSpec
from ttplan.models import dense_totals, trace_layers

SHARED = '''
from torch import nn


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(64, 48)

    def forward(self, x):
        y = self.conv(self.conv(x))
        return self.fc(y.flatten(2))


def shared():
    return Shared()
'''


def torch_macs(model: nn.Module, input_size: tuple[int, ...], batch: int = 1) -> int:
    """FlopCounterMode's count of one forward pass, halved (it counts a MAC as two FLOPs)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(batch, *input_size))
    return counter.get_total_flops() // 2


def conv_linear_params(model: nn.Module) -> int:
    """The parameters of the conv and linear modules, a shared module once."""
    return sum(p.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) for p in m.parameters())


def plan_json(tmp_path, monkeypatch, source: str, target: str, *args: str) -> dict:
    """`ttplan plan target --json` run from the folder holding the written module (item 11's setting)."""
    (tmp_path / f"{target.split(':')[0]}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    result = run(["plan", target, "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_module_callable_imports_from_the_current_directory(tmp_path, monkeypatch):
    data = plan_json(tmp_path, monkeypatch, SHARED, "cwdmod_a:shared", "--input-size", "16,8,8")
    assert [layer["name"] for layer in data["layers"]] == ["conv", "fc"]
    import sys

    assert str(tmp_path) not in sys.path  # the import path is restored afterwards


def test_a_module_called_twice_is_counted_and_planned_per_call(tmp_path, monkeypatch):
    data = plan_json(tmp_path, monkeypatch, SHARED, "cwdmod_b:shared", "--input-size", "16,8,8", "--no-skip-first")
    conv = data["layers"][0]
    assert conv["calls"] == 2 and conv["decomposed"]
    spec = ConvSpec.make(16, 16, 3, padding=1, input_size=8, bias=True)
    assert conv["baseline"]["macs"] == 2 * spec.dense_macs()
    assert conv["baseline"]["params"] == spec.dense_params()  # one weight
    fmt = make_format(conv["format"]["kind"], spec, in_modes=conv["format"]["in_modes"],
                      out_modes=conv["format"]["out_modes"], ranks=conv["format"]["ranks"])
    once = plan_layer(spec, fmt)
    assert conv["best"]["macs"] == 2 * once.best.macs and conv["best"]["params"] == once.best.params
    import cwdmod_b

    assert data["totals"]["baseline"]["macs"] == torch_macs(cwdmod_b.shared(), (16, 8, 8))
    text = run(["plan", "cwdmod_b:shared", "--input-size", "16,8,8"]).stdout
    assert "2 calls per forward" in text


def test_a_token_wise_linear_counts_every_token_and_is_planned_at_that_many_rows():
    model = nn.Sequential(nn.Flatten(2), nn.Linear(64, 48))  # (1, 16, 8, 8) -> (1, 16, 64) -> (1, 16, 48)
    (layer,) = trace_layers(model, (16, 8, 8))
    assert layer.spec == ConvSpec.make_linear(64, 48, bias=True, rows=16)
    assert dense_totals([layer])[0] == 16 * 64 * 48 == torch_macs(model, (16, 8, 8))
    plan = plan_architecture(model, (16, 8, 8), config={"1": _ttm()})
    row = plan.layers[0]
    assert row.plan is not None and row.plan.network.spec.in_pixels == 16
    fmt = make_format("ttm", layer.spec, in_modes=(4, 4, 4), out_modes=(4, 4, 3), rank=4)
    assert row.macs == plan_layer(layer.spec, fmt).best.macs
    assert "x16 rows" in layer.spec.describe()


def _ttm():
    from ttplan.arch.config import LayerConfig

    return LayerConfig("ttm", in_modes=(4, 4, 4), out_modes=(4, 4, 3), rank=4)


def test_counts_stay_exact_integers_at_any_batch():
    batch = 99_999_999_999_999
    one = plan_architecture("resnet20", batch=1, policy=_policy())
    huge = plan_architecture("resnet20", batch=batch, policy=_policy())
    assert huge.totals.baseline_macs == batch * one.totals.baseline_macs  # Python ints: exact
    for a, b in zip(one.layers, huge.layers):
        assert isinstance(b.macs, int) and b.baseline_macs == batch * a.baseline_macs
        if a.plan is not None:  # a fixed order: feature-map steps scale with the batch, weight steps do not
            for name, p in a.plan.schemes.items():
                q = b.plan.schemes[name]
                assert q.macs == batch * p.feature_macs + p.weight_macs, (a.name, name)


def _policy():
    from ttplan.arch.policy import Policy

    return Policy(rank=4)


def test_the_layer_table_keeps_its_columns_at_any_batch():
    args = ["layer", "-i", "128", "-o", "256", "-k", "3", "-s", "2", "-p", "1", "--input-size", "28", "--rank", "16"]
    for batch in ("1", "99999999999999"):
        lines = run([*args, "--batch", batch]).stdout.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("order"))
        header, rows = lines[start], lines[start + 2:start + 6]
        end = header.index("x dense") + len("x dense")
        for row in rows:
            assert re.match(r"\d\.\d{3}$", row[end - 5:end]), (batch, row)
            assert row[end] == " " and row[end - 6] == " "


@pytest.mark.parametrize("seed", range(6))
def test_dense_totals_equal_flop_counter_for_random_models(tmp_path, monkeypatch, seed):
    """Shared convs, grouped and dilated convs, token-wise and reused linears: `ttplan plan --json` dense totals
    are FlopCounterMode / 2 (at batch 1 and at a random batch) and the conv/linear parameter count."""
    model = RandomNet(seed)
    size = model.input_size
    batch = 1 + seed % 3
    data = plan_json(tmp_path, monkeypatch, module_source(seed), f"randnet_{seed}:build",
                     "--input-size", ",".join(map(str, size)), "--batch", str(batch), "--linear")
    assert data["totals"]["baseline"]["macs"] == torch_macs(model, size, batch)
    assert data["totals"]["baseline"]["params"] == conv_linear_params(model)
    calls = {layer["name"]: layer["calls"] for layer in data["layers"]}
    assert calls["shared"] == model.repeats and calls["mixer"] == model.mixes
    # a decomposed layer's planned cost is its per-call plan times its calls (one geometry per call here)
    for layer in data["layers"]:
        if layer["decomposed"] and layer["calls"] > 1:
            assert layer["best"]["macs"] % layer["calls"] == 0


def test_a_budget_counts_every_call_too():
    from ttplan.arch.budget import prepare_budget

    model = RandomNet(1)
    size = model.input_size
    result = prepare_budget(model, size, target_macs_reduction=0.2).solve()
    assert result.plan.totals.baseline_macs == torch_macs(model, size)
    shared = next(layer for layer in result.plan.layers if layer.name == "shared")
    assert shared.n_calls == model.repeats
    if shared.plan is not None:
        assert shared.macs == sum(p.best.macs for p in shared.call_plans)


def test_the_plan_table_keeps_its_columns_at_any_batch():
    lines = run(["plan", "resnet20", "--batch", "99999999999999"]).stdout.splitlines()
    header = next(line for line in lines if line.startswith("layer "))
    end = header.index("MACs↓") + len("MACs↓")
    rows = [line for line in lines if line.startswith(("conv1", "layer", "linear", "TOTAL")) and line != header]
    assert len(rows) == 21  # 19 convs, the linear layer, the total
    for row in rows:
        assert row[end - 1] == "%" and row[end] == " ", row
