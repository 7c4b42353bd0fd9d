"""The run folder's lock (ttplan/training/run_folder.py): one live run per folder; a second `train --out` or a
`--resume` of a live run is refused in one line; a lock left by a dead process is no lock."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

import ttplan.training.run as run_module
from tests.helpers.cli import one_line_error, run
from ttplan.errors import TTPlanError
from ttplan.training.run import CHECKPOINT, TrainConfig, resume, train
from ttplan.training.run_folder import LOCK, locked_run_dir

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
sys.stdin.read()  # hold the lock until the test closes stdin
"""


@pytest.fixture
def held_elsewhere():
    """`hold(folder)`: another process holds `folder`'s lock until the test ends."""
    processes = []

    def hold(folder):
        folder.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder / LOCK)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "locked"
        return process.pid

    yield hold
    for process in processes:
        process.stdin.close()
        process.wait(timeout=30)


def test_a_second_lock_on_a_live_folder_is_refused_and_released_with_the_first(tmp_path):
    folder = tmp_path / "run"
    with locked_run_dir(folder, new=True):
        assert (folder / LOCK).read_text().strip() == str(os.getpid())
        with pytest.raises(TTPlanError) as info:
            with locked_run_dir(folder, new=True):
                pass
        message = str(info.value)
        assert "is in use by a live ttplan train" in message and f"(pid {os.getpid()})" in message
        assert "\n" not in message and str(folder) in message
    assert not folder.exists()  # created for the run and left empty: removed with the lock
    with locked_run_dir(folder, new=True):
        pass


def test_a_lock_held_by_another_process_refuses_train_and_resume_before_any_work(tmp_path, monkeypatch,
                                                                                 held_elsewhere):
    def no_work(*args, **kwargs):
        raise AssertionError("the run started although its folder is locked")

    monkeypatch.setattr(run_module, "_build", no_work)
    folder = tmp_path / "run"
    pid = held_elsewhere(folder)
    with pytest.raises(TTPlanError, match=rf"in use by a live ttplan train \(pid {pid}\).*choose another --out"):
        train(TrainConfig(pretrain_epochs=1, admm_epochs=0, finetune_epochs=0), folder)
    (folder / CHECKPOINT).write_bytes(b"a live run's checkpoint")
    with pytest.raises(TTPlanError, match=rf"\(pid {pid}\).*resume it once that run has ended"):
        resume(folder)


def test_a_lock_file_left_by_a_dead_process_is_no_lock(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK).write_text(dead.stdout)  # a run killed with SIGKILL leaves its lock file; the OS dropped the lock
    with locked_run_dir(folder, new=True) as path:
        assert path == folder and (folder / LOCK).read_text().strip() == str(os.getpid())
    assert not (folder / LOCK).exists()


def test_two_trains_started_together_one_runs_the_other_is_refused(tmp_path, monkeypatch):
    """Both pass the new-folder check at once; the lock lets exactly one of them start."""
    started, finish = threading.Event(), threading.Event()

    class Stop(Exception):
        pass

    def build(*args, **kwargs):
        started.set()
        finish.wait(timeout=60)
        raise Stop

    monkeypatch.setattr(run_module, "_build", build)
    cfg = TrainConfig(pretrain_epochs=1, admm_epochs=0, finetune_epochs=0)
    folder = tmp_path / "run"
    errors = []

    def first() -> None:
        try:
            train(cfg, folder)
        except Stop:
            pass
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(timeout=60)
        with pytest.raises(TTPlanError, match="is in use by a live ttplan train"):
            train(cfg, folder)
    finally:
        finish.set()
        thread.join(timeout=60)
    assert not errors


def test_cli_refuses_out_and_resume_of_a_live_run_in_one_line(tmp_path, held_elsewhere):
    folder = tmp_path / "run"
    pid = held_elsewhere(folder)
    args = ["train", "--pretrain-epochs", "1", "--admm-epochs", "0", "--finetune-epochs", "0", "--threads", "1"]
    one_line_error(run([*args, "--out", str(folder)]), "is in use by a live ttplan train", f"(pid {pid})")
    (folder / CHECKPOINT).write_bytes(b"a live run's checkpoint")
    one_line_error(run(["train", "--resume", str(folder)]), "is in use by a live ttplan train", f"(pid {pid})")
