"""Output paths are checked before any work and written atomically (ttplan/files.py)."""

from __future__ import annotations

import os

import pytest

from ttplan.errors import TTPlanError
from ttplan.files import atomic_write, atomic_write_text, check_writable, written


def test_check_writable_accepts_new_nested_path(tmp_path):
    target = tmp_path / "a" / "b" / "report.md"
    assert check_writable(target) == target
    assert not (tmp_path / "a").exists() and os.listdir(tmp_path) == []  # no probe or folder left behind


@pytest.mark.parametrize("case, words", [
    ("folder", "is a folder"),
    ("parent_file", "is a file, not a folder"),
    ("system", "cannot create files in"),
])
def test_check_writable_refuses_in_one_line(tmp_path, case, words):
    (tmp_path / "plain").write_text("x")
    path = {"folder": tmp_path, "parent_file": tmp_path / "plain" / "x.md", "system": "/proc/ttplan.md"}[case]
    with pytest.raises(TTPlanError, match=words) as info:
        check_writable(path, "--out")
    assert "\n" not in str(info.value) and str(info.value).startswith("--out ")


def test_atomic_write_reports_replacement_and_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "r.md"
    assert atomic_write_text(path, "one\n") is False
    assert atomic_write_text(path, "two\n") is True and path.read_text() == "two\n"

    def broken(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, broken)
    assert path.read_text() == "two\n" and sorted(os.listdir(tmp_path)) == ["r.md"]
    assert written(path, True) == f"replaced {path}" and written(path, False) == f"wrote {path}"
