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


def _special(tmp_path, kind):
    """A path in `tmp_path` holding a FIFO, a socket, a character device (root only) or a folder."""
    import socket
    import stat

    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()
    elif kind == "device":
        try:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a private /dev/null twin
        except PermissionError:
            pytest.skip("making a device file needs root")
    else:
        path.mkdir()
    return path


@pytest.mark.parametrize("kind, words", [
    ("fifo", "is a FIFO"), ("socket", "is a socket"), ("device", "is a character device"), ("folder", "is a folder"),
])
def test_an_existing_non_regular_output_is_refused_and_left_alone(tmp_path, kind, words):
    import stat

    path = _special(tmp_path, kind)
    mode = path.lstat().st_mode
    for attempt in (lambda: check_writable(path, "--out"), lambda: atomic_write_text(path, "x")):
        with pytest.raises(TTPlanError, match=words) as info:
            attempt()
        assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert path.lstat().st_mode == mode and not stat.S_ISREG(mode)
    assert sorted(os.listdir(tmp_path)) == [kind]  # no temporary left behind


def test_a_link_to_a_regular_file_is_written_through_and_stays_a_link(tmp_path):
    real = tmp_path / "real" / "report.md"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    assert check_writable(link) == link
    assert atomic_write_text(link, "new\n") is True
    assert link.is_symlink() and real.read_text() == "new\n"
    assert sorted(os.listdir(real.parent)) == ["report.md"]


@pytest.mark.parametrize("target, words", [
    ("fifo", "symbolic link to .*a FIFO"),
    ("missing", "symbolic link to .*which does not exist"),
    ("/proc/self/fd/1", "symbolic link"),  # a terminal, a pipe or pytest's capture file: never replaced
])
def test_a_link_to_anything_but_a_regular_file_is_refused(tmp_path, target, words):
    if target == "/proc/self/fd/1":
        if os.path.isfile(os.path.realpath(target)):
            pytest.skip("stdout is a regular file here: the link is followed to it")
        pointed = target
    else:
        pointed = _special(tmp_path, "fifo") if target == "fifo" else tmp_path / "missing"
    link = tmp_path / "link"
    link.symlink_to(pointed)
    with pytest.raises(TTPlanError, match=words):
        check_writable(link, "--out")
    with pytest.raises(TTPlanError, match=words):
        atomic_write_text(link, "x")
    assert link.is_symlink() and os.readlink(link) == str(pointed)



@pytest.mark.parametrize("mode", [0o600, 0o640, 0o755])
def test_a_replaced_file_keeps_its_permission_bits_and_a_new_one_gets_the_umasks(tmp_path, mode):
    """A private file rewritten by ttplan stays private: the rename used to leave every file 0o666 less the umask."""
    path = tmp_path / "config.json"
    path.write_text("old\n")
    path.chmod(mode)
    assert atomic_write_text(path, "new\n") is True
    assert path.read_text() == "new\n" and (path.stat().st_mode & 0o777) == mode
    umask = os.umask(0o027)
    try:
        fresh = tmp_path / "fresh.json"
        atomic_write_text(fresh, "x\n")
        assert fresh.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)
