"""ADMM versus direct decomposition of CIFAR ResNet-20 on the digits, written to reports/admm_digits.md.

    python -m experiments.admm_digits                  # CPU: the comparison (scripts/admm_digits.sh)
    python -m experiments.admm_digits --device cuda    # GPU: ADMM epochs/s on GPU vs CPU, appended

The CPU mode pretrains once, then runs from those same weights (a) the direct baseline: the ADMM epochs as
plain dense epochs, then TT-SVD of the weights, then fine-tuning; (b) ADMM at each ρ asked for, then TT-SVD,
then the same fine-tuning. Every number in the report comes from the runs' metrics.json (ttplan.training.run).
The layer config (hodec on every 3x3 conv of stages 2 and 3) is generated here and written to
reports/configs/resnet20_hodec.json, so `ttplan train --config` can replay it. Every output path (report, run
folders, config) is an option; the defaults are the committed ones. An experiment, not part of the package.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import torch

from ttplan.core.formats import make_format
from ttplan.errors import TTPlanError
from ttplan.files import atomic_write_text, check_writable
from ttplan.models import load_model, trace_layers
from ttplan.training.run import TrainConfig, train

REPORT = Path("reports/admm_digits.md")
CONFIG = Path("reports/configs/resnet20_hodec.json")
RUNS = Path("runs/admm_digits")
GPU_MARKER = "## ADMM epochs per second: GPU against CPU"
MODES = {16: (4, 4), 32: (4, 8), 64: (8, 8)}  # two balanced modes per side for ResNet-20's channel counts


@dataclass
class BenchSettings:
    """What the comparison runs; the defaults are what reports/admm_digits.md was made with."""

    arch: str = "resnet20"
    image_size: int = 32
    rank: int = 16
    stages: tuple[str, ...] = ("layer2", "layer3")
    pretrain_epochs: int = 8
    admm_epochs: int = 10
    finetune_epochs: int = 6
    rhos: tuple[float, ...] = (1e-3, 0.1, 1.0)
    lr: float = 0.02
    pretrain_lr: float = 0.05
    finetune_lr: float = 0.01
    batch_size: int = 64
    seed: int = 0
    threads: int | None = 1
    max_batches: int | None = None  # batches per epoch (None: all); a cap is for quick checks only
    runs: Path = RUNS
    config: Path = CONFIG
    notes: list[str] = field(default_factory=list)


def hodec_config(arch: str, input_size: tuple[int, int, int], stages: tuple[str, ...], rank: int) -> dict[str, Any]:
    """hodec entries (published tt_shapes + ranks) for every 3x3 conv in `stages`: two modes a side, every rank
    `rank` clipped to the exact TT rank of its cut (ranks above it would only add zero padding)."""
    model, size = load_model(arch, input_size)
    out: dict[str, Any] = {}
    for layer in trace_layers(model, size):
        if layer.kind != "conv" or layer.name.split(".")[0] not in stages or layer.spec.window != 9:
            continue
        spec = layer.spec
        if spec.in_channels not in MODES or spec.out_channels not in MODES:
            raise TTPlanError(f"layer {layer.name!r} has {spec.in_channels}->{spec.out_channels} channels; "
                              f"this benchmark splits only {sorted(MODES)}")
        probe = make_format("hodec", spec, in_modes=MODES[spec.in_channels],
                            out_modes=MODES[spec.out_channels][::-1], rank=1)
        ranks = tuple(min(rank, r) for r in probe.max_ranks(spec))
        fmt = make_format("hodec", spec, in_modes=probe.in_modes, out_modes=probe.out_modes, ranks=ranks)
        out[layer.name] = fmt.to_config(spec)
    return out


def write_config(settings: BenchSettings) -> Path:
    """Generate the layer config and write it (one entry per line)."""
    size = (3, settings.image_size, settings.image_size)
    entries = hodec_config(settings.arch, size, settings.stages, settings.rank)
    lines = [f"  {json.dumps(name)}: {json.dumps(entry)}" for name, entry in entries.items()]
    atomic_write_text(settings.config, "{\n" + ",\n".join(lines) + "\n}\n")
    return settings.config


def _base(settings: BenchSettings, **overrides: Any) -> TrainConfig:
    fields = dict(arch=settings.arch, dataset="digits", image_size=settings.image_size, lr=settings.lr,
                  finetune_lr=settings.finetune_lr, batch_size=settings.batch_size, seed=settings.seed,
                  max_batches=settings.max_batches)
    fields.update(overrides)
    return TrainConfig(**fields)


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


def run_comparison(settings: BenchSettings, echo=click.echo) -> dict[str, Any]:
    """Pretrain once; then direct and ADMM (each ρ) from the same weights with the same epochs. Returns metrics."""
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    config = str(write_config(settings))
    runs: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    pretrain_dir = _fresh(settings.runs / "pretrain")
    start = time.perf_counter()
    echo(f"pretraining {settings.arch} on digits at {settings.image_size}x{settings.image_size} ...")
    runs["pretrain"] = train(_base(settings, lr=settings.pretrain_lr, pretrain_epochs=settings.pretrain_epochs,
                                   admm_epochs=0, finetune_epochs=0), pretrain_dir)
    seconds["pretrain"] = time.perf_counter() - start
    common = dict(config=config, init=str(pretrain_dir), pretrain_epochs=0, admm_epochs=settings.admm_epochs,
                  finetune_epochs=settings.finetune_epochs)
    plan = [("direct", _base(settings, baseline="direct", **common))]
    plan += [(f"admm rho={rho:g}", _base(settings, baseline="admm", rho=rho, **common)) for rho in settings.rhos]
    for label, cfg in plan:
        start = time.perf_counter()
        echo(f"{label}: {cfg.admm_epochs} {'ADMM' if cfg.baseline == 'admm' else 'dense'} epochs, "
             f"decomposition, {cfg.finetune_epochs} fine-tuning epochs ...")
        runs[label] = train(cfg, _fresh(settings.runs / label.replace(" ", "_").replace("=", "")))
        seconds[label] = time.perf_counter() - start
    return {"runs": runs, "seconds": seconds}


def _slug(label: str) -> str:
    """The figure name of an arm, beside the report: `admm_digits_admm_rho0.1`."""
    return "admm_digits_" + label.replace(" ", "_").replace("=", "")


def plot_arms(result: dict[str, Any], folder: Path) -> list[Path]:
    """Each compared arm's curves as PNG and SVG beside the report (`ttplan.analysis.plots.plot_admm`)."""
    import matplotlib

    matplotlib.use("Agg")
    from ttplan.analysis.plots import plot_admm

    out: list[Path] = []
    for label, metrics in result["runs"].items():
        if label != "pretrain":
            out += plot_admm(metrics, folder / _slug(label), title=f"ResNet-20 on digits: {label}")
    return out


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def render(settings: BenchSettings, result: dict[str, Any], total_seconds: float) -> str:
    """The markdown report: setup, the comparison table, per-layer errors, what the numbers say."""
    runs, seconds = result["runs"], result["seconds"]
    pre = runs["pretrain"]
    compared = {k: v for k, v in runs.items() if k != "pretrain"}
    first = next(iter(compared.values()))["final"]
    planned = first["planned"]
    layers = list(first["approximation_error"])
    cmd = "bash scripts/admm_digits.sh"
    lines = [
        "# ADMM against direct TT decomposition: CIFAR ResNet-20 on the digits",
        "",
        f"Produced by `{cmd}` (`python -m experiments.admm_digits`) on CPU in {total_seconds / 60:.1f} minutes "
        f"({torch.get_num_threads()} torch thread(s) on a machine with {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {platform.machine()}).",
        "Every number below is read from the runs' `metrics.json`; the run folders are under "
        f"`{settings.runs}`.",
        "",
        "## Setup",
        "",
        f"- Model: `{settings.arch}` (CIFAR ResNet-20, option-A shortcuts), trained from scratch on scikit-learn's "
        f"8x8 digits (1,437 train / 360 test images, fixed stratified split) resized to "
        f"**{settings.image_size}x{settings.image_size}** and replicated to 3 channels.",
        f"- Layer config `{settings.config}`: hodec (spatial core in the middle) on the {len(layers)} 3x3 convs of "
        f"{' and '.join(settings.stages)}, two channel modes a side, ranks {settings.rank} clipped to the exact TT "
        "rank of each cut. Every other layer stays dense.",
        f"- Planned cost of the TT model (`ttplan.arch.architecture`, best order, batch 1, conv + linear layers): "
        f"**{planned['macs']:,} MACs** vs {planned['dense_macs']:,} dense "
        f"(**{100 * planned['macs_reduction']:.1f}% fewer**; FLOPs = 2 x MACs), "
        f"**{planned['params']:,} params** vs {planned['dense_params']:,} dense "
        f"(**{100 * planned['params_reduction']:.1f}% fewer**).",
        f"- Pretraining: {settings.pretrain_epochs} epochs, SGD lr {settings.pretrain_lr} (cosine), momentum 0.9, "
        f"weight decay 5e-4, batch {settings.batch_size}, seed {settings.seed}: test accuracy "
        f"**{_pct(pre['epochs'][-1]['accuracy'])}**. Both arms start from these same weights.",
        f"- Then the same budget for each arm: {settings.admm_epochs} epochs at lr {settings.lr} (cosine) — with the "
        "ADMM penalty ρ/2·‖W − Z + U‖² and the Z/U updates after every epoch (ADMM arms), or as plain dense "
        f"training (direct arm) — then TT-SVD into the runtime TT layers (`ttplan.runtime.layers.convert`), then "
        f"{settings.finetune_epochs} fine-tuning epochs of the TT model at lr {settings.finetune_lr} (cosine).",
        "",
        "## Results",
        "",
        "Accuracy is top-1 on the 360 test images. *Before decomposition* is the dense model at the end of the "
        "middle phase; *after decomposition* is the TT model before any fine-tuning; the approximation error is "
        "‖W − W_tt‖/‖W‖ of each decomposed kernel (mean and max over the layers), measured on the TT layers "
        "themselves.",
        "",
        "| arm | accuracy before decomposition | after decomposition | after fine-tuning | approx. error mean | "
        "approx. error max | planned MACs | planned params | wall time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, metrics in compared.items():
        f = metrics["final"]
        lines.append(
            f"| {label} | {_pct(f['accuracy_dense'])} | {_pct(f['accuracy_decomposed'])} | "
            f"{_pct(f['accuracy_finetuned'])} | {f['approximation_error_mean']:.4f} | "
            f"{f['approximation_error_max']:.4f} | {f['planned']['macs']:,} | {f['planned']['params']:,} | "
            f"{seconds[label]:.0f} s |"
        )
    lines += ["", "Per-layer relative approximation error ‖W − W_tt‖/‖W‖ at decomposition:", "",
              "| layer | " + " | ".join(compared) + " |", "| --- |" + " ---: |" * len(compared)]
    for name in layers:
        lines.append(f"| {name} | " + " | ".join(f"{m['final']['approximation_error'][name]:.4f}"
                                                 for m in compared.values()) + " |")
    lines += ["", "ADMM's own distance ‖W − Z‖/‖W‖ (mean over layers) at the end of each ADMM epoch:", ""]
    for label, metrics in compared.items():
        if not label.startswith("admm"):
            continue
        trail = [sum(e["distances"].values()) / len(e["distances"]) for e in metrics["epochs"] if e["phase"] == "admm"]
        lines.append(f"- {label}: " + ", ".join(f"{d:.3f}" for d in trail))
    lines += ["", "## What the numbers say", ""]
    lines += _verdict(compared)
    steps = -(-1437 // settings.batch_size)
    if settings.max_batches is not None:
        steps = min(steps, settings.max_batches)
    lines += ["", "How strong each ρ is here: the penalty's gradient ρ·(W − Z + U) moves W towards Z − U by a "
              f"fraction lr·ρ per step, {steps} steps an epoch at batch {settings.batch_size}; over the "
              f"{settings.admm_epochs} ADMM epochs at lr {settings.lr} (before the cosine decay) that is at most "
              + ", ".join(f"{1 - (1 - settings.lr * rho) ** (steps * settings.admm_epochs):.1%} at ρ={rho:g}"
                          for rho in settings.rhos)
              + " of the gap (U keeps growing while W stays away from the format, which adds pull)."]
    lines += ["", "Curves (loss, accuracy and per-layer distance per epoch, phases shaded) of each arm: "
              + ", ".join(f"[{label}]({_slug(label)}.png)" for label in compared) + "."]
    lines += [f"- {note}" for note in settings.notes]
    return "\n".join(lines) + "\n"


def _verdict(compared: dict[str, Any]) -> list[str]:
    """Sentences derived from the measured numbers (no claim is written in advance)."""
    direct = compared["direct"]["final"]
    out = []
    for label, metrics in compared.items():
        if label == "direct":
            continue
        f = metrics["final"]
        ratio = f["approximation_error_mean"] / direct["approximation_error_mean"]
        err = ("far below" if ratio < 0.5 else "below" if ratio < 0.95 else
               "about the same as" if ratio <= 1.05 else "above")
        drop_admm = f["accuracy_dense"] - f["accuracy_decomposed"]
        drop_direct = direct["accuracy_dense"] - direct["accuracy_decomposed"]
        gain = f["accuracy_decomposed"] - direct["accuracy_decomposed"]
        held = ("held up about as well as (within 1 point)" if abs(gain) <= 0.01 else
                "held up better than" if gain > 0 else "held up worse than")
        ft = f["accuracy_finetuned"] - direct["accuracy_finetuned"] if f["accuracy_finetuned"] is not None else None
        out.append(
            f"- **{label}**: mean approximation error {f['approximation_error_mean']:.4f}, {err} direct "
            f"decomposition's {direct['approximation_error_mean']:.4f} (ratio {ratio:.2f}). Decomposition cost it "
            f"{100 * drop_admm:.2f} accuracy points against {100 * drop_direct:.2f} for direct, so accuracy "
            f"after decomposition {held} direct ({_pct(f['accuracy_decomposed'])} vs "
            f"{_pct(direct['accuracy_decomposed'])})"
            + (f"; after fine-tuning the difference is {100 * ft:+.2f} points." if ft is not None else ".")
        )
    return out


# --- GPU speed -------------------------------------------------------------------------------------------------


def admm_epoch_rate(settings: BenchSettings, device: str, epochs: int, run_dir: Path) -> dict[str, Any]:
    """ADMM epochs per second on `device` (training pass plus Z/U update), the first epoch left out as warm-up."""
    cfg = _base(settings, config=str(write_config(settings)), pretrain_epochs=0, admm_epochs=epochs,
                finetune_epochs=0, rho=settings.rhos[-1], device=device)
    metrics = train(cfg, _fresh(run_dir))
    timed = metrics["final"]["epoch_seconds"][1:epochs]
    median = statistics.median(timed)
    return {"device": device, "epochs_timed": len(timed), "seconds_per_epoch": median, "epochs_per_second": 1 / median}


def run_gpu(settings: BenchSettings, epochs: int = 4, echo=click.echo) -> str:
    """The markdown section comparing ADMM epoch rates on this machine's GPU and CPU."""
    if not torch.cuda.is_available():
        raise TTPlanError("--device cuda: torch sees no CUDA GPU here; run this mode on a machine with one")
    if epochs < 2:
        raise TTPlanError(f"epochs={epochs}: need at least 2 (the first is warm-up)")
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    rows = []
    for device in ("cuda", "cpu"):
        echo(f"timing {epochs} ADMM epochs on {device} ...")
        rows.append(admm_epoch_rate(settings, device, epochs, settings.runs / f"speed_{device}"))
    gpu, cpu = rows
    name = torch.cuda.get_device_name(0)
    lines = [
        GPU_MARKER,
        "",
        f"Produced by `python -m experiments.admm_digits --device cuda` on {name} (torch {torch.__version__}), "
        f"CPU side with {torch.get_num_threads()} torch thread(s) on the same machine. Same model, config, data "
        f"({settings.image_size}x{settings.image_size}, batch {settings.batch_size}) and ρ={settings.rhos[-1]:g} "
        f"as above; one ADMM epoch = a pass over the 1,437 training images with the penalty, then the Z/U "
        f"update (TT-SVD of {len(hodec_config(settings.arch, (3, settings.image_size, settings.image_size), settings.stages, settings.rank))} "  # noqa: E501
        f"kernels on the weights' device). Median of epochs 2..{epochs} (the first is warm-up).",
        "",
        "| device | seconds per ADMM epoch | ADMM epochs per second |",
        "| --- | ---: | ---: |",
        f"| {name} | {gpu['seconds_per_epoch']:.3f} | {gpu['epochs_per_second']:.2f} |",
        f"| CPU ({torch.get_num_threads()} threads) | {cpu['seconds_per_epoch']:.3f} | "
        f"{cpu['epochs_per_second']:.2f} |",
        "",
        f"GPU / CPU: **{gpu['epochs_per_second'] / cpu['epochs_per_second']:.1f}x** the epochs per second.",
    ]
    return "\n".join(lines) + "\n"


def append_section(report: Path, section: str) -> None:
    """Add (or replace) the GPU section at the end of the report."""
    text = report.read_text() if report.is_file() else "# ADMM against direct TT decomposition\n"
    if GPU_MARKER in text:
        text = text[: text.index(GPU_MARKER)].rstrip() + "\n"
    atomic_write_text(report, text.rstrip() + "\n\n" + section)


def _writable(path: Path) -> Path:
    """The report path, checked before the benchmark runs (click prints the one-line error of this script)."""
    try:
        return check_writable(path, "--out")
    except TTPlanError as error:
        raise click.BadParameter(str(error)) from None


@click.command()
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cpu: the ADMM vs direct comparison; cuda: ADMM epochs/s on GPU vs CPU, appended to the report.")
@click.option("--out", type=click.Path(path_type=Path), default=REPORT, show_default=True,
              callback=lambda _ctx, _param, value: _writable(value), help="The report (figures beside it).")
@click.option("--runs", type=click.Path(path_type=Path), default=RUNS, show_default=True,
              help="Folder for the run folders.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=CONFIG, show_default=True,
              callback=lambda _ctx, _param, value: _writable(value), help="Where the generated layer config goes.")
@click.option("--image-size", type=click.IntRange(min=8), default=32, show_default=True)
@click.option("--pretrain-epochs", type=click.IntRange(min=1), default=BenchSettings.pretrain_epochs,
              show_default=True)
@click.option("--admm-epochs", type=click.IntRange(min=1), default=BenchSettings.admm_epochs, show_default=True,
              help="ADMM epochs of each ADMM arm, dense epochs of the direct arm.")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=BenchSettings.finetune_epochs,
              show_default=True)
@click.option("--rho", "rhos", type=click.FloatRange(min=0, min_open=True), multiple=True,
              help="ρ of an ADMM arm; repeat for several (default: 1e-3, 0.1 and 1).")
@click.option("--max-batches", type=click.IntRange(min=1), default=None,
              help="Cap the batches per epoch (quick checks; the report is then not the committed one).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads (default: 1 for the comparison, robust on a busy machine; "
                   "all for --device cuda).")
@click.option("--gpu-epochs", type=click.IntRange(min=2), default=4, show_default=True,
              help="ADMM epochs timed per device in --device cuda mode.")
def main(device: str, out: Path, runs: Path, config_path: Path, image_size: int, pretrain_epochs: int,
         admm_epochs: int, finetune_epochs: int, rhos: tuple[float, ...], max_batches: int | None,
         threads: int | None, gpu_epochs: int) -> None:
    """Write reports/admm_digits.md (CPU) or append the GPU speed section to it (cuda)."""
    start = time.perf_counter()
    common = dict(image_size=image_size, runs=runs, config=config_path, pretrain_epochs=pretrain_epochs,
                  admm_epochs=admm_epochs, finetune_epochs=finetune_epochs, max_batches=max_batches,
                  rhos=rhos or BenchSettings.rhos)
    if max_batches is not None:
        common["notes"] = [f"Every epoch was capped at {max_batches} batches (`--max-batches`): a quick check, not "
                           "the committed comparison."]
    if device == "cpu":
        settings = BenchSettings(threads=threads or 1, **common)
        result = run_comparison(settings)
        out.parent.mkdir(parents=True, exist_ok=True)
        plot_arms(result, out.parent)
        atomic_write_text(out, render(settings, result, time.perf_counter() - start))
    else:
        settings = BenchSettings(threads=threads, **common)
        append_section(out, run_gpu(settings, gpu_epochs))
    click.echo(f"wrote {out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    try:
        main(standalone_mode=True)
    except TTPlanError as err:
        click.echo(f"Error: {err}", err=True)
        raise SystemExit(2) from None
