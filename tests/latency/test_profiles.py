"""Profile files (tests/core/test_latency.py tests the model): the default-profile rule of `load_profile` (a given
file, the user's cache, the committed default; channels-last first), one-line errors naming the file, atomic saves."""

import json

import pytest

from ttplan.core.formats import make_format
from ttplan.core.latency import (
    LatencyProfile,
    OpModel,
    OpShape,
    Sample,
    dense_shape,
    fit_profile,
    plan_shapes,
    predict_plan_us,
)
from ttplan.core.network import build_network
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.latency.profiles import default_profile, default_profile_path, load_profile, save_profile

SPEC = ConvSpec.make(64, 64, 3, 1, 1, input_size=16)


def test_profile_round_trips_and_falls_back_to_the_pooled_fit(tmp_path):
    samples = [Sample(OpShape("dense", m, 27, 64, 4 * m * 91), 5 + m * 0.01) for m in (10, 100, 1000, 5000)]
    profile = fit_profile(samples, label="test", device="cpu", threads=1, torch_version="x", layer_overhead_us=3)
    path = save_profile(profile, tmp_path / "p.json")
    again = load_profile(path)
    assert again.to_dict() == profile.to_dict()
    wide = OpShape("dense", 100, 576, 128, 1000)
    assert again.op(wide.key) is again.ops["dense:any"]
    with pytest.raises(TTPlanError, match="no model for feature:thin"):
        again.predict(OpShape("feature", 10, 2, 2, 10))


def test_bad_profile_files_are_one_line_errors(tmp_path):
    with pytest.raises(TTPlanError, match="no such file"):
        load_profile(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"label": "x"}))
    with pytest.raises(TTPlanError, match="not a ttplan profile"):
        load_profile(tmp_path / "bad.json")


def test_user_cache_profile_wins_over_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert load_profile().default
    custom = LatencyProfile("mine", "cpu", 2, "x", {"dense:any": OpModel(1, 0, 0)})
    save_profile(custom, tmp_path / "ttplan" / "profile.json")
    assert load_profile().label == "mine"
    assert load_profile(channels_last=True).label == "mine"  # no channels-last profile: the NCHW one serves
    last = LatencyProfile("mine, channels-last", "cpu", 2, "x", {"dense:any": OpModel(1, 0, 0)})
    save_profile(last, tmp_path / "ttplan" / "profile-channels-last.json")
    assert load_profile(channels_last=True).label == "mine, channels-last"
    assert load_profile().label == "mine"  # an NCHW model never reads the channels-last one


def test_default_profile_is_labelled_and_predicts_every_kind():
    profile = default_profile()
    assert profile.default and "default profile" in profile.label
    plan = optimize(build_network(SPEC, make_format("hodec", SPEC, rank=8), 8), fold_weights=False)
    kinds = {s.kind for s in plan_shapes(plan)}
    assert kinds >= {"weight", "conv"}
    assert predict_plan_us(plan, profile) > profile.layer_overhead_us
    assert profile.predict(dense_shape(SPEC, 8)) > 0


def test_saving_a_profile_is_atomic(tmp_path, monkeypatch):
    """A failed or interrupted save keeps the old profile whole (it used to be truncated in place)."""
    import ttplan.files

    path = tmp_path / "profile.json"
    save_profile(LatencyProfile("old", "cpu", 2, "x", {"dense:any": OpModel(1, 0, 0)}), path)
    before = path.read_text()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(ttplan.files.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_profile(LatencyProfile("new", "cpu", 2, "x", {"dense:any": OpModel(2, 0, 0)}), path)
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["profile.json"]


def _profile_dict(**ops_changes) -> dict:
    """A valid profile's JSON form with some `dense:any` coefficients replaced."""
    data = LatencyProfile("p", "cpu", 2, "x", {"dense:any": OpModel(1.0, 2.0, 3.0)}).to_dict()
    data["ops"]["dense:any"].update(ops_changes)
    return data


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe{}", "is not UTF-8 text"),
    (b"{\"label\": ", "is not valid JSON"),
    (b"", "is empty"),
    (b"[]", "the top level is list []: expected a JSON object"),
    (b"null", "the top level is NoneType None: expected a JSON object"),
    (json.dumps(_profile_dict(us_per_mmac=-3.0)).encode(), "ops['dense:any'].us_per_mmac is -3.0: expected a finite"),
    (json.dumps(_profile_dict(overhead_us=float("nan"))).encode(), "ops['dense:any'].overhead_us is nan"),
    (json.dumps(_profile_dict(us_per_mb=float("inf"))).encode(), "ops['dense:any'].us_per_mb is inf"),
    (json.dumps(_profile_dict(us_per_mb="1.0")).encode(), "ops['dense:any'].us_per_mb is '1.0': expected a number"),
    (json.dumps(_profile_dict(samples=-1)).encode(), "ops['dense:any'].samples is -1"),
    (json.dumps({**_profile_dict(), "layer_overhead_us": -1}).encode(), "layer_overhead_us is -1"),
    (json.dumps({**_profile_dict(), "threads": True}).encode(), "threads is True: expected a whole number >= 1"),
    (json.dumps({**_profile_dict(), "ops": {"dense:any": [1, 2, 3]}}).encode(), "ops['dense:any'] is list"),
    (json.dumps({**_profile_dict(), "ops": {"dense:any": {"us_per_mb": 0}}}).encode(), "has no 'overhead_us'"),
], ids=["binary", "truncated", "empty", "list", "null", "negative", "nan", "inf", "string", "samples", "overhead",
        "threads", "op-list", "op-missing"])
def test_every_field_of_a_profile_is_checked_in_one_line_naming_the_file(tmp_path, content, words):
    path = tmp_path / "p.json"
    path.write_bytes(content)
    with pytest.raises(TTPlanError) as info:
        load_profile(path)
    message = str(info.value)
    assert words in message and str(path) in message and "\n" not in message
    assert message.startswith("--profile ")


def test_a_bad_cached_profile_is_named_as_the_cache_and_never_read_when_ordering_by_macs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = tmp_path / "ttplan" / "profile.json"
    cached.parent.mkdir()
    cached.write_bytes(b"\x80 not a profile")
    with pytest.raises(TTPlanError) as info:
        load_profile()
    message = str(info.value)
    assert message.startswith(f"cached latency profile {str(cached)!r} is not UTF-8 text")
    assert "--profile" not in message and "recalibrate with `ttplan calibrate`, or remove" in message
    cached.write_text(json.dumps(_profile_dict(us_per_mb=-1)))
    with pytest.raises(TTPlanError, match=r"cached latency profile .*us_per_mb is -1: .*or remove"):
        load_profile(by_time=True)
    assert load_profile(by_time=False).default  # MACs and memory orders: the cache is not read



def test_the_committed_default_is_the_file_calibrate_as_default_rewrites():
    assert default_profile_path().is_file() and default_profile_path().name == "default_profile.json"
    assert default_profile().to_dict() == json.loads(default_profile_path().read_text())
