"""The latency model: fitting recovers known coefficients, profiles round-trip as data, predictions add up.
(Profile files, the cache and the default-profile rule: tests/latency/test_profiles.py.)"""

import pytest

from ttplan.core.formats import make_format
from ttplan.core.latency import (
    LatencyProfile,
    OpModel,
    OpShape,
    Sample,
    dense_shape,
    fit_op,
    fit_profile,
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


def test_profile_round_trips_as_data_and_falls_back_to_the_pooled_fit():
    samples = [Sample(OpShape("dense", m, 27, 64, 4 * m * 91), 5 + m * 0.01) for m in (10, 100, 1000, 5000)]
    profile = fit_profile(samples, label="test", device="cpu", threads=1, torch_version="x", layer_overhead_us=3)
    again = LatencyProfile.from_dict(profile.to_dict(), "given")
    assert again.to_dict() == profile.to_dict()
    assert "machine" not in profile.to_dict() and again.machine == ""  # older profiles say none
    there = LatencyProfile.from_dict({**profile.to_dict(), "machine": "Some CPU, AVX2"}, "given")
    assert there.machine == "Some CPU, AVX2" and there.to_dict()["machine"] == "Some CPU, AVX2"
    with pytest.raises(TTPlanError, match="machine is 3: expected a string"):
        LatencyProfile.from_dict({**profile.to_dict(), "machine": 3}, "given")
    wide = OpShape("dense", 100, 576, 128, 1000)
    assert again.op(wide.key) is again.ops["dense:any"]
    with pytest.raises(TTPlanError, match="no model for feature:thin"):
        again.predict(OpShape("feature", 10, 2, 2, 10))


def test_the_core_reads_no_profile_file_and_points_to_the_names_that_moved():
    import ttplan.core.latency as latency

    for name, home in (("load_profile", "ttplan.latency.profiles.load_profile"), ("cache_dir", "ttplan.files")):
        with pytest.raises(AttributeError, match=f"ttplan.core.latency.{name} moved: use {home}"):
            getattr(latency, name)
    assert not hasattr(LatencyProfile, "save")
