"""Compile `tucker.c` once per machine and load it with ctypes; None (and why) wherever that is not possible.

The shared library is built with the C compiler named by `$CC`, else the one Python was built with, else `cc`,
`gcc` or `clang` on the PATH, for this machine's processor (`-march=native`) and with OpenMP where the compiler
has it (else single-threaded). It is cached in `<ttplan cache>/kernels/`, named by a hash of the source, the
compiler, the flags and the processor, and written atomically, so concurrent processes and a shared home
directory are safe. A build enters the cache only once it loads, followed by a sidecar (`.so.sha256`: its sha256
and size); a cached library is loaded only when its sidecar vouches for it, else built again (a truncated library
loaded as it was killed the process with SIGBUS). A cache folder that cannot be written or read is one warning
and stock ops. Nothing here runs at import time; the first fused forward pays the build (about a second).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from ttplan.core.fusion import THIN, TILE
from ttplan.files import cache_dir

SOURCE = Path(__file__).with_name("tucker.c")
#: tried in order: with OpenMP (threads), then without it (one thread)
FLAG_SETS = (("-O3", "-march=native", "-fopenmp"), ("-O3", "-march=native"), ("-O3",))
SYMBOL = "ttplan_tucker_run"


@dataclass(frozen=True)
class KernelStatus:
    """Whether the fused kernel could be built here: the library's path and flags, or the reason it could not."""

    available: bool
    detail: str
    threaded: bool = False


def find_compiler() -> str | None:
    """The C compiler to use, as a command line: `$CC`, Python's own, or the first of cc, gcc, clang on the PATH. A
    command of several words is kept whole (`ccache gcc`, `gcc -m64`: its first word on the PATH)."""
    candidates = [os.environ.get("CC", ""), (sysconfig.get_config_var("CC") or "")]
    for name in candidates:
        words = shlex.split(name)
        if words and shutil.which(words[0]):
            return shlex.join(words)
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


def _processor() -> str:
    """What `-march=native` depends on: the CPU's model and flags where the system says, else the architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            lines = [line for line in handle if line.startswith(("model name", "flags", "Features"))]
        return platform.machine() + "".join(sorted(set(lines)))
    except OSError:
        return platform.machine() + platform.processor()


def _open(path: Path) -> ctypes.CDLL | None:
    """The library at `path` with its entry points typed, or None if it does not load or was built from another
    version of the source than this package's packing expects."""
    try:
        library = ctypes.CDLL(str(path))
        function, bind, free, chain = (getattr(library, name) for name in (
            SYMBOL, "ttplan_tucker_bind", "ttplan_tucker_free", "ttplan_tucker_chain"))
        if library.ttplan_tile_rows() != TILE[0] or library.ttplan_thin_channels() != THIN:
            return None
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_void_p, ctypes.c_int] + [ctypes.c_void_p] * 3 + [ctypes.c_int]  # handle, B, x, y, res
    bind.restype = ctypes.c_void_p
    bind.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p] + [ctypes.c_int] * 3 + [ctypes.c_void_p, ctypes.c_int,
                                                                                  ctypes.c_void_p] + \
        [ctypes.c_int] * 8 + [ctypes.c_void_p] * 2 + [ctypes.c_int] * 3  # ..., OW, scale, bias; relu, groups
    free.restype = None
    free.argtypes = [ctypes.c_void_p]
    chain.restype = ctypes.c_int
    chain.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                      ctypes.c_int]  # handles, blocks, B, x, t, outs, threads
    return library


def _stamp(data: bytes) -> str:
    """What the sidecar of a library holds: its sha256 and its size in bytes."""
    return f"{hashlib.sha256(data).hexdigest()} {len(data)}\n"


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _load_cached(target: Path) -> ctypes.CDLL | None:
    """The cached library at `target` if its sidecar vouches for it (size, then sha256), else None. Checked before
    loading: a truncated library maps pages past its end, and running them is a SIGBUS that kills the process."""
    try:
        stamp = _sidecar(target).read_text()
        if target.stat().st_size != int(stamp.split()[1]):
            return None
        data = target.read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return _open(target) if _stamp(data) == stamp else None


def _write_atomically(target: Path, data: bytes) -> None:
    """Write `data` to `target` (readable by all, as a shared cache needs) by a temporary file and one rename."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _build(compiler: str, flags: tuple[str, ...], target: Path) -> ctypes.CDLL | None:
    """Build `SOURCE` with `flags` and load it; into the cache only if it loads: the library at `target`, then its
    sidecar. None if the compiler refuses these flags or builds nothing loadable (the cache is left as it was).
    Raises OSError where the cache folder cannot be written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=target.stem, suffix=".tmp")
    os.close(handle)
    try:
        try:
            result = subprocess.run([*shlex.split(compiler), *flags, "-shared", "-fPIC", "-o", temporary, str(SOURCE)],
                                    capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return None
        data = Path(temporary).read_bytes()
        library = _open(Path(temporary)) if result.returncode == 0 and data else None
        if library is None:
            return None
        os.chmod(temporary, 0o755)  # readable by all, as a shared cache needs (mkstemp makes it private)
        os.replace(temporary, target)  # the loaded library stays mapped: a rename keeps the file
        _write_atomically(_sidecar(target), _stamp(data).encode())
        return library
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


@functools.lru_cache(maxsize=1)
def load() -> tuple[ctypes.CDLL | None, KernelStatus]:
    """The loaded kernel library and its status, built on first use and cached on disk and for the process. A cache
    folder that cannot be used is one warning, and stock ops run."""
    compiler = find_compiler()
    if compiler is None:
        return None, KernelStatus(False, "no C compiler found ($CC, cc, gcc or clang): stock torch ops are used")
    try:
        source = SOURCE.read_bytes()
    except OSError as error:
        return None, KernelStatus(False, f"{SOURCE} cannot be read ({error}): stock torch ops are used")
    folder = cache_dir() / "kernels"
    for flags in FLAG_SETS:
        key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(flags).encode(),
                                         _processor().encode()])).hexdigest()[:16]
        target = folder / f"tucker-{key}.so"
        try:  # a library that is missing, unverified or does not load is built again with the same flags
            library = _load_cached(target) or _build(compiler, flags, target)
        except OSError as error:
            detail = f"the kernel cache {folder} cannot be used ({error}): stock torch ops are used"
            warnings.warn(f"ttplan: {detail}", RuntimeWarning, stacklevel=2)
            return None, KernelStatus(False, detail)
        if library is not None:
            return library, KernelStatus(True, f"{target} ({compiler} {' '.join(flags)})", "-fopenmp" in flags)
    return None, KernelStatus(False, f"{compiler} could not build {SOURCE.name}: stock torch ops are used")


def kernel_status() -> KernelStatus:
    """Whether the fused kernel is available on this machine (building it if need be), and why not."""
    return load()[1]
