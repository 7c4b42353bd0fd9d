"""`ttplan train` as a new user meets it: a tiny run with its summary, resume, and one-line errors with exit 2."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers.cli import one_line_error, run
from tests.helpers.fashion import write_fake_fashion

LAYERS = {"layer3.0.conv2": {"format": "hodec", "in_modes": [8, 8], "out_modes": [8, 8], "rank": 6}}
TINY = ["--image-size", "8", "--batch-size", "32", "--max-batches", "2", "--threads", "1"]


#: commands here set torch's thread count for the process (`--threads`): put it back after each test
pytestmark = pytest.mark.usefixtures("keep_threads")


def write(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_tiny_run_prints_a_summary_and_resume_of_a_finished_run_changes_nothing(tmp_path):
    config = write(tmp_path / "layers.json", LAYERS)
    out = tmp_path / "run"
    result = run(["train", "--config", config, "--pretrain-epochs", "1", "--admm-epochs", "1", "--finetune-epochs",
                  "1", "--rho", "0.05", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "epoch 2/3 admm" in result.stderr  # the per-epoch progress bar
    assert "before decomposition" in result.stdout and "planned:" in result.stdout
    before = json.loads((out / "metrics.json").read_text())
    again = run(["train", "--resume", str(out), "--threads", "1"])
    assert again.exit_code == 0, again.output
    after = json.loads((out / "metrics.json").read_text())
    assert after["epochs"] == before["epochs"]
    assert after["final"]["accuracy_finetuned"] == before["final"]["accuracy_finetuned"]


def test_config_naming_a_missing_layer(tmp_path):
    config = write(tmp_path / "layers.json", {"layer4.0.conv1": {"format": "hodec", "rank": 4}})
    result = run(["train", "--config", config, "--admm-epochs", "1", *TINY, "--out", str(tmp_path / "r")])
    one_line_error(result, "layer4.0.conv1", "layer3.2.conv2")


def test_rank_above_the_bound(tmp_path):
    config = write(tmp_path / "layers.json", {"layer3.0.conv2": {"format": "hodec", "tt_shapes": [8, 8, 9, 8, 8],
                                                                 "ranks": [1, 8, 999, 8, 8, 1]}})
    result = run(["train", "--config", config, "--admm-epochs", "1", *TINY, "--out", str(tmp_path / "r")])
    one_line_error(result, "layer3.0.conv2", "999", "bound")


def test_missing_cifar_folder(tmp_path):
    result = run(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere"), "--pretrain-epochs", "1",
                  "--admm-epochs", "0", "--finetune-epochs", "0", *TINY, "--out", str(tmp_path / "r")])
    one_line_error(result, "nowhere", "data_batch_1")


def test_other_mistakes(tmp_path):
    one_line_error(run(["train", "--resume", str(tmp_path / "never")]), "never", "does not exist")
    one_line_error(run(["train", "--pretrain-epochs", "1"]), "--out")
    one_line_error(run(["train", "--arch", "resnet21", "--pretrain-epochs", "1", "--admm-epochs", "0",
                        "--finetune-epochs", "0", *TINY, "--out", str(tmp_path / "r")]), "resnet21", "resnet20")
    one_line_error(run(["train", "--rank", "2", "--rank-fraction", "0.3", *TINY, "--out", str(tmp_path / "r")]),
                   "--rank-fraction 0.3 both given")


def test_without_a_config_train_uses_the_policy_and_options_of_plan(tmp_path):
    out = tmp_path / "run"
    result = run(["train", "--rank", "2", "--min-channels", "32", "--pretrain-epochs", "0", "--admm-epochs", "1",
                  "--finetune-epochs", "0", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    trained = json.loads((out / "metrics.json").read_text())["final"]["formats"]
    planned = json.loads(run(["plan", "resnet20", "--input-size", "3,8,8", "--rank", "2", "--min-channels", "32",
                              "--json"]).stdout)
    assert {name: f["ranks"] for name, f in trained.items()} == {
        layer["name"]: layer["format"]["ranks"] for layer in planned["layers"] if layer["decomposed"]}
    assert "layer1.0.conv1" not in trained and "layer3.0.conv2" in trained  # --min-channels reached the policy


def test_out_must_be_new_or_empty_and_user_files_are_left_alone(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text("my numbers")
    (mine / "plan.json").write_text("my plan")
    args = ["train", "--pretrain-epochs", "1", "--admm-epochs", "0", "--finetune-epochs", "0", *TINY]
    one_line_error(run([*args, "--out", str(mine)]), "not empty", "metrics.json")
    assert (mine / "metrics.json").read_text() == "my numbers" and (mine / "plan.json").read_text() == "my plan"
    (tmp_path / "afile").write_text("x")
    one_line_error(run([*args, "--out", str(tmp_path / "afile")]), "is a file")
    one_line_error(run([*args, "--out", str(tmp_path / "afile" / "run")]), "is a file")
    done = tmp_path / "done"
    assert run([*args, "--out", str(done)]).exit_code == 0
    one_line_error(run([*args, "--out", str(done)]), "already holds a run", "--resume")


@pytest.mark.parametrize("content", ["dict", "tensor", "bytes"])
def test_resume_of_a_foreign_checkpoint_is_one_line(tmp_path, content):
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / "checkpoint.pt"
    if content == "dict":
        torch.save({"model": {"w": torch.ones(1)}, "epoch": 3}, path)
    elif content == "tensor":
        torch.save(torch.zeros(4), path)
    else:
        path.write_bytes(b"\x80\x02not a checkpoint at all" * 10)
    one_line_error(run(["train", "--resume", str(folder)]), "not a ttplan checkpoint")


def test_resume_takes_lr_and_epochs_and_refuses_the_rest(tmp_path):
    config = write(tmp_path / "layers.json", LAYERS)
    out = tmp_path / "run"
    result = run(["train", "--config", config, "--pretrain-epochs", "1", "--admm-epochs", "0", "--finetune-epochs",
                  "0", "--rho", "0.05", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    one_line_error(run(["train", "--resume", str(out), "--rho", "0.5"]), "--rho 0.5", "cannot change on resume")
    one_line_error(run(["train", "--resume", str(out), "--rank", "4"]), "--rank", "recorded in the run")
    one_line_error(run(["train", "--resume", str(out), "--pretrain-epochs", "0", "--finetune-epochs", "2"]),
                   "already ran")
    again = run(["train", "--resume", str(out), "--lr", "0.01", "--finetune-epochs", "1"])
    assert again.exit_code == 0, again.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["setting"] for c in metrics["changes"]] == ["lr", "finetune_epochs"]
    assert [e["phase"] for e in metrics["epochs"]] == ["pretrain", "finetune"]


def test_fashion_mnist_resnet32_on_idx_files_in_data_dir(tmp_path):
    """Grey 28x28 images into ResNet-32 with one input channel, the whole pipeline, scored on the validation split."""
    data = tmp_path / "fashion"
    write_fake_fashion(data, n_train=200, n_test=20, gz=False)
    config = write(tmp_path / "layers.json", LAYERS)
    out = tmp_path / "run"
    result = run(["train", "--arch", "resnet32", "--dataset", "fashion-mnist", "--data-dir", str(data), "--config",
                  config, "--pretrain-epochs", "1", "--admm-epochs", "1", "--finetune-epochs", "1", "--rho", "1",
                  "--train-subset", "64", "--eval-split", "validation", "--batch-size", "32", "--max-batches", "1",
                  "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    cfg = metrics["config"]
    assert (cfg["dataset"], cfg["image_size"], cfg["augment"], cfg["train_subset"]) == ("fashion-mnist", None, True, 64)
    assert metrics["final"]["planned"]["dense_params"] > 400_000  # ResNet-32, not ResNet-20
    state = torch.load(out / "model_tt.pt", weights_only=True)
    assert state["input_size"] == [1, 28, 28] and state["model"]["conv1.weight"].shape == (16, 1, 3, 3)


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    result = run(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "nowhere"), "--pretrain-epochs",
                  "1", "--admm-epochs", "0", "--finetune-epochs", "0", *TINY, "--out", str(tmp_path / "r")])
    one_line_error(result, "nowhere", "apt-get install dataset-fashion-mnist")
