"""The option groups every command shares (`ttplan/cli/options.py`), as a user meets them."""

from __future__ import annotations

import pytest

from tests.helpers.cli import one_line_error, run
from ttplan.cli import options


@pytest.mark.parametrize("command", [["bench", "latency"], ["bench", "model", "resnet20"], ["calibrate"],
                                     ["train", "--arch", "resnet20"]])
def test_more_threads_than_cpus_is_refused(command, monkeypatch):
    """`--threads 1000` on 2 cores was accepted silently (issue #25, item 20): one line naming the value and the
    range, exit 2, before any work; the CPU count itself is accepted."""
    monkeypatch.setattr(options.os, "cpu_count", lambda: 2)
    one_line_error(run([*command, "--threads", "1000"]), "'1000'", "expected 1 to 2", "os.cpu_count()")
    one_line_error(run([*command, "--threads", "0"]), "'0'", "expected 1 to 2")
    assert options.Threads().convert("2", None, None) == 2
