"""ADMM on Fashion-MNIST, every arm of the comparison, written to reports/admm_fashion_mnist.md.

    python -m ttplan.bench.admm_fashion                 # everything (scripts/admm_fashion_mnist.sh), ~1 h on 1 core
    python -m ttplan.bench.admm_fashion --report-only   # the report again from the committed metrics

CIFAR ResNet-20 with one input channel at 28x28. The ranks of each operating point come from `ttplan plan`'s
budget search (`--target-macs-reduction/--target-params-reduction`, best orders); the classical-TT configs
from the same search with `--format classical` at the hodec config's parameter count. One dense pretraining
is shared; then every arm gets the same epochs: the dense baseline trains on, `direct` trains dense and then
decomposes, `admm` trains with the ADMM penalty (ρ chosen on the validation split in a pilot) and then
decomposes, `random` trains the TT model from random initialisation for the pretraining epochs too, `classical`
is ADMM towards classical TT. Every run is a `python -m ttplan train` command (recorded in the report); the run
folders' metrics.json (and the command and wall time, run.json) are copied under reports/admm_fashion_mnist/,
and the report is rendered from those copies only.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ttplan.errors import TTPlanError
from ttplan.files import atomic_write_bytes, atomic_write_text

REPORT = Path("reports/admm_fashion_mnist.md")
STORE = Path("reports/admm_fashion_mnist")
RUNS = Path("runs/admm_fashion_mnist")
CONFIGS = Path("reports/configs")
RUN_INFO = "run.json"
METRICS = "metrics.json"
#: the operating points: (name, MACs reduction target, params reduction target)
POINTS = (("80", 0.72, 0.80), ("65", 0.60, 0.65))


@dataclass
class Settings:
    """What the experiment runs; the defaults are what reports/admm_fashion_mnist.md was made with."""

    arch: str = "resnet20"
    train_subset: int = 8000
    batch_size: int = 128
    pretrain_epochs: int = 8
    admm_epochs: int = 4
    finetune_epochs: int = 3
    pretrain_lr: float = 0.05
    lr: float = 0.02
    finetune_lr: float = 0.01
    pilot_rhos: tuple[float, ...] = (0.1, 1.0, 10.0)
    pilot_finetune_epochs: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    threads: int = 1
    data_dir: str | None = None
    runs: Path = RUNS
    store: Path = STORE
    configs: Path = CONFIGS
    python: str = sys.executable
    extra: list[str] = field(default_factory=list)
    deadline: float | None = None  # epoch seconds: arms that would end after it are skipped (and listed)

    @property
    def budget(self) -> int:
        """The epochs every arm trains after the shared pretraining."""
        return self.admm_epochs + self.finetune_epochs


@dataclass
class Arm:
    """One run: its folder name, the table label, the operating point and the `ttplan train` options."""

    name: str
    label: str
    point: str | None
    options: list[str]

    def argv(self, settings: Settings) -> list[str]:
        """The full command line (run from the repository root)."""
        common = ["--arch", settings.arch, "--dataset", "fashion-mnist", "--train-subset", str(settings.train_subset),
                  "--batch-size", str(settings.batch_size), "--threads", str(settings.threads)]
        if settings.data_dir is not None:
            common += ["--data-dir", settings.data_dir]
        return [settings.python, "-m", "ttplan", "train", *common, *self.options, *settings.extra,
                "--out", str(settings.runs / self.name)]


def _log(message: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=False)
    sys.stdout.flush()


# --- configs -----------------------------------------------------------------------------------------------------


def _plan_command(settings: Settings, out: Path, fmt: str, macs: float | None, params: float) -> list[str]:
    argv = [settings.python, "-m", "ttplan", "plan", settings.arch, "--input-size", "1,28,28", "--format", fmt,
            "--target-params-reduction", f"{params:g}", "--save-config", str(out)]
    return argv + (["--target-macs-reduction", f"{macs:g}"] if macs is not None else [])


def _planned(settings: Settings, path: Path) -> dict[str, Any]:
    """Planned totals of a config (every layer it leaves out dense), at the best orders."""
    from ttplan.arch.architecture import plan_architecture
    from ttplan.arch.config import load_config

    totals = plan_architecture(settings.arch, (1, 28, 28), config=load_config(path)).totals
    return {"macs": totals.tt_macs, "params": totals.tt_params, "macs_reduction": totals.macs_reduction,
            "params_reduction": totals.params_reduction}


def make_configs(settings: Settings) -> dict[str, dict[str, Any]]:
    """hodec configs at each point by the budget search, then classical TT at the hodec config's params."""
    out: dict[str, dict[str, Any]] = {}
    settings.configs.mkdir(parents=True, exist_ok=True)
    for point, macs, params in POINTS:
        for fmt in ("hodec", "classical"):
            path = settings.configs / f"{settings.arch}_fashion_{fmt}{point}.json"
            if fmt == "hodec":
                argv = _plan_command(settings, path, fmt, macs, params)
            else:  # the largest classical model with at most the hodec model's parameters
                target = math.ceil(out[f"hodec{point}"]["planned"]["params_reduction"] * 1000) / 1000
                argv = _plan_command(settings, path, fmt, None, target)
            _log("config: " + shlex.join(_short(argv)))
            done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if done.returncode != 0:
                raise TTPlanError(f"{shlex.join(_short(argv))} failed: {done.stderr.strip()[-300:]}")
            out[f"{fmt}{point}"] = {"path": str(path), "command": shlex.join(_short(argv)),
                                    "planned": _planned(settings, path)}
    return out


def _short(argv: list[str]) -> list[str]:
    """The command as a user types it: `python -m ttplan ...` whatever interpreter ran it."""
    return ["python", *argv[1:]] if argv and argv[0] == sys.executable else argv


# --- the arms ----------------------------------------------------------------------------------------------------


def _middle(settings: Settings, config: str, seed: int, baseline: str, rho: float | None) -> list[str]:
    options = ["--config", config, "--init", str(settings.runs / "pretrain"), "--pretrain-epochs", "0",
               "--admm-epochs", str(settings.admm_epochs), "--finetune-epochs", str(settings.finetune_epochs),
               "--lr", f"{settings.lr:g}", "--finetune-lr", f"{settings.finetune_lr:g}", "--baseline", baseline,
               "--seed", str(seed)]
    return options + (["--rho", f"{rho:g}"] if rho is not None else [])


def pretrain_arm(settings: Settings) -> Arm:
    """The shared dense pretraining."""
    return Arm("pretrain", "dense pretraining", None,
               ["--pretrain-epochs", str(settings.pretrain_epochs), "--admm-epochs", "0", "--finetune-epochs", "0",
                "--lr", f"{settings.pretrain_lr:g}", "--seed", "0"])


def pilot_arms(settings: Settings, config: str) -> list[Arm]:
    """ADMM at each pilot ρ, evaluated on the validation split (never the test set)."""
    arms = []
    for rho in settings.pilot_rhos:
        options = _middle(settings, config, 0, "admm", rho)
        options[options.index("--finetune-epochs") + 1] = str(settings.pilot_finetune_epochs)
        arms.append(Arm(f"pilot_rho{rho:g}", f"pilot ρ={rho:g}", "80", options + ["--eval-split", "validation"]))
    return arms


def main_arms(settings: Settings, configs: dict[str, dict[str, Any]], rho: float) -> list[Arm]:
    """Every arm after the pilot, most important first, so that a deadline drops the least important: direct and
    ADMM at the first point (first seed), the dense baseline, the other seeds, direct and ADMM at the second point,
    then classical TT and random init at each point."""
    def pair(point: str, seed: int) -> list[Arm]:
        hodec = configs[f"hodec{point}"]["path"]
        return [Arm(f"direct{point}_s{seed}", "direct TT-SVD + fine-tune", point,
                    _middle(settings, hodec, seed, "direct", None)),
                Arm(f"admm{point}_s{seed}", f"ADMM ρ={rho:g} + fine-tune", point,
                    _middle(settings, hodec, seed, "admm", rho))]

    def others(point: str) -> list[Arm]:
        total = settings.pretrain_epochs + settings.budget
        return [Arm(f"classical{point}", f"classical TT, ADMM ρ={rho:g}", point,
                    _middle(settings, configs[f"classical{point}"]["path"], 0, "admm", rho)),
                Arm(f"random{point}", "TT from random init", point,
                    ["--config", configs[f"hodec{point}"]["path"], "--pretrain-epochs", "0", "--admm-epochs", "0",
                     "--finetune-epochs", str(total), "--finetune-lr", f"{settings.pretrain_lr:g}", "--seed", "0"])]

    dense = Arm("dense", "dense baseline", None,
                ["--init", str(settings.runs / "pretrain"), "--pretrain-epochs", str(settings.budget),
                 "--admm-epochs", "0", "--finetune-epochs", "0", "--lr", f"{settings.lr:g}", "--seed", "0"])
    (first, _, _), (second, _, _) = POINTS
    arms = pair(first, settings.seeds[0]) + [dense]
    arms += [arm for seed in settings.seeds[1:] for arm in pair(first, seed)]
    return arms + pair(second, settings.seeds[0]) + others(first) + others(second)


def _estimate(arm: Arm, settings: Settings, seconds_per_epoch: float) -> float:
    """Rough wall time of an arm: its epochs at the pretraining's measured pace, plus start-up."""
    opts = arm.options
    epochs = sum(int(opts[opts.index(flag) + 1]) for flag in ("--pretrain-epochs", "--admm-epochs",
                                                              "--finetune-epochs") if flag in opts)
    return epochs * seconds_per_epoch + 20


def run_arm(arm: Arm, settings: Settings) -> dict[str, Any]:
    """Run one arm as a subprocess (or reuse a finished run of the same command); copy its results to the store."""
    argv = arm.argv(settings)
    command = shlex.join(_short(argv))
    folder = settings.runs / arm.name
    info_path = folder / RUN_INFO
    if info_path.is_file() and (folder / METRICS).is_file():
        info = json.loads(info_path.read_text())
        if info.get("command") == command and json.loads((folder / METRICS).read_text()).get("final"):
            _log(f"{arm.name}: reusing the finished run in {folder}")
            return _store(arm, settings, info)
    if folder.exists():
        shutil.rmtree(folder)
    _log(f"{arm.name}: {command}")
    start = time.perf_counter()
    with open(settings.runs / f"{arm.name}.stderr", "w") as err:
        result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = (settings.runs / f"{arm.name}.stderr").read_text().strip().splitlines()[-1:]
        raise TTPlanError(f"run {arm.name} failed (exit {result.returncode}): {' '.join(tail)}")
    for line in result.stdout.strip().splitlines():
        _log(f"{arm.name}:   {line}")
    info = {"name": arm.name, "label": arm.label, "point": arm.point, "command": command, "wall_seconds": seconds}
    atomic_write_text(folder / RUN_INFO, json.dumps(info, indent=2) + "\n")
    return _store(arm, settings, info)


def _store(arm: Arm, settings: Settings, info: dict[str, Any]) -> dict[str, Any]:
    """Copy metrics.json and run.json to the committed store; returns the metrics."""
    target = settings.store / arm.name
    target.mkdir(parents=True, exist_ok=True)
    for name in (METRICS, RUN_INFO):
        atomic_write_bytes(target / name, (settings.runs / arm.name / name).read_bytes())
    return json.loads((target / METRICS).read_text())


def choose_rho(pilots: dict[str, dict[str, Any]]) -> float:
    """The pilot ρ with the best validation accuracy after its fine-tuning epochs (right after decomposition when
    the pilot has none); ties go to the best right after decomposition."""
    def key(name: str) -> tuple[float, float]:
        final = pilots[name]["final"]
        tuned = final.get("accuracy_finetuned")
        return (final["accuracy_decomposed"] if tuned is None else tuned), final["accuracy_decomposed"]

    best = max(pilots, key=key)
    return float(pilots[best]["config"]["rho"])


def run_all(settings: Settings) -> None:
    """Configs, pretraining, the ρ pilot, then every arm; each result lands in the store as it finishes."""
    settings.runs.mkdir(parents=True, exist_ok=True)
    settings.store.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    configs = make_configs(settings)
    atomic_write_text(settings.store / "configs.json", json.dumps(configs, indent=2) + "\n")
    run_arm(pretrain_arm(settings), settings)
    pilots = {arm.name: run_arm(arm, settings) for arm in pilot_arms(settings, configs["hodec80"]["path"])}
    rho = choose_rho(pilots)
    _log(f"pilot: chose rho={rho:g} on the validation split")
    info = json.loads((settings.store / "pretrain" / RUN_INFO).read_text())
    pace = info["wall_seconds"] / settings.pretrain_epochs
    skipped = []
    for arm in main_arms(settings, configs, rho):
        if settings.deadline is not None and time.time() + _estimate(arm, settings, pace) > settings.deadline:
            _log(f"{arm.name}: skipped, it would not finish before the deadline")
            skipped.append(arm.name)
            continue
        run_arm(arm, settings)
    total = time.perf_counter() - start
    atomic_write_text(settings.store / "experiment.json", json.dumps(
        {"rho": rho, "total_seconds": total, "skipped": skipped, "settings": _settings_dict(settings),
         "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, python {platform.python_version()}"},
        indent=2) + "\n")
    _log(f"all runs done in {total / 60:.1f} min")


def _settings_dict(settings: Settings) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(settings).items()
            if k not in ("python", "extra")}


@click.command()
@click.option("--report-only", is_flag=True, help="Only render the report from the stored metrics.")
@click.option("--out", type=click.Path(path_type=Path), default=REPORT, show_default=True)
@click.option("--runs", type=click.Path(path_type=Path), default=RUNS, show_default=True,
              help="Folder for the run folders (checkpoints; not committed).")
@click.option("--store", type=click.Path(path_type=Path), default=STORE, show_default=True,
              help="Folder for the copies of each run's metrics.json and run.json (committed).")
@click.option("--configs", type=click.Path(path_type=Path), default=CONFIGS, show_default=True,
              help="Folder for the generated layer configs.")
@click.option("--data-dir", type=click.Path(), default=None, help="Fashion-MNIST idx folder (default: Debian's).")
@click.option("--train-subset", type=click.IntRange(min=1), default=Settings.train_subset, show_default=True)
@click.option("--pretrain-epochs", type=click.IntRange(min=1), default=Settings.pretrain_epochs, show_default=True)
@click.option("--admm-epochs", type=click.IntRange(min=1), default=Settings.admm_epochs, show_default=True)
@click.option("--finetune-epochs", type=click.IntRange(min=1), default=Settings.finetune_epochs, show_default=True)
@click.option("--max-batches", type=click.IntRange(min=1), default=None, help="Cap batches per epoch (smoke tests).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True,
              help="Seeds of the direct and ADMM arms at the first operating point (comma-separated).")
@click.option("--deadline", type=click.IntRange(min=1), default=None,
              help="Minutes from now after which no arm may still be running: arms that would not finish are "
                   "skipped (most important first, see main_arms) and listed in the report.")
def main(report_only: bool, out: Path, runs: Path, store: Path, configs: Path, data_dir: str | None,
         train_subset: int, pretrain_epochs: int, admm_epochs: int, finetune_epochs: int, max_batches: int | None,
         threads: int, seeds: str, deadline: int | None) -> None:
    """Run every arm (or only render), then write reports/admm_fashion_mnist.md and its figures."""
    try:
        seed_list = tuple(int(v) for v in seeds.split(","))
    except ValueError:
        raise TTPlanError(f"--seeds {seeds!r}: expected comma-separated ints, e.g. 0,1,2") from None
    settings = Settings(seeds=seed_list, train_subset=train_subset, pretrain_epochs=pretrain_epochs,
                        admm_epochs=admm_epochs,
                        finetune_epochs=finetune_epochs, threads=threads, data_dir=data_dir, runs=runs, store=store,
                        configs=configs, extra=["--max-batches", str(max_batches)] if max_batches else [],
                        deadline=time.time() + 60 * deadline if deadline else None)
    if not report_only:
        run_all(settings)
    from ttplan.bench.admm_fashion_report import write_report

    write_report(store, out)
    _log(f"wrote {out}")


__all__ = ["POINTS", "Arm", "Settings", "choose_rho", "main_arms", "make_configs", "pilot_arms", "pretrain_arm",
           "run_all", "run_arm"]


if __name__ == "__main__":
    try:
        main(standalone_mode=True)
    except TTPlanError as err:
        click.echo(f"Error: {err}", err=True)
        raise SystemExit(2) from None
