"""Files a user points ttplan at: reading them (every way they can be wrong is one line saying what was expected),
checking an output path before any work, and writing atomically (temporary file beside it, then `os.replace`).

An output is a new path or an existing regular file. Anything else that exists there (a device such as
`/dev/null`, a FIFO, a socket, a folder) is refused, since the rename would replace it with a regular file.
A symbolic link is followed: the regular file it points to is written (atomically, beside that file) and the
link is left as it is; a link to anything else, or to nothing, is refused.

`cache_dir` is ttplan's folder in the user's cache: the latency subsystem keeps its profiles and the autotune
cache there (`ttplan.latency`), the runtime its built kernels (`ttplan.runtime.kernels.build`).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from ttplan.errors import TTPlanError


def read_user_text(path: str | Path, what: str, expected: str) -> str:
    """The text of `path`; a missing, non-UTF-8 or empty file is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise TTPlanError(f"{what} {str(path)!r} does not exist or is not a file: expected {expected}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TTPlanError(f"{what} {str(path)!r} is not UTF-8 text: expected {expected}") from None
    except OSError as error:
        raise TTPlanError(f"{what} {str(path)!r} cannot be read ({error.strerror or error}): "
                          f"expected {expected}") from None
    if not text.strip():
        raise TTPlanError(f"{what} {str(path)!r} is empty: expected {expected}")
    return text


def read_user_json(path: str | Path, what: str, expected: str) -> object:
    """Parse `path` as JSON, with `read_user_text`'s errors plus one for invalid JSON."""
    text = read_user_text(path, what, expected)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TTPlanError(
            f"{what} {str(path)!r} is not valid JSON ({err.msg} at line {err.lineno}): expected {expected}"
        ) from None


def cache_dir() -> Path:
    """ttplan's directory in the user's cache (`$XDG_CACHE_HOME/ttplan`, default `~/.cache/ttplan`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ttplan"


def _nearest_existing(path: Path) -> Path:
    """The closest ancestor of `path` (or `path` itself) that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


#: what an existing output path is, by its file type (anything but a regular file is refused)
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))
_ACCEPTED = "expected a new path, an existing regular file, or a symbolic link to one"


def _kind(mode: int) -> str:
    """`a folder`, `a character device`, ... for a file mode that is not a regular file's."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def output_file(path: str | Path, what: str = "output") -> Path:
    """The file a write to `path` lands in: `path` itself (new, or a regular file), or the regular file its
    symbolic link points to; anything else that exists there is a one-line TTPlanError naming it."""
    path = Path(path)
    shown = f"{what} {str(path)!r}"
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        if target is not path:
            raise TTPlanError(f"{shown} is a symbolic link to {str(target)!r}, which does not exist: "
                              f"{_ACCEPTED}") from None
        return path
    except OSError as error:
        if target is not path:
            raise TTPlanError(f"{shown} is a symbolic link that cannot be followed ({error.strerror or error}): "
                              f"{_ACCEPTED}") from None
        return path  # a parent that is a file, permissions: `check_writable` says which
    if stat.S_ISREG(mode):
        return target
    if target is not path:
        raise TTPlanError(f"{shown} is a symbolic link to {str(target)!r}, {_kind(mode)}: {_ACCEPTED}")
    if stat.S_ISDIR(mode):
        raise TTPlanError(f"{shown} is a folder: expected a file name, e.g. {path / 'report.md'}")
    raise TTPlanError(f"{shown} is {_kind(mode)}: {_ACCEPTED} (ttplan writes a new file and renames it into place, "
                      "which would replace it)")


def check_writable(path: str | Path, what: str = "--out") -> Path:
    """`path` as a Path if a file can be written there (parents may be missing); else a one-line TTPlanError.

    Checked before any work, so a long run never ends in a traceback: a folder, device, FIFO or socket given
    as the file (or a link to one), a parent that is a file, and a folder where no file can be created
    (permissions, read-only or system paths). A link to a regular file is checked where that file is.
    """
    path = Path(path)
    shown = f"{what} {str(path)!r}"
    existing = _nearest_existing(output_file(path, what).parent)
    if not existing.is_dir():
        raise TTPlanError(f"{shown}: {str(existing)!r} is a file, not a folder: expected a path inside a folder")
    _probe(existing, shown)
    return path


#: the name of the file `check_writable` creates and removes at once (a folder check may see another's probe)
PROBE_PREFIX = ".ttplan-probe-"


def _probe(folder: Path, shown: str) -> None:
    """Create and remove a file in `folder`: the one test that sees permissions, read-only mounts and system paths."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=PROBE_PREFIX)
    except OSError as error:
        raise TTPlanError(f"{shown}: cannot create files in {str(folder)!r} ({error.strerror or error}): "
                          "expected a writable folder") from None
    os.close(fd)
    os.unlink(probe)


def check_writable_dir(path: str | Path, what: str = "--out") -> Path:
    """`path` as a Path if it is (or can be created as) a folder to write files in; else a one-line TTPlanError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        kind = "a file" if path.is_file() else _kind(path.stat().st_mode)
        raise TTPlanError(f"{what} {str(path)!r} is {kind}: expected a folder (new, or one ttplan made)")
    if not path.is_dir():
        return check_writable(path, what)
    _probe(path, f"{what} {str(path)!r}")
    return path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> bool:
    """Call `write(tmp)` on a temporary file beside `path`, then move it into place; True if a file was replaced.

    An interrupted or failed write leaves the old file (or none) and no temporary behind. A link is followed to
    its regular file; a device, FIFO, socket or folder at `path` is refused (`output_file`), never replaced. A
    replaced file keeps its permission bits (a private file stays private); a new one gets what the umask allows.
    The rename makes a new file: other hard links to the old one keep the old content.
    """
    path = output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replaced = path.exists()
    if replaced:
        mode = stat.S_IMODE(path.stat().st_mode)
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return replaced


def atomic_write_text(path: str | Path, text: str) -> bool:
    """Write UTF-8 text atomically (see `atomic_write`); True if an existing file was replaced."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> bool:
    """Write bytes atomically (see `atomic_write`); True if an existing file was replaced."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_torch_save(obj: object, path: str | Path) -> bool:
    """`torch.save` atomically (see `atomic_write`); True if an existing file was replaced."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_figure_atomic(fig: object, path: str | Path, **savefig_kwargs: object) -> bool:
    """`fig.savefig` atomically, the format taken from `path`'s suffix; True if an existing file was replaced."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or None
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **savefig_kwargs))


def written(path: str | Path, replaced: bool) -> str:
    """The message after writing: `replaced PATH` when a file was there before, else `wrote PATH`."""
    return f"{'replaced' if replaced else 'wrote'} {path}"
