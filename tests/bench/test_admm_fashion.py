"""The Fashion-MNIST ADMM experiment: its arms (equal epoch budgets), the ρ choice, and the report rendered from
stored runs (synthetic metrics here, so every number in the table can be checked by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttplan.bench.admm_fashion import Settings, choose_rho, main_arms, pilot_arms, pretrain_arm
from ttplan.bench.admm_fashion_report import load_runs, write_report
from ttplan.errors import TTPlanError

CONFIGS = {f"{f}{p}": {"path": f"reports/configs/x_{f}{p}.json", "command": f"python -m ttplan plan {f}{p}",
                       "planned": {"macs": 100, "params": 10, "macs_reduction": 0.72, "params_reduction": 0.8}}
           for f in ("hodec", "classical") for p in ("80", "65")}


def _epochs(options: list[str]) -> dict[str, int]:
    return {flag: int(options[options.index(flag) + 1]) for flag in
            ("--pretrain-epochs", "--admm-epochs", "--finetune-epochs") if flag in options}


def test_every_arm_gets_the_same_epochs():
    settings = Settings()
    arms = main_arms(settings, CONFIGS, 1.0)
    names = [a.name for a in arms]
    assert names[:3] == ["direct80_s0", "admm80_s0", "dense"]  # the most important first
    assert {"direct80_s1", "admm80_s1", "random80", "classical80", "direct65_s0", "admm65_s0", "random65",
            "classical65"} <= set(names) and len(names) == len(set(names)) == 13
    for arm in arms:
        total = sum(_epochs(arm.options).values())
        if arm.name.startswith("random"):
            assert total == settings.pretrain_epochs + settings.budget and "--init" not in arm.options
        else:
            assert total == settings.budget and "--init" in arm.options
        argv = arm.argv(settings)
        assert argv[1:4] == ["-m", "ttplan", "train"] and argv[-2:] == ["--out", str(settings.runs / arm.name)]
    assert sum(_epochs(pretrain_arm(settings).options).values()) == settings.pretrain_epochs
    pilots = pilot_arms(settings, "cfg.json")
    assert [a.options[a.options.index("--rho") + 1] for a in pilots] == ["0.1", "1", "10"]
    assert all(a.options[-2:] == ["--eval-split", "validation"] for a in pilots)
    assert names.index("admm80_s1") < names.index("admm65_s0") < names.index("classical80") < names.index("random65")


def _metrics(rho=None, finetuned=None, decomposed=None, error=0.5, accuracy=0.9, phases=("pretrain",), seed=0):
    epochs = [{"epoch": i + 1, "phase": p, "loss": 1.0 / (i + 1), "accuracy": accuracy,
               "rho": rho if p == "admm" else None, "distances": {"a": error, "b": error} if p != "finetune" else {}}
              for i, p in enumerate(phases)]
    final = {"accuracy": accuracy}
    if finetuned is not None or decomposed is not None:
        final.update(accuracy_dense=accuracy, accuracy_decomposed=decomposed, accuracy_finetuned=finetuned,
                     approximation_error_mean=error,
                     planned={"macs": 100, "params": 10, "macs_reduction": 0.72, "params_reduction": 0.8})
    config = {"rho": rho, "seed": seed, "train_subset": 8000, "batch_size": 128, "lr": 0.02, "admm_epochs": 4,
              "finetune_epochs": 3, "finetune_lr": 0.01,
              "pretrain_epochs": 8 if phases == ("pretrain",) * 8 else 0}
    return {"config": config, "epochs": epochs, "final": final}


def _store(folder: Path, name: str, label: str, point, metrics) -> None:
    (folder / name).mkdir(parents=True)
    (folder / name / "metrics.json").write_text(json.dumps(metrics))
    (folder / name / "run.json").write_text(json.dumps({"label": label, "point": point, "wall_seconds": 12.0,
                                                        "command": f"python -m ttplan train --out runs/{name}"}))


def test_choose_rho_best_validation_after_finetuning_then_after_decomposition():
    pilots = {"a": _metrics(0.1, 0.80, 0.20), "b": _metrics(1.0, 0.85, 0.70), "c": _metrics(10.0, 0.85, 0.80)}
    assert choose_rho(pilots) == 10.0
    pilots["a"] = _metrics(0.1, 0.86, 0.1)
    assert choose_rho(pilots) == 0.1
    # pilots without fine-tuning epochs: chosen on the accuracy right after decomposition
    untuned = {k: _metrics(r, None, d) for k, r, d in (("a", 0.1, 0.3), ("b", 1.0, 0.8), ("c", 10.0, 0.7))}
    assert choose_rho(untuned) == 1.0


def test_report_from_stored_runs(tmp_path):
    store = tmp_path / "store"
    mid = ("admm",) * 4 + ("finetune",) * 3
    _store(store, "pretrain", "dense pretraining", None, _metrics(phases=("pretrain",) * 8, accuracy=0.88))
    for rho, ft in ((0.1, 0.80), (1.0, 0.86), (10.0, 0.84)):
        _store(store, f"pilot_rho{rho:g}", f"pilot ρ={rho:g}", "80", _metrics(rho, ft, 0.5, phases=mid))
    _store(store, "dense", "dense baseline", None, _metrics(phases=("pretrain",) * 7, accuracy=0.9000))
    _store(store, "direct80_s0", "direct TT-SVD + fine-tune", "80", _metrics(None, 0.8700, 0.10, 0.8, phases=mid))
    _store(store, "direct80_s1", "direct TT-SVD + fine-tune", "80",
           _metrics(None, 0.8660, 0.10, 0.8, phases=mid, seed=1))
    _store(store, "admm80_s0", "ADMM ρ=1 + fine-tune", "80", _metrics(1.0, 0.8800, 0.85, 0.02, phases=mid))
    _store(store, "admm80_s1", "ADMM ρ=1 + fine-tune", "80", _metrics(1.0, 0.8820, 0.86, 0.02, phases=mid, seed=1))
    _store(store, "random80", "TT from random init", "80", _metrics(None, 0.8500, 0.1, 0.9, phases=("finetune",) * 15))
    (store / "configs.json").write_text(json.dumps(CONFIGS))
    (store / "experiment.json").write_text(json.dumps({"rho": 1.0, "total_seconds": 600, "skipped": ["random65"],
                                                       "settings": {"admm_epochs": 4, "finetune_epochs": 3}}))
    out = write_report(store, tmp_path / "report.md")
    text = out.read_text()
    assert "| 1 **(chosen)** |" in text
    row = ("| 80% | ADMM ρ=1 + fine-tune | 1 | 90.00% | 88.20% | -1.80 | 72.0% | 80.0% | 0.0200 | 86.00% | 90.00% "
           "| 12 s |")
    assert row in text
    assert "| 80% | direct TT-SVD + fine-tune | 0 | 90.00% | 87.00% | -3.00 |" in text
    # mean 88.10 vs 86.80: +1.30 points, above the seed half-range (0.20)
    assert "ADMM ends **more accurate** than direct decomposition: 88.10% ± 0.10" in text
    assert "+1.30 points" in text and "`random65`" in text
    summary = "**Summary.** ADMM ends ahead of direct decomposition + fine-tuning at every point measured: 80% (+1.30"
    assert summary in text
    assert "Against the TT model trained from random initialisation for the same total epochs: 80%: ADMM +3.10" in text
    assert "python -m ttplan train --out runs/admm80_s1" in text
    assert (tmp_path / "report_80.png").is_file() and (tmp_path / "report_80.svg").is_file()
    assert not (tmp_path / "report_65.png").exists()  # no arm ran at that point


def test_report_needs_the_pretraining(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TTPlanError, match="no finished pretrain run"):
        load_runs(tmp_path / "empty")
