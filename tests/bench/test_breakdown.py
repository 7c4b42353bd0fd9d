"""Each model's forward by kind of module, timed by hooks: kinds, the replaced layers as wholes, hooks removed."""

import time

import pytest
import torch
from torch import nn

from ttplan.bench.model.breakdown import BETWEEN, REPLACED, TimeBreakdown, render_breakdown, time_breakdown


class Sleep(nn.Module):
    """Takes at least `ms` per call: a lower bound the clocks must see."""

    def __init__(self, ms: float) -> None:
        super().__init__()
        self.ms = ms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.ms / 1000)
        return x


class Block(nn.Module):
    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x)) + x))  # the add runs between modules


def _models() -> tuple[nn.Module, nn.Module]:
    dense = Block(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), Sleep(4))).eval()
    # the TT side's replacement has children of its own (as TT layers do): it is timed as one whole
    tt = Block(nn.Sequential(nn.Conv2d(4, 2, 1), nn.Conv2d(2, 4, 3, padding=1), Sleep(12))).eval()
    return dense, tt


def test_the_replaced_layers_are_timed_as_wholes_and_the_rest_by_module_type():
    dense, tt = _models()
    result = time_breakdown(dense, tt, torch.randn(1, 4, 8, 8), {"conv"}, rounds=3)
    for parts in (result.dense, result.tt):
        assert set(parts) == {REPLACED, "BatchNorm2d", "ReLU", "MaxPool2d", BETWEEN}  # no Conv2d or Sleep: inside
        assert all(ms >= 0 for ms in parts.values())
    assert result.dense[REPLACED] >= 4 and result.tt[REPLACED] >= 12  # the sleeps, seen inside the wholes
    assert result.tt_total >= result.tt[REPLACED] and result.dense_total >= result.dense[REPLACED]
    assert result.kinds[0] == REPLACED and result.kinds[-1] == BETWEEN
    if result.tt_faults is not None:  # counted where getrusage is (Linux, macOS): per kind, never negative
        assert set(result.tt_faults) == set(result.tt) - {BETWEEN} and min(result.tt_faults.values()) >= 0


def test_the_hooks_are_removed_and_the_models_compute_as_before():
    dense, tt = _models()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        before = tt(x)
    time_breakdown(dense, tt, x, {"conv"}, rounds=1)
    assert not any(m._forward_hooks or m._forward_pre_hooks for model in (dense, tt) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(tt(x), before)


def test_the_rendered_table_lists_each_kind_and_names_the_largest_kept_part():
    result = TimeBreakdown({REPLACED: 100.0, "MaxPool2d": 25.0, "ReLU": 1.0, BETWEEN: 2.0},
                           {REPLACED: 40.0, "MaxPool2d": 25.5, "ReLU": 1.0, BETWEEN: 1.5}, 128.0, 68.0,
                           {REPLACED: 10.0, "MaxPool2d": 6272.0, "ReLU": 0.0}, {REPLACED: 3.0, "MaxPool2d": 6272.0,
                                                                               "ReLU": 0.0})
    assert result.largest_kept() == ("MaxPool2d", 25.5)
    text = "\n".join(render_breakdown(result))
    assert f"| {REPLACED} | 100.00 | 40.00 | 59% | 10 / 3 |" in text
    assert "| MaxPool2d | 25.00 | 25.50 | 38% | 6,272 / 6,272 |" in text
    assert f"| {BETWEEN} | 2.00 | 1.50 | 2% |  |" in text and "| whole forward | 128.00 | 68.00 | 100% | |" in text
    assert text.index("MaxPool2d |") < text.index("ReLU |") < text.index(BETWEEN)
    assert "spends most in `MaxPool2d`: 25.50 ms, 38% of its forward (the dense model: 25.00 ms)" in text


def test_no_rounds_is_refused():
    dense, tt = _models()
    with pytest.raises(ValueError, match="rounds=0: expected at least 1"):
        time_breakdown(dense, tt, torch.randn(1, 4, 8, 8), {"conv"}, rounds=0)
