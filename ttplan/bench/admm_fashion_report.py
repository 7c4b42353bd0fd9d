"""reports/admm_fashion_mnist.md and its figures, rendered only from the stored runs (`ttplan.bench.admm_fashion`):
each arm's metrics.json and run.json (command, wall time), configs.json and experiment.json.

Every sentence that compares arms is derived from the numbers here; nothing is written in advance.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttplan.errors import TTPlanError
from ttplan.files import atomic_write_text

POINT_TITLES = {"80": "~72% FLOPs↓ / 80% params↓", "65": "~60% FLOPs↓ / 65% params↓"}
ARM_ORDER = ("direct", "admm", "random", "classical")


@dataclass
class Run:
    """One stored arm: its name, label, operating point, command, wall time and metrics."""

    name: str
    label: str
    point: str | None
    command: str
    wall_seconds: float
    metrics: dict[str, Any]

    @property
    def final(self) -> dict[str, Any]:
        return self.metrics["final"]

    @property
    def kind(self) -> str:
        """`pretrain`, `pilot`, `dense`, `direct`, `admm`, `random` or `classical`."""
        for kind in ("pretrain", "pilot", "dense", *ARM_ORDER):
            if self.name.startswith(kind):
                return kind
        return self.name

    @property
    def seed(self) -> int:
        return int(self.metrics["config"]["seed"])


def load_runs(store: Path) -> dict[str, Run]:
    """Every finished arm in `store` (a folder per arm holding metrics.json and run.json)."""
    runs: dict[str, Run] = {}
    for folder in sorted(p for p in Path(store).iterdir() if p.is_dir()):
        info_path, metrics_path = folder / "run.json", folder / "metrics.json"
        if not (info_path.is_file() and metrics_path.is_file()):
            continue
        info = json.loads(info_path.read_text())
        metrics = json.loads(metrics_path.read_text())
        if not metrics.get("final"):
            continue
        runs[folder.name] = Run(folder.name, info["label"], info.get("point"), info["command"],
                                float(info["wall_seconds"]), metrics)
    if "pretrain" not in runs:
        raise TTPlanError(f"store {str(store)!r} has no finished pretrain run: run scripts/admm_fashion_mnist.sh first")
    return runs


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def _compressed(run: Run) -> float:
    """The final test accuracy of the compressed (fine-tuned TT) model."""
    return run.final["accuracy_finetuned"] if run.final.get("accuracy_finetuned") is not None else run.final["accuracy"]


def _mean_distance(epoch: dict[str, Any]) -> float | None:
    d = epoch.get("distances") or {}
    return sum(d.values()) / len(d) if d else None


def _arms(runs: dict[str, Run], point: str) -> list[Run]:
    """The compared arms of a point, in table order (direct, admm, random, classical; seeds ascending)."""
    chosen = [r for r in runs.values() if r.point == point and r.kind in ARM_ORDER]
    return sorted(chosen, key=lambda r: (ARM_ORDER.index(r.kind), r.seed))


def _seed_summary(values: list[float]) -> str:
    if len(values) == 1:
        return _pct(values[0])
    spread = (max(values) - min(values)) / 2
    return f"{100 * statistics.mean(values):.2f}% ± {100 * spread:.2f} (half-range over {len(values)} seeds)"


def figure_point(runs: dict[str, Run], point: str, prefix: Path) -> list[Path]:
    """Test accuracy, training loss and mean ‖W − Z‖/‖W‖ per epoch of every arm at `point` (PNG + SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    from ttplan.analysis.plots import new_figure, save_figure

    pretrain = runs["pretrain"]
    shift = len(pretrain.metrics["epochs"])
    fig = new_figure(9.0, 9.5)
    ax_acc, ax_loss, ax_dist = fig.subplots(3, 1, sharex=True)
    colours = {"dense": "#444444", "direct": "#1f77b4", "admm": "#d62728", "random": "#2ca02c",
               "classical": "#9467bd"}
    pre = pretrain.metrics["epochs"]
    ax_acc.plot([e["epoch"] for e in pre], [e["accuracy"] for e in pre], color="#999999", label="shared pretraining")
    ax_loss.plot([e["epoch"] for e in pre], [e["loss"] for e in pre], color="#999999")
    arms = ([runs["dense"]] if "dense" in runs else []) + _arms(runs, point)
    lowest = min([e["accuracy"] for r in [pretrain, *arms] for e in r.metrics["epochs"]])
    for run in arms:
        epochs = run.metrics["epochs"]
        offset = 0 if run.kind == "random" else shift
        xs = [e["epoch"] + offset for e in epochs]
        style = "-" if run.seed == 0 else "--"
        label = f"{run.label} (seed {run.seed})"
        ax_acc.plot(xs, [e["accuracy"] for e in epochs], style, color=colours.get(run.kind), label=label)
        ax_loss.plot(xs, [e["loss"] for e in epochs], style, color=colours.get(run.kind))
        dist = [(x, _mean_distance(e)) for x, e in zip(xs, epochs) if _mean_distance(e) is not None]
        if dist:
            ax_dist.plot([p[0] for p in dist], [p[1] for p in dist], style, marker=".", color=colours.get(run.kind))
    middle = [r for r in arms if r.kind in ("direct", "admm", "classical")]
    decomposed_at = shift + middle[0].metrics["config"]["admm_epochs"] + 0.5 if middle else None
    for ax in (ax_acc, ax_loss, ax_dist):
        ax.axvline(shift + 0.5, color="#bbbbbb", linewidth=1)
        if decomposed_at is not None:
            ax.axvline(decomposed_at, color="#bbbbbb", linewidth=1, linestyle=":")
        ax.grid(True, alpha=0.3)
    if decomposed_at is not None:
        ax_acc.text(decomposed_at, 1.0, " decomposition", fontsize=7, va="top", color="#666666")
    ax_acc.text(shift + 0.5, 1.0, " end of pretraining", fontsize=7, va="top", color="#666666")
    ax_acc.set_ylabel("test accuracy")
    ax_acc.set_ylim(max(0.0, min(0.5, lowest - 0.05)), 1.0)
    ax_acc.legend(fontsize=7, loc="lower left")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_yscale("log")
    ax_dist.set_ylabel("mean ‖W − Z‖/‖W‖")
    ax_dist.set_xlabel("epoch (counted from the start of the shared pretraining; random init from its own start)")
    fig.suptitle(f"ResNet-20 on Fashion-MNIST, {POINT_TITLES.get(point, point)}", fontsize=11)
    return list(save_figure(fig, prefix))


def render(runs: dict[str, Run], configs: dict[str, Any], experiment: dict[str, Any], figures: dict[str, str]) -> str:
    """The markdown report."""
    settings = experiment.get("settings", {})
    pre = runs["pretrain"]
    dense = runs.get("dense")
    pilots = sorted((r for r in runs.values() if r.kind == "pilot"), key=lambda r: r.metrics["config"]["rho"])
    rho = experiment.get("rho")
    cfg = runs[next(iter(r for r in runs if r != "pretrain"), "pretrain")].metrics["config"]
    subset = cfg.get("train_subset")
    settings = {**settings, **_schedule(runs)}
    lines = [
        "# ADMM against direct TT decomposition on Fashion-MNIST (CIFAR ResNet-20)",
        "",
        "Produced by `bash scripts/admm_fashion_mnist.sh` (`python -m ttplan.bench.admm_fashion`) on CPU with one "
        "torch thread at `nice 5` on a shared 2-core machine"
        + f", {sum(r.wall_seconds for r in runs.values()) / 60:.0f} minutes of runs in all"
        + ". Every number is read from the runs' `metrics.json` and `run.json`, copied to "
        "`reports/admm_fashion_mnist/<run>/`; `bash scripts/admm_fashion_mnist.sh --report-only` renders this "
        "file again from them.",
        "",
        "## Setup",
        "",
        f"- Data: Fashion-MNIST (Debian package `dataset-fashion-mnist`, read by `ttplan.training.idx`). The CPU "
        f"budget forces a **training subset of {subset:,} images** (fixed, drawn once, never from the validation "
        "split); accuracy is always on the **full 10,000-image test set**, except in the ρ pilot, which is scored "
        "on the fixed 5,000-image validation split of the training file. Training images get the standard "
        "augmentation (random crop with 4-pixel padding, horizontal flip); evaluation images none. Normalised with "
        "the 60,000 training images' mean and std.",
        "- Model: CIFAR ResNet-20 (option-A shortcuts) with **one input channel at 28x28** — ResNet-20 rather "
        "than the published table's ResNet-32 because the CPU budget (one core of a shared 2-core machine for "
        "about an hour and a half) "
        "cannot hold ResNet-32's 1.70x the MACs (52.5 M against 30.8 M at 28x28, `ttplan plan resnet32 "
        "--input-size 1,28,28`) at these epoch counts; the first conv and the classifier stay dense.",
        f"- Schedule: one shared dense pretraining of **{pre.metrics['config']['pretrain_epochs']} epochs** "
        f"(SGD momentum 0.9, weight decay 5e-4, batch {pre.metrics['config']['batch_size']}, lr "
        f"{pre.metrics['config']['lr']:g} cosine), test accuracy **{_pct(pre.final['accuracy'])}**. Then every "
        f"arm gets the same **{settings.get('admm_epochs', '?')} + {settings.get('finetune_epochs', '?')} epochs**: "
        f"the dense baseline trains on for all of them (lr {settings.get('lr', '?')}); *direct* trains dense for "
        f"{settings.get('admm_epochs', '?')} epochs (lr {settings.get('lr', '?')}), is TT-SVD-decomposed and "
        f"fine-tuned for {settings.get('finetune_epochs', '?')} (lr {settings.get('finetune_lr', '?')}); *ADMM* "
        "does the same with the ADMM penalty ρ/2·‖W − Z + U‖² and the Z/U updates after every epoch; *classical "
        "TT* is ADMM towards classical TT. *TT from random init* has no pretrained weights to start from, so it "
        f"trains the TT model for all {settings.get('pretrain_epochs', 8) + settings.get('admm_epochs', 4) + settings.get('finetune_epochs', 3)}"  # noqa: E501
        f" epochs (lr {settings.get('pretrain_lr', '?')} cosine; its TT cores are the TT-SVD of the freshly "
        "initialised dense kernels): the same total number of epochs as every other arm.",
        "- Seeds: the pretraining is shared (seed 0); a seed sets the data order and augmentation of the later "
        "epochs. Direct and ADMM at the 80% point run with seeds "
        + ", ".join(str(s) for s in settings.get("seeds", [0])) + "; every other arm with seed 0 (the seed "
        "half-range below is therefore the spread from data order and augmentation, not from the pretraining).",
        "",
        "### Operating points (ranks from `ttplan plan`'s budget search at the best orders)",
        "",
        "| config | format | planned MACs | FLOPs↓ | params | params↓ | command |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for key, entry in configs.items():
        p = entry["planned"]
        lines.append(f"| `{entry['path']}` | {key.rstrip('0123456789')} | {p['macs']:,} | "
                     f"{_pct(p['macs_reduction'], 1)} | {p['params']:,} | {_pct(p['params_reduction'], 1)} | "
                     f"`{entry['command']}` |")
    lines += ["", "FLOPs = 2 x MACs at batch 1 over every conv and linear layer (the dense ones included); the "
              "classical-TT configs are the budget search's classical-TT model with the fewest MACs among the "
              "largest that have at most the hodec model's parameters (no MACs target)."
              + _classical_note(configs), ""]
    tune = settings.get("pilot_finetune_epochs", 0)
    lines += ["## Choosing ρ (pilot on the validation split)", "",
              f"ADMM at the 80% point with each ρ for {settings.get('admm_epochs', '?')} epochs from the shared "
              "pretraining, then decomposition"
              + (f" and {tune} fine-tuning epoch(s)" if tune else "")
              + ", scored on the 5,000 validation images (never the test set). The ρ with the best validation "
              + ("accuracy after that fine-tuning" if tune else "accuracy right after decomposition")
              + " is used for every ADMM arm below (hodec and classical, both points). The pilot at the chosen ρ "
              "and the ADMM arm with seed 0 train identically (same seed, same training images); only the images "
              "they are scored on differ.", "",
              "| ρ | ‖W − Z‖/‖W‖ mean, last ADMM epoch | approx. error at decomposition | val. accuracy before "
              "decomposition | right after | after fine-tuning |",
              "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in pilots:
        f = r.final
        last = [e for e in r.metrics["epochs"] if e["phase"] == "admm"][-1]
        mark = " **(chosen)**" if rho is not None and abs(r.metrics["config"]["rho"] - rho) < 1e-12 else ""
        lines.append(f"| {r.metrics['config']['rho']:g}{mark} | {_mean_distance(last):.4f} | "
                     f"{f['approximation_error_mean']:.4f} | {_pct(f['accuracy_dense'])} | "
                     f"{_pct(f['accuracy_decomposed'])} | {_pct(f['accuracy_finetuned'])} |")
    lines += ["", _rho_strength(runs, pilots), ""]
    lines += ["## Results", "",
              "Test accuracy on the 10,000 test images. *Baseline* is the dense model trained for the same epochs; "
              "*compressed* the TT model after fine-tuning; Δ = compressed − baseline in points; FLOPs↓/params↓ "
              "the planned reductions of the whole model; the approximation error is ‖W − W_tt‖/‖W‖ of the "
              "decomposed kernels at decomposition (mean over layers); *after decomposition* is the TT model's "
              "accuracy before any fine-tuning; wall time is the whole run (training, evaluation after every epoch, "
              "decomposition) on the shared machine.", "",
              "| point | arm | seed | baseline acc. | compressed acc. | Δ | FLOPs↓ | params↓ | approx. error | "
              "acc. after decomposition | (dense acc. just before) | wall time |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    base = dense.final["accuracy"] if dense else None
    if dense:
        lines.append(f"| – | dense baseline | 0 | {_pct(base)} | – | – | 0% | 0% | – | – | – | "
                     f"{dense.wall_seconds:.0f} s |")
    for point in POINT_TITLES:
        for r in _arms(runs, point):
            f = r.final
            acc = _compressed(r)
            approx = "– (random weights)" if r.kind == "random" else f"{f['approximation_error_mean']:.4f}"
            after = "–" if r.kind == "random" else _pct(f["accuracy_decomposed"])
            before = "–" if r.kind == "random" else _pct(f["accuracy_dense"])
            lines.append(f"| {point}% | {r.label} | {r.seed} | {_pct(base)} | {_pct(acc)} | "
                         f"{_points(acc - base) if base is not None else '–'} | "
                         f"{_pct(f['planned']['macs_reduction'], 1)} | {_pct(f['planned']['params_reduction'], 1)} | "
                         f"{approx} | {after} | {before} | {r.wall_seconds:.0f} s |")
    same = [r.wall_seconds for r in runs.values() if r.kind in ("direct", "admm")]
    if len(same) > 1:
        lines += ["", f"Wall times vary with the other jobs on the shared machine: the direct and ADMM runs, which do "
                  f"the same work, took {min(same):.0f}–{max(same):.0f} s ({max(same) / min(same):.1f}x)."]
    skipped = experiment.get("skipped") or []
    if skipped:
        lines += ["", "Not run (the time limit given with `--deadline` would have been passed): "
                  + ", ".join(f"`{s}`" for s in skipped) + "."]
    lines += ["", "## What the numbers support", ""]
    lines += _summary(runs)
    lines += _verdict(runs, base)
    lines += ["", "## Curves", ""]
    for point, name in figures.items():
        lines.append(f"- {POINT_TITLES.get(point, point)}: [{name}.png]({name}.png) ([svg]({name}.svg)) — test "
                     "accuracy, training loss and the mean ‖W − Z‖/‖W‖ (ADMM) or ‖W − Π(W)‖/‖W‖ (dense epochs: "
                     "the error a direct decomposition would have) per epoch of every arm.")
    lines += ["", "## Every run", "", "| run | wall time | command |", "| --- | ---: | --- |"]
    order = ("pretrain", "pilot", "dense", *ARM_ORDER)
    for r in sorted(runs.values(), key=lambda r: (order.index(r.kind) if r.kind in order else 99,
                                                   -int(r.point or 0), r.seed, r.name)):
        lines.append(f"| `{r.name}` | {r.wall_seconds:.0f} s | `{r.command}` |")
    return "\n".join(lines) + "\n"


def _schedule(runs: dict[str, Run]) -> dict[str, Any]:
    """Learning rates, epochs and seeds as the stored runs' configs have them."""
    out: dict[str, Any] = {}
    if "pretrain" in runs:
        c = runs["pretrain"].metrics["config"]
        out.update(pretrain_epochs=c["pretrain_epochs"], pretrain_lr=c["lr"])
    middle = [r for r in runs.values() if r.kind in ("direct", "admm")]
    if middle:
        c = middle[0].metrics["config"]
        out.update(admm_epochs=c["admm_epochs"], finetune_epochs=c["finetune_epochs"], lr=c["lr"],
                   finetune_lr=c["finetune_lr"] or c["lr"])
        out["seeds"] = sorted({r.seed for r in middle if r.point == "80"})
    return out


def _classical_note(configs: dict[str, Any]) -> str:
    """What the classical-TT configs cost against their hodec counterparts (derived from the plans)."""
    parts = []
    for key, entry in configs.items():
        if key.startswith("classical") and f"hodec{key[9:]}" in configs:
            c, h = entry["planned"], configs[f"hodec{key[9:]}"]["planned"]
            more = "more" if c["macs_reduction"] < 0 else "fewer"
            parts.append(f"at the {key[9:]}% point classical TT plans {c['macs']:,} MACs ({more} than the dense "
                         f"model) with {c['params']:,} params, hodec {h['macs']:,} MACs with {h['params']:,}")
    return (" At the same parameter count " + "; ".join(parts) + ".") if parts else ""


def _rho_strength(runs: dict[str, Run], pilots: list[Run]) -> str:
    """How far each ρ can pull W towards Z − U within the ADMM epochs: (1 − lr·ρ)^steps of the gap is left."""
    if not pilots:
        return ""
    cfg = pilots[0].metrics["config"]
    subset = cfg.get("train_subset") or 0
    steps = -(-subset // cfg["batch_size"]) * cfg["admm_epochs"]
    rhos = [r.metrics["config"]["rho"] for r in pilots]
    parts = [f"ρ={rho:g}: {1 - max(0.0, 1 - cfg['lr'] * rho) ** steps:.1%}" for rho in rhos]
    weak = 1 - (1 - cfg["lr"] * 1e-3) ** steps
    return (f"Why the default ρ = 1e-3 is too weak here: the penalty's gradient ρ·(W − Z + U) moves W a fraction "
            f"lr·ρ of the way to Z − U per step; in the {steps} ADMM steps at lr {cfg['lr']:g} (before the cosine "
            f"decay) that closes at most {weak:.1%} of the gap at ρ = 1e-3, against " + ", ".join(parts)
            + ". ρ must make lr·ρ·steps well above 1 for W to reach the TT format before decomposition.")


def _summary(runs: dict[str, Run]) -> list[str]:
    """Two or three sentences over both points: ADMM against direct, and against training from random init."""
    points = [p for p in POINT_TITLES if {"direct", "admm"} <= {r.kind for r in _arms(runs, p)}]
    if not points:
        return []

    def mean(point: str, kind: str) -> float:
        return statistics.mean(_compressed(r) for r in _arms(runs, point) if r.kind == kind)

    gaps = {p: mean(p, "admm") - mean(p, "direct") for p in points}
    where = " and ".join(f"{p}% ({_points(g)} points)" for p, g in gaps.items())
    if all(g > 0 for g in gaps.values()):
        first = f"ADMM ends ahead of direct decomposition + fine-tuning at every point measured: {where}."
    elif all(g < 0 for g in gaps.values()):
        first = f"ADMM does **not** beat direct decomposition + fine-tuning here: {where}."
    else:
        first = f"ADMM against direct decomposition + fine-tuning is mixed: {where}."
    out = [f"**Summary.** {first}"]
    with_random = [p for p in points if any(r.kind == "random" for r in _arms(runs, p))]
    if with_random:
        lead = {p: _compressed(next(r for r in _arms(runs, p) if r.kind == "random")) - mean(p, "admm")
                for p in with_random}
        sample = next(r for r in runs.values() if r.kind == "admm").metrics["config"]
        tuned = sample["finetune_epochs"]
        total = next(r for r in runs.values() if r.kind == "random").metrics["config"]["finetune_epochs"]
        if all(v > 0 for v in lead.values()):
            out[-1] += (" But the same TT model trained from random initialisation for the same total epochs is "
                        "more accurate than ADMM at every point ("
                        + ", ".join(f"{p}%: {_points(v)} points" for p, v in lead.items())
                        + f"): at this budget the TT layers of the pretrained arms train for only {tuned} epochs "
                        f"after decomposition against {total} from random initialisation, and the pretraining does "
                        "not make up for it.")
            seeds = {p: len([r for r in _arms(runs, p) if r.kind == "admm"]) for p in points}
            counted = ", ".join(f"{n} seed(s) at {p}%" for p, n in seeds.items())
            if all(g > 0 for g in gaps.values()):
                out[-1] += (" So these runs support the claim that ADMM-trained TT models end more accurate than "
                            f"directly decomposed ones ({counted}); they do not support pretraining + ADMM as the "
                            "best way to reach the TT model at this short CPU budget.")
        else:
            out[-1] += (" Against the TT model trained from random initialisation for the same total epochs: "
                        + ", ".join(f"{p}%: ADMM {_points(-v)} points" for p, v in lead.items()) + ".")
    return out + [""]


def _verdict(runs: dict[str, Run], base: float | None) -> list[str]:
    """Sentences derived from the measured numbers."""
    out: list[str] = []
    for point in POINT_TITLES:
        arms = _arms(runs, point)
        by = {k: [r for r in arms if r.kind == k] for k in ARM_ORDER}
        if not by["direct"] or not by["admm"]:
            continue
        d = [_compressed(r) for r in by["direct"]]
        a = [_compressed(r) for r in by["admm"]]
        gap = statistics.mean(a) - statistics.mean(d)
        spread = max((max(v) - min(v)) / 2 for v in (d, a))
        d_err = statistics.mean(r.final["approximation_error_mean"] for r in by["direct"])
        a_err = statistics.mean(r.final["approximation_error_mean"] for r in by["admm"])
        d_after = statistics.mean(r.final["accuracy_decomposed"] for r in by["direct"])
        a_after = statistics.mean(r.final["accuracy_decomposed"] for r in by["admm"])
        seeds = len(d)
        if abs(gap) <= max(spread, 0.002):
            judgement = ("ADMM and direct end **about equally accurate** (the difference is within the seed "
                         "spread or 0.2 points)" if seeds > 1 else
                         "ADMM and direct end **about equally accurate** (within 0.2 points; one seed)")
        elif gap > 0:
            judgement = "ADMM ends **more accurate** than direct decomposition"
        else:
            judgement = "ADMM ends **less accurate** than direct decomposition"
        out.append(
            f"- {point}% point: {judgement}: {_seed_summary(a)} vs {_seed_summary(d)} after fine-tuning "
            f"({_points(gap)} points{'' if seeds == 1 else ', seed half-range up to ' + f'{100 * spread:.2f}'}). "
            f"At decomposition ADMM's mean approximation error is {a_err:.4f} against {d_err:.4f}, and the TT "
            f"model keeps {_pct(a_after)} accuracy right after decomposition against {_pct(d_after)} for direct."
        )
        if by["random"]:
            rnd = _compressed(by["random"][0])
            side = "below" if rnd <= statistics.mean(a) else "above"
            out.append(f"  TT from random initialisation (same total epochs) reaches {_pct(rnd)}, "
                       f"{100 * abs(statistics.mean(a) - rnd):.2f} points {side} ADMM.")
        if by["classical"]:
            c = by["classical"][0]
            h = by["admm"][0]
            out.append(f"  Classical TT with ADMM at the same parameter count reaches {_pct(_compressed(c))} "
                       f"({_points(_compressed(c) - statistics.mean(a))} points against hodec ADMM) at "
                       f"{c.final['planned']['macs']:,} planned MACs against hodec's {h.final['planned']['macs']:,}.")
        if base is not None:
            out.append(f"  Against the dense baseline ({_pct(base)}) the best compressed arm here loses "
                       f"{100 * (base - max(_compressed(r) for r in arms)):.2f} points.")
    if not out:
        out.append("- No operating point has both a direct and an ADMM arm yet.")
    return out


def write_report(store: Path, out: Path) -> Path:
    """Load the stored runs, draw one figure per operating point beside the report, write the markdown."""
    store, out = Path(store), Path(out)
    runs = load_runs(store)
    configs = json.loads((store / "configs.json").read_text()) if (store / "configs.json").is_file() else {}
    experiment = json.loads((store / "experiment.json").read_text()) if (store / "experiment.json").is_file() else {}
    if "rho" not in experiment:
        pilots = {n: r.metrics for n, r in runs.items() if r.kind == "pilot"}
        if pilots:
            from ttplan.bench.admm_fashion import choose_rho

            experiment["rho"] = choose_rho(pilots)
    figures: dict[str, str] = {}
    for point in POINT_TITLES:
        if _arms(runs, point):
            name = f"{out.stem}_{point}"
            figure_point(runs, point, out.parent / name)
            figures[point] = name
    atomic_write_text(out, render(runs, configs, experiment, figures))
    return out


__all__ = ["Run", "figure_point", "load_runs", "render", "write_report"]
