"""The order planning runs (`best_order`): by time, the fewest-MACs order unless another is predicted clearly faster."""

import pytest

from ttplan.core.formats import make_format
from ttplan.core.latency import LatencyProfile, OpModel, predict_plan_us
from ttplan.core.layer import MARGIN, best_order, plan_layer
from ttplan.core.network import build_network
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.runtime.layers import resolve_plan

SPEC = ConvSpec.make(32, 64, 3, 1, 1, input_size=16)
FMT = make_format("hodec", SPEC, rank=8)


def overhead_profile(overhead_us: float) -> LatencyProfile:
    """1 µs per million MACs plus `overhead_us` per op: the larger the overhead, the more fewer ops beat fewer MACs."""
    ops = {f"{kind}:any": OpModel(overhead_us, 0.0, 1.0) for kind in ("feature", "conv", "weight", "dense")}
    return LatencyProfile("overhead", "cpu", 1, "test", ops)


def test_by_time_the_fewest_macs_order_stays_unless_another_is_predicted_faster_by_the_margin():
    net = build_network(SPEC, FMT, batch=1)
    fewest = optimize(net, fold_weights=True)
    kept = replaced = 0
    for overhead in (0.4, 0.5, 0.6, 0.8, 4.0, 8.0):  # predicted gains from 2% to 48% (see the assertions)
        profile = overhead_profile(overhead)
        fastest = optimize(net, fold_weights=True, objective="latency", profile=profile)
        assert fastest.pairs != fewest.pairs
        ratio = predict_plan_us(fastest, profile) / predict_plan_us(fewest, profile)
        chosen = best_order(net, fold_weights=True, objective="latency", profile=profile)
        assert chosen.pairs == (fastest.pairs if ratio < MARGIN else fewest.pairs)
        kept += ratio >= MARGIN
        replaced += ratio < MARGIN
    assert kept >= 2 and replaced >= 2  # both sides of the margin were exercised


def test_other_objectives_are_the_searchs_own_orders():
    net = build_network(SPEC, FMT, batch=4)
    for objective in ("macs", "memory"):
        assert best_order(net, objective=objective).pairs == optimize(net, objective=objective).pairs


@pytest.mark.parametrize("overhead", [0.5, 8.0])
def test_plan_layer_and_generated_layers_run_the_same_order(overhead):
    profile = overhead_profile(overhead)
    planned = plan_layer(SPEC, FMT, batch=1, fold_weights=True, objective="latency", profile=profile)
    module = resolve_plan(SPEC, FMT, "best", True, 1, "latency", profile)  # what `ttplan emit` builds
    expected = best_order(build_network(SPEC, FMT, 1), fold_weights=True, objective="latency", profile=profile)
    assert planned.best.pairs == module.pairs == expected.pairs
