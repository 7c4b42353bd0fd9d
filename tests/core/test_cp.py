"""The CP format: one rank shared by every factor (a hyperedge). The search against brute force, the rank kept open
until its last factor, Lebedev et al.'s order costed step by step, checks and spellings."""

import random

import pytest

from tests.helpers.ring_cp_cases import random_cp, recount
from tests.helpers.search_checks import assert_best_is_brute_force, assert_exact_under_a_memory_limit
from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.schemes import published, schemes_for
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

SPEC = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)


@pytest.mark.parametrize("kind", ["cp", "cp-separable"])
def test_search_equals_brute_force_on_random_cp_networks(kind):
    rng = random.Random(31)
    for _ in range(60 if kind == "cp" else 30):
        spec, fmt = random_cp(rng, kind=kind)
        net = build_network(spec, fmt, batch=rng.choice([1, 2, 8]))
        assert net.hyperedges == frozenset({"r"})
        best = assert_best_is_brute_force(net, fold=rng.random() < 0.3)
        assert [s.macs for s in best.steps] == recount(net, best)


def test_search_equals_brute_force_on_cp_under_memory_limits():
    rng = random.Random(32)
    for _ in range(25):
        spec, fmt = random_cp(rng, max_cores=4)
        assert_exact_under_a_memory_limit(build_network(spec, fmt), rng)


@pytest.mark.parametrize("kind", ["cp", "cp-separable"])
def test_every_cp_scheme_equals_an_independent_recount(kind):
    rng = random.Random(33)
    for _ in range(50 if kind == "cp" else 25):
        spec, fmt = random_cp(rng, max_cores=8, kind=kind)
        net = build_network(spec, fmt, batch=rng.randint(1, 4))
        plans = schemes_for(net)
        assert set(plans) == {"cp", "dense"}
        for plan in [*plans.values(), optimize(net)]:
            assert [s.macs for s in plan.steps] == recount(net, plan)
            assert optimize(net).macs <= plan.macs


def test_the_rank_stays_open_until_the_last_factor():
    fmt = make_format("cp", SPEC, in_modes=(8, 16), out_modes=(16, 16), rank=32)
    net = build_network(SPEC, fmt, 2)
    plan = published(net)
    ranked = [("r" in s.indices) for s in plan.steps]
    assert ranked == [True] * (len(plan.steps) - 1) + [False]
    assert plan.contracted_at()["r"] == len(plan.steps)


def test_lebedev_order_on_the_reference_layer():
    fmt = make_format("cp", SPEC, rank=64)
    assert (fmt.in_modes, fmt.out_modes, fmt.ranks) == ((128,), (256,), (64,))
    net = build_network(SPEC, fmt, 1)
    plan = published(net)
    assert [(s.left_name, s.right_name, s.kind) for s in plan.steps] == [
        ("X", "A1", "feature"), ("X·A1", "C", "conv"), ("X·C·A1", "B1", "feature")]
    # a 1x1 conv to R channels, a depthwise 3x3 conv over R channels, a 1x1 conv to the outputs
    assert [s.macs for s in plan.steps] == [28 * 28 * 128 * 64, 14 * 14 * 9 * 64, 14 * 14 * 64 * 256]
    assert fmt.params(SPEC) == 64 * (128 + 9 + 256)
    assert optimize(net).macs == plan.macs
    spelled = make_format("cp", SPEC, tt_shapes=(256, 9, 128), ranks=(64,))
    assert spelled == fmt


def test_separable_window_runs_per_axis_with_its_own_stride():
    spec = ConvSpec.make(16, 32, (3, 5), stride=(2, 3), padding=(1, 2), input_size=(20, 30))
    fmt = make_format("cp-separable", spec, rank=8)
    assert [c.name for c in fmt.cores(spec)] == ["B1", "Ch", "Cw", "A1"]
    net = build_network(spec, fmt, 2)
    assert (net.size("kh"), net.size("kw")) == (3, 5) and "k" not in net.indices
    plan = published(net)
    convs = [(s.right_name, s.map_size, s.macs) for s in plan.steps if s.kind == "conv"]
    assert convs == [("Ch", (10, 30), 2 * 10 * 30 * 3 * 8), ("Cw", (10, 10), 2 * 10 * 10 * 5 * 8)]
    assert fmt.params(spec) == 8 * (32 + 3 + 5 + 16)  # no bias
    assert optimize(net).macs == optimize(net, "brute-force").macs <= plan.macs


@pytest.mark.parametrize("ranks, message", [
    ((4, 4), "needs 1 ranks \\(one rank R, shared by every factor\\)"),
    ((5000,), "rank 5000 at position 0 exceeds its bound 1152 \\(the product of every factor's size but the "
              "largest\\)"),
])
def test_bad_cp_ranks_are_one_line_errors(ranks, message):
    with pytest.raises(TTPlanError, match=message) as err:
        make_format("cp", SPEC, ranks=ranks)
    assert "\n" not in str(err.value)
