"""The autotune cache key says whether the fused kernel builds: a measurement made where it did not (so the fused
lowering was never timed) is not reused where it does, nor the other way round."""

from __future__ import annotations

import pytest

from ttplan.core.formats import make_format
from ttplan.core.spec import ConvSpec
from ttplan.latency import autotune
from ttplan.latency.profiles import default_profile
from ttplan.runtime.kernels import KernelStatus, kernel_status

PROFILE = default_profile()


@pytest.mark.skipif(not kernel_status().available, reason="no C compiler: the fused kernel is not built")
def test_runs_with_and_without_the_fused_kernel_are_cached_apart(monkeypatch, tmp_path):
    monkeypatch.setattr(autotune, "cache_path", lambda: tmp_path / "autotune.json")
    spec = ConvSpec.make(16, 16, 3, 1, 1, input_size=8)
    fmt = make_format("hodec", spec, rank=4)
    real = autotune.kernel_status
    monkeypatch.setattr(autotune, "kernel_status", lambda: KernelStatus(False, "test: no C compiler"))
    without = autotune.autotune_layer(spec, fmt, 2, True, profile=PROFILE, rounds=1)
    assert without.source == "measured" and not any(t.lowering.fused for t in without.timings)
    monkeypatch.setattr(autotune, "kernel_status", real)
    built = autotune.autotune_layer(spec, fmt, 2, True, profile=PROFILE, rounds=1)
    assert built.source == "measured" and any(t.lowering.fused for t in built.timings)
    assert autotune.autotune_layer(spec, fmt, 2, True, profile=PROFILE, rounds=1).source == "cached"
    monkeypatch.setattr(autotune, "kernel_status", lambda: KernelStatus(False, "test: no C compiler"))
    again = autotune.autotune_layer(spec, fmt, 2, True, profile=PROFILE, rounds=1)
    assert again.source == "cached" and not any(t.lowering.fused for t in again.timings)


def test_the_key_names_the_kernel_only_where_a_fused_lowering_is_asked_for():
    from ttplan.runtime.lowering import NCHW_LOWERINGS, NHWC_LOWERINGS

    spec = ConvSpec.make(16, 16, 3, 1, 1, input_size=8)
    fmt = make_format("hodec", spec, rank=4)
    keys = {kernel: autotune._key(spec, fmt, 2, True, "cpu", 1, NCHW_LOWERINGS, kernel=kernel) for kernel in (0, 1)}
    assert keys[0] != keys[1] and keys[1].endswith("|kernel=built") and keys[0].endswith("|kernel=none")
    nhwc = {autotune._key(spec, fmt, 2, True, "cpu", 1, NHWC_LOWERINGS, True, kernel=k) for k in (False, True)}
    assert len(nhwc) == 1 and "kernel=" not in nhwc.pop()


def test_a_measurement_from_another_cpu_is_not_reused(monkeypatch, tmp_path):
    """A shared home directory (a cluster's nodes, a laptop's and a server's) holds one cache: timings taken on one
    CPU decide nothing on another."""
    monkeypatch.setattr(autotune, "cache_path", lambda: tmp_path / "autotune.json")
    spec = ConvSpec.make(16, 16, 3, 1, 1, input_size=8)
    fmt = make_format("hodec", spec, rank=4)
    assert autotune.autotune_layer(spec, fmt, 2, True, profile=PROFILE, rounds=1).source == "measured"
    assert autotune.autotune_layer(spec, fmt, 2, True, profile=PROFILE, rounds=1).source == "cached"
    monkeypatch.setattr(autotune, "identity", lambda device: "Another CPU (family 6, model 143), AVX512")
    assert autotune.autotune_layer(spec, fmt, 2, True, profile=PROFILE, rounds=1).source == "measured"
