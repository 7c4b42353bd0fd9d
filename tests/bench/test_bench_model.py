"""`ttplan bench model`: the TT model built from generated code matches the library's, and the report renders."""

import dataclasses

import pytest
import torch

from tests.helpers.cli import run
from ttplan.arch.architecture import plan_architecture
from ttplan.arch.policy import Policy
from ttplan.bench.model import LayerTiming, bench_model, build_tt_model, render_section
from ttplan.bench.model.breakdown import REPLACED
from ttplan.core.latency import LatencyProfile, OpModel
from ttplan.errors import TTPlanError
from ttplan.models import load_model

#: time proportional to MACs, so that the latency objective decomposes layers whatever this machine measured
MAC_PROFILE = LatencyProfile("macs", "cpu", 1, "test", {f"{k}:any": OpModel(0.0, 0.0, 1.0)
                                                        for k in ("feature", "conv", "weight", "dense")})


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_generated_and_library_tt_models_compute_the_same():
    plan = plan_architecture("resnet20", None, None, Policy(), 4, True, objective="latency", profile=MAC_PROFILE)
    dense, size = load_model("resnet20", None)
    dense.eval()
    x = torch.randn(2, *size)
    with torch.no_grad():
        emitted = build_tt_model(dense, plan, "emitted")(x)
        library = build_tt_model(dense, plan, "layers")(x)
    assert torch.allclose(emitted, library, rtol=1e-4, atol=1e-5)


def test_a_channels_last_plan_builds_a_channels_last_model_that_computes_the_same():
    """Planned with `channels_last`, every TT layer lowers to NHWC maps, the generated and the library models are
    channels-last and equal the NCHW TT model on the same input, and every activation stays channels-last."""
    plan = plan_architecture("resnet20", None, None, Policy(), 4, True, objective="latency", profile=MAC_PROFILE,
                             channels_last=True)
    assert plan.channels_last and plan.to_dict()["channels_last"] is True
    assert all(layer.lowering["channels_last"] for layer in plan.layers if layer.decomposed)
    nchw = plan_architecture("resnet20", None, None, Policy(), 4, True, objective="latency", profile=MAC_PROFILE)
    dense, size = load_model("resnet20", None)
    dense.eval()
    x = torch.randn(2, *size)
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    emitted = build_tt_model(dense, plan, "emitted")
    library = build_tt_model(dense, plan, "layers")
    reference = build_tt_model(dense, nchw, "layers")
    formats: set[bool] = set()

    def hook(module, args, out):
        if out.dim() == 4 and min(out.shape[2:]) > 1:
            formats.add(out.is_contiguous(memory_format=torch.channels_last))

    for module in emitted.modules():
        module.register_forward_hook(hook)
    with torch.no_grad():
        got = emitted(xc)
        assert torch.allclose(got, library(xc), rtol=1e-4, atol=1e-5)
        assert torch.allclose(got, reference(x), rtol=1e-4, atol=1e-5)  # TT-SVD of the same weights, NCHW
    assert formats == {True}


def test_bench_model_times_end_to_end_and_per_layer():
    result = bench_model("resnet20", batch=2, threads=1, rounds=1, profile=MAC_PROFILE)
    assert result.dense_ms > 0 and result.tt_ms > 0
    decomposed = [row for row in result.layers if row.decomposed]
    assert decomposed and all(row.tt_ms > 0 and row.tt_predicted_ms > 0 for row in decomposed)
    names = [name for row in result.layers for name in row.names]
    assert len(names) == len(set(names)) == sum(layer.kind == "conv" for layer in result.plan.layers)
    text = render_section(result, "ttplan bench model resnet20")
    assert "| dense ms | TT ms | speedup |" in text and "layer1.0.conv1" in text
    assert result.malloc == "default" and "Allocator: glibc's defaults (`--malloc default`)" in text
    # time proportional to MACs and no fused fit: every layer runs what the MAC objective runs
    assert all(row.macs_plan_ms is None for row in result.layers)
    assert "Every TT layer runs the MAC objective's order on stock ops" in text
    replaced = sum(row.dense_ms * len(row.names) for row in decomposed)
    assert result.replaced_ms == pytest.approx(replaced)
    if result.dense_ms > replaced:
        assert result.ceiling == pytest.approx(result.dense_ms / (result.dense_ms - replaced))
        assert f"at most {result.ceiling:.2f}x" in text
        scaled = sum(row.dense_ms * row.macs_ratio * len(row.names) for row in decomposed)
        assert result.at_dense_rate == pytest.approx(result.dense_ms / (result.dense_ms - replaced + scaled))
        assert 1 <= result.at_dense_rate <= result.ceiling and f"per MAC {result.at_dense_rate:.2f}x" in text
    else:
        assert result.ceiling is None and "so no bound is given" in text
    if result.dense_faults is not None:  # counted where getrusage is (Linux, macOS)
        assert result.dense_faults >= 0 and result.tt_faults >= 0
        assert f"| {result.dense_faults:,.0f} / {result.tt_faults:,.0f} |" in text
    # each model's forward by kind of module: the replaced layers, the kept BN, ReLU and pooling
    parts = result.breakdown
    assert parts is not None and parts.tt[REPLACED] > 0 and parts.dense[REPLACED] > 0
    assert {"BatchNorm2d", "ReLU"} <= set(parts.tt) and "Where each model's forward goes" in text


def test_the_report_counts_the_layers_no_slower_than_the_mac_objectives_choice():
    result = bench_model("resnet20", batch=2, threads=1, rounds=1, profile=MAC_PROFILE)
    rows = [LayerTiming(["a"], "g", True, 2.0, 1.0, 2.0, 1.0, 0.3, macs_plan_ms=1.2, tt_again_ms=1.0),
            LayerTiming(["b"], "g", True, 2.0, 1.0, 2.0, 1.0, 0.3, macs_plan_ms=0.9, tt_again_ms=1.0),
            LayerTiming(["c"], "g", True, 2.0, 1.0, 2.0, 1.0, 0.3)]
    assert [row.no_slower_than_macs_plan for row in rows] == [True, False, None]
    text = render_section(dataclasses.replace(result, layers=rows), "ttplan bench model resnet20")
    assert "1 of 2 distinct layers measured no slower than the MAC objective's order" in text


def test_bench_model_runs_both_models_channels_last_when_asked():
    result = bench_model("resnet20", batch=2, threads=1, rounds=1, profile=MAC_PROFILE, other_profile=MAC_PROFILE,
                         channels_last=True)
    assert result.channels_last and result.plan.channels_last
    text = render_section(result, "ttplan bench model resnet20 --channels-last")
    assert ", --channels-last" in text.splitlines()[0] and "both models and the input channels-last" in text
    from ttplan.bench.model.memory_formats import MODELS

    ms = result.formats.ms
    assert set(ms) == set(MODELS) and all(value > 0 for value in ms.values())
    best_dense, best_tt = result.formats.best("dense"), result.formats.best("TT")
    assert best_dense.startswith("dense ") and best_tt.startswith("TT ")
    assert result.formats.speedup == pytest.approx(ms[best_dense] / ms[best_tt])
    assert "| dense NCHW ms | dense channels-last ms | TT NCHW ms | TT channels-last ms |" in text
    assert f"**{result.formats.speedup:.2f}x**" in text


def test_bench_model_refuses_an_unknown_allocator_mode_in_one_line():
    with pytest.raises(TTPlanError, match=r"malloc='jemalloc': expected one of default, retain"):
        bench_model("resnet20", batch=1, threads=1, rounds=1, profile=MAC_PROFILE, malloc="jemalloc")
    result = run(["bench", "model", "resnet20", "--malloc", "jemalloc"])
    assert result.exit_code == 2 and "'jemalloc' is not one of 'default', 'retain'" in result.output


def test_bench_model_cli_writes_the_report(tmp_path):
    out = tmp_path / "models.md"
    result = run(["bench", "model", "resnet20", "--batch", "2", "--threads", "1", "--rounds", "1",
                  "--objective", "macs", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Latency of whole models" in out.read_text() and "resnet20, batch 2, 1 thread" in out.read_text()


def test_a_plan_that_keeps_every_layer_dense_benchmarks_as_the_dense_model():
    # per-op overhead only: every TT layer (several ops) is predicted slower than its one dense conv
    overhead = LatencyProfile("overhead", "cpu", 1, "test", {f"{k}:any": OpModel(1.0, 0.0, 0.0)
                                                             for k in ("feature", "conv", "weight", "dense")})
    result = bench_model("resnet20", batch=1, threads=1, rounds=1, profile=overhead)
    assert not any(layer.decomposed for layer in result.plan.layers)
    assert result.tt_ms > 0 and all(not row.decomposed for row in result.layers)


@pytest.mark.slow
def test_compiled_models_are_timed_under_each_inductor_setting_and_compute_the_same():
    import torch._inductor.config as inductor_config

    result = bench_model("resnet20", batch=2, threads=1, rounds=1, profile=MAC_PROFILE, compile=True)
    assert [(t.freezing, t.layout_optimization) for t in result.compiled] == [(False, True), (False, False),
                                                                             (True, True), (True, False)]
    assert all(t.dense_ms > 0 and t.tt_ms > 0 for t in result.compiled)
    text = render_section(result, "ttplan bench model resnet20 --compile")
    assert "| inductor layout optimization | freezing | dense ms | TT ms | speedup |" in text
    assert "| off | on |" in text and "Best of each" in text and "against the eager TT model" in text
    # the generated layers under torch.compile trace their weight-only steps and compute what eager mode does
    dense, size = load_model("resnet20", None)
    tt = build_tt_model(dense.eval(), result.plan)
    x = torch.randn(2, *size)
    with torch.no_grad():
        eager = tt(x)
        compiled = torch.compile(tt, dynamic=False)(x)
        torch._dynamo.reset()
        with inductor_config.patch(freezing=True):  # the weight-only steps folded as constants
            frozen = torch.compile(tt, dynamic=False)(x)
    torch._dynamo.reset()
    assert torch.allclose(compiled, eager, rtol=1e-4, atol=1e-5)
    assert torch.allclose(frozen, eager, rtol=1e-4, atol=1e-5)


def test_the_end_to_end_timing_repeats_in_fresh_processes():
    result = bench_model("resnet20", batch=1, threads=1, rounds=1, profile=MAC_PROFILE, processes=2)
    assert len(result.processes) == 2
    assert all(t.dense_ms > 0 and t.tt_ms > 0 for t in result.processes)
    text = render_section(result, "ttplan bench model resnet20 --processes 2")
    speedups = sorted(t.speedup for t in result.processes)
    assert f"Median over the fresh processes: **{(speedups[0] + speedups[1]) / 2:.2f}x**" in text
    assert f"from {speedups[0]:.2f}x to {speedups[1]:.2f}x" in text


def test_a_failing_fresh_process_is_a_one_line_error():
    from ttplan.bench.model import ChildRequest, time_in_processes

    request = ChildRequest({"arch": "resnet999", "batch": 1, "threads": 1}, MAC_PROFILE.to_dict(), 1)
    with pytest.raises(TTPlanError, match=r"fresh process 1 of 1 failed \(exit 2\): Error: .*resnet999"):
        time_in_processes(request, 1)
    with pytest.raises(TTPlanError, match=r"processes=0: expected a number of fresh processes >= 1"):
        time_in_processes(request, 0)


def test_time_pair_visits_each_side_in_turn_with_blocks_of_calls():
    from ttplan.bench.model import time_pair

    order: list[str] = []
    first_ms, second_ms = time_pair(lambda: order.append("a"), lambda: order.append("b"), rounds=2, calls=3)
    assert order == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3  # one warm-up each, then blocks
    assert first_ms >= 0 and second_ms >= 0


def test_the_per_layer_table_times_a_folded_tt_layer_frozen_as_deployed_and_leaves_the_model_alone():
    from ttplan.bench.model.measure import _deployed
    from ttplan.core.formats import make_format
    from ttplan.core.spec import ConvSpec
    from ttplan.runtime.layers import TTConv2d

    spec = ConvSpec.make(16, 16, 3, padding=1, input_size=8)
    fmt = make_format("hodec", spec, rank=4)
    folded, unfolded = (TTConv2d(spec, fmt, "best", fold).eval() for fold in (True, False))
    deployed = _deployed(folded)
    assert deployed is not folded and deployed._frozen is not None and folded._frozen is None
    assert _deployed(unfolded) is unfolded and unfolded._frozen is None
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.equal(deployed(x), folded(x))
