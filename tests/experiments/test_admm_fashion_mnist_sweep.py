"""The Fashion-MNIST experiment's validation sweep: the choice is made on stored validation runs only, and the runs
that use it are planned once the sweep is complete."""

from __future__ import annotations

import json
from pathlib import Path

from experiments import admm_fashion_mnist as exp


def _store_sweep(store: Path, scores: dict[str, float]) -> None:
    for name, accuracy in scores.items():
        folder = store / f"sweep80_{name}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"final": {"accuracy": accuracy}}))


def _names(store: Path) -> set[str]:
    return {r.name for r in exp.runs(exp.Settings(), store / "dense.pt", store)}


def test_nothing_uses_the_sweep_before_it_is_complete(tmp_path):
    _store_sweep(tmp_path, {name: 0.9 for name in list(exp.SWEEP)[:-1]})
    assert exp.selected(tmp_path) is None
    names = _names(tmp_path)
    assert {f"sweep80_{n}" for n in exp.SWEEP} <= names
    assert not any(n.endswith(("_val_s0", "_nobalance_s0", "_epochlr_s0")) or "_e6_" in n for n in names)


def test_the_best_validation_run_is_chosen_and_its_runs_planned(tmp_path):
    scores = {name: 0.90 for name in exp.SWEEP}
    scores["lr0.02"] = 0.91
    _store_sweep(tmp_path, scores)
    assert exp.selected(tmp_path) == "lr0.02"
    runs = {r.name: r for r in exp.runs(exp.Settings(), tmp_path / "dense.pt", tmp_path)}
    chosen = runs["admm+kd80_val_s0"].args
    assert chosen[chosen.index("--lr") + 1] == "0.02" and "--eval-split" not in chosen
    assert {"admm+kd65_val_s0", "admm+kd80_nobalance_s0", "admm+kd80_epochlr_s0", "dense_e6_s0",
            "admm+kd65_e6_s0", "direct80_e6_s0"} <= set(runs)
    assert "--no-balance" in runs["admm+kd80_nobalance_s0"].args


def test_a_tie_keeps_the_default_and_a_tested_choice_is_not_run_again(tmp_path):
    _store_sweep(tmp_path, {name: 0.90 for name in exp.SWEEP})
    assert exp.selected(tmp_path) == exp.DEFAULT_CANDIDATE
    names = _names(tmp_path)
    assert "admm+kd80_val_s0" not in names  # the default's test runs are the comparison's own
    assert exp.chosen_run("80", "split1") == "admm+kd80_split1_s0"
