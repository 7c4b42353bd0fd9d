"""ADMM towards tensor-ring and CP formats: Z is the format's projection of W + U, and `ttplan train` runs configs
with `format: tr` and `format: cp`."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tests.helpers.cli import run
from ttplan.core.formats import make_format
from ttplan.core.spec import ConvSpec
from ttplan.runtime.decomposition import decompose, project, relative_error
from ttplan.training.admm import ADMM, ADMMLayer

SPEC = ConvSpec.make(8, 6, 3, padding=1, input_size=5)
TINY = ["--image-size", "8", "--batch-size", "32", "--max-batches", "2", "--threads", "1"]


#: commands here set torch's thread count for the process (`--threads`): put it back after each test
pytestmark = pytest.mark.usefixtures("keep_threads")


@pytest.mark.parametrize("fmt", [
    make_format("tr", SPEC, in_modes=(2, 4), out_modes=(2, 3), ranks=(2, 2, 3, 4, 3, 2)),
    make_format("cp", SPEC, in_modes=(2, 4), out_modes=(6,), rank=5),
    make_format("cp-separable", SPEC, rank=4),
])
def test_admm_projects_onto_the_format_and_draws_the_weight_towards_it(fmt):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(150, 3)).double()
    admm = ADMM(model, [ADMMLayer("0", fmt, SPEC)], rho=1.0)
    weight = model[0].weight
    assert torch.allclose(admm.Z["0"], project(weight.detach(), fmt, SPEC), atol=1e-12)
    cores = decompose(admm.Z["0"], fmt, SPEC)
    assert [tuple(c.shape) for c in cores] == [c.shape for c in fmt.cores(SPEC)]
    # Z lies in the format: the ring SVD gives it back; ALS (a local fit, not exact) nearly does
    assert relative_error(admm.Z["0"], cores, fmt, SPEC) < (5e-2 if fmt.name.startswith("cp") else 1e-10)
    start = admm.distances()["0"]
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    for epoch in range(4):
        for _ in range(5):
            opt.zero_grad()
            admm.penalty().backward()  # the penalty alone pulls W to Z
            opt.step()
        admm.update(epoch)
    assert admm.distances()["0"] < 0.5 * start
    assert relative_error(weight, decompose(weight, fmt, SPEC), fmt, SPEC) < start


@pytest.mark.slow
@pytest.mark.parametrize("entry", [
    {"format": "tr", "tt_shapes": [8, 8, 9, 8, 8], "ranks": [2, 4, 6, 6, 4, 2]},
    {"format": "cp", "in_modes": [8, 8], "out_modes": [8, 8], "ranks": [12]},
])
def test_train_runs_tr_and_cp_configs(tmp_path, entry):
    config = tmp_path / "layers.json"
    config.write_text(json.dumps({"layer3.0.conv2": entry}))
    out = tmp_path / "run"
    result = run(["train", "--config", str(config), "--pretrain-epochs", "1", "--admm-epochs", "1",
                  "--finetune-epochs", "1", "--rho", "0.05", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "before decomposition" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final"]["accuracy_finetuned"] >= 0
