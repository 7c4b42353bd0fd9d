"""The ADMM training pipeline (Yin et al. 2021): pretrain (or `init`) -> ADMM -> decompose into runtime TT layers
-> fine-tune -> evaluate, with exact resume, data-parallel training and a run folder anyone can inspect.

The run is a sequence of epochs in three segments of fixed length: `pretrain_epochs`, `admm_epochs`,
`finetune_epochs`. The baseline `direct` spends the middle segment on the same dense training without the
ADMM penalty (same optimizer, learning rate and schedule), then decomposes those weights directly, so the two
runs differ only in ADMM; its middle epochs are logged with phase `pretrain`. Each segment gets a fresh SGD
optimizer with a cosine schedule over the segment.

Run folder (only rank 0 writes; every file is written to a temporary name and moved into place):

- `checkpoint.pt`: after every epoch: model, optimizer, scheduler, ADMM `Z`/`U`/ρ, RNG states (torch, CUDA,
  numpy, python, the DataLoader's generator), the metrics so far. `resume` continues from it exactly.
- `metrics.json`: `{"config", "epochs": [{"epoch", "phase", "loss", "accuracy", "rho", "distances"}], "final"}`;
  `loss` is the mean training cross-entropy (without the penalty), `accuracy` the test accuracy, `distances`
  each constrained layer's ‖W − Z‖/‖W‖ (ADMM epochs) or ‖W − Π(W)‖/‖W‖, the relative error that a direct
  decomposition would have at that point (dense epochs once a config is given); empty while fine-tuning.
- `dense.pt`: the dense weights just before decomposition (usable as `init` of another run).
- `model_tt.pt` + `plan.json`: the fine-tuned TT model (state_dict, formats, layer config) and its planned
  MACs and params (`ttplan.arch.architecture.plan_architecture`); `load_tt_model` rebuilds it.
- `curves.png`/`curves.svg` when `ttplan.analysis.plots.plot_admm` is available.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ttplan.core.formats import TTFormat
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.models import load_model, trace_layers
from ttplan.runtime.decomposition import decompose, project, relative_error
from ttplan.training import distributed as D
from ttplan.training.admm import ADMM, ADMMLayer
from ttplan.training.data import EVAL_SPLITS, dataset_key, load_dataset

PHASES = ("pretrain", "admm", "finetune")
BASELINES = ("admm", "direct")
DEVICES = ("cpu", "cuda")
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
DENSE_WEIGHTS = "dense.pt"
TT_MODEL = "model_tt.pt"
PLAN = "plan.json"
CURVES = "curves"
CHECKPOINT_VERSION = 1

Progress = Callable[[str, int], Any]  # (label, number of batches) -> context manager with .update(n)


class TrainingDiverged(TTPlanError):
    """The loss became NaN or infinite; the run stopped and its last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Everything that determines a run's result (saved in metrics.json and in every checkpoint).

    `lr` drives the dense segments (pretrain and ADMM/dense), `finetune_lr` (default: `lr`) the TT model.
    ρ starts at `rho` and is multiplied by `rho_growth` after every ADMM epoch (1.0: constant).
    `batch_size` is the global batch: under torchrun each of N processes takes `batch_size / N`.
    `max_batches` caps the batches per epoch, for training and evaluation (quick tests).
    `image_size` None: the dataset's own (28 for fashion-mnist, else 32). `augment`: random crop + flip of the
    training images (fashion-mnist, cifar10). `train_subset`: train on that many fixed images. `eval_split`:
    `validation` evaluates on the fixed validation split instead of the test set (for choosing ρ).
    """

    arch: str = "resnet20"
    dataset: str = "digits"
    data_dir: str | None = None
    config: str | None = None
    image_size: int | None = 32
    pretrain_epochs: int = 10
    admm_epochs: int = 20
    finetune_epochs: int = 10
    rho: float = 1e-3
    rho_growth: float = 1.0
    lr: float = 0.05
    finetune_lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    seed: int = 0
    init: str | None = None
    baseline: str = "admm"
    device: str = "cpu"
    scheme: str = "best"
    max_batches: int | None = None
    augment: bool = True
    train_subset: int | None = None
    eval_split: str = "test"

    def validate(self) -> None:
        """One-line errors for values no run could use."""
        for name in ("pretrain_epochs", "admm_epochs", "finetune_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TTPlanError(f"{name}={value!r}: expected an int >= 0")
        if self.total_epochs == 0:
            raise TTPlanError("pretrain_epochs, admm_epochs and finetune_epochs are all 0: nothing to train")
        for name in ("image_size", "batch_size", "train_subset"):
            value = getattr(self, name)
            if value is None and name != "batch_size":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TTPlanError(f"{name}={value!r}: expected a positive int")
        if self.eval_split not in EVAL_SPLITS:
            raise TTPlanError(f"eval_split={self.eval_split!r}: expected one of {', '.join(EVAL_SPLITS)}")
        if self.max_batches is not None and (not isinstance(self.max_batches, int) or self.max_batches < 1):
            raise TTPlanError(f"max_batches={self.max_batches!r}: expected a positive int or None")
        for name in ("rho", "lr", "rho_growth"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise TTPlanError(f"{name}={value!r}: expected a positive number")
        if self.finetune_lr is not None and not (math.isfinite(self.finetune_lr) and self.finetune_lr > 0):
            raise TTPlanError(f"finetune_lr={self.finetune_lr!r}: expected a positive number or None")
        if not (0 <= self.momentum < 1) or self.weight_decay < 0:
            raise TTPlanError(f"momentum={self.momentum}, weight_decay={self.weight_decay}: expected "
                              "0 <= momentum < 1 and weight_decay >= 0")
        if self.baseline not in BASELINES:
            raise TTPlanError(f"baseline={self.baseline!r}: expected one of {', '.join(BASELINES)}")
        if self.device not in DEVICES:
            raise TTPlanError(f"device={self.device!r}: expected one of {', '.join(DEVICES)}")
        dataset_key(self.dataset)
        if self.config is None and (self.admm_epochs or self.finetune_epochs):
            raise TTPlanError("admm/finetune epochs need a layer config (--config ranks.json) naming the layers "
                              "to decompose and their TT formats")

    @property
    def total_epochs(self) -> int:
        """Pretrain + ADMM + fine-tune epochs."""
        return self.pretrain_epochs + self.admm_epochs + self.finetune_epochs

    def stages(self) -> list[str]:
        """Each epoch's stage: `pretrain`, `admm` (or `dense` for the direct baseline), `finetune`."""
        middle = "admm" if self.baseline == "admm" else "dense"
        return ["pretrain"] * self.pretrain_epochs + [middle] * self.admm_epochs + ["finetune"] * self.finetune_epochs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from `to_dict` output (unknown keys are an error naming them)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TTPlanError(f"train config has unknown key(s) {', '.join(unknown)}; accepted: {', '.join(known)}")
        return cls(**data)


def phase_of(stage: str) -> str:
    """The phase written to metrics.json: the direct baseline's dense middle segment is `pretrain`."""
    return "pretrain" if stage == "dense" else stage


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


# --- files -----------------------------------------------------------------------------------------------------


def atomic_save(obj: Any, path: Path) -> None:
    """`torch.save` to a temporary file beside `path`, then `os.replace`: a killed run never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_json(data: Any, path: Path) -> None:
    """JSON (indented, NaN spelled as null) written to a temporary file, then moved into place."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_json_ready(data), indent=2) + "\n")
    os.replace(tmp, path)


def _json_ready(value: Any) -> Any:
    """Non-finite floats become null (JSON has no NaN); tuples become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def _load(path: Path, what: str) -> Any:
    """A file this module wrote (tensors and plain data only: loaded with `weights_only=True`)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TTPlanError(f"{what} {str(path)!r} does not exist") from None
    except Exception as error:
        text = " ".join(str(error).split())[:200]
        raise TTPlanError(f"{what} {str(path)!r} cannot be read as a torch file ({text})") from None


# --- RNG state -------------------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python's random."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG the run touches, as tensors and plain ints (safe for `weights_only` loading)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
        "loader": generator.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):  # fewer GPUs now than when saved: leave them be
            torch.cuda.set_rng_state_all(state["cuda"])


# --- building the run ------------------------------------------------------------------------------------------


def _formats(cfg: TrainConfig, model: nn.Module, input_size: tuple[int, int, int]):
    """The TT format and geometry of every layer the config decomposes, and all traced layer names."""
    if cfg.config is None:
        return {}, {}, []
    from ttplan.arch.config import load_config, resolve_formats

    layers = trace_layers(model, input_size)
    formats = resolve_formats(load_config(cfg.config), layers)
    if not formats and (cfg.admm_epochs or cfg.finetune_epochs):
        raise TTPlanError(f"config {cfg.config!r} keeps every layer dense: name at least one layer with a TT format")
    specs = {layer.name: layer.spec for layer in layers if layer.name in formats}
    return formats, specs, [layer.name for layer in layers]


def _init_weights(model: nn.Module, path: str) -> None:
    """Load dense weights from `path`: a run folder (its dense.pt), a dense.pt/checkpoint, or a bare state_dict."""
    source = Path(path).expanduser()
    if source.is_dir():
        source = source / DENSE_WEIGHTS
        if not source.is_file():
            raise TTPlanError(f"init folder {path!r} has no {DENSE_WEIGHTS}: give a run folder whose dense "
                              "phase finished, or a .pt file with a dense state_dict")
    data = _load(source, "init checkpoint")
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TTPlanError(f"init checkpoint {str(source)!r}: expected a state_dict or a dict with a 'model' state_dict")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(wrong)} of another shape (e.g. {wrong[0]})" if wrong else ""]
        raise TTPlanError(f"init checkpoint {str(source)!r} does not fit the dense model: "
                          + ", ".join(p for p in parts if p) + " keys; give the dense weights of the same --arch")
    model.load_state_dict(state)


def _build(cfg: TrainConfig, ctx: D.DistContext, run_dir: Path) -> _Run:
    """Seed, load data and the model (with `init` weights), resolve the formats."""
    if cfg.batch_size % ctx.world_size:
        raise TTPlanError(f"batch_size={cfg.batch_size} is the global batch and must split evenly over "
                          f"{ctx.world_size} processes")
    _seed_everything(cfg.seed)
    train_set, test_set = load_dataset(cfg.dataset, cfg.data_dir, cfg.image_size, augment=cfg.augment,
                                       train_subset=cfg.train_subset, eval_split=cfg.eval_split)
    channels, height, width = (int(n) for n in test_set[0][0].shape)
    model, input_size = load_model(cfg.arch, (channels, height, width))
    if cfg.init is not None:
        _init_weights(model, cfg.init)
    formats, specs, names = _formats(cfg, model, input_size)
    model.to(ctx.device)
    generator = torch.Generator().manual_seed(cfg.seed)
    return _Run(cfg, ctx, run_dir, model, input_size, train_set, test_set, generator, formats, specs, names)


def _stage_lr(cfg: TrainConfig, stage: str) -> float:
    return cfg.finetune_lr if stage == "finetune" and cfg.finetune_lr is not None else cfg.lr


def _segment_length(cfg: TrainConfig, stage: str) -> int:
    return cfg.stages().count(stage)


def _enter_stage(run: _Run, stage: str) -> None:
    """Start a segment: decompose before fine-tuning, fresh optimizer and schedule, ADMM state for `admm`."""
    cfg = run.cfg
    if stage == "finetune" and run.decomposition is None:
        _decompose(run)
    run.stage = stage
    run.optimizer = torch.optim.SGD(run.model.parameters(), lr=_stage_lr(cfg, stage), momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
    run.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(run.optimizer, T_max=_segment_length(cfg, stage))
    run.admm = None
    if stage == "admm":
        layers = [ADMMLayer(name, fmt, run.specs[name]) for name, fmt in run.formats.items()]
        rho, growth = cfg.rho, cfg.rho_growth
        run.admm = ADMM(run.model, layers, rho=rho if growth == 1.0 else (lambda k: rho * growth**k))
    run.ddp = D.wrap_model(run.model, run.ctx)


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


def _diverged(run: _Run, epoch: int, batch: int, value: float) -> TrainingDiverged:
    done = len(run.epochs)
    kept = (f"the last good checkpoint {str(_checkpoint_path(run))!r} (after epoch {done}) is kept"
            if done else "no epoch finished, so there is no checkpoint")
    hint = " or --rho" if run.stage == "admm" else ""
    return TrainingDiverged(f"loss became {value} in epoch {epoch + 1} ({phase_of(run.stage or '')}), "
                            f"batch {batch + 1}; stopped: {kept}; retry with a lower --lr{hint}")


def _train_epoch(run: _Run, epoch: int, progress: Progress) -> float:
    """One pass over the training shard; returns the mean cross-entropy over all ranks' samples."""
    assert run.ddp is not None and run.optimizer is not None
    run.ddp.train()
    loader = _train_loader(run, epoch)
    limit = run.cfg.max_batches
    length = len(loader) if limit is None else min(limit, len(loader))
    total, count = 0.0, 0
    label = f"epoch {epoch + 1}/{run.cfg.total_epochs} {phase_of(run.stage or '')}"
    with progress(label, length) as bar:
        for b, (x, y) in enumerate(loader):
            if b >= length:
                break
            x, y = x.to(run.ctx.device), y.to(run.ctx.device)
            task = nn.functional.cross_entropy(run.ddp(x), y)
            loss = task + run.admm.penalty() if run.admm is not None else task
            value = float(loss.detach())
            if D.any_across(not math.isfinite(value), run.ctx):
                raise _diverged(run, epoch, b, value)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            total += float(task.detach()) * len(y)
            count += len(y)
            bar.update(1)
    run.scheduler.step()
    total, count = D.sum_across([total, count], run.ctx)
    return total / max(count, 1)


def evaluate(model: nn.Module, dataset: Dataset, ctx: D.DistContext | None = None, batch_size: int = 256,
             max_batches: int | None = None) -> float:
    """Top-1 accuracy of `model` on `dataset`, in eval mode; under DDP each rank scores its shard, then sums."""
    ctx = ctx or D.DistContext()
    device = next(model.parameters()).device
    shard = Subset(dataset, D.shard_indices(len(dataset), ctx)) if ctx.enabled else dataset
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False)
    was_training = model.training
    model.eval()
    correct, count = 0.0, 0.0
    with torch.no_grad():
        for b, (x, y) in enumerate(loader):
            if max_batches is not None and b >= max_batches:
                break
            pred = model(x.to(device)).argmax(dim=1)
            correct += float((pred == y.to(device)).sum())
            count += len(y)
    model.train(was_training)
    correct, count = D.sum_across([correct, count], ctx)
    return correct / count if count else float("nan")


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


def _convert(model: nn.Module, formats: dict[str, TTFormat], input_size: tuple[int, int, int], scheme: str):
    """A copy of `model` with the named layers replaced by TT layers decomposed from it."""
    from ttplan.runtime.layers import convert

    return convert(model, formats, input_size, scheme=scheme)


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
    tt = _convert(dense, run.formats, run.input_size, run.cfg.scheme).to(run.ctx.device)
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


def format_dict(fmt: TTFormat) -> dict[str, Any]:
    """A format as plain data (`TTFormat.to_dict`)."""
    return fmt.to_dict()


def _planned(run: _Run) -> dict[str, Any]:
    """Planned MACs/params of the TT model (config layers at the plan's order, every other layer dense)."""
    from ttplan.arch.architecture import plan_architecture
    from ttplan.arch.config import LayerConfig, load_config

    assert run.cfg.config is not None
    config = {name: LayerConfig(format="dense") for name in run.layer_names}
    config.update(load_config(run.cfg.config))
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


def load_tt_model(path: str | Path, device: str = "cpu") -> nn.Module:
    """The fine-tuned TT model saved by a run (`RUN/model_tt.pt`, or the run folder), ready for inference."""
    path = Path(path)
    if path.is_dir():
        path = path / TT_MODEL
    data = _load(path, "TT model")
    model, input_size = load_model(data["arch"], tuple(data["input_size"]))
    formats = {name: TTFormat.from_dict(f) for name, f in data["formats"].items()}
    tt = _convert(model, formats, input_size, data.get("scheme", "best"))
    tt.load_state_dict(data["model"])
    return tt.to(device).eval()


# --- the loop --------------------------------------------------------------------------------------------------


def _metrics(run: _Run, final: dict[str, Any] | None) -> dict[str, Any]:
    return {"config": run.cfg.to_dict(), "epochs": run.epochs, "final": final or {}}


def _save_checkpoint(run: _Run) -> None:
    assert run.optimizer is not None
    state = {
        "version": CHECKPOINT_VERSION,
        "config": run.cfg.to_dict(),
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
        loss = _train_epoch(run, epoch, bar)
        rho = run.admm.rho if run.admm is not None else None  # the ρ of this epoch, before update() moves it
        divergence = None
        if run.admm is not None:
            run.admm.update()
            divergence = D.max_divergence(run.admm.Z, run.ctx) if run.ctx.enabled else None
            run.z_divergence = max(run.z_divergence, divergence or 0.0)
            D.sync_admm(run.admm, run.ctx)
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
                  "rho": rho, "distances": distances}
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


def train(cfg: TrainConfig, run_dir: str | Path, *, progress: Progress | None = None,
          on_epoch_end: EpochCallback | None = None) -> dict[str, Any]:
    """Run the whole pipeline into a new run folder; returns the metrics (as written to metrics.json).

    Under torchrun every process calls this; only rank 0 writes. A NaN/inf loss raises `TrainingDiverged`.
    """
    cfg.validate()
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT).exists():
        raise TTPlanError(f"run folder {str(run_dir)!r} already holds a run: continue it with --resume "
                          f"{run_dir} or choose another --out")
    ctx = D.init_from_env(cfg.device)
    run = _build(cfg, ctx, run_dir)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    D.barrier(ctx)
    return _loop(run, progress, on_epoch_end)


def resume(run_dir: str | Path, *, device: str | None = None, progress: Progress | None = None,
           on_epoch_end: EpochCallback | None = None) -> dict[str, Any]:
    """Continue a stopped run from its last checkpoint, exactly as if it had never stopped.

    `device` may move the run (e.g. to cuda); bit-identical results are promised on the same device only.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TTPlanError(f"run folder {str(run_dir)!r} does not exist: give the --out folder of a started run")
    if not (run_dir / CHECKPOINT).is_file():
        raise TTPlanError(f"run folder {str(run_dir)!r} has no {CHECKPOINT}: the run never finished an epoch; "
                          "start it again with --out")
    state = _load(run_dir / CHECKPOINT, "checkpoint")
    cfg = TrainConfig.from_dict(state["config"])
    if device is not None:
        cfg.device = device
    cfg.validate()
    ctx = D.init_from_env(cfg.device)
    run = _build(cfg, ctx, run_dir)
    run.epochs = list(state["epochs"])
    run.epoch_seconds = list(state.get("epoch_seconds", []))
    run.decomposition = state["decomposition"]
    stage = state["stage"]
    if stage == "finetune":  # the saved model is the TT model: rebuild its structure, then load it
        run.model = _convert(run.model, run.formats, run.input_size, cfg.scheme).to(ctx.device)
    run.model.load_state_dict(state["model"])
    _enter_stage(run, stage)  # a fine-tuning checkpoint holds `decomposition`, so nothing is decomposed again
    assert run.optimizer is not None
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.admm is not None:
        run.admm.load_state_dict(state["admm"])
    set_rng_state(state["rng"], run.generator)
    return _loop(run, progress, on_epoch_end)


__all__ = [
    "BASELINES",
    "CHECKPOINT",
    "DENSE_WEIGHTS",
    "METRICS",
    "PHASES",
    "PLAN",
    "TT_MODEL",
    "EpochEnd",
    "TrainConfig",
    "TrainingDiverged",
    "atomic_save",
    "atomic_write_json",
    "evaluate",
    "load_tt_model",
    "phase_of",
    "resume",
    "rng_state",
    "set_rng_state",
    "train",
]
