"""`ADMMCompression`: ADMM towards a config in a loop of your own, then the balanced TT model."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ttplan import ADMMCompression
from ttplan.errors import TTPlanError

CONFIG = {"2": {"format": "hodec", "in_modes": [4, 4], "out_modes": [4, 4], "rank": 2}}
SIZE = (3, 8, 8)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))


def test_penalty_step_and_decompose_in_your_own_loop(tmp_path):
    model = _model()
    path = tmp_path / "budget.json"
    path.write_text(json.dumps(CONFIG))
    admm = ADMMCompression(model, path, SIZE, lr=0.05, epochs=3)
    assert set(admm.formats) == {"2"}
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    before = admm.distances()["2"]
    for _ in range(3):
        for _ in range(20):
            loss = model(torch.randn(4, *SIZE)).pow(2).mean() + admm.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
        admm.step()
    assert admm.distances()["2"] < before  # the penalty pulled the weight towards its format
    tt = admm.decompose()
    layer = tt[2]
    norms = [float(core.norm()) for core in layer.cores]
    assert max(norms) / min(norms) == pytest.approx(1.0, rel=1e-4)  # balanced, as ttplan train balances them
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        expected = F.conv2d(F.relu(model[0](x)), layer.to_dense(), model[2].bias, padding=1)
        assert (tt(x) - expected).abs().max() <= 1e-4


def test_a_dict_config_and_the_rho_choices():
    assert ADMMCompression(_model(), CONFIG, SIZE, rho=0.5).admm.rho == 0.5
    with pytest.raises(TTPlanError, match="give rho"):
        ADMMCompression(_model(), CONFIG, SIZE)
    with pytest.raises(TTPlanError, match="keeps every layer dense"):
        ADMMCompression(_model(), {"2": {"format": "dense"}}, SIZE, rho=1.0)
