"""The tensor-ring format: ranks and checks, the search against brute force on rings, Wang et al.'s order, and
the ring closed by a rank of 1 planning exactly as hodec."""

import math
import random

import pytest

from tests.helpers.ring_cp_cases import random_ring, random_spec, recount
from tests.helpers.search_checks import assert_best_is_brute_force, assert_exact_under_a_memory_limit
from ttplan.core.formats import get_format, make_format
from ttplan.core.formats.ring import ring_exact_ranks
from ttplan.core.network import build_network
from ttplan.core.schemes import published, schemes_for
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

SPEC = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)


def test_search_equals_brute_force_on_random_rings():
    rng = random.Random(12)
    for _ in range(60):
        spec, fmt = random_ring(rng)
        net = build_network(spec, fmt, batch=rng.choice([1, 2, 8]))
        best = assert_best_is_brute_force(net, fold=rng.random() < 0.3)
        assert [s.macs for s in best.steps] == recount(net, best)


def test_search_equals_brute_force_on_rings_under_memory_limits():
    rng = random.Random(13)
    for _ in range(25):
        spec, fmt = random_ring(rng, max_cores=4)
        assert_exact_under_a_memory_limit(build_network(spec, fmt), rng)


def test_every_ring_scheme_equals_an_independent_recount():
    rng = random.Random(14)
    for _ in range(50):
        spec, fmt = random_ring(rng, max_cores=8)
        net = build_network(spec, fmt, batch=rng.randint(1, 4))
        plans = schemes_for(net)
        assert set(plans) == {"tr", "dense"}
        for plan in [*plans.values(), optimize(net)]:
            assert [s.macs for s in plan.steps] == recount(net, plan)
            assert optimize(net).macs <= plan.macs


def test_connected_groups_of_a_ring_are_arcs():
    """Above the outer-product limit the search still finds orders that merge across the closing rank."""
    spec = ConvSpec.make(2 ** 5, 2 ** 5, 3, 1, 1, input_size=8)
    fmt = make_format("tr", spec, in_modes=(2,) * 5, out_modes=(2,) * 5, rank=4)
    net = build_network(spec, fmt)
    assert len(net.tensors) == 12 and "r0" in net.indices
    best = optimize(net)
    assert best.macs <= published(net).macs and best.executable


def test_closing_rank_one_plans_exactly_as_hodec():
    rng = random.Random(15)
    for _ in range(40):
        spec, ring = random_ring(rng, max_cores=9, spec=random_spec(rng), closing=1)
        hodec = get_format("hodec")(ring.in_modes, ring.out_modes, ring.ranks)
        ring.validate(spec)
        a, b = build_network(spec, ring, 2), build_network(spec, hodec, 2)
        assert a.indices == b.indices and [t.indices for t in a.tensors] == [t.indices for t in b.tensors]
        assert ring.params(spec) == hodec.params(spec)
        assert optimize(a).macs == optimize(b).macs and optimize(a).pairs == optimize(b).pairs
        assert schemes_for(a)["dense"].macs == schemes_for(b)["dense"].macs


def test_reference_layer_ranks_spelling_and_wang_order():
    fmt = make_format("tr", SPEC, tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(16,) * 8)
    assert (fmt.in_modes, fmt.out_modes) == ((4, 4, 8), (4, 8, 8))
    net = build_network(SPEC, fmt)
    assert net.indices["r0"].size == 16
    plan = published(net)
    kinds = [(s.left_name, s.right_name, s.kind) for s in plan.steps]
    assert kinds[:3] == [("A1", "A2", "weight"), ("A1·A2", "A3", "weight"), ("X", "A1·A2·A3", "feature")]
    assert kinds[3] == ("X·A1·A2·A3", "C", "conv")
    assert kinds[-1] == ("X·C·A1·A2·A3", "B1·B2·B3", "feature")
    # the ring rank is carried through the conv: B·H'W'·K·r·r0
    assert plan.steps[3].macs == 14 * 14 * 9 * 16 * 16 * 16
    assert optimize(net).macs <= plan.macs
    uniform = make_format("tr", SPEC, tt_shapes=(4, 8, 8, 9, 4, 4, 8), rank=16)
    assert uniform == fmt and fmt.params(SPEC) == sum(math.prod(c.shape) for c in fmt.cores(SPEC))


def test_exact_ring_ranks_and_bounds():
    shapes = (2, 4, 6, 3, 4)
    assert ring_exact_ranks(shapes, 1) == (1, 2, 8, 12, 4, 1)
    assert ring_exact_ranks(shapes, 2) == (2, 1, 4, 24, 8, 2)
    spec = ConvSpec.make(12, 8, (3, 2), input_size=6)
    fmt = make_format("tr", spec, in_modes=(3, 4), out_modes=(2, 4), rank=1)
    assert fmt.max_ranks(spec) == ring_exact_ranks(shapes, 2)
    make_format("tr", spec, in_modes=(3, 4), out_modes=(2, 4), ranks=fmt.max_ranks(spec)).validate(spec)


@pytest.mark.parametrize("ranks, message", [
    ((2, 3, 3, 3, 3, 3), "r_0 \\(2\\) must equal r_N \\(3\\)"),
    ((2, 3, 3, 3, 2), "needs 6 ranks \\(r_0 == r_N, the closing rank\\)"),
    ((99, 3, 3, 3, 3, 99), "rank 99 at position 0 exceeds its bound 8"),
])
def test_bad_ring_ranks_are_one_line_errors(ranks, message):
    spec = ConvSpec.make(12, 8, (3, 2), input_size=6)
    with pytest.raises(TTPlanError, match=message) as err:
        make_format("tr", spec, in_modes=(3, 4), out_modes=(2, 4), ranks=ranks)
    assert "\n" not in str(err.value)
