"""experiments/admm_digits.py: a tiny run writes its report, figures, runs and config where it is told."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from experiments.admm_digits import main


@pytest.mark.slow
def test_a_tiny_comparison_renders_its_report_into_the_given_paths(tmp_path):
    report, runs, config = tmp_path / "out" / "admm.md", tmp_path / "runs", tmp_path / "hodec.json"
    args = ["--out", report, "--runs", runs, "--config", config, "--image-size", "8", "--pretrain-epochs", "1",
            "--admm-epochs", "1", "--finetune-epochs", "1", "--rho", "0.1", "--max-batches", "2", "--threads", "1"]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = report.read_text()
    assert text.startswith("# ADMM against direct TT decomposition: CIFAR ResNet-20 on the digits")
    assert "`python -m experiments.admm_digits`" in text and f"`{runs}`" in text and f"`{config}`" in text
    rows = [line for line in text.splitlines() if line.startswith(("| direct |", "| admm rho=0.1 |"))]
    assert len(rows) == 2 and all(row.count("|") == 10 for row in rows), rows
    assert "capped at 2 batches" in text
    for arm in ("direct", "admm_rho0.1"):
        assert (report.parent / f"admm_digits_{arm}.png").is_file()
        assert (runs / arm / "metrics.json").is_file()
    assert (runs / "pretrain" / "metrics.json").is_file() and config.is_file()
