"""Checkpoints: only ttplan's are read (anything else is one line), and `train` writes only into a new or empty
folder or continues its own run."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from ttplan.errors import TTPlanError
from ttplan.training.checkpoint import atomic_save, load_checkpoint, load_state_dict
from ttplan.training.run import TrainConfig, load_tt_model, resume, train
from ttplan.training.run_folder import check_new_run_dir

FOREIGN = {
    "another torch dict": lambda p: torch.save({"state": {"w": torch.ones(2)}, "step": 3}, p),
    "a bare tensor": lambda p: torch.save(torch.ones(3, 3), p),
    "random bytes": lambda p: p.write_bytes(bytes(range(256)) * 7),
    "a pickled object": lambda p: torch.save({"model": {"w": torch.ones(1)}, "obj": argparse.Namespace(a=1)}, p),
}


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_a_foreign_file_is_not_a_ttplan_checkpoint(tmp_path, kind):
    run = tmp_path / "run"
    run.mkdir()
    FOREIGN[kind](run / "checkpoint.pt")
    for call in (lambda: resume(run), lambda: load_checkpoint(run / "checkpoint.pt")):
        with pytest.raises(TTPlanError, match="is not a ttplan checkpoint") as info:
            call()
        assert "\n" not in str(info.value) and "weights_only=False" not in str(info.value)
    FOREIGN[kind](run / "model_tt.pt")
    with pytest.raises(TTPlanError, match="is not a ttplan checkpoint"):
        load_tt_model(run)


def test_init_weights_that_are_not_a_state_dict(tmp_path):
    torch.save(torch.ones(3), tmp_path / "w.pt")
    with pytest.raises(TTPlanError, match="is not a ttplan checkpoint or a state_dict"):
        load_state_dict(tmp_path / "w.pt", "init checkpoint")
    cfg = TrainConfig(image_size=8, pretrain_epochs=1, admm_epochs=0, finetune_epochs=0, max_batches=1,
                      init=str(tmp_path / "w.pt"))
    with pytest.raises(TTPlanError, match="bare tensor"):
        train(cfg, tmp_path / "run")


def test_atomic_save_leaves_no_partial_file(tmp_path):
    target = tmp_path / "x.pt"
    atomic_save({"a": torch.ones(2)}, target)
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises for an unpicklable object
        atomic_save({"a": lambda: 0}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]  # no temporary left behind


def test_train_writes_only_into_a_new_or_empty_folder(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"mine": true}')
    (mine / "plan.json").write_text("{}")
    with pytest.raises(TTPlanError, match=r"is not empty \(metrics.json, plan.json\)"):
        check_new_run_dir(mine)
    assert json.loads((mine / "metrics.json").read_text()) == {"mine": True}
    (tmp_path / "file").write_text("x")
    with pytest.raises(TTPlanError, match="is a file"):
        check_new_run_dir(tmp_path / "file")
    with pytest.raises(TTPlanError, match="is a file, not a folder"):
        check_new_run_dir(tmp_path / "file" / "run")
    (tmp_path / "empty").mkdir()
    assert check_new_run_dir(tmp_path / "empty") == tmp_path / "empty"
    assert check_new_run_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"


def test_a_checkpoint_of_an_older_ttplan_is_one_line(tmp_path):
    torch.save({"version": 1, "config": {"arch": "resnet20"}, "model": {"w": torch.ones(1)}}, tmp_path / "c.pt")
    with pytest.raises(TTPlanError, match=r"older ttplan \(version 1\).*start the run again") as info:
        load_checkpoint(tmp_path / "c.pt")
    assert "\n" not in str(info.value)
