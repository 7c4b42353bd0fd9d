"""Autotune (ttplan/latency/autotune.py): each visit a block of calls; the cache, where a corrupt file or entry is one
warning, then measured again and rewritten, never a traceback."""

from __future__ import annotations

import json

import pytest
import torch

from ttplan.core.formats import make_format
from ttplan.core.spec import ConvSpec
from ttplan.latency import autotune
from ttplan.latency.profiles import default_profile
from ttplan.runtime.lowering import NCHW_LOWERINGS

SPEC = ConvSpec.make(8, 8, 3, 1, 1, input_size=4)
PROFILE = default_profile()
FMT = make_format("hodec", SPEC, rank=2)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache file, and `_measure` counted (still measured for real, at this tiny size)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    measured = []
    real = autotune._measure

    def counted(*args, **kwargs):
        measured.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(autotune, "_measure", counted)
    monkeypatch.setattr(autotune, "BLOCK_MS", 0.1)
    path = tmp_path / "ttplan" / "autotune.json"
    path.parent.mkdir()
    return path, measured


def _tune() -> autotune.TuneResult:
    return autotune.autotune_layer(SPEC, FMT, 1, True, profile=PROFILE, rounds=1)


def _key() -> str:
    kernel = any(lowering.fused for lowering in NCHW_LOWERINGS) and autotune.kernel_status().available
    return autotune._key(SPEC, FMT, 1, True, "cpu", torch.get_num_threads(), NCHW_LOWERINGS, kernel=kernel)


@pytest.mark.parametrize("content", [b"[]", b'"x"', b"null", b"\xff\x00\x80binary", b"", b"{\"truncated\": "],
                         ids=["list", "string", "null", "binary", "empty", "truncated"])
def test_a_corrupt_cache_file_is_one_warning_and_rebuilt(cache, capsys, content):
    path, measured = cache
    path.write_bytes(content)
    result = _tune()
    assert result.source == "measured" and measured == [1]
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: autotune cache ") and str(path) in warnings[0]
    assert _key() in json.loads(path.read_text())  # rebuilt: a valid cache again
    assert _tune().source == "cached" and measured == [1]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("entry", [
    [], "x", None, {"rounds": 1}, {"rounds": 1, "timings": []}, {"rounds": 1, "timings": ["x"]},
    {"rounds": 1, "timings": [{"label": "dense conv", "dense": True, "mix": "bmm", "channels_last": False}]},
    {"rounds": 1, "timings": [{"label": "m", "dense": False, "path": [[0, 99]], "mix": "bmm", "channels_last": False,
                               "ms": 1.0}]},
], ids=["list", "string", "null", "no-timings", "empty-timings", "timing-string", "no-ms", "bad-path"])
def test_a_malformed_cache_entry_is_one_warning_and_measured_again(cache, capsys, entry):
    path, measured = cache
    path.write_text(json.dumps({_key(): entry, "other": {"kept": True}}))
    assert _tune().source == "measured" and measured == [1]
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 1 and "malformed" in warnings[0] and str(path) in warnings[0]
    data = json.loads(path.read_text())
    assert data["other"] == {"kept": True} and autotune._from_cache(
        data[_key()], SPEC, FMT, 1, True, "cpu", 1, PROFILE).source == "cached"


@pytest.fixture
def dense_calls(monkeypatch) -> list[int]:
    """The dense conv's calls during autotune, counted (each still runs `F.conv2d`)."""
    import torch.nn.functional as real_f

    calls = []

    class CountingF:
        @staticmethod
        def conv2d(*args, **kwargs):
            calls.append(1)
            return real_f.conv2d(*args, **kwargs)

    monkeypatch.setattr(autotune, "F", CountingF)
    return calls


def test_autotune_times_each_variant_in_blocks_of_calls(monkeypatch, dense_calls):
    """A visit is a block of back-to-back calls lasting about BLOCK_MS, not one call that a page fault decides."""
    monkeypatch.setattr(autotune, "BLOCK_MS", 50.0)
    spec = ConvSpec.make(8, 8, 3, 1, 1, input_size=6)
    result = autotune.autotune_layer(spec, make_format("hodec", spec, rank=2), 1, True, profile=default_profile(),
                                     rounds=2, use_cache=False)
    assert result.dense_ms > 0
    # two warm-up calls, then two visits of many calls each (a call is well under 10 ms)
    assert len(dense_calls) > 2 + 2 * 5


def test_a_visit_holds_least_calls_however_long_one_call_takes(monkeypatch, tmp_path, dense_calls):
    """A layer slower than the block still makes LEAST_CALLS calls per visit: one call per visit let one slow call
    decide between two variants within a few percent of each other."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(autotune, "BLOCK_MS", 1e-9)  # every call outlasts the block
    autotune.autotune_layer(SPEC, FMT, 1, True, profile=PROFILE, rounds=2, use_cache=False)
    assert autotune.LEAST_CALLS > 1
    assert len(dense_calls) == 2 + 2 * autotune.LEAST_CALLS  # two warm-up calls, then two visits of LEAST_CALLS each


@pytest.mark.parametrize("geometry", [{"padding": 1, "padding_mode": "reflect"},
                                      {"padding": 1, "padding_mode": "circular"},
                                      {"kernel_size": 2, "padding": "same"}])
def test_the_dense_baseline_pads_as_the_layer_does(monkeypatch, geometry):
    """Where conv2d cannot pad as the layer does (a padding mode other than zeros, `'same'` after an even window), the
    dense conv autotune times pads first, as `nn.Conv2d` does: it timed a zero-padded conv of another output size."""
    import torch.nn.functional as real_f
    from torch import nn

    kernel = geometry.pop("kernel_size", 3)
    spec = ConvSpec.make(8, 8, kernel, input_size=6, **geometry)
    assert spec.explicit_pad is not None
    conv = nn.Conv2d(8, 8, kernel, bias=False, **geometry)
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(autotune.dense_conv(spec, x, conv.weight), conv(x))
    pads = []

    class RecordingF:
        conv2d = staticmethod(real_f.conv2d)

        @staticmethod
        def pad(*args, **kwargs):
            pads.append(kwargs.get("mode"))
            return real_f.pad(*args, **kwargs)

    monkeypatch.setattr(autotune, "F", RecordingF)
    monkeypatch.setattr(autotune, "BLOCK_MS", 0.1)
    result = autotune.autotune_layer(spec, make_format("hodec", spec, rank=2), 2, True, profile=PROFILE, rounds=1,
                                     use_cache=False)
    assert result.dense_ms > 0 and pads and set(pads) == {spec.pad_mode}
