"""opt_einsum and cotengra on the im2col einsum, re-costed by ttplan."""

import random

import opt_einsum
import pytest

from ttplan.core.formats import make_format
from ttplan.core.layer import plan_layer
from ttplan.core.network import build_network
from ttplan.core.peers import (
    compare_peers,
    cotengra_available,
    cotengra_peer,
    im2col_equation,
    im2col_macs,
    opt_einsum_peer,
)
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec


def test_opt_einsum_own_cost_matches_im2col_recount(make_random_layer):
    rng = random.Random(5)
    for _ in range(20):
        spec, fmt = make_random_layer(rng, max_cores=6)
        net = build_network(spec, fmt)
        equation, shapes = im2col_equation(net)
        path, info = opt_einsum.contract_path(equation, *shapes, shapes=True, optimize="dp")
        peer = opt_einsum_peer(net, "dp")
        # opt_einsum counts 2 FLOPs per MAC when a step sums an index (dp never takes outer products)
        assert int(info.opt_cost) == 2 * peer.im2col_macs == 2 * im2col_macs(net, peer.pairs)


def test_opt_einsum_orders_never_beat_ttplan_under_its_model(make_random_layer):
    rng = random.Random(6)
    for _ in range(40):
        spec, fmt = make_random_layer(rng, max_cores=6)
        net = build_network(spec, fmt, batch=rng.choice([1, 4]))
        best = optimize(net)
        for method in ("optimal", "dp"):
            assert opt_einsum_peer(net, method).plan.macs >= best.macs


def test_strided_layer_ttplan_beats_best_im2col_plan():
    spec = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)
    fmt = make_format("hodec", spec, tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(1, 16, 16, 16, 16, 16, 16, 1))
    net = build_network(spec, fmt)
    best = optimize(net)
    peer = opt_einsum_peer(net, "optimal")
    assert best.macs < peer.im2col_macs
    assert best.macs < peer.plan.macs


@pytest.mark.skipif(not cotengra_available(), reason="cotengra is optional")
def test_cotengra_peer_is_costed_too():
    spec = ConvSpec.make(64, 64, 3, 1, 1, input_size=16)
    net = build_network(spec, make_format("hodec", spec, rank=8, order=2))
    peer = cotengra_peer(net)
    assert peer.plan.macs >= optimize(net).macs


def test_peers_run_greedy_where_the_exhaustive_optimizers_explode():
    """`layer --compare` on CP with 6 modes a side spent 43 s in opt_einsum's dp and 64 s in cotengra (issue #25,
    item 18: the same explosion as ttplan's exact search). Past ttplan's bound the peers run their greedy optimizers,
    and the layer report says so."""
    spec = ConvSpec.make(128, 128, 3, 1, 1, input_size=8)
    net = build_network(spec, make_format("cp", spec, rank=8, order=7))
    peers = compare_peers(net)
    assert peers and all(peer.name.endswith("-greedy") for peer in peers)
    small = build_network(spec, make_format("cp", spec, rank=8, order=2))
    assert not any(peer.name.endswith("-greedy") for peer in compare_peers(small))
    plan = plan_layer(spec, make_format("cp", spec, rank=8, order=7), compare=True)
    assert any("greedy" in line for line in plan.warnings)
