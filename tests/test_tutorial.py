"""docs/tutorial.md runs: its files are written and its commands run in order (training capped at two batches an
epoch), then its check and deploy scripts; the emitted model equals the run's and counts the planned MACs."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).parents[1] / "docs" / "tutorial.md"

pytestmark = pytest.mark.slow  # plans, trains and emits in child processes


def blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of one language, in order."""
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{shlex.join(command)}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_the_tutorial_runs_as_written(tmp_path):
    text = TUTORIAL.read_text()
    files = {}
    for block in blocks(text, "python"):
        name = block.splitlines()[0].removeprefix("# ").strip()
        assert name.endswith(".py"), block.splitlines()[0]
        files[name] = block
        (tmp_path / name).write_text(block)
    assert {"mynet.py", "mydata.py", "check.py", "deploy.py"} <= set(files)
    outputs = []
    for block in blocks(text, "bash"):
        for line in block.strip().splitlines():
            words = shlex.split(line)
            if words[0] == "ttplan":
                words = [sys.executable, "-m", "ttplan", *words[1:]]
                if words[3] == "train":
                    words += ["--max-batches", "2"]
            outputs.append(run(words, tmp_path))
    planned = int(re.search(r"model MACs ([\d,]+)", outputs[-1]).group(1).replace(",", ""))
    check = run([sys.executable, "check.py"], tmp_path)
    difference = float(re.search(r"max \|difference\|: (\S+)", check).group(1))
    flops = int(re.search(r"FLOPs at batch 1: (\d+)", check).group(1))
    assert difference <= 1e-5 and flops == 2 * planned, check
    deploy = files["deploy.py"]
    if importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnx") is None:
        deploy = "\n".join(line for line in deploy.splitlines() if "onnx" not in line)  # the [deploy] extra
    (tmp_path / "deploy.py").write_text(deploy)
    shown = run([sys.executable, "-c", "import sys; sys.modules['ttplan'] = None; exec(open('deploy.py').read())"],
                tmp_path)
    assert "output (8, 10)" in shown and "exported ops: ['aten']" in shown
