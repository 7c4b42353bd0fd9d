"""The plan table says by what a TT layer is slower than dense (which profile predicted it, folded or not) and what
to try."""

from __future__ import annotations

from ttplan.arch.architecture import plan_architecture
from ttplan.arch.policy import Policy
from ttplan.arch.report import render_text, slower_by
from ttplan.core.latency import LatencyProfile, OpModel
from ttplan.latency.profiles import default_profile

#: every op costs 1 ms whatever its size, the dense conv almost nothing: each TT layer (several ops) is slower
FLAT = LatencyProfile("flat", "cpu", 1, "test", {**{f"{k}:any": OpModel(1000.0, 0.0, 1e-6)
                                                     for k in ("feature", "conv", "weight")},
                                                  "dense:any": OpModel(0.0, 0.0, 1e-6)})


def _plan(profile: LatencyProfile, **options):
    return plan_architecture("resnet20", None, None, Policy(rank=4), 1, profile=profile, fused=False, **options)


def test_a_slower_layer_says_by_how_much_by_which_prediction_and_what_to_try():
    plan = _plan(FLAT)
    slower = [layer for layer in plan.layers if layer.slower_than_dense]
    assert slower and all(layer.decomposed for layer in slower)
    layer = slower[0]
    ratio = sum(p.predicted_ms(p.best) for p in layer.call_plans) / layer.dense_ms  # the profile's own numbers
    assert slower_by(layer) == f"{ratio:.1f}x slower than dense (predicted, unfolded)"
    text = render_text(plan, wide=True)
    row = next(line for line in text.splitlines() if line.startswith(layer.name + " "))
    assert row.rstrip().endswith(slower_by(layer))
    assert (f"TT slower than dense ({len(slower)}): {layer.name}" in text
            and "predicted by the latency profile 'flat'; weight-only steps not folded" in text)
    assert "try: --fold-weights" in text and "--objective latency" in text
    assert "ttplan calibrate" not in text  # a profile fitted by the user is not the default one


def test_the_default_profile_and_folded_weights_change_the_advice():
    folded = render_text(_plan(FLAT, fold_weights=True), wide=True)
    assert "(predicted, folded)" in folded and "weight-only steps folded" in folded
    assert "--fold-weights (" not in folded  # already folded: not advised
    default = render_text(_plan(default_profile()), wide=True)  # it predicts rank-4 layers slower at batch 1
    assert "'default' (ttplan's, not fitted on this machine)" in default and "`ttplan calibrate`" in default


def test_a_layer_kept_dense_as_slower_is_named_so():
    text = render_text(_plan(FLAT, objective="latency", skip_slower=True, fold_weights=True), wide=True)
    assert "(kept dense)" in text and "--skip-slower:" in text
    assert "--objective latency (" not in text  # the plan already chose by time
