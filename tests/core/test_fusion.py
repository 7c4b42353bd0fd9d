"""Which plans the fused kernel runs (`fused_form`), what it predicts for them, when planning picks them, and whether
planning may fuse at all (`fusion_wanted`)."""

import pytest

from ttplan.core.formats import make_format
from ttplan.core.fusion import THIN, FusedForm, fused_form, fusion_wanted
from ttplan.core.latency import (
    LatencyProfile,
    OpModel,
    fused_shape,
    predict_fused_us,
    predict_plan_us,
    step_shapes,
)
from ttplan.core.layer import plan_layer
from ttplan.core.network import build_network
from ttplan.core.schemes import merged, schemes_for
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

SPEC = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)
HODEC = make_format("hodec", SPEC, tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(1, 16, 16, 16, 16, 16, 16, 1))


def profile(fused_us_per_mmac: float | None) -> LatencyProfile:
    """Stock ops at 1 µs per million MACs plus 10 µs each; a fused fit at the given rate (None: no fused fit)."""
    ops = {f"{k}:any": OpModel(10.0, 0.0, 1.0) for k in ("feature", "conv", "weight", "dense")}
    if fused_us_per_mmac is not None:
        ops["fused:any"] = OpModel(10.0, 0.0, fused_us_per_mmac)
    return LatencyProfile("test", "cpu", 2, "x", ops, layer_overhead_us=5.0)


def test_the_merged_hodec_order_is_a_mixing_the_conv_and_a_mixing():
    plan = merged(build_network(SPEC, HODEC, 4), fold_weights=True)
    form = fused_form(plan)
    assert (form.c, form.r1, form.r2, form.o, form.window) == (128, 16, 16, 256, 9)
    assert (form.in_pixels, form.out_pixels, form.batch) == (28 * 28, 14 * 14, 4)
    assert form.macs == plan.feature_macs
    assert form.weight_elements == 16 * 128 + 16 * 16 * 9 + 256 * 16
    # whole 8 x 32 tiles: 784 input pixels are 24.5 tiles and 196 output pixels 6.125, each rounded up
    assert form.tile_macs == 4 * (16 * 128 * 800 + 16 * 144 * 224 + 256 * 16 * 224) > form.macs


def test_thin_mixings_run_exactly_their_macs_in_the_tile_count():
    """A mixing summing at most THIN channels per result runs row by row (no tile rounding); one more runs tiles."""
    thin = FusedForm(batch=2, c=16, r1=8, r2=8, o=16, window=9, in_pixels=1024, out_pixels=1024, in_groups=8,
                     out_groups=4)  # ResNet-56's layer1 hodec: 2 channels summed per side
    conv = 8 * 8 * 9 * 1024  # 8 rows: one whole tile; 1024 columns: 32 whole tiles
    assert thin.tile_macs == 2 * (conv + 8 * 2 * 1024 + 16 * 2 * 1024) == thin.macs
    wide = FusedForm(batch=1, c=40, r1=8, r2=20, o=16, window=9, in_pixels=100, out_pixels=100, in_groups=8,
                     out_groups=4)  # THIN + 1 channels summed on each side: tiles
    assert (THIN + 1, THIN + 1) == (40 // 8, 20 // 4)
    assert wide.tile_macs == (24 * 8 * 9 * 128 + 8 * 8 * 5 * 128 + 8 * 5 * 416)


def test_orders_with_a_product_per_mode_or_an_open_rank_are_not_fusable():
    net = build_network(SPEC, HODEC, 4)
    assert fused_form(schemes_for(net, True)["hodec"]) is None  # one core at a time: the map keeps modes open
    classical = make_format("classical", SPEC, rank=8)
    assert fused_form(schemes_for(build_network(SPEC, classical, 4), True)["classical"]) is None
    ring = make_format("tr", SPEC, rank=4)
    ring_net = build_network(SPEC, ring, 4)
    assert all(fused_form(p) is None for name, p in schemes_for(ring_net, True).items() if name != "dense")
    assert fused_form(merged(ring_net, True)) is None  # the closing rank stays open on the map through the conv
    assert fused_form(schemes_for(net, True)["dense"]) is not None  # the rebuilt kernel: one conv, no mixing
    linear = ConvSpec.make_linear(64, 32)
    assert fused_form(optimize(build_network(linear, make_format("ttm", linear, rank=4), 2))) is None


def test_a_fused_prediction_is_one_op_and_the_unfolded_weight_steps():
    net = build_network(SPEC, HODEC, 4)
    folded, unfolded = merged(net, True), merged(net, False)
    fast = profile(0.5)
    assert predict_fused_us(folded, fast) == pytest.approx(fast.predict(fused_shape(fused_form(folded))))
    weights = sum(fast.predict(s) for s in step_shapes(unfolded).values() if s.kind == "weight")
    assert predict_fused_us(unfolded, fast) == pytest.approx(predict_fused_us(folded, fast) + weights)
    assert predict_fused_us(folded, profile(None)) is None  # a profile fitted without fused samples
    assert predict_fused_us(schemes_for(net, True)["hodec"], fast) is None


def test_planning_by_time_runs_a_layer_fused_only_where_that_is_predicted_faster():
    fast, slow = profile(0.01), profile(100.0)
    chosen = plan_layer(SPEC, HODEC, batch=4, fold_weights=True, objective="latency", profile=fast, fused=True)
    assert chosen.fused and fused_form(chosen.best) is not None
    assert chosen.predicted_ms(chosen.best) == pytest.approx(predict_fused_us(chosen.best, fast) / 1000)
    stock = plan_layer(SPEC, HODEC, batch=4, fold_weights=True, objective="latency", profile=fast)
    assert not stock.fused and chosen.predicted_ms(chosen.best) < stock.predicted_ms(stock.best)
    assert stock.predicted_ms(stock.best) == pytest.approx(predict_plan_us(stock.best, fast) / 1000)
    assert not plan_layer(SPEC, HODEC, batch=4, fold_weights=True, objective="latency", profile=slow,
                          fused=True).fused
    assert chosen.to_dict()["fused"] and not stock.to_dict()["fused"]


def test_planning_by_macs_runs_the_fewest_macs_order_itself_fused_where_it_can():
    """With `macs` the order stays the fewest-MACs one; the fused kernel runs it where it is fusable and, under a
    profile, not predicted slower than stock ops (without one, wherever it is fusable)."""
    fast, slow = profile(0.01), profile(100.0)
    plain = plan_layer(SPEC, HODEC, batch=4, fold_weights=True, objective="macs", profile=fast)
    assert not plain.fused and fused_form(plain.best) is not None
    for given in (fast, None):
        fused = plan_layer(SPEC, HODEC, batch=4, fold_weights=True, objective="macs", profile=given, fused=True)
        assert fused.fused and fused.best.pairs == plain.best.pairs and fused.best.macs == plain.best.macs
    assert plan_layer(SPEC, HODEC, batch=4, fold_weights=True, objective="macs", profile=fast, fused=True
                      ).predicted_ms(plain.best) == pytest.approx(predict_fused_us(plain.best, fast) / 1000)
    assert not plan_layer(SPEC, HODEC, batch=4, fold_weights=True, objective="macs", profile=slow, fused=True).fused
    published_only = plan_layer(SPEC, HODEC, batch=4, fold_weights=False, objective="macs", profile=fast, fused=True)
    assert published_only.fused == (fused_form(published_only.best) is not None)


def test_a_memory_limit_is_kept_by_the_fused_choice():
    fast = profile(0.01)
    net = build_network(SPEC, HODEC, 4)
    limit = optimize(net, fold_weights=True, objective="memory").largest_intermediate
    layer = plan_layer(SPEC, HODEC, batch=4, fold_weights=True, objective="latency", profile=fast, fused=True,
                       memory_limit=limit)
    assert layer.best.largest_intermediate <= limit


def test_a_profile_without_the_fused_class_of_a_layer_predicts_nothing_for_it():
    plan = merged(build_network(SPEC, HODEC, 4), fold_weights=True)
    key = fused_shape(fused_form(plan)).key
    only_other = LatencyProfile("test", "cpu", 2, "x", {**profile(None).ops, "fused:thin": OpModel(1.0, 0.0, 0.0)})
    assert key != "fused:thin" and not only_other.covers(key) and predict_fused_us(plan, only_other) is None
    assert profile(1.0).covers(key)  # the pooled fused:any fit serves every class


def test_fusion_is_as_asked_else_nchw_maps_where_the_callers_probe_found_a_compiler():
    """The decision is the core's, torch-free and probing nothing: the caller says whether a C compiler was found."""
    assert fusion_wanted(None, False, True) and not fusion_wanted(None, False, False)
    assert not fusion_wanted(None, True, True)  # channels-last maps: the kernel runs NCHW ones
    assert fusion_wanted(True, False, False) and not fusion_wanted(False, False, True)
    with pytest.raises(TTPlanError, match="the fused kernel runs NCHW maps"):
        fusion_wanted(True, True, True)
