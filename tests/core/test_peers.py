"""opt_einsum and cotengra on the im2col einsum, re-costed by ttplan."""

import random

import opt_einsum
import pytest

from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.peers import cotengra_available, cotengra_peer, im2col_equation, im2col_macs, opt_einsum_peer
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
