"""Objectives of the exact search: the registry, and latency searched exactly (checked by brute force)."""

import random

import pytest

from ttplan.core.latency import LatencyProfile, OpModel, predict_plan_us
from ttplan.core.network import build_network
from ttplan.core.objectives import OBJECTIVES, Latency, make_objective
from ttplan.core.schemes import schemes_for
from ttplan.core.search import BruteForce, ExactSearch, optimize
from ttplan.errors import TTPlanError


def synthetic_profile(rng: random.Random) -> LatencyProfile:
    """A profile with random coefficients per shape class: the DP must be exact for any of them."""
    ops = {f"{kind}:{width}": OpModel(rng.uniform(0, 30), rng.uniform(0, 50), rng.uniform(0, 400))
           for kind in ("feature", "conv", "weight", "dense") for width in ("narrow", "medium", "wide", "any")}
    return LatencyProfile("synthetic", "cpu", 1, "test", ops, layer_overhead_us=5.0)


def test_unknown_objective_is_an_error_naming_the_choices():
    with pytest.raises(TTPlanError, match=r"objective='memroy': expected one of macs, memory, latency"):
        ExactSearch("memroy")
    with pytest.raises(TTPlanError, match="objective='fast'"):
        optimize(build_network(*_layer()), objective="fast")
    assert set(OBJECTIVES) == {"macs", "memory", "latency"}


def _layer():
    from ttplan.core.formats import make_format
    from ttplan.core.spec import ConvSpec

    spec = ConvSpec.make(32, 64, 3, 1, 1, input_size=16)
    return spec, make_format("hodec", spec, rank=8)


def test_latency_search_equals_brute_force_on_random_networks(make_random_layer):
    rng = random.Random(99)
    for _ in range(40):
        spec, fmt = make_random_layer(rng, max_cores=5)
        net = build_network(spec, fmt, batch=rng.choice([1, 4, 32]))
        profile = synthetic_profile(rng)
        fold = rng.random() < 0.3
        best = optimize(net, fold_weights=fold, objective="latency", profile=profile)
        brute = optimize(net, "brute-force", fold_weights=fold, objective=Latency(profile))
        assert predict_plan_us(best, profile) == pytest.approx(predict_plan_us(brute, profile), rel=1e-9)


def test_latency_plan_is_never_predicted_slower_than_the_mac_plan_or_a_scheme(make_random_layer):
    rng = random.Random(5)
    for _ in range(30):
        spec, fmt = make_random_layer(rng, max_cores=8)
        net = build_network(spec, fmt, batch=8)
        profile = synthetic_profile(rng)
        fast = optimize(net, objective="latency", profile=profile)
        for other in [optimize(net), *schemes_for(net).values()]:
            if other.executable:
                assert predict_plan_us(fast, profile) <= predict_plan_us(other, profile) * (1 + 1e-9)


def test_objective_changes_the_order_when_time_and_macs_disagree():
    """With a huge per-op overhead, the fewest ops wins over the fewest MACs."""
    spec, fmt = _layer()
    net = build_network(spec, fmt, batch=1)
    ops = {f"{k}:any": OpModel(1000.0, 0.0, 0.001) for k in ("feature", "conv", "weight", "dense")}
    profile = LatencyProfile("overhead-only", "cpu", 1, "test", ops)
    fast = optimize(net, objective=make_objective("latency", profile))
    macs = optimize(net)
    assert len([s for s in fast.steps if s.kind != "weight"]) <= len([s for s in macs.steps if s.kind != "weight"])
    assert fast.macs >= macs.macs
    assert predict_plan_us(fast, profile) <= predict_plan_us(macs, profile)


def test_brute_force_memory_objective_matches_exact(make_random_layer):
    rng = random.Random(8)
    spec, fmt = make_random_layer(rng, max_cores=5)
    net = build_network(spec, fmt)
    brute = BruteForce(9, objective="memory")(net)
    assert brute.largest_intermediate == ExactSearch("memory")(net).largest_intermediate
