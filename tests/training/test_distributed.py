"""Data-parallel training: two gloo processes end every ADMM epoch with the same W, Z and U; torchrun runs the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ttplan.core.formats import get_format
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.runtime.decomposition import project
from ttplan.training import distributed as D

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {"layer3.0.conv2": {"format": "hodec", "in_modes": [8, 8], "out_modes": [8, 8], "rank": 6}}
SPEC = ConvSpec.make(64, 64, 3, padding=1, input_size=2)
FMT = get_format("hodec")((8, 8), (8, 8), (1, 6, 6, 6, 6, 1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg: dict, run_dir: str, out_dir: str) -> None:
    """One rank: join the group from the environment as torchrun would set it, train, dump W/Z/U per epoch."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from ttplan.training.run import TrainConfig, train

    def dump(info) -> None:
        if info.admm is None:
            return
        name = "layer3.0.conv2"
        torch.save({"W": info.model.get_submodule(name).weight.detach().clone(), "Z": info.admm.Z[name],
                    "U": info.admm.U[name], "divergence": info.z_divergence},
                   Path(out_dir) / f"rank{rank}_epoch{info.epoch}.pt")

    try:
        train(TrainConfig(**cfg), run_dir, on_epoch_end=dump)
    finally:
        D.shutdown(D.DistContext(rank, world, rank, "cpu", "gloo"))


@pytest.mark.slow
def test_two_gloo_ranks_hold_the_same_z(tmp_path):
    config = tmp_path / "layers.json"
    config.write_text(json.dumps(LAYERS))
    cfg = dict(config=str(config), image_size=8, pretrain_epochs=0, admm_epochs=2, finetune_epochs=0,
               rho=0.05, batch_size=32, seed=1, max_batches=2)
    procs = mp.spawn(_worker, args=(2, free_port(), cfg, str(tmp_path / "run"), str(tmp_path)), nprocs=2,
                     join=False)
    deadline = time.monotonic() + 240
    while not procs.join(timeout=5):
        if time.monotonic() > deadline:  # a collective called on one rank only would hang forever
            for proc in procs.processes:
                proc.kill()
            pytest.fail("the two ranks did not finish within 240 s (a collective called on one rank only?)")

    for epoch in (1, 2):
        r0 = torch.load(tmp_path / f"rank0_epoch{epoch}.pt", weights_only=True)
        r1 = torch.load(tmp_path / f"rank1_epoch{epoch}.pt", weights_only=True)
        for key in ("W", "Z", "U"):
            assert torch.equal(r0[key], r1[key]), (epoch, key)
        # measured before rank 0's Z was broadcast: each rank's own projection agreed exactly
        assert r0["divergence"] == 0.0 and r1["divergence"] == 0.0
    # and Z is the ADMM projection Z_k = Π(W_k + U_{k-1}), U_k = U_{k-1} + W_k - Z_k
    e1 = torch.load(tmp_path / "rank1_epoch1.pt", weights_only=True)
    e2 = torch.load(tmp_path / "rank1_epoch2.pt", weights_only=True)
    assert torch.allclose(e2["Z"], project(e2["W"] + e1["U"], FMT, SPEC), atol=1e-6)
    assert torch.allclose(e2["U"], e1["U"] + e2["W"] - e2["Z"], atol=1e-6)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["final"]["world_size"] == 2
    assert [e["phase"] for e in metrics["epochs"]] == ["admm", "admm"]


@pytest.mark.slow
def test_torchrun_runs_the_cli_with_two_processes(tmp_path):
    config = tmp_path / "layers.json"
    config.write_text(json.dumps(LAYERS))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ttplan", "train", "--config", str(config), "--image-size", "8", "--pretrain-epochs", "1",
           "--admm-epochs", "1", "--finetune-epochs", "1", "--rho", "0.05", "--batch-size", "32",
           "--max-batches", "2", "--threads", "1", "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]
    assert final["world_size"] == 2
    assert final["max_z_divergence_across_ranks"] == 0.0
    assert (tmp_path / "run" / "model_tt.pt").is_file()
    assert done.stdout.count("run folder") == 1  # only rank 0 prints the summary


def test_single_process_helpers_are_no_ops(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    ctx = D.init_from_env("cpu")
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    assert D.sum_across([1.5, 2.0], ctx) == [1.5, 2.0]
    assert D.any_across(True, ctx) and not D.any_across(False, ctx)
    model = torch.nn.Linear(2, 2)
    assert D.wrap_model(model, ctx) is model and D.unwrap(model) is model
    assert D.train_sampler(list(range(5)), ctx, 0) is None
    assert D.shard_indices(5, D.DistContext(rank=1, world_size=2)) == [1, 3]
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(TTPlanError, match="WORLD_SIZE='two'"):
        D.init_from_env("cpu")
    with pytest.raises(TTPlanError, match="device='tpu'"):
        D.init_from_env("tpu")
