"""What every command promises about its outputs: paths checked before any work, one line and exit 2 for
conflicting options, atomic writes that say "replaced", Ctrl-C as exit 130 with where to resume, fast help."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import ttplan.arch.request
import ttplan.cli.train
from tests.helpers.cli import GEOMETRY, one_line_error, run
from ttplan.cli.main import COMMANDS, SUMMARIES, cli
from ttplan.errors import TTPlanError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", [
    ["plan", "resnet20", "--out"],
    ["sweep", *GEOMETRY, "--ranks", "4", "--json", "--out"],
    ["emit", "-i", "8", "-o", "8", "--rank", "2", "--out"],
    ["emit", "--arch", "resnet20", "--out"],
    ["bench", "planner", "--out"],
    ["bench", "latency", "--out"],
    ["plot", "plan", *GEOMETRY, "--rank", "4", "--out"],
])
@pytest.mark.parametrize("where, needle", [
    ("folder", "is a folder"),
    ("under_a_file", "is a file, not a folder"),
    ("system", "cannot create files in"),
])
def test_every_writer_refuses_an_unwritable_path_in_one_line(tmp_path, command, where, needle) -> None:
    (tmp_path / "plain").write_text("x")
    path = {"folder": tmp_path, "under_a_file": tmp_path / "plain" / "x.md", "system": "/sys/ttplan/x.md"}[where]
    if command[0] == "plot" and where == "folder":
        path = tmp_path / "plain" / "x"  # a prefix: PREFIX.png must not be under a file
        needle = "is a file, not a folder"
    start = time.perf_counter()
    one_line_error(run([*command, str(path)]), needle)
    assert time.perf_counter() - start < 5  # before any planning or benchmarking
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]



@pytest.mark.parametrize("command", [
    ["emit", "--arch", "resnet20", "--out"],
    ["plan", "resnet20", "--save-config"],
    ["sweep", *GEOMETRY, "--ranks", "4", "--json", "--out"],
    ["plot", "plan", *GEOMETRY, "--rank", "4", "--out"],
])
@pytest.mark.parametrize("what", ["fifo", "link_to_fifo"])
def test_a_fifo_or_a_link_to_one_as_output_is_refused_and_left_alone(tmp_path, command, what) -> None:
    """The atomic rename would replace a FIFO (or a device such as /dev/null) with a regular file."""
    fifo = tmp_path / ("x.png" if command[0] == "plot" else "x")
    os.mkfifo(fifo)
    path = fifo.with_suffix("") if command[0] == "plot" else fifo  # plot takes a prefix: PREFIX.png is the FIFO
    if what == "link_to_fifo":
        path = tmp_path / "link"
        path.symlink_to(fifo)
        if command[0] == "plot":
            (tmp_path / "link.png").symlink_to(fifo)
    start = time.perf_counter()
    one_line_error(run([*command, str(path)]), "FIFO", "expected a new path, an existing regular file")
    assert time.perf_counter() - start < 5  # before any planning
    assert fifo.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [fifo.name] + (["link"] + (["link.png"] if command[0] == "plot" else []) if what == "link_to_fifo" else []))

def test_train_out_that_is_a_file_is_one_line(tmp_path) -> None:
    (tmp_path / "plain").write_text("x")
    one_line_error(run(["train", "--pretrain-epochs", "1", "--out", str(tmp_path / "plain")]), "is a file")


def test_interrupted_plan_exits_130_and_writes_nothing(tmp_path, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ttplan.arch.request, "run_request", interrupted)
    out = tmp_path / "r.md"
    result = run(["plan", "resnet20", "--out", str(out)])
    assert result.exit_code == 130
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Interrupted: nothing was written")
    assert not out.exists()


@pytest.mark.parametrize("checkpoint", [True, False])
def test_interrupted_train_names_the_run_folder_to_resume(tmp_path, monkeypatch, checkpoint) -> None:
    run_dir = tmp_path / "run"

    def interrupted(cfg, out_dir, progress=None, on_epoch_end=None):
        Path(out_dir).mkdir()
        if checkpoint:
            (Path(out_dir) / ttplan.cli.train.CHECKPOINT).write_bytes(b"")
        raise KeyboardInterrupt

    import ttplan.training.run

    monkeypatch.setattr(ttplan.training.run, "train", interrupted)  # the command imports it when a run starts
    result = run(["train", "--pretrain-epochs", "1", "--admm-epochs", "0", "--finetune-epochs", "0",
                  "--out", str(run_dir)])
    assert result.exit_code == 130
    line = result.stderr.strip()
    assert line.startswith("Interrupted: ") and str(run_dir) in line and "\n" not in line
    assert (f"ttplan train --resume {run_dir}" in line) == checkpoint


@pytest.mark.slow
def test_ctrl_c_during_a_real_run_exits_130_and_the_run_resumes(tmp_path) -> None:
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "ttplan", "train", "--pretrain-epochs", "200", "--admm-epochs", "0",
            "--finetune-epochs", "0", "--image-size", "8", "--batch-size", "32", "--max-batches", "1",
            "--threads", "1", "--out", str(run_dir)]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run_dir / ttplan.cli.train.CHECKPOINT).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert f"ttplan train --resume {run_dir}" in stderr.strip().splitlines()[-1]


def test_help_imports_neither_torch_nor_matplotlib() -> None:
    code = ("import sys\nfrom ttplan.cli.main import cli\n"
            "for args in (['--help'], ['layer', '--help'], ['bench', '--help'], ['bench', 'model', '--help'],"
            " ['train', '--help'], ['calibrate', '--help']):\n"
            "    try:\n        cli(args)\n    except SystemExit:\n        pass\n"
            "print([m for m in ('torch', 'matplotlib', 'networkx') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr


def test_command_summaries_are_the_commands_own_first_paragraphs() -> None:
    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert " ".join(command.help.split("\n\n")[0].split()) == SUMMARIES[name]
    assert list(COMMANDS) == list(SUMMARIES)


def test_help_lists_every_command() -> None:
    result = run(["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.stdout


def test_dataset_and_device_choices_come_from_the_registries() -> None:
    from ttplan.training.datasets import DATASETS
    from ttplan.training.run import DEVICES

    text = run(["train", "--help"]).stdout
    assert all(name in text for name in DATASETS) and "module:callable" in text and f"[{'|'.join(DEVICES)}]" in text


def test_emitted_json_report_is_replaced_atomically(tmp_path) -> None:
    out = tmp_path / "sweep.json"
    out.write_text("old")
    result = run(["sweep", *GEOMETRY, "--ranks", "4", "--out", str(out)])
    assert result.exit_code == 0 and f"replaced {out}" in result.stderr
    assert json.loads(out.read_text())["points"]


def test_policy_group_declares_the_same_options_with_the_same_checks() -> None:
    from ttplan.cli.options import policy_from_options, policy_options

    @click.command()
    @policy_options(with_config=False, with_skip_worse=False)
    def probe(**opts) -> None:
        click.echo(policy_from_options(opts).describe())

    names = {p.name for p in probe.params}
    assert {"kind", "rank", "rank_fraction", "order", "skip_first", "skip_1x1", "min_channels", "linear",
            "unnamed"} == names
    assert CliRunner().invoke(probe, ["--rank", "4"]).output.startswith("hodec, order 3")
    with pytest.raises(TTPlanError, match="--rank 4 and --rank-fraction 0.3"):
        CliRunner().invoke(probe, ["--rank", "4", "--rank-fraction", "0.3"], catch_exceptions=False)
