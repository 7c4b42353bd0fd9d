"""The latency model: fitting recovers known coefficients, profiles round-trip, predictions add up."""

import json

import pytest

from ttplan.core.formats import make_format
from ttplan.core.latency import (
    LatencyProfile,
    OpModel,
    OpShape,
    Sample,
    default_profile,
    dense_shape,
    fit_op,
    fit_profile,
    load_profile,
    plan_shapes,
    predict_plan_us,
)
from ttplan.core.network import build_network
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

SPEC = ConvSpec.make(64, 64, 3, 1, 1, input_size=16)


def test_fit_recovers_the_coefficients_of_exact_data():
    truth = OpModel(12.0, 30.0, 9.0)
    shapes = [OpShape("feature", m, k, n, 4 * (m * k + k * n + m * n)) for m in (64, 512, 4096)
              for k in (4, 16) for n in (8, 32)]
    fitted = fit_op([Sample(s, truth.predict(s)) for s in shapes])
    assert fitted.overhead_us == pytest.approx(12.0, rel=1e-6)
    assert fitted.us_per_mb == pytest.approx(30.0, rel=1e-6)
    assert fitted.us_per_mmac == pytest.approx(9.0, rel=1e-6)


def test_fit_keeps_coefficients_non_negative():
    shapes = [OpShape("conv", m, 16, 16, 4 * m * 32) for m in (100, 1000, 10000)]
    fitted = fit_op([Sample(s, 50.0 - 0.001 * s.m) for s in shapes])  # time falling with size: no physical fit
    assert min(fitted.overhead_us, fitted.us_per_mb, fitted.us_per_mmac) >= 0


def test_profile_round_trips_and_falls_back_to_the_pooled_fit(tmp_path):
    samples = [Sample(OpShape("dense", m, 27, 64, 4 * m * 91), 5 + m * 0.01) for m in (10, 100, 1000, 5000)]
    profile = fit_profile(samples, label="test", device="cpu", threads=1, torch_version="x", layer_overhead_us=3)
    path = profile.save(tmp_path / "p.json")
    again = load_profile(path)
    assert again.to_dict() == profile.to_dict()
    wide = OpShape("dense", 100, 576, 128, 1000)
    assert again.op(wide.key) is again.ops["dense:any"]
    with pytest.raises(TTPlanError, match="no model for feature:thin"):
        again.predict(OpShape("feature", 10, 2, 2, 10))


def test_thin_products_have_their_own_class_and_fall_back_to_narrow():
    """K or N below 4 is `thin` (on channels-last maps such products ran far slower per MAC than K, N of 4-15);
    a profile fitted before the class existed predicts them with its `narrow` fit."""
    assert OpShape("feature", 1000, 2, 16, 0).key == "feature:thin"
    assert OpShape("feature", 1000, 4, 16, 0).key == "feature:narrow"
    narrow = [Sample(OpShape("feature", m, 8, 8, 4 * m * 16), 1 + m * 0.01) for m in (10, 100, 1000, 5000)]
    old = fit_profile(narrow, label="old", device="cpu", threads=1, torch_version="x")
    assert old.op("feature:thin") is old.ops["feature:narrow"]
    thin = [Sample(OpShape("feature", m, 2, 1, 4 * m * 3), 1 + m * 0.1) for m in (10, 100, 1000, 5000)]
    both = fit_profile(narrow + thin, label="new", device="cpu", threads=1, torch_version="x")
    assert both.op("feature:thin") is both.ops["feature:thin"] is not both.ops["feature:narrow"]


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
    custom.save(tmp_path / "ttplan" / "profile.json")
    assert load_profile().label == "mine"
    assert load_profile(channels_last=True).label == "mine"  # no channels-last profile: the NCHW one serves
    last = LatencyProfile("mine, channels-last", "cpu", 2, "x", {"dense:any": OpModel(1, 0, 0)})
    last.save(tmp_path / "ttplan" / "profile-channels-last.json")
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


def test_predicted_time_is_overhead_plus_each_op():
    profile = LatencyProfile("flat", "cpu", 1, "x", {f"{k}:any": OpModel(10.0, 0.0, 0.0) for k in
                                                     ("feature", "conv", "weight", "dense")}, layer_overhead_us=7.0)
    net = build_network(SPEC, make_format("hodec", SPEC, rank=8), 1)
    folded, unfolded = optimize(net, fold_weights=True), optimize(net)
    assert predict_plan_us(folded, profile) == 7.0 + 10.0 * len([s for s in folded.steps if s.kind != "weight"])
    assert predict_plan_us(unfolded, profile) == 7.0 + 10.0 * len(unfolded.steps)


def test_dense_shape_counts_the_dense_macs():
    spec = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)
    assert dense_shape(spec, 4).macs == spec.dense_macs(4)


def test_op_shapes_count_exactly_the_planned_macs(make_random_layer):
    import random

    rng = random.Random(3)
    for _ in range(30):
        spec, fmt = make_random_layer(rng, max_cores=6)
        net = build_network(spec, fmt, rng.choice([1, 4]))
        plan = optimize(net, fold_weights=rng.random() < 0.5)
        assert sum(shape.macs for shape in plan_shapes(plan)) == plan.macs


def test_saving_a_profile_is_atomic(tmp_path, monkeypatch):
    """A failed or interrupted save keeps the old profile whole (it used to be truncated in place)."""
    import ttplan.files

    path = tmp_path / "profile.json"
    LatencyProfile("old", "cpu", 2, "x", {"dense:any": OpModel(1, 0, 0)}).save(path)
    before = path.read_text()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(ttplan.files.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        LatencyProfile("new", "cpu", 2, "x", {"dense:any": OpModel(2, 0, 0)}).save(path)
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
    from ttplan.core.latency import profile_for

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
        profile_for(None, by_time=True)
    assert profile_for(None, by_time=False).default  # MACs and memory orders: the cache is not read
