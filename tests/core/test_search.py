"""The exact search against brute-force enumeration, with and without folding and memory limits."""

import random

import pytest

from tests.helpers.search_checks import assert_best_is_brute_force, assert_exact_under_a_memory_limit
from ttplan.core import search
from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.schemes import merged, schemes_for
from ttplan.core.search import STEP_LIMIT, ExactSearch, RunSearch, optimize, predicted_steps
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

SPEC = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)


def test_search_equals_brute_force_on_random_networks(make_random_layer):
    rng = random.Random(2024)
    checked = 0
    while checked < 60:
        spec, fmt = make_random_layer(rng, max_cores=5)
        net = build_network(spec, fmt, batch=rng.choice([1, 2, 8]))
        best = assert_best_is_brute_force(net, fold=rng.random() < 0.3)
        assert best.executable
        checked += 1


def test_search_equals_brute_force_under_memory_limits(make_random_layer):
    rng = random.Random(7)
    for _ in range(25):
        spec, fmt = make_random_layer(rng, max_cores=4)
        assert_exact_under_a_memory_limit(build_network(spec, fmt), rng)


def test_best_never_worse_than_any_scheme(make_random_layer):
    rng = random.Random(11)
    for _ in range(40):
        spec, fmt = make_random_layer(rng, max_cores=8)
        net = build_network(spec, fmt)
        best = optimize(net)
        for plan in schemes_for(net).values():
            assert best.macs <= plan.macs


def test_merged_order_merges_each_run_of_cores_between_window_cores():
    """hodec: input cores merged, the window core, output cores merged (three feature-map steps); a format whose
    published order already merges them (tr) gives the same pairs; a linear layer has none."""
    spec = ConvSpec.make(32, 32, 3, 1, 1, input_size=8)
    hodec = build_network(spec, make_format("hodec", spec, rank=4))
    plan = merged(hodec)
    assert [step.kind for step in plan.steps if step.kind != "weight"] == ["feature", "conv", "feature"]
    assert plan.executable and plan.macs >= optimize(hodec).macs
    ring = build_network(spec, make_format("tr", spec, rank=4))
    assert merged(ring).pairs == schemes_for(ring)["tr"].pairs
    linear = ConvSpec.make(64, 64, 1, input_size=1)
    assert merged(build_network(linear, make_format("ttm", linear, rank=4))) is None


def test_reference_layer_best_orders():
    cl = make_format("classical", SPEC, in_modes=(4, 4, 8), out_modes=(4, 8, 8), rank=16)
    assert optimize(build_network(SPEC, cl)).macs < SPEC.dense_macs()
    hd = make_format("hodec", SPEC, tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(1, 16, 16, 16, 16, 16, 16, 1))
    net = build_network(SPEC, hd)
    assert optimize(net).macs * 3 < schemes_for(net)["hodec"].macs


def test_sixteen_tensor_network_plans_and_beats_its_schemes():
    spec = ConvSpec.make(128 * 3, 256 * 2, 3, 1, 1, input_size=16)
    fmt = make_format("hodec", spec, in_modes=(2, 2, 2, 2, 2, 2, 2, 3), out_modes=(2, 2, 2, 2, 2, 16), rank=8)
    net = build_network(spec, fmt)
    assert len(net.tensors) == 16
    assert optimize(net).macs <= schemes_for(net)["hodec"].macs


def test_impossible_memory_limit_says_what_would_work():
    fmt = make_format("tucker2", SPEC, rank=8)
    with pytest.raises(TTPlanError, match="smallest possible largest intermediate"):
        optimize(build_network(SPEC, fmt), memory_limit=10)


def test_unknown_method():
    fmt = make_format("tucker2", SPEC, rank=8)
    with pytest.raises(TTPlanError, match="method='greedy'"):
        optimize(build_network(SPEC, fmt), "greedy")


# -- the bound on the exact search (issue #25, item 18) -----------------------------------------------------------

BOUND_SPEC = ConvSpec.make(128, 128, 3, 1, 1, input_size=8)


def _network(kind: str, order: int):
    return build_network(BOUND_SPEC, make_format(kind, BOUND_SPEC, rank=8, order=order))


@pytest.mark.parametrize("kind, order", [("hodec", 5), ("tr", 4), ("classical", 4), ("cp", 3), ("cp-separable", 2)])
def test_predicted_steps_are_the_steps_the_exact_search_prices(kind, order, monkeypatch):
    """Connected groups (chains, rings) and every subset (outer products, up to OUTER_LIMIT cores) alike: the count
    made before the search equals the search's calls of `pair_cost`."""
    net = _network(kind, order)
    calls = []
    real = search.pair_cost
    monkeypatch.setattr(search, "pair_cost", lambda *args: calls.append(1) or real(*args))
    ExactSearch(step_limit=None)(net)
    assert predicted_steps(net) == len(calls) > 0


def test_cp_past_the_limit_is_planned_by_the_bounded_search_and_says_so():
    """`ttplan layer ... --format cp --order 7` took 269 s: 1.5 * 3^15 candidate steps. Now the count says so at
    once and the bounded search plans it, never above the published order; under the limit nothing changes."""
    net = _network("cp", 7)
    assert predicted_steps(net, STEP_LIMIT) > STEP_LIMIT
    plan = optimize(net)
    assert plan.bounded and plan.to_dict()["bounded"] is True
    assert plan.executable and plan.macs <= schemes_for(net)["cp"].macs
    dense = schemes_for(net)["dense"]
    assert dense.bounded and dense.executable
    small = _network("cp", 2)
    assert predicted_steps(small) <= STEP_LIMIT and not optimize(small).bounded


def test_a_smaller_limit_bounds_any_format_and_the_bounded_search_stays_between_exact_and_published(
        make_random_layer):
    """The bound is the same for every format (large orders of hodec, tr, classical alike): past `step_limit` the
    run search answers, at least as costly as the exact optimum and never costlier than the published order."""
    rng = random.Random(25)
    for _ in range(30):
        spec, fmt = make_random_layer(rng, max_cores=8)
        net = build_network(spec, fmt, batch=rng.choice([1, 8]))
        exact = optimize(net)
        bounded = ExactSearch(step_limit=0)(net)
        assert bounded.bounded and not exact.bounded
        assert exact.macs <= bounded.macs <= schemes_for(net)[fmt.published_scheme].macs
        assert RunSearch()(net).pairs == bounded.pairs


def test_the_bounded_search_respects_a_memory_limit_or_says_what_it_can_reach():
    net = _network("cp", 7)
    least = RunSearch("memory")(net).largest_intermediate
    assert RunSearch()(net, memory_limit=least).largest_intermediate <= least
    with pytest.raises(TTPlanError, match="bounded search"):
        optimize(net, memory_limit=least - 1)
