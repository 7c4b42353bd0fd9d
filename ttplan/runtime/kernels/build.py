"""Compile `tucker.c` once per machine and load it with ctypes; None (and why) wherever that is not possible.

The shared library is built with the C compiler named by `$CC`, else the one Python was built with, else `cc`,
`gcc` or `clang` on the PATH, for this machine's processor (`-march=native`) and with OpenMP where the compiler
has it (else single-threaded). It is cached in `<ttplan cache>/kernels/`, named by a hash of the source, the
compiler, the flags and the processor, and written atomically, so concurrent processes and a shared home
directory are safe. Nothing here runs at import time; the first fused forward pays the build (about a second).
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
from dataclasses import dataclass
from pathlib import Path

from ttplan.core.fusion import TILE
from ttplan.core.latency import cache_dir
from ttplan.errors import TTPlanError

SOURCE = Path(__file__).with_name("tucker.c")
#: tried in order: with OpenMP (threads), then without it (one thread)
FLAG_SETS = (("-O3", "-march=native", "-fopenmp"), ("-O3", "-march=native"), ("-O3",))
SYMBOL = "ttplan_tucker_conv2d"


@dataclass(frozen=True)
class KernelStatus:
    """Whether the fused kernel could be built here: the library's path and flags, or the reason it could not."""

    available: bool
    detail: str
    threaded: bool = False


def find_compiler() -> str | None:
    """The C compiler to use: `$CC`, Python's own, or the first of cc, gcc, clang on the PATH."""
    candidates = [os.environ.get("CC", ""), (sysconfig.get_config_var("CC") or "")]
    for name in candidates:
        words = shlex.split(name)
        if words and shutil.which(words[0]):
            return words[0]
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


def fusion_wanted(fused: bool | None, channels_last: bool) -> bool:
    """Whether planning may run layers by the fused kernel: as asked, else (None) wherever it can be built, i.e. for
    NCHW maps with a C compiler here. Torch-free, and nothing is compiled: a failed build falls back to stock ops."""
    if fused and channels_last:
        raise TTPlanError("fused=True (--fuse) with channels_last=True (--channels-last): the fused kernel runs NCHW "
                          "maps; drop one of them")
    return (not channels_last and find_compiler() is not None) if fused is None else fused


def _processor() -> str:
    """What `-march=native` depends on: the CPU's model and flags where the system says, else the architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            lines = [line for line in handle if line.startswith(("model name", "flags", "Features"))]
        return platform.machine() + "".join(sorted(set(lines)))
    except OSError:
        return platform.machine() + platform.processor()


def _compile(compiler: str, flags: tuple[str, ...], target: Path) -> bool:
    """Build `SOURCE` into `target` (atomically); False if the compiler refuses these flags."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=target.stem, suffix=".tmp")
    os.close(handle)
    try:
        result = subprocess.run([compiler, *flags, "-shared", "-fPIC", "-o", temporary, str(SOURCE)],
                                capture_output=True, timeout=120)
        if result.returncode != 0:
            return False
        os.replace(temporary, target)
        return True
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


@functools.lru_cache(maxsize=1)
def load() -> tuple[ctypes.CDLL | None, KernelStatus]:
    """The loaded kernel library and its status, built on first use and cached on disk and for the process."""
    compiler = find_compiler()
    if compiler is None:
        return None, KernelStatus(False, "no C compiler found ($CC, cc, gcc or clang): stock torch ops are used")
    source = SOURCE.read_bytes()
    for flags in FLAG_SETS:
        key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(flags).encode(),
                                         _processor().encode()])).hexdigest()[:16]
        target = cache_dir() / "kernels" / f"tucker-{key}.so"
        if not target.exists() and not _compile(compiler, flags, target):
            continue
        try:
            library = ctypes.CDLL(str(target))
            function = getattr(library, SYMBOL)
            if library.ttplan_tile_rows() != TILE[0]:
                continue  # a library built from another version of the source than this package's packing expects
        except (OSError, AttributeError):
            continue
        function.restype = ctypes.c_int
        function.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p] + \
            [ctypes.c_int] * 3 + [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p] + [ctypes.c_int] * 8 + \
            [ctypes.c_void_p, ctypes.c_int]
        return library, KernelStatus(True, f"{target} ({compiler} {' '.join(flags)})", "-fopenmp" in flags)
    return None, KernelStatus(False, f"{compiler} could not build {SOURCE.name}: stock torch ops are used")


def kernel_status() -> KernelStatus:
    """Whether the fused kernel is available on this machine (building it if need be), and why not."""
    return load()[1]
