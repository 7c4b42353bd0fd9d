"""How the C allocator hands memory to torch on the CPU: the page faults it costs, and a setting that avoids them.

torch allocates every CPU tensor with the C library's `malloc`. glibc returns large freed blocks to the
operating system (blocks above its mmap threshold, and free memory above its trim threshold at the top of
the heap), so the next forward maps them again and touches every page anew: a minor page fault per 4 KiB,
each zeroed by the kernel, thousands per forward of a ResNet at batch 32 and a different number in
every process (`ttplan bench model` counts them). A TT layer runs more,
smaller ops than the conv it replaces, so it tends to pay more of this.

`retain_freed_memory()` sets both glibc thresholds high so that freed blocks stay in the process and are
reused, as torch's CUDA caching allocator does on the GPU. It changes the whole process (like
`torch.set_num_threads`), keeps the peak memory mapped after it is freed, and is never called implicitly:
the user, or a benchmark asked to with `--malloc retain`, calls it. The same effect from outside the
process: `MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824` (both; one alone makes it
worse), or an allocator such as jemalloc or tcmalloc preloaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from ttplan.errors import TTPlanError

#: how a benchmark leaves the allocator: as the process found it, or retaining freed memory
MALLOC_MODES = ("default", "retain")

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: bytes: blocks up to this size come from the heap and freed memory up to this much stays mapped
RETAIN_BYTES = 1 << 30


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has `mallopt` and `gnu_get_libc_version`), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return None
    return libc


def retain_freed_memory(limit: int = RETAIN_BYTES) -> bool:
    """Make glibc keep freed blocks of up to `limit` bytes for reuse instead of returning them to the system.

    Returns True when both thresholds were set, False where the C library is not glibc (nothing changes).
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise TTPlanError(f"limit={limit!r}: expected a positive number of bytes, e.g. {RETAIN_BYTES}")
    libc = _glibc()
    if libc is None:
        return False
    mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(min(limit, 2**31 - 1)))
    trim_ok = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(min(limit, 2**31 - 1)))
    return bool(mmap_ok and trim_ok)


def set_malloc(mode: str) -> str:
    """Apply a `MALLOC_MODES` mode; returns what was done, in words, for a report."""
    if mode not in MALLOC_MODES:
        raise TTPlanError(f"malloc={mode!r}: expected one of {', '.join(MALLOC_MODES)}")
    if mode == "default":
        return "the C allocator as the process found it"
    if retain_freed_memory():
        return "glibc set to retain freed memory (ttplan.runtime.allocator.retain_freed_memory())"
    return "retain asked for, but the C library is not glibc: allocator unchanged"


def minor_page_faults() -> int | None:
    """Minor page faults of this process so far (None where the platform does not count them)."""
    try:
        import resource
    except ImportError:
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


__all__ = ["MALLOC_MODES", "RETAIN_BYTES", "minor_page_faults", "retain_freed_memory", "set_malloc"]
