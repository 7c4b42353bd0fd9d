"""The committed plan reports are what `scripts/plan_reports.sh` writes today, byte for byte (`--check` regenerates
them into a temporary folder and compares; about two minutes, so marked slow)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_committed_plan_reports_are_reproduced_byte_for_byte(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}  # plans by MACs never read it; nor does this test
    done = subprocess.run(["bash", str(ROOT / "scripts" / "plan_reports.sh"), "--check"], capture_output=True,
                          text=True, timeout=1200, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "plan reports match the committed ones byte for byte" in done.stdout
