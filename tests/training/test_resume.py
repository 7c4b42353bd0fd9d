"""Resume fidelity: a run continues as the run that was started (from any directory, without its config file,
at its recorded thread count); deliberate changes are recorded, others refused; divergence keeps the last
good checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ttplan.errors import TTPlanError
from ttplan.training.run import CHECKPOINT, METRICS, TrainConfig, TrainingDiverged, resume, train

pytestmark = pytest.mark.slow  # whole training runs (seconds each)

LAYERS = {"layer3.0.conv2": {"format": "hodec", "in_modes": [8, 8], "out_modes": [8, 8], "rank": 6}}


class Killed(Exception):
    """Stands in for the process being killed right after a checkpoint."""


def kill_after(epoch: int):
    def callback(info) -> None:
        if info.epoch == epoch:
            raise Killed(epoch)

    return callback


def tiny(config: str | None, **overrides) -> TrainConfig:
    fields = dict(arch="resnet20", dataset="digits", config=config, image_size=8, pretrain_epochs=1, admm_epochs=2,
                  finetune_epochs=1, rho=0.05, lr=0.05, batch_size=32, seed=5, max_batches=2)
    fields.update(overrides)
    return TrainConfig(**fields)


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resumed_from_another_directory_without_the_config_file_is_bit_identical(tmp_path, monkeypatch):
    """Started with relative paths and 2 threads in one folder; the config deleted; resumed from another folder
    in a process at 1 thread (the conftest's): the run's own record decides, and the result is bit-identical."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    (first / "layers.json").write_text(json.dumps(LAYERS))
    cfg = tiny("layers.json", threads=2)
    full = train(cfg, "full")
    with pytest.raises(Killed):
        train(cfg, "cut", on_epoch_end=kill_after(2))
    (first / "layers.json").unlink()
    monkeypatch.chdir(second)
    assert torch.get_num_threads() == 1
    resumed = resume("../first/cut")
    assert torch.get_num_threads() == 1  # restored after the run
    assert_identical(weights(first / "full" / "model_tt.pt"), weights(first / "cut" / "model_tt.pt"))
    assert full["epochs"] == resumed["epochs"]
    assert resumed["config"]["threads"] == 2 and resumed["config"]["config"] == str(first / "layers.json")


def test_an_edited_config_file_does_not_change_a_resumed_run(tmp_path):
    config = tmp_path / "layers.json"
    config.write_text(json.dumps(LAYERS))
    cfg = tiny(str(config), admm_epochs=1)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "cut", on_epoch_end=kill_after(1))
    config.write_text(json.dumps({"layer3.0.conv2": {"format": "hodec", "in_modes": [8, 8], "out_modes": [8, 8],
                                                     "rank": 30}}))
    metrics = resume(tmp_path / "cut")
    assert metrics["final"]["formats"]["layer3.0.conv2"]["ranks"] == [1, 6, 6, 6, 6, 1]


def test_learning_rate_and_epochs_may_change_on_resume_and_are_recorded(tmp_path):
    config = tmp_path / "layers.json"
    config.write_text(json.dumps(LAYERS))
    cfg = tiny(str(config))
    with pytest.raises(Killed):
        train(cfg, tmp_path / "a", on_epoch_end=kill_after(2))
    with pytest.raises(Killed):
        train(cfg, tmp_path / "b", on_epoch_end=kill_after(2))
    same = resume(tmp_path / "a")
    changed = resume(tmp_path / "b", options={"lr": 0.01, "finetune_epochs": 2})
    assert changed["changes"] == [{"after_epoch": 2, "setting": "lr", "from": 0.05, "to": 0.01},
                                  {"after_epoch": 2, "setting": "finetune_epochs", "from": 1, "to": 2}]
    assert json.loads((tmp_path / "b" / METRICS).read_text())["changes"] == changed["changes"]
    assert len(changed["epochs"]) == 5 and changed["config"]["lr"] == 0.01
    assert same["epochs"][:2] == changed["epochs"][:2]
    assert same["epochs"][2]["loss"] != changed["epochs"][2]["loss"]  # the new rate was used from epoch 3 on
    # the rate of the resumed ADMM epoch: the cosine schedule of the new rate at its second of two epochs
    optimizer = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["optimizer"]
    assert optimizer["param_groups"][0]["initial_lr"] == pytest.approx(0.001)  # fine-tuning: a tenth of the new rate


def test_other_settings_and_rewriting_past_epochs_are_refused(tmp_path):
    config = tmp_path / "layers.json"
    config.write_text(json.dumps(LAYERS))
    with pytest.raises(Killed):
        train(tiny(str(config)), tmp_path / "run", on_epoch_end=kill_after(2))
    with pytest.raises(TTPlanError, match=r"--rho 0.5 differs from the run's recorded 0.05") as info:
        resume(tmp_path / "run", options={"rho": 0.5})
    assert "\n" not in str(info.value)
    with pytest.raises(TTPlanError, match=r"--pretrain-epochs 2: 2 epochs already ran as 1 pretrain \+ 1 admm"):
        resume(tmp_path / "run", options={"pretrain_epochs": 2})
    resume(tmp_path / "run", options={"rho": 0.05, "seed": 5})  # the recorded values: no change


def test_an_exploding_loss_stops_the_run_before_it_is_saved(tmp_path):
    config = tmp_path / "layers.json"
    config.write_text(json.dumps(LAYERS))

    def blow_up(info) -> None:  # after epoch 1 the classifier's weights grow a million-fold: huge but finite loss
        if info.epoch == 1:
            with torch.no_grad():
                info.model.get_submodule("linear").weight.mul_(1e6)

    with pytest.raises(TrainingDiverged, match="loss exploded to") as info:
        train(tiny(str(config)), tmp_path / "run", on_epoch_end=blow_up)
    message = str(info.value)
    assert "\n" not in message and "epoch 2" in message and "after epoch 1" in message and "--resume" in message
    state = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 1 and state["model"]["linear.weight"].abs().max() < 10
    saved = json.loads((tmp_path / "run" / METRICS).read_text())
    assert len(saved["epochs"]) == 1 and math.isfinite(saved["epochs"][0]["loss"])
    # the advice works: a lower learning rate continues from the kept checkpoint
    metrics = resume(tmp_path / "run", options={"lr": 0.01})
    assert len(metrics["epochs"]) == 4 and metrics["changes"][0]["setting"] == "lr"


def test_no_config_uses_the_plan_policy(tmp_path):
    from ttplan.arch.architecture import plan_architecture
    from ttplan.arch.policy import Policy

    metrics = train(tiny(None, admm_epochs=1, finetune_epochs=0, policy={"rank": 2}), tmp_path / "run")
    plan = plan_architecture("resnet20", (3, 8, 8), policy=Policy(rank=2))
    expected = {layer.name: list(layer.fmt.ranks) for layer in plan.layers if layer.fmt is not None}
    assert {name: f["ranks"] for name, f in metrics["final"]["formats"].items()} == expected
    # a dense pretraining run without a config stays dense
    dense = train(tiny(None, pretrain_epochs=1, admm_epochs=0, finetune_epochs=0), tmp_path / "dense")
    assert "formats" not in dense["final"] and dense["layers"] == {}
    with pytest.raises(TTPlanError, match="no layers to decompose.*--init"):
        resume(tmp_path / "dense", options={"admm_epochs": 1})


def test_a_changed_rate_and_length_follow_the_new_cosine_schedule(tmp_path):
    config = tmp_path / "layers.json"
    config.write_text(json.dumps(LAYERS))
    with pytest.raises(Killed):  # after 1 pretrain + 1 of 2 ADMM epochs
        train(tiny(str(config)), tmp_path / "run", on_epoch_end=kill_after(2))
    with pytest.raises(Killed):  # ADMM now 3 epochs at 0.01: one more epoch under the new schedule
        resume(tmp_path / "run", options={"lr": 0.01, "admm_epochs": 3}, on_epoch_end=kill_after(3))
    group = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)["optimizer"]["param_groups"][0]
    assert group["initial_lr"] == 0.01
    assert group["lr"] == pytest.approx(0.01 * (1 + math.cos(math.pi * 2 / 3)) / 2, rel=1e-12)
