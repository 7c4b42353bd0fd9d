"""The Fashion-MNIST ADMM experiment, tiny: runs from a stored dense model, stores them, renders from the store."""

from __future__ import annotations

import json

import pytest
import torch

from experiments import admm_fashion_mnist as exp
from tests.helpers.fashion import write_fake_fashion
from ttplan.models import load_model

pytestmark = pytest.mark.slow  # child `ttplan train` processes


def test_runs_are_stored_skipped_when_stored_and_rendered(tmp_path):
    data = tmp_path / "fm"
    write_fake_fashion(data, n_train=400, n_test=40)
    store, runs = tmp_path / "store", tmp_path / "runs"
    store.mkdir()
    model, _ = load_model("resnet20", (1, 28, 28))
    torch.save(model.state_dict(), store / "dense.pt")
    report, table = tmp_path / "report.md", tmp_path / "report.json"
    args = ["--store", str(store), "--runs", str(runs), "--report", str(report), "--json", str(table),
            "--data-dir", str(data), "--max-batches", "1", "--train-subset", "64", "--jobs", "1",
            "--only", "dense_s0", "admm+kd80_s0"]
    assert exp.main(args) == 0
    rows = {r["name"]: r for r in json.loads(table.read_text())["runs"]}
    assert set(rows) == {"dense_s0", "admm+kd80_s0"}
    admm = rows["admm+kd80_s0"]
    assert admm["point"] == "80" and admm["arm"] == "admm+kd" and admm["extra_epochs"] == 3
    for key in ("test_accuracy", "flops_reduction", "params_reduction", "approx_error", "wall_s", "seed"):
        assert admm[key] is not None, key
    assert abs(admm["params_reduction"] - 0.80) < 0.01  # the 80% operating point's config
    text = report.read_text()
    assert "admm+kd80_s0" in text and "Not yet run" in text and (tmp_path / "report.png").is_file()
    # a stored run is not run again: its metrics stay byte for byte
    before = (store / "dense_s0" / "metrics.json").read_bytes()
    assert exp.main(args) == 0
    assert (store / "dense_s0" / "metrics.json").read_bytes() == before
    assert exp.main([*args[:8], "--report-only"]) == 0
