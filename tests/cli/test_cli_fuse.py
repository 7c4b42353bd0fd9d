"""`--fuse/--no-fuse`: planning by time runs layers by the fused kernel where the profile predicts it faster, the
table and the emitted code say so, and the emitted model computes the same layers at the planned FLOPs."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.cli import one_line_error, run
from tests.helpers.runtime_cases import load_source
from ttplan.core.latency import LatencyProfile, OpModel
from ttplan.latency.profiles import save_profile


def fused_profile(path, fused_us_per_mmac: float = 0.01) -> str:
    """Stock ops at 1 µs per million MACs and 50 µs each; fused layers far cheaper per MAC (or dearer)."""
    ops = {f"{k}:any": OpModel(50.0, 0.0, 1.0) for k in ("feature", "conv", "weight", "dense")}
    ops["fused:any"] = OpModel(5.0, 0.0, fused_us_per_mmac)
    save_profile(LatencyProfile("fused-test", "cpu", 1, "test", ops), path)
    return str(path)


ARGS = ["--objective", "latency", "--fold-weights", "--batch", "4", "--no-skip-slower"]


def test_plan_marks_fused_layers_and_no_fuse_plans_stock_ops(tmp_path):
    profile = fused_profile(tmp_path / "p.json")
    fused = run(["plan", "resnet20", *ARGS, "--profile", profile, "--fuse"])
    assert fused.exit_code == 0, fused.output
    assert "fused kernel" in fused.output and "run as one call of ttplan's fused CPU kernel" in fused.output
    stock = run(["plan", "resnet20", *ARGS, "--profile", profile, "--no-fuse"])
    assert stock.exit_code == 0 and "fused kernel" not in stock.output
    dear = run(["plan", "resnet20", *ARGS, "--profile", fused_profile(tmp_path / "q.json", 1000.0), "--fuse"])
    assert "fused kernel" not in dear.output  # predicted slower than stock ops: not chosen


def test_fuse_with_channels_last_is_a_one_line_error(tmp_path):
    result = run(["plan", "resnet20", *ARGS, "--fuse", "--channels-last"])
    one_line_error(result, "fused", "channels")


@pytest.mark.requires_cc
def test_the_emitted_fused_model_equals_the_stock_one_and_counts_the_planned_flops(tmp_path):
    profile = fused_profile(tmp_path / "p.json")
    out = tmp_path / "tt.py"
    result = run(["emit", "--arch", "resnet20", *ARGS, "--profile", profile, "--fuse", "--out", out])
    assert result.exit_code == 0, result.output
    source = out.read_text()
    assert "_tucker_conv2d(" in source and "from ttplan.runtime.kernels import" in source
    namespace = load_source(source)
    from ttplan.arch.architecture import plan_architecture
    from ttplan.latency.profiles import load_profile
    from ttplan.models import load_model

    planned = plan_architecture("resnet20", None, batch=4, fold_weights=True, objective="latency",
                                profile=load_profile(profile), skip_slower=False, fused=True)
    dense, _ = load_model("resnet20", None)
    tt = namespace["convert"](dense.eval()).eval()
    x = torch.randn(4, 3, 32, 32)
    stock_layers = {name: cls for name, cls in namespace["LAYERS"].items()}
    with torch.no_grad():
        tt(x)  # fold once
        with FlopCounterMode(display=False) as counter:
            fused_out = tt(x)
        names = {str(op) for op in counter.get_flop_counts()["Global"]}
        assert "ttplan.tucker_conv2d" in names
        planned_flops = 2 * planned.totals.tt_macs
        assert counter.get_total_flops() == planned_flops
        # the same layers on stock ops: the fallback path of every fused layer, forced by float64
        reference = tt.double()(x.double())
    assert stock_layers and torch.allclose(fused_out.double(), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.requires_cc
def test_emit_one_layer_runs_it_fused_where_predicted_faster(tmp_path):
    geometry = ["--in-channels", "128", "--out-channels", "256", "--kernel-size", "3", "--stride", "2", "--padding",
                "1", "--input-size", "28", "--tt-shapes", "4,8,8,9,4,4,8", "--ranks", "1,16,16,16,16,16,16,1"]
    out = tmp_path / "layer.py"
    fast = run(["emit", *geometry, *ARGS[:-1], "--profile", fused_profile(tmp_path / "p.json"), "--out", out])
    assert fast.exit_code == 0, fast.output
    assert "fused kernel" in fast.output and "_tucker_conv2d(" in out.read_text()
    stock = run(["emit", *geometry, *ARGS[:-1], "--profile", fused_profile(tmp_path / "p.json"), "--no-fuse",
                 "--out", out])
    assert stock.exit_code == 0 and "_tucker_conv2d(" not in out.read_text()
    layer = load_source(out.read_text())
    assert len(layer["__all__"]) == 1


LAYER = ["--in-channels", "128", "--out-channels", "256", "--kernel-size", "3", "--stride", "2", "--padding", "1",
         "--input-size", "28", "--tt-shapes", "4,8,8,9,4,4,8", "--ranks", "1,16,16,16,16,16,16,1"]


def test_emit_fuse_without_a_usable_compiler_says_the_layers_fall_back(tmp_path, monkeypatch):
    """It said "run by the fused kernel" where no kernel could be built."""
    from ttplan.runtime.kernels import build

    monkeypatch.setattr(build, "find_compiler", lambda: None)
    build.load.cache_clear()
    try:
        profile = fused_profile(tmp_path / "p.json")
        layer = run(["emit", *LAYER, *ARGS[:-1], "--profile", profile, "--fuse", "--out", tmp_path / "layer.py"])
        model = run(["emit", "--arch", "resnet20", *ARGS, "--profile", profile, "--fuse", "--out", tmp_path / "m.py"])
    finally:
        build.load.cache_clear()
    for result in (layer, model):
        assert result.exit_code == 0, result.output
        assert "run by the fused kernel" not in result.output
        assert "which cannot run here (no C compiler found" in result.output
        assert "back to stock torch ops" in result.output


def test_emit_fuse_keeps_the_fused_op_in_exports_and_the_default_does_not(tmp_path):
    """`--fuse` opts in to `ttplan::tucker_conv2d` in torch.jit.trace / torch.export captures (they then need ttplan);
    without it, captures hold stock ops whatever the layers run in eager mode."""
    profile = fused_profile(tmp_path / "p.json")
    for flag, kept in (("--fuse", True), (None, False)):
        out = tmp_path / f"{flag}.py"
        result = run(["emit", "--arch", "resnet20", *ARGS, "--profile", profile, *([flag] if flag else []),
                      "--out", out])
        assert result.exit_code == 0, result.output
        source = out.read_text()
        if kept or build_found():  # the default plans fused layers only where a C compiler is found
            assert f"export_fused = {kept}" in source and f"export_fused = {not kept}" not in source
            assert ("the captured model needs ttplan at run time" in source) == kept


def build_found() -> bool:
    """Whether a C compiler is found, so that the default plans fused layers too."""
    from ttplan.runtime.kernels.build import find_compiler

    return find_compiler() is not None


@pytest.mark.requires_cc
def test_no_fuse_with_autotune_times_and_plans_stock_ops_only(tmp_path, monkeypatch):
    """`--no-fuse --autotune` ran layers by the fused kernel where autotune timed it fastest (its lowerings were all
    of the memory format's, the fused one included), and picked orders by the kernel's times: what the bench's
    ONNX Runtime models, planned `--no-fuse`, exported as stock ops."""
    import ttplan
    from ttplan.latency import autotune

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(autotune, "BLOCK_MS", 0.1)
    monkeypatch.setattr(autotune, "LEAST_CALLS", 1)
    profile = ttplan.latency.profiles.load_profile(fused_profile(tmp_path / "p.json"))
    for fused in (False, True):
        arch = ttplan.plan_architecture("resnet20", batch=2, fold_weights=True, objective="latency", profile=profile,
                                        autotune="cpu", fused=fused)
        timed = {row["fused"] for layer in arch.layers if layer.tuned for row in layer.tuned["timings"]}
        assert timed == ({False, True} if fused else {False})
        assert fused or not any(layer.fused for layer in arch.layers)
