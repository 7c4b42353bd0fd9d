"""`bench model --best` (`ttplan/bench/model/forms.py`): each model in every deployed form, best against best."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

import ttplan.bench.model.forms as forms_module
import ttplan.bench.model.measure as measure
from tests.bench.test_bench_model import MAC_PROFILE
from tests.helpers.errors import one_line
from ttplan.bench.model import bench_model, render_section
from ttplan.bench.model.forms import (
    COMPILED,
    COMPILED_LAST,
    COMPILED_NO_LAYOUT,
    EAGER,
    EAGER_FROZEN,
    EAGER_LAST,
    FORMS,
    ORT,
    BestForms,
    FormTiming,
    checked,
    compiled_runner,
    onnx_runtime_missing,
    onnx_runtime_runner,
    time_forms,
)
from ttplan.core.latency import LatencyProfile, OpModel
from ttplan.runtime.kernels import kernel_status

#: a form's made-up timings: dense fastest compiled, TT fastest in ONNX Runtime, TT unavailable compiled flat
SYNTHETIC = BestForms((
    FormTiming(EAGER, 10.0, 8.0, tt_macs_reduction=0.7),
    FormTiming(EAGER_FROZEN, 9.0, 6.0, tt_macs_reduction=0.7),
    FormTiming(EAGER_LAST, 6.0, 7.0, tt_macs_reduction=0.6),
    FormTiming(COMPILED, 4.0, 5.0, tt_macs_reduction=0.7),
    FormTiming(COMPILED_NO_LAYOUT, 5.0, None, tt_reason="torch.compile failed (X: y)", tt_macs_reduction=0.7),
    FormTiming(COMPILED_LAST, 4.5, 3.0, tt_macs_reduction=0.6),
    FormTiming(ORT, None, 2.0, dense_reason="export failed: z", tt_macs_reduction=0.7),
), rounds=3, threads=2)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_best_against_best_takes_each_sides_fastest_available_form():
    best = SYNTHETIC
    assert best.best_dense.form == COMPILED and best.best_tt.form == ORT
    assert best.ratio == pytest.approx(4.0 / 2.0)
    assert best.headline == f"best TT ({ORT}) against best dense ({COMPILED}): 2.00×"
    # each form's own pair; none where either side is missing
    assert [t.ratio for t in best.forms] == [pytest.approx(1.25), pytest.approx(1.5), pytest.approx(6 / 7),
                                             pytest.approx(0.8), None, pytest.approx(1.5), None]
    assert best.form(ORT).reason("dense") == "export failed: z" and best.form(ORT).reason("TT") == ""
    data = best.to_dict()
    assert data["best_dense"] == {"form": COMPILED, "ms": 4.0}
    assert data["best_tt"] == {"form": ORT, "ms": 2.0, "macs_reduction": 0.7}
    assert data["best_vs_best"] == pytest.approx(2.0) and data["rounds"] == 3 and data["threads"] == 2
    assert [row["form"] for row in data["forms"]] == list(FORMS)
    assert data["forms"][4]["tt_unavailable"] == "torch.compile failed (X: y)" and data["forms"][4]["tt_ms"] is None
    json.dumps(data)  # JSON-ready


def test_a_tie_goes_to_the_first_form_and_a_side_with_no_form_has_no_ratio():
    tie = BestForms((FormTiming(EAGER, 3.0, 2.0), FormTiming(COMPILED, 3.0, 2.0)))
    assert tie.best_dense.form == EAGER and tie.best_tt.form == EAGER and tie.ratio == pytest.approx(1.5)
    none = BestForms((FormTiming(EAGER, 3.0, None, tt_reason="r"), FormTiming(ORT, None, None, "a", "b")))
    assert none.best_tt is None and none.ratio is None
    assert none.headline == "best against best: n/a (TT ran in no form)"
    assert none.to_dict()["best_tt"] is None and none.to_dict()["best_vs_best"] is None
    one_line(lambda: BestForms((FormTiming(EAGER, 1.0, 1.0), FormTiming(EAGER, 2.0, 2.0))), "named twice")
    one_line(lambda: SYNTHETIC.best("sparse"), "side 'sparse'", "dense or TT")
    one_line(lambda: SYNTHETIC.form("jit"), "no form 'jit'")


def test_time_forms_visits_every_runnable_side_in_turn_and_keeps_the_reasons():
    order: list[str] = []
    runners = {EAGER: (lambda: order.append("d0"), lambda: order.append("t0")),
               COMPILED: ("torch.compile failed (E: x)", lambda: order.append("t1"))}
    best = time_forms(runners, rounds=2, macs_reduction={EAGER: 0.6, COMPILED: 0.6}, threads=1)
    # warm-up calls of each, then the rounds, round-robin, each visit a block of back-to-back calls
    assert [name for name, _ in itertools.groupby(order)] == ["d0", "t0", "t1"] * 3
    assert len(order) > 9
    assert best.form(COMPILED).dense_ms is None and best.form(COMPILED).dense_reason == "torch.compile failed (E: x)"
    assert best.form(COMPILED).tt_ms >= 0 and best.form(EAGER).tt_macs_reduction == 0.6


def test_a_form_whose_output_differs_from_eager_is_unavailable_with_the_reason():
    reference = torch.ones(2, 3)
    good = checked(lambda: reference + 1e-6, reference, "compiled")
    assert callable(good)
    assert checked(lambda: [reference.numpy()], reference, "ONNX Runtime") is not None  # a runtime's list of arrays
    wrong = checked(lambda: reference * 2, reference, "compiled")
    assert isinstance(wrong, str) and wrong.startswith("compiled output differs from eager by 1")
    shape = checked(lambda: torch.ones(3), reference, "ONNX Runtime")
    assert shape == "ONNX Runtime output has shape (3,), eager (2, 3)"


def test_a_compile_failure_is_a_one_line_reason(monkeypatch):
    def broken(*args, **kwargs):
        def run(x):
            raise RuntimeError("inductor exploded\nwith a long story")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    reason = compiled_runner(nn.Conv2d(2, 2, 1).eval(), torch.randn(1, 2, 4, 4), layout_optimization=True)
    assert reason == ("torch.compile failed (RuntimeError: inductor exploded); on the CPU inductor needs a C++ "
                      "compiler")


def test_onnx_runtime_missing_is_a_reason_not_a_crash(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert onnx_runtime_missing() == 'onnxruntime is not installed (pip install "ttplan[deploy]")'
    assert onnx_runtime_runner(nn.Conv2d(2, 2, 1).eval(), torch.randn(1, 2, 4, 4), 1) == onnx_runtime_missing()


def test_onnx_runtime_runs_a_model_as_eager_does():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(2, 3, 6, 6)
    run = onnx_runtime_runner(model, x, 1)
    assert callable(run), run
    (out,) = run()
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-5)


def test_onnx_runtime_settings_follow_torchs_threads(monkeypatch):
    """The session gets torch's thread count for intra-op work, one inter-op thread, every graph optimization, and
    threads that do not spin while idle (they would slow the model timed next)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    import onnxruntime

    seen = {}
    real = onnxruntime.InferenceSession

    def spy(path, options, providers):
        seen.update(intra=options.intra_op_num_threads, inter=options.inter_op_num_threads,
                    level=options.graph_optimization_level, providers=providers,
                    spinning=[options.get_session_config_entry(f"session.{pool}.allow_spinning")
                              for pool in ("intra_op", "inter_op")])
        return real(path, options, providers=providers)

    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)
    run = onnx_runtime_runner(nn.Conv2d(2, 2, 1).eval(), torch.randn(1, 2, 4, 4), 2)
    assert callable(run), run
    assert seen == {"intra": 2, "inter": 1, "level": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
                    "providers": ["CPUExecutionProvider"], "spinning": ["0", "0"]}


def _no_compile(monkeypatch) -> None:
    """The compiled forms as unavailable (inductor takes a minute per model here; the slow test compiles)."""
    monkeypatch.setattr(measure, "compiled_runner", lambda model, x, layout: "not compiled in this test")


def test_a_tiny_run_times_every_eager_form_and_marks_onnx_runtime_as_installed(monkeypatch):
    _no_compile(monkeypatch)
    result = bench_model("resnet20", batch=1, threads=1, rounds=1, layer_rounds=1, profile=MAC_PROFILE, best=True,
                          other_profile=MAC_PROFILE,
                         input_size=(3, 8, 8))
    best = result.best
    assert [t.form for t in best.forms] == list(FORMS) and best.rounds == 1 and best.threads == 1
    for form in (EAGER, EAGER_FROZEN, EAGER_LAST):
        assert best.form(form).dense_ms > 0 and best.form(form).tt_ms > 0 and best.form(form).ratio > 0
    for form in (COMPILED, COMPILED_NO_LAYOUT, COMPILED_LAST):
        assert best.form(form).dense_reason == best.form(form).tt_reason == "not compiled in this test"
    ort = best.form(ORT)
    if onnx_runtime_missing() is None:
        pytest.importorskip("onnx")
        pytest.importorskip("onnxscript")
        assert ort.dense_ms > 0 and ort.tt_ms > 0, ort
    else:
        assert ort.dense_ms is None and "onnxruntime is not installed" in ort.dense_reason
    # the TT models' planned MACs reduction: the NCHW plan (MACs profile) beside the channels-last plan
    assert best.form(EAGER).tt_macs_reduction == pytest.approx(result.plan.totals.macs_reduction)
    assert result.plan.totals.macs_reduction > 0.5
    assert best.form(EAGER_LAST).tt_macs_reduction is not None
    assert best.form(COMPILED_LAST).tt_macs_reduction == best.form(EAGER_LAST).tt_macs_reduction
    assert best.ratio == pytest.approx(best.best_dense.dense_ms / best.best_tt.tt_ms)
    text = render_section(result, "ttplan bench model resnet20 --best")
    assert ", --best" in text.splitlines()[0]
    table = text.index("| form | dense ms | TT ms | ratio | TT MACs↓ |")
    assert table < text.index("| dense ms | TT ms | speedup |")  # best against best leads
    assert f"**{best.headline}** (dense {best.best_dense.dense_ms:.2f} ms, TT {best.best_tt.tt_ms:.2f} ms" in text
    assert f"| {EAGER} | " in text and f" | {result.plan.totals.macs_reduction:.1%} |" in text
    assert f"- {COMPILED}, dense and TT: not compiled in this test" in text
    assert result.to_dict()["best"]["best_vs_best"] == pytest.approx(best.ratio)


def test_onnx_runtime_is_marked_unavailable_where_it_is_not_installed(monkeypatch):
    _no_compile(monkeypatch)
    monkeypatch.setattr(forms_module, "onnx_runtime_missing", lambda: "onnxruntime is not installed (test)")
    result = bench_model("resnet20", batch=1, threads=1, rounds=1, layer_rounds=1, profile=MAC_PROFILE, best=True,
                          other_profile=MAC_PROFILE,
                         input_size=(3, 8, 8))
    ort = result.best.form(ORT)
    assert ort.dense_ms is None and ort.tt_ms is None
    assert ort.dense_reason == ort.tt_reason == "onnxruntime is not installed (test)"
    assert result.best.best_dense.form in (EAGER, EAGER_FROZEN, EAGER_LAST)
    text = render_section(result, "ttplan bench model resnet20 --best")
    assert f"- {ORT}, dense and TT: onnxruntime is not installed (test)" in text
    assert f"| {ORT} | n/a | n/a |  | " in text


@pytest.mark.slow
def test_a_tiny_run_compiles_both_models_with_freezing_both_layouts():
    result = bench_model("resnet20", batch=1, threads=1, rounds=1, layer_rounds=1, profile=MAC_PROFILE, best=True,
                          other_profile=MAC_PROFILE,
                         input_size=(3, 8, 8))
    for form in (COMPILED, COMPILED_NO_LAYOUT, COMPILED_LAST):
        timing = result.best.form(form)
        assert timing.dense_ms > 0 and timing.tt_ms > 0, timing
    assert result.best.best_dense is not None and result.best.best_tt is not None


def test_a_channels_last_run_shares_its_nchw_companion_between_both_tables(monkeypatch):
    """With --channels-last and --best, the NCHW models are prepared once, for the memory-format table and the forms;
    the eager channels-last row runs the run's own models."""
    _no_compile(monkeypatch)
    monkeypatch.setattr(measure, "onnx_runtime_runner", lambda model, x, threads: "not exported in this test")
    prepared = []
    real = measure.prepare
    monkeypatch.setattr(measure, "prepare", lambda *a, **k: prepared.append(k["channels_last"]) or real(*a, **k))
    result = bench_model("resnet20", batch=1, threads=1, rounds=1, layer_rounds=1, profile=MAC_PROFILE, best=True,
                          other_profile=MAC_PROFILE,
                         channels_last=True, input_size=(3, 8, 8))
    assert prepared[:2] == [True, False]  # (a third, NCHW without the fused kernel, for ONNX Runtime: next test)
    assert result.formats is not None and result.best.form(EAGER).tt_ms > 0
    assert result.best.form(EAGER_LAST).tt_macs_reduction == pytest.approx(result.plan.totals.macs_reduction)
    text = render_section(result, "ttplan bench model resnet20 --channels-last --best")
    assert "The run's own end-to-end comparison, eager channels-last" in text


def test_onnx_runtime_runs_a_tt_model_planned_without_the_fused_kernel_where_the_plan_fuses(monkeypatch):
    """ONNX carries no ttplan op, so where the run's plan runs layers fused, the ONNX Runtime form exports the TT
    model planned with fused=False (the orders a user deploying to ONNX gets with --no-fuse); its MACs reduction is
    that plan's."""
    _no_compile(monkeypatch)
    exported = []
    monkeypatch.setattr(measure, "onnx_runtime_runner",
                        lambda model, x, threads: exported.append(model) or "not exported in this test")
    prepared = []
    real = measure.prepare
    monkeypatch.setattr(measure, "prepare", lambda *a, **k: prepared.append((k, real(*a, **k))) or prepared[-1][1])
    # time proportional to MACs, the fused kernel's at half the stock ops' rate: fusable layers run fused
    ops = {**MAC_PROFILE.ops, "fused:any": OpModel(0.0, 0.0, 0.5)}
    profile = LatencyProfile("fused", "cpu", 1, "test", ops)
    result = bench_model("resnet20", batch=1, threads=1, rounds=1, layer_rounds=1, profile=profile, best=True,
                         other_profile=MAC_PROFILE, objective="macs", input_size=(3, 8, 8))
    if not kernel_status().available:
        pytest.skip("the fused kernel is not built here, so no layer is fused")
    assert [(k["channels_last"], k.get("fused")) for k, _ in prepared] == [(False, None), (True, None), (False, False)]
    run, stock = prepared[0][1], prepared[2][1]

    def fused_classes(model):
        return [m for m in model.modules() if getattr(m, "fused_groups", None) is not None]

    assert fused_classes(run.tt) and exported == [stock.dense, stock.tt] and not fused_classes(stock.tt)
    assert result.best.form(ORT).tt_macs_reduction == pytest.approx(stock.plan.totals.macs_reduction)


def test_the_compiled_channels_last_form_compiles_the_channels_last_models_on_a_channels_last_input(monkeypatch):
    """`COMPILED_LAST` compiles the models eager channels-last runs (the TT one planned for NHWC maps), with
    inductor's layout optimization on, on the same values in channels-last memory."""
    compiled = []
    monkeypatch.setattr(measure, "compiled_runner",
                        lambda model, x, layout: compiled.append((model, x, layout)) or "not compiled in this test")
    monkeypatch.setattr(measure, "onnx_runtime_runner", lambda model, x, threads: "not exported in this test")
    bench_model("resnet20", batch=1, threads=1, rounds=1, layer_rounds=1, profile=MAC_PROFILE, best=True,
                other_profile=MAC_PROFILE, input_size=(3, 8, 8))
    assert [layout for _, _, layout in compiled] == [True, True, False, False, True, True]
    (dense, x, _), (tt, x_tt, _) = compiled[0], compiled[1]
    (dense_last, x_last, _), (tt_last, x_tt_last, _) = compiled[4], compiled[5]
    assert not x.is_contiguous(memory_format=torch.channels_last) or x.shape[-1] == 1
    assert x_last.is_contiguous(memory_format=torch.channels_last) and x_tt_last is x_last
    assert torch.equal(x_last, x) and x_tt is x
    assert tt_last is not tt and dense_last is not dense
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in dense_last.parameters() if p.dim() == 4)
