"""The kernel's on-disk cache (`ttplan.runtime.kernels.build`): a cache folder that cannot be used is one warning and
stock ops, never an error in a forward pass; a cached library is loaded only when its sidecar (sha256, size) vouches
for it; a build that produced nothing loadable leaves nothing in the cache."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers.runtime_cases import assert_close, load_source
from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.schemes import merged
from ttplan.core.spec import ConvSpec
from ttplan.runtime.codegen import emit_layer
from ttplan.runtime.kernels import build, kernel_status
from ttplan.runtime.layers import TTConv2d
from ttplan.runtime.lowering import Lowering

needs_compiler = pytest.mark.skipif(build.find_compiler() is None, reason="no C compiler: nothing is built")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_load(monkeypatch, tmp_path):
    """`build.load` with nothing cached for the process, the cache in `tmp_path/cache`; reset afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    build.load.cache_clear()
    yield tmp_path / "cache" / "ttplan" / "kernels"
    build.load.cache_clear()


def stamp(data: bytes) -> str:
    """The sidecar a library's bytes should have: sha256 and size."""
    return f"{hashlib.sha256(data).hexdigest()} {len(data)}\n"


def fused_layers() -> tuple[list[torch.nn.Module], torch.nn.Module]:
    """A fused TTConv2d and its generated twin (merged order, folded), and the same layer on stock ops."""
    spec = ConvSpec.make(16, 16, 3, padding=1, input_size=8)
    fmt = make_format("hodec", spec, in_modes=(4, 4), out_modes=(4, 4), rank=8)
    plan = merged(build_network(spec, fmt, 2), fold_weights=True)
    library = TTConv2d(spec, fmt, plan, fold_weights=True, batch=2, lowering=Lowering(fused=True)).eval()
    generated = load_source(emit_layer(plan, "Layer", Lowering(fused=True)))["Layer"]().eval()
    generated.load_state_dict({name: core for (name, _), core in zip(generated.cores_spec, library.cores)})
    stock = TTConv2d(spec, fmt, plan, fold_weights=True, batch=2).eval()
    stock.load_state_dict(library.state_dict())
    return [library, generated], stock


def assert_forwards_fall_back(folder_hint: str) -> None:
    """The first fused forwards (library and generated) run stock ops and warn once, naming the cache folder."""
    layers, stock = fused_layers()
    x = torch.randn(2, 16, 8, 8)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        outputs = [layer(x) for layer in layers]
        expected = stock(x)
    for out in outputs:
        assert_close(out, expected, rel=0)
    cache_warnings = [w for w in caught if "kernel cache" in str(w.message)]
    assert len(cache_warnings) == 1 and folder_hint in str(cache_warnings[0].message)
    status = kernel_status()
    assert not status.available and "stock torch ops" in status.detail


@needs_compiler
def test_a_cache_home_that_is_a_file_falls_back_to_stock_ops(monkeypatch, tmp_path):
    """`XDG_CACHE_HOME` a file: the first fused forward raised NotADirectoryError."""
    home = tmp_path / "not-a-folder"
    home.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    build.load.cache_clear()
    try:
        assert_forwards_fall_back(str(home))
    finally:
        build.load.cache_clear()


@needs_compiler
def test_a_kernels_path_that_is_a_file_falls_back_to_stock_ops(fresh_load):
    fresh_load.parent.mkdir(parents=True)
    fresh_load.write_text("")
    assert_forwards_fall_back(str(fresh_load))


@needs_compiler
def test_an_unwritable_cache_folder_falls_back_to_stock_ops(fresh_load, monkeypatch):
    """A read-only cache or kernels/ folder raised PermissionError in the first fused forward. (Simulated: the tests
    may run as root, whom permission bits do not stop.)"""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(fresh_load))

    monkeypatch.setattr(build.tempfile, "mkstemp", refuse)
    assert_forwards_fall_back(str(fresh_load))
    assert not list(fresh_load.glob("*"))


@needs_compiler
def test_a_build_is_cached_with_a_sidecar_of_its_sha256_and_size_and_loaded_from_it(fresh_load):
    first = kernel_status()
    assert first.available
    (library,) = fresh_load.glob("*.so")
    data = library.read_bytes()
    assert (fresh_load / (library.name + ".sha256")).read_text() == stamp(data)
    assert sorted(p.name for p in fresh_load.iterdir()) == [library.name, library.name + ".sha256"]
    mtime = library.stat().st_mtime_ns
    build.load.cache_clear()
    assert kernel_status() == first and library.stat().st_mtime_ns == mtime  # loaded, not built again


def _status_in_a_subprocess(cache: Path) -> subprocess.CompletedProcess:
    """`kernel_status()` in a new process (a SIGBUS kills that one, not the test run) with the cache under `cache`."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(ROOT)}
    code = "from ttplan.runtime.kernels import kernel_status; s = kernel_status(); print(s.available, s.threaded)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@needs_compiler
def test_a_truncated_cached_library_is_built_again_not_loaded(fresh_load):
    """Loading a truncated library killed the process with SIGBUS."""
    status = kernel_status()
    (library,) = fresh_load.glob("*.so")
    data = library.read_bytes()
    truncated = library.with_name("truncated")
    truncated.write_bytes(data[: len(data) // 2])
    truncated.replace(library)  # a new file: this process keeps its mapping of the whole one
    result = _status_in_a_subprocess(fresh_load.parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [str(status.available), str(status.threaded)]
    rebuilt = library.read_bytes()
    assert len(rebuilt) > len(data) // 2
    assert (fresh_load / (library.name + ".sha256")).read_text() == stamp(rebuilt)


@needs_compiler
def test_a_garbage_cached_library_is_built_again_with_the_same_flags(fresh_load):
    """A garbage library failed to load and the next flag set's (single-threaded) build was taken, for good."""
    status = kernel_status()
    (library,) = fresh_load.glob("*.so")
    garbage = library.with_name("garbage")
    garbage.write_bytes(os.urandom(4096))
    garbage.replace(library)
    build.load.cache_clear()
    again = kernel_status()
    assert again == status
    assert len(list(fresh_load.glob("*.so"))) == 1 and library.read_bytes()[:4] == b"\x7fELF"


@needs_compiler
def test_a_compiler_that_builds_nothing_leaves_nothing_in_the_cache(fresh_load, monkeypatch):
    """`CC=true` exits 0 and writes nothing: empty libraries were left in the cache."""
    monkeypatch.setenv("CC", "true")
    status = kernel_status()
    assert not status.available and "could not build" in status.detail
    assert not fresh_load.exists() or not list(fresh_load.iterdir())


@needs_compiler
def test_a_compiler_command_of_several_words_is_run_whole(fresh_load, monkeypatch, tmp_path):
    """`CC="ccache gcc"` or `CC="gcc -m64"`: the whole command runs. Only its first word ran, with the flags, so a
    wrapper got the compiler's flags and nothing was built."""
    compiler = build.find_compiler()
    wrapper, log = tmp_path / "wrap", tmp_path / "wrapped.txt"
    wrapper.write_text(f'#!/bin/sh\necho "$@" > "{log}"\nexec "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("CC", f"{wrapper} {compiler}")
    assert build.find_compiler() == f"{wrapper} {compiler}"
    status = kernel_status()
    assert status.available, status.detail
    assert log.read_text().split()[:2] == [*compiler.split()[:1], "-O3"]  # the compiler, then the flags
