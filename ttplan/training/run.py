"""The ADMM training pipeline (Yin et al. 2021): pretrain (or `init`) -> ADMM -> decompose into runtime TT layers
-> fine-tune -> evaluate, with exact resume, data-parallel training and a run folder anyone can inspect.

The run is a sequence of epochs in three segments of fixed length: `pretrain_epochs`, `admm_epochs`,
`finetune_epochs`. The baseline `direct` spends the middle segment on the same dense training without the
ADMM penalty (same optimizer, learning rate and schedule), then decomposes those weights directly, so the two
runs differ only in ADMM; its middle epochs are logged with phase `pretrain`. Each segment gets a fresh SGD
optimizer with a per-batch schedule over the segment (a short warm-up, then cosine; `schedule.WarmupCosine`;
`lr_schedule="epoch"`: ttplan 0.2's per-epoch cosine).
ADMM's ρ follows `RhoSchedule.auto` unless `rho` is given. The starting model is evaluated before any epoch
(`start` in metrics.json). Fine-tuning distils from the dense model as it was before ADMM where dense weights
exist (`TrainConfig.distills`), and the decomposed cores are balanced (`decomposition.balance`; off with
`balance=False`).

Run folder (only rank 0 writes; every file is written to a temporary name and moved into place):

- `checkpoint.pt`: after every epoch: model, optimizer, scheduler, ADMM `Z`/`U`/ρ, RNG states (torch, CUDA,
  numpy, python, the DataLoader's generator), the metrics so far, the config and the resolved layer formats.
  `resume` continues from it exactly, from any directory, without the original config file.
- `metrics.json`: `{"config", "layers", "changes", "epochs": [{"epoch", "phase", "loss", "accuracy", "rho",
  "distances"}], "final"}`; `loss` is the mean training cross-entropy (without the penalty), `accuracy` the test
  accuracy, `distances` each constrained layer's ‖W − Z‖/‖W‖ (ADMM epochs) or ‖W − Π(W)‖/‖W‖, the relative error
  that a direct decomposition would have at that point (dense epochs of a decomposing run); empty while
  fine-tuning. `layers` holds the decomposed layers' formats (config-file spelling), `changes` the settings
  changed on resume.
- `dense.pt`: the dense weights just before decomposition (usable as `init` of another run).
- `model_tt.pt` + `plan.json`: the fine-tuned TT model (state_dict, formats, layer config) and its planned
  MACs and params (`ttplan.arch.architecture.plan_architecture`); `load_tt_model` rebuilds it.
- `curves.png`/`curves.svg`: the training curves (`ttplan.analysis.plots.plot_admm`).
- `run.lock`: while the run is live (`ttplan.training.run_folder.locked_run_dir`): a second run or a resume of the
  folder is refused until it ends.

A diverged loss stops the run (`TrainingDiverged`) before the epoch is saved, so the checkpoint kept is the
last one before the divergence: a loss that is not finite, or a batch cross-entropy above `EXPLODED` times the
run's reference (its first epoch's mean, or its first batch while that epoch runs), or non-finite weights.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ttplan.core.formats import TTFormat
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.models import load_model, trace_layers
from ttplan.runtime.decomposition import decompose, project, relative_error
from ttplan.training import distributed as D
from ttplan.training.admm import ADMM, ADMMLayer, RhoSchedule
from ttplan.training.checkpoint import (
    KIND,
    VERSION,
    atomic_save,
    atomic_write_json,
    format_dict,
    load_checkpoint,
    rng_state,
    seed_everything,
    set_rng_state,
)
from ttplan.training.config import BASELINES, DEVICES, PHASES, TrainConfig, phase_of
from ttplan.training.data import load_dataset
from ttplan.training.evaluate import evaluate
from ttplan.training.models import (
    balance_cores,
    convert_model,
    init_weights,
    load_tt_model,
    recorded_formats,
    resolve_formats,
)
from ttplan.training.run_folder import (
    CHECKPOINT,
    CURVES,
    DENSE_WEIGHTS,
    METRICS,
    PLAN,
    RESUMABLE,
    TT_MODEL,
    apply_changes,
    check_new_run_dir,
    check_resume_dir,
    locked_run_dir,
)
from ttplan.training.schedule import segment_schedule

#: a batch loss above this many times the run's reference loss counts as diverged
EXPLODED = 1e3

Progress = Callable[[str, int], Any]  # (label, number of batches) -> context manager with .update(n)


class TrainingDiverged(TTPlanError):
    """The loss diverged (not finite, or exploding); the run stopped and its last good checkpoint is kept."""


@dataclass
class EpochEnd:
    """What a callback sees after each epoch (on every rank), once the checkpoint is written."""

    epoch: int
    record: dict[str, Any]
    model: nn.Module
    admm: ADMM | None
    ctx: D.DistContext
    run_dir: Path
    z_divergence: float | None = None


EpochCallback = Callable[[EpochEnd], None]


@dataclass
class _Run:
    """Mutable state of one run on one process (internal)."""

    cfg: TrainConfig
    ctx: D.DistContext
    run_dir: Path
    model: nn.Module
    input_size: tuple[int, int, int]
    train_set: Dataset
    test_set: Dataset
    generator: torch.Generator
    formats: dict[str, TTFormat]
    specs: dict[str, ConvSpec]
    layer_names: list[str]
    ddp: nn.Module | None = None
    stage: str | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    admm: ADMM | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)
    decomposition: dict[str, Any] | None = None
    epoch_seconds: list[float] = field(default_factory=list)
    z_divergence: float = 0.0
    changes: list[dict[str, Any]] = field(default_factory=list)
    first_batch_loss: float | None = None
    teacher: nn.Module | None = None
    epoch_rho: float | None = None
    epoch_divergence: float | None = None
    start_accuracy: float | None = None


# --- building the run ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """torch's CPU thread count for the run, restored afterwards."""
    before = torch.get_num_threads()
    if count is not None and count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _absolute(cfg: TrainConfig) -> TrainConfig:
    """The config with its paths made absolute and its thread count fixed, as the run records it."""
    def absolute(path: str | None) -> str | None:
        return None if path is None else str(Path(path).expanduser().absolute())

    return replace(cfg, data_dir=absolute(cfg.data_dir), config=absolute(cfg.config), init=absolute(cfg.init),
                   threads=cfg.threads if cfg.threads is not None else torch.get_num_threads())


def _build(cfg: TrainConfig, ctx: D.DistContext, run_dir: Path, recorded: dict[str, Any] | None = None) -> _Run:
    """Seed, load data and the model (with `init` weights, or a checkpoint's formats), resolve the formats."""
    if cfg.batch_size % ctx.world_size:
        raise TTPlanError(f"batch_size={cfg.batch_size} is the global batch and must split evenly over "
                          f"{ctx.world_size} processes")
    seed_everything(cfg.seed)
    train_set, test_set = load_dataset(cfg.dataset, cfg.data_dir, cfg.image_size, augment=cfg.augment,
                                       train_subset=cfg.train_subset, eval_split=cfg.eval_split)
    channels, height, width = (int(n) for n in test_set[0][0].shape)
    model, input_size = load_model(cfg.arch, (channels, height, width))
    layers = trace_layers(model, input_size)
    if recorded is None:
        if cfg.init is not None:
            init_weights(model, cfg.init)
        formats = resolve_formats(cfg, model, input_size)
    else:  # a resumed run: its weights come from the checkpoint, its formats from the record
        formats = recorded_formats(recorded, {layer.name: layer.spec for layer in layers}, run_dir / CHECKPOINT)
    specs = {layer.name: layer.spec for layer in layers if layer.name in formats}
    model.to(ctx.device)
    generator = torch.Generator().manual_seed(cfg.seed)
    return _Run(cfg, ctx, run_dir, model, input_size, train_set, test_set, generator, formats, specs,
                [layer.name for layer in layers])


def _stage_lr(cfg: TrainConfig, stage: str) -> float:
    """The segment's base rate: `lr`, and for fine-tuning `finetune_lr` (default `cfg.default_finetune_lr`)."""
    if stage != "finetune":
        return cfg.lr
    return cfg.finetune_lr if cfg.finetune_lr is not None else cfg.default_finetune_lr


def _segment_length(cfg: TrainConfig, stage: str) -> int:
    return cfg.stages().count(stage)


def _steps_per_epoch(run: _Run, loader: DataLoader | None = None) -> int:
    """Batches one epoch runs on each rank: its loader's length, capped by `max_batches`."""
    steps = len(loader if loader is not None else _train_loader(run, 0))
    return steps if run.cfg.max_batches is None else min(steps, run.cfg.max_batches)


def rho_schedule(cfg: TrainConfig, steps_per_epoch: int) -> RhoSchedule:
    """ρ per ADMM epoch: `rho` (and `rho_growth`, default 1) as given, else the auto schedule for this run."""
    if cfg.rho is not None:
        return RhoSchedule(start=float(cfg.rho), growth=float(cfg.rho_growth or 1.0))
    auto = RhoSchedule.auto(cfg.lr, max(1, cfg.admm_epochs) * min(steps_per_epoch, cfg.admm_updates_per_epoch))
    return auto if cfg.rho_growth is None else RhoSchedule(start=auto.start, growth=float(cfg.rho_growth))


def _keep_teacher(run: _Run) -> None:
    """The dense model as it is now (before ADMM or the direct decomposition), frozen, as fine-tuning's teacher."""
    if run.teacher is None and run.cfg.distills and run.formats:
        run.teacher = copy.deepcopy(run.model).eval()
        for param in run.teacher.parameters():
            param.requires_grad_(False)


def _enter_stage(run: _Run, stage: str) -> None:
    """Start a segment: decompose before fine-tuning, fresh optimizer and schedule, ADMM state for `admm`."""
    cfg = run.cfg
    if stage != "pretrain":
        _keep_teacher(run)
    if stage == "finetune" and run.decomposition is None:
        _decompose(run)
    run.stage = stage
    run.optimizer = torch.optim.SGD(run.model.parameters(), lr=_stage_lr(cfg, stage), momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
    steps = _steps_per_epoch(run)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(
        run.optimizer, segment_schedule(cfg.lr_schedule, _segment_length(cfg, stage), steps))
    run.admm = None
    if stage == "admm":
        layers = [ADMMLayer(name, fmt, run.specs[name]) for name, fmt in run.formats.items()]
        run.admm = ADMM(run.model, layers, rho=rho_schedule(cfg, steps))
    run.ddp = D.wrap_model(run.model, run.ctx)


def _reschedule(run: _Run) -> None:
    """After a resume that changed the learning rate or the segment's length: the schedule of the new settings,
    at the step the run is at (the rate of the remaining steps follows the new schedule)."""
    assert run.scheduler is not None and run.stage is not None
    base = _stage_lr(run.cfg, run.stage)
    schedule = segment_schedule(run.cfg.lr_schedule, _segment_length(run.cfg, run.stage), _steps_per_epoch(run))
    run.scheduler.lr_lambdas = [schedule for _ in run.scheduler.lr_lambdas]
    run.scheduler.base_lrs = [base for _ in run.scheduler.base_lrs]
    at = run.scheduler.last_epoch
    for group in run.optimizer.param_groups:  # type: ignore[union-attr]
        group["initial_lr"] = base
        group["lr"] = base * schedule(at)


def _locked(run_dir: Path, *, new: bool) -> contextlib.AbstractContextManager[Path]:
    """The run folder's lock for the run's life (`locked_run_dir`), taken by the one process that writes there."""
    return locked_run_dir(run_dir, new=new) if D.launched_as_main() else contextlib.nullcontext(run_dir)


# --- one epoch -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _no_progress(_label: str, _length: int) -> Iterator[Any]:
    class _Bar:
        def update(self, _n: int) -> None:
            pass

    yield _Bar()


def _train_loader(run: _Run, epoch: int) -> DataLoader:
    sampler = D.train_sampler(run.train_set, run.ctx, run.cfg.seed)
    if sampler is not None:
        sampler.set_epoch(epoch)
    per_rank = run.cfg.batch_size // run.ctx.world_size
    return DataLoader(run.train_set, batch_size=per_rank, shuffle=sampler is None, sampler=sampler,
                      generator=run.generator if sampler is None else None, num_workers=0)


def _checkpoint_path(run: _Run) -> Path:
    return run.run_dir / CHECKPOINT


def _diverged(run: _Run, epoch: int, batch: int | None, what: str) -> TrainingDiverged:
    done = len(run.epochs)
    kept = (f"the last good checkpoint {str(_checkpoint_path(run))!r} (after epoch {done}) is kept"
            if done else "no epoch finished, so there is no checkpoint")
    where = f"epoch {epoch + 1} ({phase_of(run.stage or '')})" + (f", batch {batch + 1}" if batch is not None else "")
    lr = "--finetune-lr" if run.stage == "finetune" and run.cfg.finetune_lr is not None else "--lr"
    retry = f"; retry with a lower {lr}" + (f" (ttplan train --resume {run.run_dir} {lr} ...)" if done else "")
    if run.stage == "admm":
        retry += ", or start a new run with a lower --rho"
    return TrainingDiverged(f"{what} in {where}; stopped: {kept}{retry}")


def _reference_loss(run: _Run) -> float | None:
    """What an exploding loss is measured against: the first epoch's mean cross-entropy, else the first batch's."""
    if run.epochs and run.epochs[0]["loss"] is not None and math.isfinite(run.epochs[0]["loss"]):
        return float(run.epochs[0]["loss"])
    return run.first_batch_loss


def _train_epoch(run: _Run, epoch: int, progress: Progress) -> float:
    """One pass over the training shard; returns the mean cross-entropy over all ranks' samples."""
    assert run.ddp is not None and run.optimizer is not None
    run.ddp.train()
    loader = _train_loader(run, epoch)
    length = _steps_per_epoch(run, loader)
    total, count = 0.0, 0
    label = f"epoch {epoch + 1}/{run.cfg.total_epochs} {phase_of(run.stage or '')}"
    interval = max(1, math.ceil(length / run.cfg.admm_updates_per_epoch))  # Z/U updates, the last at the end
    with progress(label, length) as bar:
        for b, (x, y) in enumerate(loader):
            if b >= length:
                break
            x, y = x.to(run.ctx.device), y.to(run.ctx.device)
            logits = run.ddp(x)
            task = nn.functional.cross_entropy(logits, y)
            loss = task + run.admm.penalty() if run.admm is not None else task
            if run.stage == "finetune" and run.teacher is not None:
                loss = _distilled(run, logits, task, x)
            value, ce = float(loss.detach()), float(task.detach())
            if D.any_across(not bool(torch.isfinite(x).all()), run.ctx):
                raise TTPlanError(f"the training data hold NaN or infinite values (epoch {epoch + 1}, batch "
                                  f"{b + 1}): check the data set and its normalisation; no learning rate fixes it")
            if D.any_across(not math.isfinite(value), run.ctx):
                raise _diverged(run, epoch, b, f"loss became {value}")
            if run.first_batch_loss is None:
                run.first_batch_loss = ce
            reference = _reference_loss(run)
            if D.any_across(reference is not None and ce > EXPLODED * max(reference, 1e-12), run.ctx):
                raise _diverged(run, epoch, b, f"loss exploded to {ce:.3g} (over {EXPLODED:g} x the run's "
                                               f"reference loss {reference:.3g})")
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            run.scheduler.step()
            if run.admm is not None and ((b + 1) % interval == 0 or b + 1 == length):
                _admm_update(run)
            total += ce * len(y)
            count += len(y)
            bar.update(1)
    total, count = D.sum_across([total, count], run.ctx)
    finite = all(bool(torch.isfinite(p).all()) for p in run.model.parameters())
    if D.any_across(not finite, run.ctx):
        raise _diverged(run, epoch, None, "the weights became non-finite")
    return total / max(count, 1)


def _distilled(run: _Run, logits: torch.Tensor, task: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`(1 − w)·CE + w·T²·KL(teacher ‖ student)` at temperature T (Hinton et al. 2015; T² keeps the gradient scale)."""
    assert run.teacher is not None
    temperature, weight = run.cfg.distill_temperature, run.cfg.distill_weight
    with torch.no_grad():
        target = nn.functional.softmax(run.teacher(x) / temperature, dim=1)
    soft = nn.functional.kl_div(nn.functional.log_softmax(logits / temperature, dim=1), target,
                                reduction="batchmean")
    return (1.0 - weight) * task + weight * temperature**2 * soft


def _admm_update(run: _Run) -> None:
    """Z and U updated from the current weights (the same on every rank), ρ to its schedule's next value."""
    assert run.admm is not None
    run.epoch_rho = run.admm.rho  # the ρ the last steps ran with, before update() moves it
    run.admm.update()
    run.epoch_divergence = D.max_divergence(run.admm.Z, run.ctx) if run.ctx.enabled else None
    run.z_divergence = max(run.z_divergence, run.epoch_divergence or 0.0)
    D.sync_admm(run.admm, run.ctx)


def _sync_buffers(run: _Run) -> None:
    """BN running statistics from rank 0 everywhere, so every rank evaluates and saves the same model."""
    if run.ctx.enabled:
        D.broadcast_tensors({name: buf for name, buf in run.model.named_buffers() if buf.is_floating_point()},
                            run.ctx)


def _accuracy(run: _Run) -> float:
    _sync_buffers(run)
    return evaluate(run.model, run.test_set, run.ctx, max(256, run.cfg.batch_size), run.cfg.max_batches)


def _direct_distances(run: _Run) -> dict[str, float]:
    """‖W − Π(W)‖/‖W‖ per constrained layer: the error of decomposing the current weights directly."""
    out: dict[str, float] = {}
    with torch.no_grad():
        for name, fmt in run.formats.items():
            w = run.model.get_submodule(name).weight.detach()
            z = project(w, fmt, run.specs[name])
            out[name] = float(torch.linalg.vector_norm((w - z).double()) / torch.linalg.vector_norm(w.double()))
    return out




# --- decomposition and the final model -------------------------------------------------------------------------


def _layer_error(dense: nn.Module, tt: nn.Module, name: str, fmt: TTFormat, spec: ConvSpec) -> float:
    """‖W − W_tt‖/‖W‖ for one converted layer (its own `to_dense`, else the TT-SVD it was built from)."""
    w = dense.get_submodule(name).weight.detach()
    layer = tt.get_submodule(name)
    if hasattr(layer, "to_dense"):
        with torch.no_grad():
            approx = layer.to_dense().detach().to(torch.float64).reshape(w.shape)
        num = torch.linalg.vector_norm(w.double() - approx.to(w.device))
        return float(num / torch.linalg.vector_norm(w.double()))
    return relative_error(w, decompose(w, fmt, spec), fmt, spec)


def _decompose(run: _Run) -> None:
    """Replace the constrained layers by TT layers from the current dense weights; record accuracy and error."""
    accuracy_dense = run.epochs[-1]["accuracy"] if run.epochs else _accuracy(run)
    _sync_buffers(run)
    if run.ctx.is_main:
        atomic_save({"model": run.model.state_dict(), "config": run.cfg.to_dict()}, run.run_dir / DENSE_WEIGHTS)
    dense = run.model
    tt = convert_model(dense, run.formats, run.input_size, run.cfg.scheme).to(run.ctx.device)
    if run.cfg.balance:
        balance_cores(tt, run.formats)
    errors = {name: _layer_error(dense, tt, name, fmt, run.specs[name]) for name, fmt in run.formats.items()}
    run.model = tt
    run.ddp = None
    accuracy_tt = _accuracy(run)
    run.decomposition = {
        "after_epoch": len(run.epochs),
        "accuracy_dense": accuracy_dense,
        "accuracy_decomposed": accuracy_tt,
        "approximation_error": errors,
        "approximation_error_mean": float(np.mean(list(errors.values()))) if errors else 0.0,
        "approximation_error_max": max(errors.values(), default=0.0),
    }


def _planned(run: _Run) -> dict[str, Any]:
    """Planned MACs/params of the TT model (its layers at the plan's order, every other layer dense)."""
    from ttplan.arch.architecture import plan_architecture
    from ttplan.arch.config import LayerConfig, format_entry, parse_entry

    config = {name: LayerConfig(format="dense") for name in run.layer_names}
    config.update({name: parse_entry(name, format_entry(fmt, run.specs[name])) for name, fmt in run.formats.items()})
    plan = plan_architecture(run.cfg.arch, run.input_size, config=config)
    if run.ctx.is_main:
        atomic_write_json(plan.to_dict(), run.run_dir / PLAN)
    totals = plan.totals
    return {"macs": totals.tt_macs, "params": totals.tt_params, "dense_macs": totals.baseline_macs,
            "dense_params": totals.baseline_params, "macs_reduction": totals.macs_reduction,
            "params_reduction": totals.params_reduction, "published_macs": totals.published_macs,
            "units": "MACs at batch 1 (FLOPs = 2 x MACs); params = conv/linear weights + biases"}


def _layer_config(run: _Run) -> dict[str, Any]:
    """The decomposed layers' formats in the config-file spelling, so the saved model replays with --config."""
    from ttplan.arch.config import format_entry

    return {name: format_entry(fmt, run.specs[name]) for name, fmt in run.formats.items()}


def _finish(run: _Run) -> dict[str, Any]:
    """The `final` block; rank 0 saves the TT model, its plan and the plots."""
    stages = run.cfg.stages()
    seconds: dict[str, float] = {}
    for stage in dict.fromkeys(stages):
        times = [t for t, s in zip(run.epoch_seconds, stages) if s == stage]
        if times:
            seconds[phase_of(stage) if stage != "dense" else "dense"] = float(np.mean(times))
    final: dict[str, Any] = {
        "baseline": run.cfg.baseline,
        "accuracy_start": run.start_accuracy,
        "epochs": len(run.epochs),
        "accuracy": run.epochs[-1]["accuracy"] if run.epochs else None,
        "world_size": run.ctx.world_size,
        "seconds_per_epoch": seconds,
        "epoch_seconds": list(run.epoch_seconds),
    }
    if run.ctx.enabled:
        final["max_z_divergence_across_ranks"] = run.z_divergence
    _sync_buffers(run)  # a collective: every rank, before rank 0 saves
    if run.decomposition is not None:
        final.update(run.decomposition)
        final["accuracy_finetuned"] = run.epochs[-1]["accuracy"] if run.cfg.finetune_epochs else None
        final["formats"] = {name: format_dict(fmt) for name, fmt in run.formats.items()}
        final["planned"] = _planned(run)
        if run.ctx.is_main:
            atomic_save({"model": run.model.state_dict(), "formats": final["formats"],
                         "layer_config": _layer_config(run), "arch": run.cfg.arch,
                         "input_size": list(run.input_size), "scheme": run.cfg.scheme,
                         "train_config": run.cfg.to_dict(), "planned": final["planned"]},
                        run.run_dir / TT_MODEL)
    if run.ctx.is_main and run.decomposition is None:
        atomic_save({"model": run.model.state_dict(), "config": run.cfg.to_dict()}, run.run_dir / DENSE_WEIGHTS)
    return final


def _plot(metrics: dict[str, Any], run_dir: Path) -> None:
    """The training curves (PNG and SVG) beside the metrics."""
    if not metrics["epochs"]:
        return
    import matplotlib

    matplotlib.use("Agg")
    from ttplan.analysis.plots import plot_admm

    plot_admm(metrics, run_dir / CURVES)


def _last_lr(run: _Run) -> float:
    """The rate of the epoch's last step."""
    assert run.optimizer is not None
    return float(run.optimizer.param_groups[0]["lr"])


def _summary(distances: dict[str, float]) -> dict[str, float] | None:
    """min / median / max of the per-layer distances (None when there are none)."""
    if not distances:
        return None
    values = sorted(distances.values())
    return {"min": values[0], "median": float(np.median(values)), "max": values[-1]}


# --- the loop --------------------------------------------------------------------------------------------------


def _metrics(run: _Run, final: dict[str, Any] | None) -> dict[str, Any]:
    return {"config": run.cfg.to_dict(), "layers": _layer_config(run), "changes": run.changes,
            "start": {"accuracy": run.start_accuracy}, "epochs": run.epochs, "final": final or {}}


def _save_checkpoint(run: _Run) -> None:
    assert run.optimizer is not None
    state = {
        "kind": KIND,
        "version": VERSION,
        "config": run.cfg.to_dict(),
        "formats": {name: format_dict(fmt) for name, fmt in run.formats.items()},
        "changes": run.changes,
        "epoch": len(run.epochs),
        "stage": run.stage,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "admm": run.admm.state_dict() if run.admm is not None else None,
        "rng": rng_state(run.generator),
        "epochs": run.epochs,
        "decomposition": run.decomposition,
        "epoch_seconds": run.epoch_seconds,
        "world_size": run.ctx.world_size,
        "start_accuracy": run.start_accuracy,
        "teacher": run.teacher.state_dict() if run.teacher is not None else None,
    }
    atomic_save(state, _checkpoint_path(run))
    atomic_write_json(_metrics(run, None), run.run_dir / METRICS)


def _loop(run: _Run, progress: Progress | None, on_epoch_end: EpochCallback | None) -> dict[str, Any]:
    """Run the remaining epochs, then decompose (if not yet) and finish; returns the metrics."""
    bar = progress if (progress is not None and run.ctx.is_main) else _no_progress
    stages = run.cfg.stages()
    for epoch in range(len(run.epochs), len(stages)):
        stage = stages[epoch]
        if stage != run.stage:
            _enter_stage(run, stage)
        start = time.perf_counter()
        run.epoch_rho, run.epoch_divergence = None, None
        loss = _train_epoch(run, epoch, bar)
        rho = run.epoch_rho
        divergence = run.epoch_divergence
        if run.ctx.device.startswith("cuda"):
            torch.cuda.synchronize()  # the epoch's kernels are done before its time is taken
        run.epoch_seconds.append(time.perf_counter() - start)
        accuracy = _accuracy(run)
        if run.admm is not None:
            distances = run.admm.distances()
        elif stage in ("pretrain", "dense") and run.formats:
            distances = _direct_distances(run)
        else:
            distances = {}
        record = {"epoch": epoch + 1, "phase": phase_of(stage), "loss": loss, "accuracy": accuracy,
                  "rho": rho, "lr": _last_lr(run), "distances": distances,
                  "distance_summary": _summary(distances)}
        run.epochs.append(record)
        if run.ctx.is_main:
            _save_checkpoint(run)
        D.barrier(run.ctx)
        if on_epoch_end is not None:
            on_epoch_end(EpochEnd(epoch + 1, record, run.model, run.admm, run.ctx, run.run_dir, divergence))
    if run.formats and run.decomposition is None:
        _decompose(run)
    final = _finish(run)
    metrics = _metrics(run, final)
    if run.ctx.is_main:
        atomic_write_json(metrics, run.run_dir / METRICS)
        _plot(metrics, run.run_dir)
    D.barrier(run.ctx)
    return metrics


def _restore(path: Path, what: str, load: Callable[[], Any]) -> None:
    """One part of a checkpoint put back; a part that does not fit the run is one line naming it."""
    try:
        load()
    except TTPlanError:
        raise
    except Exception as error:  # size mismatch, missing keys, a state of the wrong type ...
        first = " ".join(str(error).split())[:200] or type(error).__name__
        raise TTPlanError(f"checkpoint {str(path)!r} is damaged: its {what!r} does not fit the run ({first}); "
                          "start the run again with --out (its dense.pt can be --init)") from None


def train(cfg: TrainConfig, run_dir: str | Path, *, progress: Progress | None = None,
          on_epoch_end: EpochCallback | None = None) -> dict[str, Any]:
    """Run the whole pipeline into a new (or empty) run folder; returns the metrics (as written to metrics.json).

    Under torchrun every process calls this; only rank 0 writes. A diverged loss raises `TrainingDiverged`.
    The run records its config (paths made absolute, the thread count fixed) and resolved formats, so
    `resume` needs nothing but the folder.
    """
    cfg.validate()
    run_dir = check_new_run_dir(run_dir)
    cfg = _absolute(cfg)
    with _locked(run_dir, new=True), _threads(cfg.threads):
        ctx = D.init_from_env(cfg.device)
        run = _build(cfg, ctx, run_dir)
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        D.barrier(ctx)
        run.start_accuracy = _accuracy(run)  # what the run starts from (random, pretrained or --init), recorded
        return _loop(run, progress, on_epoch_end)


def resume(run_dir: str | Path, *, options: dict[str, Any] | None = None, device: str | None = None,
           progress: Progress | None = None, on_epoch_end: EpochCallback | None = None) -> dict[str, Any]:
    """Continue a stopped run from its last checkpoint, exactly as if it had never stopped.

    `options` may change the settings in `RESUMABLE` (learning rates, epoch counts of epochs not yet run,
    device, threads); each change is recorded in the run's `changes`; any other setting that differs from the
    recorded one is refused. `device` is short for `options={"device": ...}`. Bit-identical results are
    promised when nothing changes.
    """
    run_dir = check_resume_dir(run_dir)
    with _locked(run_dir, new=False):  # a run still live in this folder is refused before its checkpoint is read
        state = load_checkpoint(run_dir / CHECKPOINT)
        cfg = TrainConfig.from_dict(state["config"])
        options = dict(options or {})
        if device is not None:
            options.setdefault("device", device)
        cfg, changes = apply_changes(cfg, options, int(state["epoch"]))
        if (cfg.admm_epochs or cfg.finetune_epochs) and not state["formats"]:
            raise TTPlanError(f"run folder {str(run_dir)!r} holds a dense run with no layers to decompose: ADMM or "
                              f"fine-tuning epochs cannot be added on resume; start a new run with --init {run_dir}")
        with _threads(cfg.threads):
            ctx = D.init_from_env(cfg.device)
            run = _build(cfg, ctx, run_dir, recorded=state)
            run.epochs = list(state["epochs"])
            run.epoch_seconds = list(state.get("epoch_seconds", []))
            run.decomposition = state["decomposition"]
            run.changes = [*state.get("changes", []), *changes]
            run.start_accuracy = state.get("start_accuracy")
            if state.get("teacher") is not None:
                teacher, _ = load_model(cfg.arch, run.input_size)
                _restore(run_dir / CHECKPOINT, "teacher", lambda: teacher.load_state_dict(state["teacher"]))
                run.teacher = teacher.to(ctx.device).eval().requires_grad_(False)
            stage = state["stage"]
            if stage == "finetune":  # the saved model is the TT model: rebuild its structure, then load it
                run.model = convert_model(run.model, run.formats, run.input_size, cfg.scheme,
                                          decompose_weights=False).to(ctx.device)
            where = run_dir / CHECKPOINT
            _restore(where, "model", lambda: run.model.load_state_dict(state["model"]))
            _enter_stage(run, stage)  # a fine-tuning checkpoint holds `decomposition`, so nothing is decomposed again
            assert run.optimizer is not None
            _restore(where, "optimizer", lambda: run.optimizer.load_state_dict(state["optimizer"]))
            _restore(where, "scheduler", lambda: run.scheduler.load_state_dict(state["scheduler"]))
            if any(change["setting"] != "device" and change["setting"] != "threads" for change in changes):
                _reschedule(run)
            if run.admm is not None:
                _restore(where, "admm", lambda: run.admm.load_state_dict(state["admm"]))
            _restore(where, "rng", lambda: set_rng_state(state["rng"], run.generator))
            return _loop(run, progress, on_epoch_end)



__all__ = [
    "BASELINES",
    "CHECKPOINT",
    "DENSE_WEIGHTS",
    "DEVICES",
    "EXPLODED",
    "METRICS",
    "PHASES",
    "PLAN",
    "RESUMABLE",
    "TT_MODEL",
    "EpochEnd",
    "TrainConfig",
    "TrainingDiverged",
    "evaluate",
    "load_tt_model",
    "phase_of",
    "resolve_formats",
    "resume",
    "train",
]
