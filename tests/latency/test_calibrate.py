"""`ttplan calibrate`'s timers: every step of a program is timed, on NCHW and on channels-last maps."""

from dataclasses import replace

import pytest
import torch

from ttplan.core.formats import make_format
from ttplan.core.fusion import fused_form
from ttplan.core.latency import OpModel, predict_fused_us
from ttplan.core.network import build_network
from ttplan.core.schemes import merged
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.latency.calibrate import time_dense, time_layer, time_steps
from ttplan.runtime.lowering import Lowering, lower


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_every_step_is_timed_in_either_memory_format(channels_last):
    spec = ConvSpec.make(16, 32, 3, 2, 1, input_size=8)
    plan = optimize(build_network(spec, make_format("hodec", spec, rank=4), 2), fold_weights=True)
    program = lower(plan, Lowering(channels_last=channels_last))
    timed = time_steps(program, 2, torch.device("cpu"), budget_s=0.0)
    feature = [s.number for s in plan.steps if s.kind != "weight"]
    assert [step for step, _ in timed if step in feature] == feature  # each feature-map step once, in order
    assert all(us > 0 for _, us in timed)
    assert time_layer(plan, torch.device("cpu"), 0.0, channels_last) > 0
    assert time_dense(spec, 2, torch.device("cpu"), 0.0, channels_last) > 0


def test_calibration_keeps_each_ops_median_over_rounds(monkeypatch):
    """Three passes over the grid: a step timed 1, 100 and 2 µs (one slow moment) is fitted at 2 µs, once."""
    from ttplan.latency import calibrate as module

    spec = ConvSpec.make(16, 16, 3, 1, 1, input_size=8)
    plan = optimize(build_network(spec, make_format("hodec", spec, rank=4), 2), fold_weights=True)
    per_round = iter([1.0, 100.0, 2.0])
    wide = merged(plan.network, True)
    monkeypatch.setattr(module, "fit_plans", lambda: iter([(plan, 2)]))
    monkeypatch.setattr(module, "dense_grid", lambda: iter([]))
    monkeypatch.setattr(module, "fused_plans", lambda: iter([wide]))
    monkeypatch.setattr(module, "fused_kernel_available", lambda device, channels_last: True)

    def fake_steps(program, batch, device, budget_s):
        us = next(per_round)
        return [(step.number, us) for step in plan.steps]

    fused_rounds = iter([5.0, 500.0, 6.0])
    monkeypatch.setattr(module, "time_steps", fake_steps)
    monkeypatch.setattr(module, "time_layer", lambda *a, fused=False: next(fused_rounds) if fused else 50.0)
    monkeypatch.setattr(module, "time_dense", lambda *a: 7.0)
    seen = {}
    real_fit = module.fit_profile

    def capture(samples, **kwargs):
        seen["samples"] = samples
        return real_fit(samples, **kwargs)

    monkeypatch.setattr(module, "fit_profile", capture)
    result = module.calibrate(rounds=3)
    steps = [s for s in seen["samples"] if s.shape.kind not in ("dense", "fused")]
    assert len(steps) == len(plan.steps) and all(s.us == 2.0 for s in steps)
    (fused,) = [s for s in seen["samples"] if s.shape.kind == "fused"]  # the whole fused layer, median of 3 rounds
    assert fused.us == 6.0 and fused.shape.macs == fused_form(wide).tile_macs >= wide.feature_macs
    assert [s.us for s in seen["samples"] if s.shape.kind == "dense"] == [7.0]  # timed once a round, median kept
    assert "median of 3 rounds" in result.profile.label
    from ttplan.latency.machine import identity

    assert result.profile.machine == identity("cpu") and identity("cpu") in result.profile.label
    with pytest.raises(module.TTPlanError, match="rounds=0"):
        module.calibrate(rounds=0)


def test_the_check_keeps_each_layers_median_over_rounds(monkeypatch):
    from ttplan.latency import calibrate as module
    from ttplan.latency.profiles import default_profile

    spec = ConvSpec.make(16, 16, 3, 1, 1, input_size=8)
    plan = optimize(build_network(spec, make_format("hodec", spec, rank=4), 2), fold_weights=True)
    monkeypatch.setattr(module, "check_layers", lambda: [("one", plan)])
    monkeypatch.setattr(module, "fused_kernel_available", lambda device, channels_last: True)
    tt, dense, fused = iter([1.0, 100.0, 2.0]), iter([30.0, 10.0, 20.0]), iter([9.0, 3.0, 4.0])
    monkeypatch.setattr(module, "time_layer", lambda *a, fused=False: next(fused_times if fused else tt))
    fused_times = fused
    monkeypatch.setattr(module, "time_dense", lambda *a: next(dense))
    base = default_profile()
    profile = replace(base, ops={**base.ops, "fused:any": OpModel(10.0, 1.0, 1.0)})
    result = module.check(profile, rounds=3)
    (row,) = result.rows
    assert (row.tt_measured, row.dense_measured, row.fused_measured) == (2.0, 20.0, 4.0)
    assert row.fused_predicted == predict_fused_us(merged(plan.network, True), profile) is not None
    assert len(result.errors) == 3 and len(result.fused_errors) == 1
