"""The training pipeline: exact resume after a kill, NaN stop, direct baseline, metrics layout, saved TT model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.helpers.fashion import write_fake_fashion
from ttplan.errors import TTPlanError
from ttplan.training.data import load_dataset
from ttplan.training.run import (
    CHECKPOINT,
    METRICS,
    TrainConfig,
    TrainingDiverged,
    evaluate,
    load_tt_model,
    resume,
    train,
)

pytestmark = pytest.mark.slow  # whole training runs (seconds each)

# two hodec layers of ResNet-20, ranks well below exact so the decomposition really loses something
LAYERS = {
    "layer2.0.conv1": {"format": "hodec", "tt_shapes": [8, 4, 9, 4, 4], "ranks": [1, 4, 6, 6, 4, 1]},
    "layer3.0.conv2": {"format": "hodec", "in_modes": [8, 8], "out_modes": [8, 8], "rank": 6},
}


class Killed(Exception):
    """Stands in for the process being killed right after a checkpoint."""


def small_config(tmp_path, **overrides) -> TrainConfig:
    path = tmp_path / "layers.json"
    path.write_text(json.dumps(LAYERS))
    fields = dict(arch="resnet20", dataset="digits", config=str(path), image_size=8, pretrain_epochs=1,
                  admm_epochs=2, finetune_epochs=1, rho=0.05, lr=0.05, batch_size=32, seed=3, max_batches=2)
    fields.update(overrides)
    return TrainConfig(**fields)


def kill_after(*epochs: int):
    def callback(info) -> None:
        if info.epoch in epochs:
            raise Killed(info.epoch)

    return callback


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    cfg = small_config(tmp_path)
    full = train(cfg, tmp_path / "full")
    # killed in the middle of the ADMM phase, then again right before decomposition, resumed each time
    with pytest.raises(Killed):
        train(cfg, tmp_path / "cut", on_epoch_end=kill_after(2))
    assert torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)["epoch"] == 2
    with pytest.raises(Killed):
        resume(tmp_path / "cut", on_epoch_end=kill_after(3))
    resumed = resume(tmp_path / "cut")

    a = torch.load(tmp_path / "full" / "model_tt.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "model_tt.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert full["epochs"] == resumed["epochs"]
    assert [e["phase"] for e in full["epochs"]] == ["pretrain", "admm", "admm", "finetune"]
    for key in ("accuracy_dense", "accuracy_decomposed", "accuracy_finetuned", "approximation_error"):
        assert full["final"][key] == resumed["final"][key]
    # the ADMM state in the last ADMM checkpoint is what an uninterrupted run had: same dense weights saved
    da = torch.load(tmp_path / "full" / "dense.pt", weights_only=True)["model"]
    db = torch.load(tmp_path / "cut" / "dense.pt", weights_only=True)["model"]
    assert all(torch.equal(da[k], db[k]) for k in da)


def test_metrics_layout_and_saved_model(tmp_path, monkeypatch):
    cfg = small_config(tmp_path)
    metrics = train(cfg, tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / METRICS).read_text())
    assert set(on_disk) == {"config", "layers", "changes", "start", "epochs", "final"}
    assert on_disk["config"] == {**cfg.to_dict(), "threads": 1}  # recorded: the conftest's one thread
    assert set(on_disk["layers"]) == set(LAYERS) and on_disk["changes"] == []
    for row in on_disk["epochs"]:
        assert set(row) == {"epoch", "phase", "loss", "accuracy", "rho", "lr", "distances", "distance_summary"}
        assert row["phase"] in ("pretrain", "admm", "finetune")
        assert (row["rho"] is None) == (row["phase"] != "admm")
        assert set(row["distances"]) == (set() if row["phase"] == "finetune" else set(LAYERS))
    assert [r["epoch"] for r in on_disk["epochs"]] == [1, 2, 3, 4]
    final = metrics["final"]
    planned = final["planned"]
    assert planned["params"] < planned["dense_params"] and planned["macs"] < planned["dense_macs"]
    assert set(final["approximation_error"]) == set(LAYERS)
    assert all(0 < e < 1 for e in final["approximation_error"].values())
    # the saved TT model reproduces the final accuracy; loading it decomposes nothing (the trained cores replace
    # whatever the TT layers are built with)
    from tests.helpers.runtime_cases import forbid_svd

    forbid_svd(monkeypatch)
    model = load_tt_model(tmp_path / "run")
    assert {type(model.get_submodule(n)).__name__ for n in LAYERS} == {"TTConv2d"}
    _, test = load_dataset("digits", None, 8)
    assert evaluate(model, test, batch_size=256, max_batches=2) == final["accuracy_finetuned"]
    assert (tmp_path / "run" / "plan.json").is_file()


def test_direct_baseline_decomposes_the_dense_weights(tmp_path):
    cfg = small_config(tmp_path, baseline="direct", pretrain_epochs=1, admm_epochs=1, finetune_epochs=1)
    metrics = train(cfg, tmp_path / "direct")
    phases = [e["phase"] for e in metrics["epochs"]]
    assert phases == ["pretrain", "pretrain", "finetune"]
    assert all(e["rho"] is None for e in metrics["epochs"])
    # the last dense epoch's ||W - Π(W)||/||W|| (decomposition.project) is the error the TT layers were built with
    # (ttplan.runtime.layers's from_dense + to_dense): two code paths, one number
    last_dense = metrics["epochs"][1]["distances"]
    for name, err in metrics["final"]["approximation_error"].items():
        assert err == pytest.approx(last_dense[name], rel=1e-5)


def test_admm_pulls_weights_towards_the_format(tmp_path):
    """With the default ρ schedule the ADMM weights end much closer to the format than the pretrained ones were."""
    cfg = small_config(tmp_path, pretrain_epochs=1, admm_epochs=5, finetune_epochs=0, rho=None, lr=0.02, max_batches=8)
    metrics = train(cfg, tmp_path / "strong")
    before = metrics["epochs"][0]["distances"]
    after = metrics["final"]["approximation_error"]
    for name in LAYERS:
        # 8 steps an epoch: a pull, not convergence (test_training_path checks the digits end within 2%)
        assert after[name] < 0.7 * before[name], (name, before[name], after[name])
    assert metrics["final"]["accuracy_finetuned"] is None


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = small_config(tmp_path)

    def poison(info) -> None:  # after epoch 1 a weight turns NaN, so epoch 2's loss is NaN
        if info.epoch == 1:
            with torch.no_grad():
                info.model.get_submodule("linear").weight.fill_(float("nan"))

    with pytest.raises(TrainingDiverged) as err:
        train(cfg, tmp_path / "nan", on_epoch_end=poison)
    message = str(err.value)
    assert "\n" not in message and "nan" in message and "epoch 2" in message and "after epoch 1" in message
    state = torch.load(tmp_path / "nan" / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    saved = json.loads((tmp_path / "nan" / METRICS).read_text())
    assert len(saved["epochs"]) == 1 and math.isfinite(saved["epochs"][0]["loss"])


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(TTPlanError, match="baseline='joint'"):
        small_config(tmp_path, baseline="joint").validate()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"layer9.0.conv1": {"format": "hodec", "rank": 4}}))
    with pytest.raises(TTPlanError, match="layer9.0.conv1"):
        train(small_config(tmp_path, config=str(bad)), tmp_path / "bad")
    done = tmp_path / "done"
    train(small_config(tmp_path, admm_epochs=0, finetune_epochs=0, config=None), done)
    with pytest.raises(TTPlanError, match="already holds a run"):
        train(small_config(tmp_path), done)
    with pytest.raises(TTPlanError, match="does not fit the dense model"):
        train(small_config(tmp_path, arch="resnet32", init=str(done)), tmp_path / "init32")


def test_augmented_run_is_deterministic_and_resumes_exactly(tmp_path):
    """The crop/flip draws come from the RNG the checkpoint saves: a killed and resumed run with augmentation
    ends exactly where an uninterrupted one does, and the same seed gives the same run."""
    data = tmp_path / "fashion"
    write_fake_fashion(data, n_train=160, n_test=16)
    cfg = small_config(tmp_path, dataset="fashion-mnist", data_dir=str(data), image_size=None, augment=True,
                       train_subset=96, admm_epochs=1)
    full = train(cfg, tmp_path / "full")
    same = train(cfg, tmp_path / "same")
    assert full["epochs"] == same["epochs"]
    with pytest.raises(Killed):
        train(cfg, tmp_path / "cut", on_epoch_end=kill_after(1))
    resumed = resume(tmp_path / "cut")
    assert full["epochs"] == resumed["epochs"]
    plain = train(TrainConfig(**{**cfg.to_dict(), "augment": False}), tmp_path / "plain")
    assert plain["epochs"][0]["loss"] != full["epochs"][0]["loss"]  # the augmentation did change the batches


def test_new_data_fields_are_checked():
    with pytest.raises(TTPlanError, match="train_subset=0"):
        TrainConfig(train_subset=0, pretrain_epochs=1, admm_epochs=0, finetune_epochs=0).validate()
    with pytest.raises(TTPlanError, match="eval_split='train'"):
        TrainConfig(eval_split="train", pretrain_epochs=1, admm_epochs=0, finetune_epochs=0).validate()
    with pytest.raises(TTPlanError, match="dataset='mnist'"):
        TrainConfig(dataset="mnist", pretrain_epochs=1, admm_epochs=0, finetune_epochs=0).validate()


def test_balance_and_schedule_switches_change_only_what_they_name(tmp_path):
    """--no-balance keeps TT-SVD's unbalanced cores (the same product); --lr-schedule epoch steps the rate per epoch."""
    from ttplan.training.run import load_tt_model

    on = train(small_config(tmp_path, admm_epochs=1, finetune_epochs=0), tmp_path / "on")
    off = train(small_config(tmp_path, admm_epochs=1, finetune_epochs=0, balance=False), tmp_path / "off")
    assert on["final"]["approximation_error"] == pytest.approx(off["final"]["approximation_error"], rel=1e-5)
    norms = {}
    for name in ("on", "off"):
        model = load_tt_model(tmp_path / name)
        cores = [p for n, p in model.named_parameters() if n.startswith("layer3.0.conv2.cores")]
        norms[name] = [float(c.detach().norm()) for c in cores]
    spread = {k: max(v) / min(v) for k, v in norms.items()}
    assert spread["on"] == pytest.approx(1.0, rel=1e-4) and spread["off"] > 1.02, spread
    epoch = train(small_config(tmp_path, lr_schedule="epoch", pretrain_epochs=2, admm_epochs=0, finetune_epochs=0,
                               config=None), tmp_path / "epoch")
    # the rate recorded after each epoch's last step is the next step's: epoch 2's half rate, then held there
    # (the per-batch schedule would have decayed to ~0 by the end)
    assert [e["lr"] for e in epoch["epochs"]] == pytest.approx([0.025, 0.025])
