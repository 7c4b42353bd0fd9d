"""The run folder: which folders `train` may write into, and which recorded settings a resume may change.

`train` writes only into a new or empty folder; a folder that holds a run is continued with `resume`,
and a folder holding anything else is refused. A resume continues the run as recorded in its checkpoint;
only `RESUMABLE` settings may differ, each such change is recorded (`changes` in metrics.json), and any
other difference is refused with one line.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ttplan.errors import TTPlanError
from ttplan.files import check_writable_dir
from ttplan.training.config import TrainConfig

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
DENSE_WEIGHTS = "dense.pt"
TT_MODEL = "model_tt.pt"
PLAN = "plan.json"
CURVES = "curves"

#: settings a resume may change: deliberate, recorded in the run (learning rates and epoch counts change the
#: result; device and threads change only the floating-point rounding)
RESUMABLE = ("lr", "finetune_lr", "pretrain_epochs", "admm_epochs", "finetune_epochs", "device", "threads")
EPOCHS = ("pretrain_epochs", "admm_epochs", "finetune_epochs")


def check_new_run_dir(path: str | Path) -> Path:
    """A folder `train` may start a run in: new (its parent creatable) or empty; anything else is one line."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TTPlanError(f"run folder {str(path)!r} is a file: give a new or empty folder for --out")
    if path.is_dir():
        entries = sorted(p.name for p in path.iterdir())
        if CHECKPOINT in entries:
            raise TTPlanError(f"run folder {str(path)!r} already holds a run: continue it with --resume {path} "
                              "or choose another --out")
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise TTPlanError(f"run folder {str(path)!r} is not empty ({shown}): train writes only into a new or "
                              "empty folder; choose another --out")
    return check_writable_dir(path, "run folder")  # a parent that is a file, permissions, read-only mounts


def check_resume_dir(path: str | Path) -> Path:
    """A folder holding a started run (its checkpoint is read and checked by the caller)."""
    path = Path(path)
    if not path.exists():
        raise TTPlanError(f"run folder {str(path)!r} does not exist: give the --out folder of a started run")
    if not path.is_dir():
        raise TTPlanError(f"run folder {str(path)!r} is a file: give the --out folder of a started run")
    if not (path / CHECKPOINT).is_file():
        raise TTPlanError(f"run folder {str(path)!r} has no {CHECKPOINT}: the run never finished an epoch; "
                          "start it again with --out")
    return check_writable_dir(path, "run folder")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def apply_changes(cfg: TrainConfig, options: dict[str, Any], done: int) -> tuple[TrainConfig, list[dict[str, Any]]]:
    """The recorded config with the resumable `options` applied after `done` epochs, and the changes made.

    Options equal to the recorded value are no change. An option outside `RESUMABLE` that differs is refused,
    and so is an epoch count that would rewrite epochs already run.
    """
    recorded = cfg.to_dict()
    unknown = sorted(set(options) - set(recorded))
    if unknown:
        raise TTPlanError(f"resume got unknown setting(s) {', '.join(unknown)}; resumable: {', '.join(RESUMABLE)}")
    changed = {name: value for name, value in options.items() if value != recorded[name]}
    for name, value in changed.items():
        if name not in RESUMABLE:
            raise TTPlanError(
                f"{_flag(name)} {value!r} differs from the run's recorded {recorded[name]!r} and cannot change on "
                f"resume (only {', '.join(_flag(n) for n in RESUMABLE)} can): drop it, or start a new run with --out"
            )
    new = replace(cfg, **changed)
    new.validate()
    if new.stages()[:done] != cfg.stages()[:done]:
        epochs = ", ".join(f"{_flag(n)} {getattr(new, n)}" for n in EPOCHS if n in changed)
        raise TTPlanError(f"{epochs}: {done} epochs already ran as {_runs(cfg.stages()[:done])}; epoch counts may "
                          "change only for epochs not yet run")
    return new, [{"after_epoch": done, "setting": name, "from": recorded[name], "to": value}
                 for name, value in changed.items()]


def _runs(stages: list[str]) -> str:
    """`2 pretrain + 1 admm` for a list of stages."""
    counts: dict[str, int] = {}
    for stage in stages:
        counts[stage] = counts.get(stage, 0) + 1
    return " + ".join(f"{n} {stage}" for stage, n in counts.items())
