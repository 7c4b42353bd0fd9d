"""`TrainConfig`: every setting that determines a training run's result, checked in one place.

A run records its config in every checkpoint and in metrics.json; `--resume` continues from that record,
never from the command line or the original config file. Which settings may still change on resume is
`RESUMABLE` (see ttplan.training.run_folder).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ttplan.arch.policy import Policy, unnamed_rule
from ttplan.errors import TTPlanError
from ttplan.training.datasets import EVAL_SPLITS, dataset_key
from ttplan.training.schedule import SCHEDULES

PHASES = ("pretrain", "admm", "finetune")
#: fine-tuning a TT model decomposed from trained weights runs at this share of `lr` unless `finetune_lr` is given
FINETUNE_SHARE = 0.1
BASELINES = ("admm", "direct")
DEVICES = ("cpu", "cuda")


@dataclass
class TrainConfig:
    """Everything that determines a run's result (saved in metrics.json and in every checkpoint).

    `lr` drives the dense segments (pretrain and ADMM/dense), `finetune_lr` the TT model (default: a tenth of `lr`
    where the TT model starts from trained weights, else `lr`).
    ρ starts at `rho` and is multiplied by `rho_growth` after every ADMM epoch (1.0: constant); `rho` None is the
    auto schedule (`ttplan.training.admm.RhoSchedule.auto`), `rho_growth` None its growth (or 1.0 with a given ρ).
    `admm_updates_per_epoch`: how often per ADMM epoch Z and U are updated (evenly spaced, the last at the
    epoch's end): ADMM converges in its number of updates, not of epochs.
    `distill` (None: on where dense weights exist, i.e. with pretraining or `init`) fine-tunes the TT model
    towards the dense model as it was before ADMM: `(1 − w)·CE + w·T²·KL(teacher ‖ student)` at temperature
    `distill_temperature` T and weight `distill_weight` w.
    `balance`: equal the norms of each decomposed layer's cores (off only to measure what it does).
    `lr_schedule`: `batch` (warm-up then cosine, stepped per batch) or `epoch` (cosine stepped per epoch, no
    warm-up: ttplan 0.2's; for ablations).
    `batch_size` is the global batch: under torchrun each of N processes takes `batch_size / N`.
    `max_batches` caps the batches per epoch, for training and evaluation (quick tests).
    `image_size` None: the dataset's own (28 for fashion-mnist, else 32). `augment`: random crop + flip of the
    training images (fashion-mnist, cifar10). `train_subset`: train on that many fixed images. `eval_split`:
    `validation` evaluates on the fixed validation split instead of the test set (for choosing ρ).
    `config` names a layer config; without one, a run with ADMM or fine-tuning epochs decomposes the layers `policy`
    picks (the fields of `ttplan.arch.policy.Policy`, None: its defaults, as `ttplan plan` uses them). `unnamed`:
    what the layers the config does not name get, `dense` or `policy` (None: dense with a config;
    `ttplan.arch.policy.unnamed_rule`, as `ttplan plan --config` decides them). `threads`: torch's CPU threads
    (None: the process's).
    """

    arch: str = "resnet20"
    dataset: str = "digits"
    data_dir: str | None = None
    config: str | None = None
    image_size: int | None = 32
    pretrain_epochs: int = 10
    admm_epochs: int = 20
    finetune_epochs: int = 10
    rho: float | None = None
    rho_growth: float | None = None
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
    policy: dict[str, Any] | None = None
    unnamed: str | None = None
    threads: int | None = None
    admm_updates_per_epoch: int = 1
    distill: bool | None = None
    distill_temperature: float = 4.0
    distill_weight: float = 0.5
    balance: bool = True
    lr_schedule: str = "batch"

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
        if not isinstance(self.admm_updates_per_epoch, int) or self.admm_updates_per_epoch < 1:
            raise TTPlanError(f"admm_updates_per_epoch={self.admm_updates_per_epoch!r}: expected a positive int")
        if self.max_batches is not None and (not isinstance(self.max_batches, int) or self.max_batches < 1):
            raise TTPlanError(f"max_batches={self.max_batches!r}: expected a positive int or None")
        if self.threads is not None and (not isinstance(self.threads, int) or isinstance(self.threads, bool)
                                         or self.threads < 1):
            raise TTPlanError(f"threads={self.threads!r}: expected a positive int or None")
        for name in ("rho", "lr", "rho_growth", "distill_temperature"):
            value = getattr(self, name)
            if value is None and name in ("rho", "rho_growth"):
                continue
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                    and value > 0):
                raise TTPlanError(f"{name}={value!r}: expected a positive number"
                                  + (" (or None: the auto schedule)" if name.startswith("rho") else ""))
        if not (isinstance(self.distill_weight, (int, float)) and 0 <= self.distill_weight <= 1):
            raise TTPlanError(f"distill_weight={self.distill_weight!r}: expected a number in [0, 1]")
        if self.balance not in (True, False):
            raise TTPlanError(f"balance={self.balance!r}: expected true or false")
        if self.lr_schedule not in SCHEDULES:
            raise TTPlanError(f"lr_schedule={self.lr_schedule!r}: expected one of {', '.join(SCHEDULES)}")
        if self.distill not in (None, True, False):
            raise TTPlanError(f"distill={self.distill!r}: expected true, false or None (on where dense weights exist)")
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
        if self.eval_split not in EVAL_SPLITS:
            raise TTPlanError(f"eval_split={self.eval_split!r}: expected one of {', '.join(EVAL_SPLITS)}")
        self.make_policy()
        unnamed_rule(self.unnamed, self.config is not None)

    def make_policy(self) -> Policy:
        """The policy for the layers no config names (unknown fields are a one-line error)."""
        return Policy() if self.policy is None else Policy.from_dict(self.policy)

    @property
    def decomposes(self) -> bool:
        """Whether the run ends in TT layers: a config is given, or it has ADMM or fine-tuning epochs."""
        return self.config is not None or bool(self.admm_epochs or self.finetune_epochs)

    @property
    def distills(self) -> bool:
        """Whether fine-tuning distils from the dense model: as asked, else where dense weights exist."""
        if self.distill is not None:
            return bool(self.distill) and self.distill_weight > 0
        return self.decomposes and (self.pretrain_epochs > 0 or self.init is not None) and self.distill_weight > 0

    @property
    def default_finetune_lr(self) -> float:
        """Fine-tuning's rate unless given: a tenth of `lr` where the TT model starts from trained weights (it
        refines them; the full rate threw a converged model off), else `lr` (a TT model trained from scratch)."""
        trained = self.pretrain_epochs > 0 or self.init is not None or self.admm_epochs > 0
        return self.lr * FINETUNE_SHARE if trained else self.lr

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
