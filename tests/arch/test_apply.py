"""`ttplan.convert` (ttplan/arch/apply.py): a dense model converted by an ArchPlan, a config file, a dict of config
entries or a dict of formats gives the same TT layers as the formats it resolves to; wrong input is one line."""

from __future__ import annotations

import json

import torch
from torch import nn

import ttplan
from tests.helpers.errors import one_line
from ttplan.arch.apply import convert
from ttplan.arch.architecture import plan_architecture
from ttplan.arch.policy import Policy
from ttplan.core.formats import make_format
from ttplan.runtime.layers import TTConv2d, TTLinear
from ttplan.runtime.layers import convert as convert_formats

SIZE = (3, 12, 12)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.Flatten(), nn.Linear(32 * 6 * 6, 64))


def _same(a: nn.Module, b: nn.Module) -> None:
    """The same layers (types, formats, orders) and the same values."""
    assert [type(m).__name__ for m in a] == [type(m).__name__ for m in b]
    for left, right in zip(a, b):
        if isinstance(left, (TTConv2d, TTLinear)):
            assert left.fmt == right.fmt and left.plan.pairs == right.plan.pairs
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_top_level_convert_is_this_one():
    assert ttplan.convert is convert


def test_an_arch_plan_converts_as_its_formats_and_orders():
    model = _model()
    plan = plan_architecture(model, SIZE, policy=Policy(rank=4, linear=True), fold_weights=True)
    tt = convert(model, plan)
    formats = {layer.name: layer.fmt for layer in plan.layers}
    assert [name for name, fmt in formats.items() if fmt is not None] == ["2", "4", "6"]
    orders = {layer.name: layer.plan.best for layer in plan.layers if layer.decomposed}
    _same(tt, convert_formats(model, formats, SIZE, "best", True, plans=orders))
    assert all(tt[i].fold_weights for i in (2, 4, 6))
    assert not convert(model, plan, fold_weights=False)[2].fold_weights
    assert convert(model, plan, SIZE, scheme="published")[2].plan.name == plan.layers[1].plan.published.name


def test_a_config_file_and_a_dict_of_entries_give_the_formats_they_name(tmp_path):
    model = _model()
    entries = {"2": {"format": "hodec", "rank": 4}, "4.weight": {"format": "classical", "rank": 3}, "6": "dense"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(entries))
    spec2, spec4 = (layer.spec for layer in plan_architecture(model, SIZE).layers[1:3])
    formats = {"2": make_format("hodec", spec2, rank=4), "4": make_format("classical", spec4, rank=3)}
    expected = convert_formats(model, formats, SIZE)
    _same(convert(model, path, SIZE), expected)
    _same(convert(model, str(path), SIZE), expected)
    _same(convert(model, entries, SIZE), expected)
    _same(convert(model, {"2": formats["2"], "4": {"format": "classical", "rank": 3}}, SIZE), expected)
    _same(convert(model, formats, SIZE), expected)  # the formats dict, as before


def test_wrong_input_is_one_line(tmp_path):
    model = _model()
    plan = plan_architecture(model, SIZE)
    one_line(lambda: convert("resnet20", plan), "model='resnet20'", "nn.Module")
    one_line(lambda: convert(model, ["2"], SIZE), "plan_or_config=['2']", "ArchPlan", "config path")
    one_line(lambda: convert(model, {"2": {"format": "hodec"}}, SIZE), "'2'", "rank")
    one_line(lambda: convert(model, {"9": {"format": "hodec", "rank": 4}}, SIZE), "'9'", "conv layers: 0, 2, 4")
    one_line(lambda: convert(model, {"2": "hodec"}, SIZE), "'2'", "expected a mapping")
    one_line(lambda: convert(model, {"2": {"format": "hodec", "rank": 4}}), "input_size=None", "(C, H, W)")
    one_line(lambda: convert(model, tmp_path / "missing.json", SIZE), "missing.json", "cannot read")
    one_line(lambda: convert(model, plan, (3, 16, 16)), "input_size=(3, 16, 16)", "(3, 12, 12)")
    one_line(lambda: convert(model, plan, plans={}), "plans=", "ArchPlan")
