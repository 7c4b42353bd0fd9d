"""The run folder: which folders `train` may write into, and which recorded settings a resume may change.

`train` writes only into a new or empty folder; a folder that holds a run is continued with `resume`,
and a folder holding anything else is refused. A resume continues the run as recorded in its checkpoint;
only `RESUMABLE` settings may differ, each such change is recorded (`changes` in metrics.json), and any
other difference is refused with one line.

While a run is live its folder is locked (`locked_run_dir`): an exclusive `flock` on `run.lock`, held for the
run's life and dropped by the OS when the process ends however it ends, so a second `train --out` or a `--resume`
of the same folder is refused in one line, and a lock file left by a killed run is no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ttplan.errors import TTPlanError
from ttplan.files import PROBE_PREFIX, check_writable_dir
from ttplan.training.config import TrainConfig

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
DENSE_WEIGHTS = "dense.pt"
TT_MODEL = "model_tt.pt"
PLAN = "plan.json"
CURVES = "curves"
#: the lock a live run holds in its folder (it holds the pid of the process that holds it)
LOCK = "run.lock"

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
        # the lock and another process's writability probe are not contents (a run starting there holds them)
        entries = sorted(p.name for p in path.iterdir() if p.name != LOCK and not p.name.startswith(PROBE_PREFIX))
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


@contextlib.contextmanager
def locked_run_dir(path: str | Path, *, new: bool) -> Iterator[Path]:
    """Hold the run folder's lock while the run writes there; a folder another live run holds is one line.

    `new` (`train`): the folder is created if missing and, once locked, checked again to be new or empty, so of
    two runs started together with the same `--out` exactly one starts. A folder this call created is removed
    again if the run leaves it empty.
    """
    path = Path(path)
    created = new and not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    fd = _lock(path, "choose another --out" if new else "resume it once that run has ended (or stop it)")
    try:
        if new:
            check_new_run_dir(path)
        yield path
    finally:
        (path / LOCK).unlink(missing_ok=True)
        os.close(fd)  # unlinked first: whoever opens the lock file next opens a new one and finds it free
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()  # only if empty: a run that failed before writing anything leaves no folder


def _lock(folder: Path, then: str) -> int:
    """An open descriptor of `folder/LOCK` holding its exclusive flock, with this pid written in it."""
    lock = folder / LOCK
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise TTPlanError(f"run folder {str(folder)!r} is in use by a live ttplan train{holder}: two runs "
                              f"cannot share a folder; {then}") from None
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            break
        os.close(fd)  # the holder removed the file as we opened it: lock the one now there
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _holder(fd: int) -> str:
    """` (pid N)` for the process the lock file names, where it names one."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""


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
