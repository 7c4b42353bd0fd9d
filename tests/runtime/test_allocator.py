"""`ttplan.runtime.allocator`: glibc keeps freed memory for reuse once asked to, and bad arguments are one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ttplan.runtime.allocator import _glibc, minor_page_faults, retain_freed_memory, set_malloc

# Five forwards of a small conv stack (4 MiB activations) after three warm-ups: the minor page faults of those
# five. Run in a child process: retaining freed memory changes the whole process.
CHILD = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from ttplan.runtime.allocator import minor_page_faults, retain_freed_memory
    if sys.argv[1] == "retain":
        assert retain_freed_memory()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    layers = [m for _ in range(4) for m in (nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())]
    model = nn.Sequential(*layers).eval()
    x = torch.randn(8, 32, 64, 64)
    with torch.no_grad():
        for _ in range(3):
            model(x)
        before = minor_page_faults()
        for _ in range(5):
            model(x)
    print(minor_page_faults() - before)
""")


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120,
                          check=True)
    return int(done.stdout.strip())


@pytest.mark.skipif(_glibc() is None or minor_page_faults() is None, reason="needs glibc and getrusage")
def test_retained_memory_is_reused_without_page_faults():
    pages = (4 << 20) // 4096  # of one activation
    default, retained = _faults("default"), _faults("retain")
    assert default > 5 * pages  # glibc maps freed activations anew: more than one activation's pages per forward
    # reused: at most a few stray blocks in five forwards, a small part of the default (seen: 0 pages mostly, once
    # one activation's worth, once three, against 60,000-80,000 pages with glibc's defaults)
    assert retained <= 4 * pages and 8 * retained < default


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match=r"limit=0: expected a positive number of bytes"):
        retain_freed_memory(0)
    with pytest.raises(ValueError, match=r"limit=True"):
        retain_freed_memory(True)
    with pytest.raises(ValueError, match=r"malloc='keep': expected one of default, retain"):
        set_malloc("keep")


def test_default_mode_changes_nothing():
    assert set_malloc("default") == "the C allocator as the process found it"
