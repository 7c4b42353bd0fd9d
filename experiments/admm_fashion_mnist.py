"""The ADMM evidence on Fashion-MNIST: every arm starts from one converged dense CIFAR ResNet-20 (1×28×28) and gets
the same number E of extra epochs, at the two published operating points (72% FLOPs↓ / 80% params↓ and 60% / 65%).

    python -m experiments.admm_fashion_mnist                 every run not yet stored, then the report
    python -m experiments.admm_fashion_mnist --only admm80_s0 --jobs 1
    python -m experiments.admm_fashion_mnist --report-only   the report from the stored metrics

Each run is one `ttplan train` command (a child process, one torch thread). A finished run's metrics.json and
command are stored under `--store` (committed), and a stored run is never run again; a run whose folder under
`--runs` survived an interruption is resumed. The report (`--report`), its JSON (`--json`) and its figure are
rendered from the store alone.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttplan.files import atomic_write_text, check_writable

#: the dense model every arm starts from: its command (run once) and where its weights are stored
PRETRAIN_EPOCHS = 10
PRETRAIN = ["--arch", "resnet20", "--dataset", "fashion-mnist", "--train-subset", "55000", "--eval-split", "test",
            "--pretrain-epochs", str(PRETRAIN_EPOCHS), "--admm-epochs", "0", "--finetune-epochs", "0", "--lr", "0.1",
            "--batch-size", "128", "--seed", "0"]
POINTS = {"80": "reports/configs/resnet20_fashion_hodec80.json", "65": "reports/configs/resnet20_fashion_hodec65.json"}
ARMS = ("dense", "direct", "admm", "admm+kd", "scratch-e", "scratch-total")


@dataclass(frozen=True)
class Settings:
    """What every arm shares: E, the training subset, the rates, batch and threads."""

    extra_epochs: int = 3
    admm_epochs: int = 2
    admm_updates_per_epoch: int = 4
    train_subset: int = 20000
    lr: float = 0.01
    finetune_lr: float = 0.01
    scratch_lr: float = 0.1
    batch_size: int = 128
    threads: int = 1
    max_batches: int | None = None
    data_dir: str | None = None


@dataclass(frozen=True)
class Run:
    """One `ttplan train` run of the comparison."""

    name: str
    point: str | None
    arm: str
    seed: int
    args: tuple[str, ...] = field(default=())


#: the validation sweep: ADMM + distillation at the 80% point, each candidate's ADMM lr / fine-tune lr, ρ (None: the
#: default schedule; else a multiple of its start, same growth) and ADMM epochs; scored on the validation split
SWEEP = {"lr0.01": (0.01, None, 2), "lr0.005": (0.005, None, 2), "lr0.02": (0.02, None, 2),
         "rho0.25x": (0.01, 0.25, 2), "rho4x": (0.01, 4.0, 2), "split1": (0.01, None, 1)}
#: the candidate the arms above ran with before the sweep
DEFAULT_CANDIDATE = "lr0.01"
#: candidates whose test runs (at both points) were part of the comparison before the sweep: run again under the
#: same settings they would be the same runs, so the sweep's choice points at them instead
TESTED = {"lr0.01": "admm+kd{point}_s0", "split1": "admm+kd{point}_split1_s0"}


def chosen_run(point: str, choice: str) -> str:
    """The name of the test run of the chosen candidate at `point`."""
    return TESTED.get(choice, "admm+kd{point}_val_s0").format(point=point)
#: E of the longer runs (every arm but scratch, at both points, from the same dense model)
LONG_EPOCHS = 6


def _admm_args(s: Settings, candidate: str, extra_epochs: int) -> tuple[str, ...]:
    """`ttplan train` options of an ADMM arm run with a sweep candidate over `extra_epochs` extra epochs."""
    from ttplan.training.admm import GROWTH, PULL

    lr, rho_scale, admm_epochs = SWEEP[candidate]
    # the same number of Z/U updates in every candidate as in the comparison's ADMM phase
    updates = s.admm_updates_per_epoch * s.admm_epochs // admm_epochs
    out = ("--admm-epochs", str(admm_epochs), "--finetune-epochs", str(extra_epochs - admm_epochs), "--lr", str(lr),
           "--finetune-lr", str(lr), "--admm-updates-per-epoch", str(updates))
    if rho_scale is not None:
        total = admm_epochs * updates
        out += ("--rho", f"{rho_scale * PULL / lr:.6g}", "--rho-growth", f"{GROWTH ** (1 / (total - 1)):.6g}")
    return out


def selected(store: Path) -> str | None:
    """The sweep candidate with the best validation accuracy, once every candidate is stored (None before)."""
    scores = {}
    for name in SWEEP:
        metrics = store / f"sweep80_{name}" / "metrics.json"
        if not metrics.is_file():
            return None
        scores[name] = json.loads(metrics.read_text())["final"]["accuracy"]
    return max(scores, key=lambda n: (scores[n], n == DEFAULT_CANDIDATE))


def runs(s: Settings, dense: Path, store: Path | None = None) -> list[Run]:
    """Every run of the comparison, most informative first (so a cut-short sweep still answers the main question).

    The runs that use the sweep's choice are planned once the sweep is stored (`store`)."""
    common = ("--arch", "resnet20", "--dataset", "fashion-mnist", "--train-subset", str(s.train_subset),
              "--batch-size", str(s.batch_size), "--threads", str(s.threads),
              *(("--max-batches", str(s.max_batches)) if s.max_batches else ()),
              *(("--data-dir", s.data_dir) if s.data_dir else ()))
    init = ("--init", str(dense))
    ft = s.extra_epochs - s.admm_epochs

    def tt(point: str, *extra: str) -> tuple[str, ...]:
        lr = () if "--finetune-lr" in extra else ("--finetune-lr", str(s.finetune_lr))
        return (*common, "--config", POINTS[point], "--pretrain-epochs", "0", *lr, *extra)

    def dense_run(name: str, epochs: int) -> Run:
        return Run(name, None, "dense", 0, (*common, *init, "--pretrain-epochs", str(epochs), "--admm-epochs", "0",
                                            "--finetune-epochs", "0", "--lr", str(s.lr)))

    def direct(point: str, seed: int, epochs: int, suffix: str = "") -> Run:
        return Run(f"direct{point}{suffix}_s{seed}", point, "direct", seed,
                   tt(point, *init, "--admm-epochs", "0", "--finetune-epochs", str(epochs), "--no-distill"))

    admm = ("--admm-epochs", str(s.admm_epochs), "--finetune-epochs", str(ft), "--lr", str(s.lr),
            "--admm-updates-per-epoch", str(s.admm_updates_per_epoch))
    out = [dense_run("dense_s0", s.extra_epochs)]
    for seed in (0, 1):
        out.append(Run(f"admm+kd80_s{seed}", "80", "admm+kd", seed, tt("80", *init, *admm, "--distill")))
        out.append(direct("80", seed, s.extra_epochs))
    out.append(Run("admm80_s0", "80", "admm", 0, tt("80", *init, *admm, "--no-distill")))
    out.append(Run("scratch-e80_s0", "80", "scratch-e", 0,
                   tt("80", "--admm-epochs", "0", "--finetune-epochs", str(s.extra_epochs), "--finetune-lr",
                      str(s.scratch_lr))))
    out.append(Run("admm+kd65_s0", "65", "admm+kd", 0, tt("65", *init, *admm, "--distill")))
    out.append(direct("65", 0, s.extra_epochs))
    out.append(Run("admm65_s0", "65", "admm", 0, tt("65", *init, *admm, "--no-distill")))
    out.append(Run("scratch-e65_s0", "65", "scratch-e", 0,
                   tt("65", "--admm-epochs", "0", "--finetune-epochs", str(s.extra_epochs), "--finetune-lr",
                      str(s.scratch_lr))))
    # the split of E between ADMM and fine-tuning: one ADMM epoch (its updates) and E - 1 of fine-tuning
    split = ("--admm-epochs", "1", "--finetune-epochs", str(s.extra_epochs - 1), "--lr", str(s.lr),
             "--admm-updates-per-epoch", str(2 * s.admm_updates_per_epoch))
    out.append(Run("admm+kd80_split1_s0", "80", "admm+kd", 0, tt("80", *init, *split, "--distill")))
    out.append(Run("admm+kd65_split1_s0", "65", "admm+kd", 0, tt("65", *init, *split, "--distill")))
    total = str(PRETRAIN_EPOCHS + s.extra_epochs)
    out.append(Run("scratch-total80_s0", "80", "scratch-total", 0,
                   tt("80", "--admm-epochs", "0", "--finetune-epochs", total, "--finetune-lr", str(s.scratch_lr))))
    # the validation sweep (never the test set): trained on the subset, scored on the fixed validation split
    for name in SWEEP:
        out.append(Run(f"sweep80_{name}", "80", "sweep", 0,
                       tt("80", *init, *_admm_args(s, name, s.extra_epochs), "--distill", "--eval-split",
                          "validation")))
    choice = selected(store) if store is not None else None
    if choice is not None:
        chosen = _admm_args(s, choice, s.extra_epochs)
        if choice not in TESTED:  # else its test runs are above
            for point in ("80", "65"):
                out.append(Run(f"admm+kd{point}_val_s0", point, "admm+kd", 0,
                               tt(point, *init, *chosen, "--distill")))
        # ablations of the recovery measures, each alone off, with the chosen settings
        for switch, label in (("--no-balance", "nobalance"), ("--lr-schedule=epoch", "epochlr")):
            out.append(Run(f"admm+kd80_{label}_s0", "80", "admm+kd", 0, tt("80", *init, *chosen, "--distill", switch)))
        # longer: E = LONG_EPOCHS extra epochs for the dense baseline, direct and ADMM at both points
        out.append(dense_run(f"dense_e{LONG_EPOCHS}_s0", LONG_EPOCHS))
        for point in ("65", "80"):
            out.append(Run(f"admm+kd{point}_e{LONG_EPOCHS}_s0", point, "admm+kd", 0,
                           tt(point, *init, *_admm_args(s, choice, LONG_EPOCHS), "--distill")))
            out.append(direct(point, 0, LONG_EPOCHS, f"_e{LONG_EPOCHS}"))
    return [Run(r.name, r.point, r.arm, r.seed, (*r.args, "--seed", str(r.seed))) for r in out]


def _train(args: list[str], run_dir: Path, log: Path) -> float:
    """`ttplan train` into `run_dir` (resumed if it holds a checkpoint); its output appended to `log`; wall seconds."""
    resume = (run_dir / "checkpoint.pt").is_file() and not (run_dir / "model_tt.pt").is_file()
    command = ([sys.executable, "-m", "ttplan", "train", "--resume", str(run_dir)] if resume
               else [sys.executable, "-m", "ttplan", "train", *args, "--out", str(run_dir)])
    start = time.perf_counter()
    with open(log, "a") as fh:
        fh.write("$ " + shlex.join(command) + "\n")
        fh.flush()
        done = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"{shlex.join(command)} exited {done.returncode}; see {log}")
    return time.perf_counter() - start


def _store(run: Run, run_dir: Path, store: Path, wall: float) -> None:
    """The finished run's metrics and command under the store (what the report reads, and what is committed)."""
    target = store / run.name
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target / "metrics.json", (run_dir / "metrics.json").read_text())
    record = {"name": run.name, "point": run.point, "arm": run.arm, "seed": run.seed, "wall_s": wall,
              "command": "ttplan train " + shlex.join([*run.args, "--out", str(run_dir)])}
    atomic_write_text(target / "run.json", json.dumps(record, indent=2) + "\n")


def _run_one(run: Run, runs_dir: Path, store: Path) -> str:
    run_dir = runs_dir / run.name
    log = runs_dir / f"{run.name}.log"
    print(f"[{time.strftime('%H:%M:%S')}] start {run.name}", flush=True)
    wall = _train(list(run.args), run_dir, log)
    _store(run, run_dir, store, wall)
    print(f"[{time.strftime('%H:%M:%S')}] done  {run.name} in {wall / 60:.1f} min", flush=True)
    return run.name


# --- the report --------------------------------------------------------------------------------------------------


def results(store: Path) -> list[dict[str, Any]]:
    """One row per stored run, in the JSON layout the report promises."""
    rows = []
    for record_file in sorted(store.glob("*/run.json")):
        record = json.loads(record_file.read_text())
        if record["name"] == "pretrain":
            continue
        metrics = json.loads((record_file.parent / "metrics.json").read_text())
        final = metrics["final"]
        planned = final.get("planned", {})
        epochs = metrics["epochs"]
        admm = [e for e in epochs if e["phase"] == "admm"]
        finetune = [e for e in epochs if e["phase"] == "finetune"]
        rows.append({
            "name": record["name"], "point": record["point"], "arm": record["arm"], "seed": record["seed"],
            "eval_split": metrics["config"].get("eval_split", "test"),
            "extra_epochs": len(epochs), "test_accuracy": 100 * final["accuracy"],
            "start_accuracy": None if final.get("accuracy_start") is None else 100 * final["accuracy_start"],
            "flops_reduction": planned.get("macs_reduction"), "params_reduction": planned.get("params_reduction"),
            "approx_error": final.get("approximation_error_mean"),
            "approx_error_max": final.get("approximation_error_max"),
            "accuracy_decomposed": None if final.get("accuracy_decomposed") is None
            else 100 * final["accuracy_decomposed"],
            "admm_end_distance_max": admm[-1]["distance_summary"]["max"] if admm else None,
            "admm_min_dense_accuracy": min(100 * e["accuracy"] for e in admm) if admm else None,
            "admm_epochs": len(admm), "finetune_epochs": len(finetune),
            "updates_per_epoch": metrics["config"].get("admm_updates_per_epoch"),
            "rho": [e["rho"] for e in admm], "wall_s": sum(final.get("epoch_seconds", [])),
            "command": record["command"],
        })
    return rows


def _pct(value: float | None, digits: int = 2, unit: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def render(store: Path, report: Path, settings: Settings, planned: list[Run]) -> str:
    """The report page: setup, one table per operating point, what the targets say, what is missing."""
    rows = results(store)
    pre = json.loads((store / "pretrain" / "run.json").read_text()) if (store / "pretrain" / "run.json").is_file() \
        else None
    pre_metrics = json.loads((store / "pretrain" / "metrics.json").read_text()) if pre else None
    dense = sorted((r for r in rows if r["arm"] == "dense"), key=lambda r: r["extra_epochs"])
    lines = ["# ADMM on Fashion-MNIST from a converged model",
             "",
             "Produced by `python -m experiments.admm_fashion_mnist` (`bash scripts/admm_fashion_mnist.sh`); "
             "every number below is read from the stored runs under "
             f"`{store}` (their `metrics.json` and commands). CPU, one torch thread per run.",
             "", "## Setup", ""]
    if pre_metrics:
        acc = 100 * pre_metrics["final"]["accuracy"]
        lines += [f"- Dense model: CIFAR ResNet-20 with one input channel at 28×28, trained once for "
                  f"{PRETRAIN_EPOCHS} epochs on the 55,000 training images outside the fixed 5,000-image validation "
                  f"split: **{acc:.2f}%** on the 10,000 test images. Command: `{pre['command']}`. Its weights "
                  f"are stored as `{store}/dense.pt`; every arm starts from them (`--init`)."]
    lines += [f"- Every arm gets E = {settings.extra_epochs} extra epochs on a fixed {settings.train_subset:,}-image "
              "subset of those training images (the CPU budget), batch "
              f"{settings.batch_size}, SGD momentum 0.9, weight decay 5e-4, per-batch warm-up + cosine schedules; "
              "accuracy is on the 10,000 test images.",
              f"- dense: the dense model trained E more epochs at lr {settings.lr}. direct: TT-SVD into the plan's "
              f"format at once, then E epochs of fine-tuning at lr {settings.finetune_lr}. admm: "
              f"{settings.admm_epochs} ADMM epochs at lr {settings.lr} with the default ρ schedule "
              f"({settings.admm_updates_per_epoch} Z/U updates per epoch), TT-SVD, then "
              f"{settings.extra_epochs - settings.admm_epochs} fine-tuning epoch(s); admm+kd: the same, fine-tuned "
              "with distillation from the dense model. scratch-e / scratch-total: the TT model from random "
              f"initialisation, E epochs / {PRETRAIN_EPOCHS} + E epochs at lr {settings.scratch_lr}.",
              "- *epochs' time* is the training epochs' wall time (evaluation and decomposition excluded; "
              "the same for a run that was interrupted and resumed), one thread on a shared 2-core machine.",
              "- The first runs used rates fixed before any run and ρ's default schedule. The validation sweep "
              "below then chose the ADMM arm's learning rate, ρ scale and ADMM/fine-tuning split on the fixed "
              "validation split (never the test set); the runs marked `_val` and the ablations and E = "
              f"{LONG_EPOCHS} runs use its choice.",
              f"- The runs named `_e{LONG_EPOCHS}` get E = {LONG_EPOCHS} extra epochs (dense, direct and ADMM + "
              "distillation at both points; all the E = 3 runs were still improving at their last epoch); each is "
              f"compared with the dense run of the same E.", ""]
    lines += ["## Validation sweep (80% point, ADMM + distillation)", ""] + _sweep(rows, store, settings) + [""]
    bases = {r["extra_epochs"]: r["test_accuracy"] for r in dense}
    for point, label in (("80", "72% FLOPs↓ / 80% params↓"), ("65", "60% FLOPs↓ / 65% params↓")):
        point_rows = [r for r in rows if r["point"] == point and r["arm"] != "sweep"]
        lines += [f"## {label}", "",
                  "| run | arm | ADMM + FT epochs | test acc. | Δ vs dense | FLOPs↓ | params↓ | approx. error | "
                  "acc. after decomposition | ADMM end max ‖W−Z‖/‖W‖ | lowest dense acc. in ADMM | epochs' time |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in point_rows:
            own = bases.get(r["extra_epochs"])
            delta = None if own is None else r["test_accuracy"] - own
            lines.append(
                f"| {r['name']} | {r['arm']} | {_split(r)} | "
                f"{r['test_accuracy']:.2f}% | {_pct(delta)} | "
                f"{_pct(None if r['flops_reduction'] is None else 100 * r['flops_reduction'], 1, '%')} | "
                f"{_pct(None if r['params_reduction'] is None else 100 * r['params_reduction'], 1, '%')} | "
                f"{_pct(r['approx_error'], 4)} | {_pct(r['accuracy_decomposed'], 2, '%')} | "
                f"{_pct(r['admm_end_distance_max'], 4)} | {_pct(r['admm_min_dense_accuracy'], 2, '%')} | "
                f"{r['wall_s'] / 60:.1f} min |")
        lines.append("")
    for r in dense:
        lines += [f"Dense baseline ({r['name']}): **{r['test_accuracy']:.2f}%** after E = {r['extra_epochs']} more "
                  "epochs (Δ in the tables: against the dense run of the same E).", ""]
    lines += ["## Against the targets", ""]
    for extra, own in sorted(bases.items()):
        same = [r for r in rows if r["extra_epochs"] == extra or r["arm"] == "scratch-total"]
        lines += [f"With E = {extra}:", ""] + _verdicts(same, own, extra) + [""]
    lines += ["## Ablations", ""] + _ablations(rows, store) + [""]
    missing = [r.name for r in planned if not (store / r.name / "run.json").is_file()]
    if missing:
        lines += ["## Not yet run", "", "These runs of the plan have no stored result yet (the script runs them "
                  "next): " + ", ".join(f"`{m}`" for m in missing) + ".", ""]
    lines += [f"Figure: [{report.stem}.png]({report.stem}.png) ([svg]({report.stem}.svg)) — test accuracy per "
              "epoch of every run.", ""]
    return "\n".join(lines)


def _split(row: dict[str, Any]) -> str:
    """`ADMM + fine-tuning` epochs of a TT run; a dense run's epochs are all dense."""
    if row["arm"] == "dense":
        return f"{row['extra_epochs']} dense"
    return f"{row['admm_epochs']} + {row['finetune_epochs']}"


def _best(rows: list[dict[str, Any]], point: str, arms: tuple[str, ...]) -> dict[str, Any] | None:
    candidates = [r for r in rows if r["point"] == point and r["arm"] in arms]
    return max(candidates, key=lambda r: r["test_accuracy"], default=None)


def _verdicts(rows: list[dict[str, Any]], base: float, extra: int) -> list[str]:
    """The issue's targets, each met or not, with the figures behind it, among the runs of `extra` extra epochs."""
    out = []
    for point, bound in (("80", 1.5), ("65", 0.5)):
        best = _best(rows, point, ("admm", "admm+kd"))
        if best is None:
            out.append(f"- {point}% point: no ADMM run yet.")
            continue
        gap = base - best["test_accuracy"]
        verdict = "met" if gap <= bound else "**not met**"
        out.append(f"- {point}% point: best ADMM arm {best['name']} {best['test_accuracy']:.2f}% is "
                   f"{gap:.2f} points below dense (target ≤ {bound}): {verdict}.")
    best = _best(rows, "80", ("admm", "admm+kd"))
    direct = _best(rows, "80", ("direct",))
    scratch = _best(rows, "80", ("scratch-e",))
    total = _best(rows, "80", ("scratch-total",))
    if best and direct:
        lead = best["test_accuracy"] - direct["test_accuracy"]
        out.append(f"- 80% point: the best ADMM run against the best direct + fine-tune run: {lead:+.2f} points "
                   f"(target ≥ +2): {'met' if lead >= 2 else '**not met**'}.")
    if best and scratch and scratch["extra_epochs"] == extra:
        lead = best["test_accuracy"] - scratch["test_accuracy"]
        out.append(f"- 80% point: ADMM against the TT model from random initialisation for the same E epochs: "
                   f"{lead:+.2f} points ({'met' if lead > 0 else '**not met**'}).")
    if best and total and extra == 3:
        lead = best["test_accuracy"] - total["test_accuracy"]
        out.append(f"- At equal total epochs ({PRETRAIN_EPOCHS} + E), ADMM from the dense model against the TT model "
                   f"trained from random initialisation: {lead:+.2f} points. Not equal data: the dense model's "
                   f"{PRETRAIN_EPOCHS} epochs saw 55,000 images, the TT model's {total['extra_epochs']} epochs the "
                   "arms' subset, so ADMM's lead here is partly the larger pretraining set.")
    elif best and extra == 3:
        out.append("- At equal total epochs: the TT model from random initialisation for "
                   f"{PRETRAIN_EPOCHS} + E epochs has not been run yet, so this comparison is open.")
    return out


def _ablations(rows: list[dict[str, Any]], store: Path) -> list[str]:
    """What each recovery measure did, from pairs of runs that differ in it alone."""
    by_name = {r["name"]: r for r in rows}
    out = []
    for point in ("80", "65"):
        kd, plain = by_name.get(f"admm+kd{point}_s0"), by_name.get(f"admm{point}_s0")
        if kd and plain:
            out.append(f"- Distillation, {point}% point: ADMM + fine-tuning {plain['test_accuracy']:.2f}% without, "
                       f"{kd['test_accuracy']:.2f}% with ({kd['test_accuracy'] - plain['test_accuracy']:+.2f} "
                       "points; same seed, same ADMM phase).")
        split = by_name.get(f"admm+kd{point}_split1_s0")
        if kd and split:
            out.append(f"- The split of E, {point}% point: {kd['admm_epochs']} ADMM + {kd['finetune_epochs']} "
                       f"fine-tuning epochs {kd['test_accuracy']:.2f}%, {split['admm_epochs']} + "
                       f"{split['finetune_epochs']} {split['test_accuracy']:.2f}%.")
    out += ["", "The dense model during ADMM and where ADMM ended (targets: the dense model's test accuracy within 2 "
            "points of where it started, ‖W − Z‖/‖W‖ ≤ 0.02 on every layer at the end):", "",
            "| run | ADMM epochs × Z/U updates | start acc. | lowest dense acc. in ADMM | drop | end max ‖W−Z‖/‖W‖ |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r["arm"] not in ("admm", "admm+kd") or r["admm_min_dense_accuracy"] is None or r["start_accuracy"] is None:
            continue
        drop = r["start_accuracy"] - r["admm_min_dense_accuracy"]
        updates = r.get("updates_per_epoch")
        out.append(f"| {r['name']} | {r['admm_epochs']} × {updates or '?'} | {r['start_accuracy']:.2f}% | "
                   f"{r['admm_min_dense_accuracy']:.2f}% | {drop:.2f}{'' if drop <= 2 else ' (**> 2**)'} | "
                   f"{r['admm_end_distance_max']:.4f}{'' if r['admm_end_distance_max'] <= 0.02 else ' (**> 0.02**)'} |")
    out.append("")
    choice = selected(store)
    chosen = by_name.get(chosen_run("80", choice)) if choice else None
    for label, what in (("nobalance", "Balanced cores (`--no-balance` turns them off)"),
                        ("epochlr", "The per-batch warm-up + cosine schedule (`--lr-schedule epoch`: 0.2's "
                                    "per-epoch cosine instead)")):
        off = by_name.get(f"admm+kd80_{label}_s0")
        if chosen and off:
            out.append(f"- {what}, 80% point: {chosen['test_accuracy']:.2f}% with ({chosen['name']}), "
                       f"{off['test_accuracy']:.2f}% without ({off['test_accuracy'] - chosen['test_accuracy']:+.2f} "
                       "points; same seed, everything else equal).")
        else:
            out.append(f"- {what}: not yet run.")
    return out


def _sweep(rows: list[dict[str, Any]], store: Path, settings: Settings) -> list[str]:
    """The sweep's candidates with their validation accuracy, and the choice."""
    by_name = {r["name"]: r for r in rows}
    choice = selected(store)
    out = ["| candidate | ADMM lr = fine-tune lr | ρ in the first ADMM epoch's last steps | ADMM + FT epochs | "
           "Z/U updates | validation acc. | chosen |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, (lr, scale, admm_epochs) in SWEEP.items():
        r = by_name.get(f"sweep80_{name}")
        rho = "–" if r is None or not r["rho"] else f"{r['rho'][0]:.3g}"
        acc = "not yet run" if r is None else f"{r['test_accuracy']:.2f}%"
        updates = settings.admm_updates_per_epoch * settings.admm_epochs
        out.append(f"| {name} | {lr} | {rho} ({'default' if scale is None else f'{scale}× default'}) | "
                   f"{admm_epochs} + {settings.extra_epochs - admm_epochs} | {updates} | {acc} | "
                   f"{'**yes**' if name == choice else ''} |")
    out += ["", "Validation accuracy is on the fixed 5,000-image validation split (`--eval-split validation`), "
            "training on the same 20,000-image subset; the choice is the best of them (ties: the default)."]
    return out


def plot(store: Path, figure: Path) -> None:
    """Test accuracy per epoch of every stored run, one panel per operating point (PNG and SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, 2, figsize=(11, 7), sharex="col")
    for column, point in enumerate(("80", "65")):
        for record_file in sorted(store.glob("*/run.json")):
            record = json.loads(record_file.read_text())
            if record.get("point") not in (point, None) or record["arm"] in ("pretrain", "sweep"):
                continue
            metrics = json.loads((record_file.parent / "metrics.json").read_text())
            acc = [100 * e["accuracy"] for e in metrics["epochs"]]
            start = metrics.get("start", {}).get("accuracy")
            xs = list(range(0 if start is not None else 1, len(acc) + 1))
            ys = ([100 * start] if start is not None else []) + acc
            for ax in grid[:, column]:
                ax.plot(xs, ys, marker="o", label=record["name"])
        grid[0, column].set_title(f"{point}% params↓")
        grid[1, column].set_ylim(88, 94)  # the runs that start from the dense model, close up
        grid[1, column].set_xlabel("extra epoch (0: the starting model)")
        for ax in grid[:, column]:
            ax.grid(alpha=0.3)
        grid[0, column].legend(fontsize=7)
    grid[0, 0].set_ylabel("test accuracy (%)")
    grid[1, 0].set_ylabel("test accuracy (%), 88–94")
    fig.tight_layout()
    for suffix in (".png", ".svg"):
        fig.savefig(figure.with_suffix(suffix))
    plt.close(fig)


def write_report(store: Path, report: Path, json_path: Path, settings: Settings, planned: list[Run]) -> None:
    """Report page, JSON and figure, from the store alone."""
    atomic_write_text(report, render(store, report, settings, planned))
    data = {"settings": {k: v for k, v in settings.__dict__.items() if k != "data_dir"}, "runs": results(store)}
    atomic_write_text(json_path, json.dumps(data, indent=2) + "\n")
    if any(store.glob("*/run.json")):
        plot(store, report.with_suffix(""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("reports/admm_fashion_mnist"))
    parser.add_argument("--runs", type=Path, default=Path("runs/admm_fashion_mnist"))
    parser.add_argument("--report", type=Path, default=Path("reports/admm_fashion_mnist.md"))
    parser.add_argument("--json", type=Path, default=Path("reports/admm_fashion_mnist.json"))
    parser.add_argument("--only", nargs="*", default=None, help="run only these runs (names as in the report)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each one torch thread)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--extra-epochs", type=int, default=Settings.extra_epochs)
    parser.add_argument("--train-subset", type=int, default=Settings.train_subset)
    parser.add_argument("--max-batches", type=int, default=None, help="cap batches per epoch (quick trials)")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST idx files (default: Debian's folder)")
    args = parser.parse_args(argv)
    settings = Settings(extra_epochs=args.extra_epochs, train_subset=args.train_subset,
                        max_batches=args.max_batches, data_dir=args.data_dir)
    for path in (args.report, args.json):
        check_writable(path, "--report")
    dense = args.store / "dense.pt"
    planned = runs(settings, dense, args.store)
    if not args.report_only:
        if not dense.is_file():
            run_dir = args.runs / "pretrain"
            args.runs.mkdir(parents=True, exist_ok=True)
            wall = _train(PRETRAIN, run_dir, args.runs / "pretrain.log")
            _store(Run("pretrain", None, "pretrain", 0, tuple(PRETRAIN)), run_dir, args.store, wall)
            (args.store / "dense.pt").write_bytes((run_dir / "dense.pt").read_bytes())
        args.runs.mkdir(parents=True, exist_ok=True)
        while True:  # the runs that use the sweep's choice are planned once the sweep is stored
            todo = [r for r in planned if not (args.store / r.name / "run.json").is_file()
                    and (args.only is None or r.name in args.only)]
            if not todo:
                break
            with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                for _name in pool.map(lambda r: _run_one(r, args.runs, args.store), todo):
                    write_report(args.store, args.report, args.json, settings, planned)
            planned = runs(settings, dense, args.store)
    write_report(args.store, args.report, args.json, settings, planned)
    print(f"wrote {args.report}, {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
