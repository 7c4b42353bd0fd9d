"""Deployment of converted and generated models: torch.jit.script compiles the generated code; torch.jit.trace,
torch.export and ONNX export capture stock torch ops unless the fused op is asked for (`Lowering.export_fused`,
`emit --fuse`), so the captured model runs without ttplan; a captured folded model reads its cores, not a cache."""

from __future__ import annotations

import importlib.util
import io
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.helpers.batchnorm import randomize_batchnorms
from tests.helpers.ring_cp_cases import random_cp
from tests.helpers.runtime_cases import assert_close, assert_folded_model_deploys, plans_for, random_case, random_linear
from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.schemes import merged
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.runtime.codegen import emit_layer, emit_model
from ttplan.runtime.kernels import kernel_status
from ttplan.runtime.layers import convert
from ttplan.runtime.lowering import LOWERINGS, Lowering

needs_kernel = pytest.mark.skipif(not kernel_status().available,
                                  reason="no C compiler: the fused kernel is not built")
SPEC = ConvSpec.make(16, 16, 3, padding=1, input_size=8)
FMT = make_format("hodec", SPEC, in_modes=(4, 4), out_modes=(4, 4), rank=8)
PLAN = merged(build_network(SPEC, FMT, 2), fold_weights=True)  # fusable: a mixing, the conv, a mixing


def import_file(source: str, folder: Path, name: str):
    """Generated source as a module imported from a file (TorchScript reads the source of what it compiles)."""
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def models(tmp_path: Path, lowering: Lowering) -> dict[str, nn.Module]:
    """A two-conv model converted by the library and by the generated `convert`, each TT layer in `lowering`."""
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)).eval()
    library = convert(dense, {"0": FMT, "2": FMT}, (16, 8, 8), fold_weights=True, plans={"0": PLAN, "2": PLAN},
                      lowerings={"0": lowering, "2": lowering})
    name = f"deploy_{'fused' if lowering.fused else 'stock'}_{'kept' if lowering.export_fused else 'plain'}"
    generated = import_file(emit_model([("0", PLAN), ("2", PLAN)], "a test", {"0": lowering, "2": lowering}),
                            tmp_path, name).convert(dense)
    return {"library": library, "generated": generated}


def cases(count: int, seed: int):
    """(plan, lowering, input) for random conv, linear and CP layers, every lowering in turn."""
    rng = random.Random(seed)
    for n in range(count):
        if n % 5 == 4:
            spec, fmt = random_cp(rng)[:2]
            batch, plans = 2, {"best": optimize(build_network(spec, fmt, 2), fold_weights=True)}
        else:
            spec, fmt, batch = random_linear(rng) if n % 5 == 3 else random_case(rng)
            plans = plans_for(spec, fmt, batch, fold_weights=n % 2 == 0)
        plan = next(p for p in plans.values() if p.executable)
        lowering = Lowering() if spec.linear else LOWERINGS[n % len(LOWERINGS)]
        x = torch.randn(batch, spec.in_channels) if spec.linear else torch.randn(batch, spec.in_channels,
                                                                                 *spec.input_size)
        if lowering.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield plan, lowering, x


def test_torch_jit_script_compiles_generated_layers_and_equals_eager(tmp_path):
    """It failed on `check_input -> tuple[int, ...]`; the scripted layers run every lowering (the fused one on its
    stock ops), conv, linear and CP layers, and survive a save and load."""
    for n, (plan, lowering, x) in enumerate(cases(12, seed=4)):
        layer = import_file(emit_layer(plan, "Layer", lowering), tmp_path, f"scripted_{n}").Layer().eval()
        scripted = torch.jit.script(layer)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
        with torch.no_grad():
            expected = layer(x)
            assert_close(scripted(x), expected, rel=1e-5)
            assert_close(loaded(x), expected, rel=1e-5)
        assert "tucker_conv2d" not in str(scripted.inlined_graph)


def test_a_scripted_layer_trains(tmp_path):
    """Gradients flow through the scripted code (the weight-only steps run in the graph: no cache in TorchScript)."""
    layer = import_file(emit_layer(PLAN, "Layer", Lowering(fused=True)), tmp_path, "scripted_trains").Layer()
    scripted = torch.jit.script(layer)
    scripted(torch.randn(2, 16, 8, 8)).square().sum().backward()
    assert all(core.grad is not None for core in layer.cores())


@pytest.mark.parametrize("lowering", [Lowering(), Lowering(fused=True)], ids=["stock", "fused"])
def test_export_and_trace_capture_stock_ops_by_default_and_equal_eager(tmp_path, lowering):
    """Under no_grad the exported and traced graphs held `ttplan::tucker_conv2d` (ONNX export failed, a traced file
    did not load without ttplan), and tracing with gradients on failed its sanity check (the check's rerun took
    the fused kernel or the fold cache, the trace the stock ops)."""
    x = torch.randn(2, 16, 8, 8)
    for source, model in models(tmp_path, lowering).items():
        with torch.no_grad():
            expected = model(x)  # fills the fold cache (and packs) first
            exported = torch.export.export(model, (x,))
            traced = torch.jit.trace(model, x)
        traced_with_grad = torch.jit.trace(model, x)
        for graph in (str(exported.graph), str(traced.inlined_graph), str(traced_with_grad.inlined_graph)):
            assert "tucker_conv2d" not in graph, source
        with torch.no_grad():
            for captured in (exported.module(), traced, traced_with_grad):
                assert_close(captured(x), expected, rel=1e-5)


@needs_kernel
def test_export_fused_keeps_the_fused_op_in_captured_graphs(tmp_path):
    x = torch.randn(2, 16, 8, 8)
    for source, model in models(tmp_path, Lowering(fused=True, export_fused=True)).items():
        with torch.no_grad():
            expected = model(x)
            exported = torch.export.export(model, (x,))
            traced = torch.jit.trace(model, x)
            assert str(exported.graph).count("ttplan.tucker_conv2d") == 2, source
            assert str(traced.inlined_graph).count("ttplan::tucker_conv2d") == 2, source
            assert_close(exported.module()(x), expected, rel=1e-5)
            assert_close(traced(x), expected, rel=1e-5)


def test_a_captured_folded_model_reads_its_cores_not_the_cache(tmp_path):
    """The fold cache is bypassed while tracing or exporting: its tensors would be captured as constants, and the
    captured model would not follow its parameters."""
    x = torch.randn(2, 16, 8, 8)
    for model in models(tmp_path, Lowering()).values():
        with torch.no_grad():
            model(x)  # fills the fold cache
            traced = torch.jit.trace(model, x)
            for core in model[0].parameters():
                core.mul_(1.5)  # the traced module shares the parameters
            assert_close(traced(x), model(x), rel=1e-5)


@pytest.mark.slow
def test_a_traced_model_loads_and_runs_where_ttplan_is_not_importable(tmp_path):
    x = torch.randn(2, 16, 8, 8)
    for source, model in models(tmp_path, Lowering(fused=True)).items():
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(model, x), tmp_path / f"{source}.pt")
            torch.save({"x": x, "y": model(x)}, tmp_path / f"{source}-io.pt")
        code = ("import sys; sys.modules['ttplan'] = None\n"  # `import ttplan` now raises ImportError
                "import torch\n"
                f"model = torch.jit.load({str(tmp_path / f'{source}.pt')!r})\n"
                f"io = torch.load({str(tmp_path / f'{source}-io.pt')!r})\n"
                "assert torch.allclose(model(io['x']), io['y'], rtol=1e-5, atol=1e-5)\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                cwd=tmp_path)
        assert result.returncode == 0, (source, result.stderr[-2000:])


def test_onnx_export_of_a_fused_capable_model(tmp_path):
    """Optional: needs the `onnx` and `onnxscript` packages (and `onnxruntime` to run the result)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    x = torch.randn(2, 16, 8, 8)
    for source, model in models(tmp_path, Lowering(fused=True)).items():
        with torch.no_grad():
            expected = model(x)
            program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
        proto = program.model_proto
        assert all(node.domain in ("", "ai.onnx") for node in proto.graph.node), source
        try:
            import onnxruntime
        except ImportError:
            continue
        session = onnxruntime.InferenceSession(proto.SerializeToString())
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        assert_close(torch.from_numpy(out), expected, rel=1e-4)


def test_a_generated_model_with_folded_batchnorms_scripts_traces_and_exports(tmp_path):
    """The generated `convert` folds BN (and the ReLU after the first) into the layers of an eval model; TorchScript,
    torch.jit.trace and torch.export capture the scale, bias and ReLU and equal eager."""
    torch.manual_seed(0)
    dense = randomize_batchnorms(nn.Sequential(
        nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))).eval()
    best = optimize(build_network(SPEC, FMT, 2), fold_weights=True)
    source = emit_model([("0", PLAN), ("3", best)], "a test", {"0": Lowering(fused=True)})
    module = import_file(source, tmp_path, "deploy_folded")
    folded, unfolded = module.convert(dense), module.convert(dense, fold_bn=False)
    assert [type(m).__name__ for m in folded][1:3] == ["Identity", "Identity"] and folded[0].apply_relu
    assert type(folded[4]).__name__ == "Identity" and folded[3].out_scale is not None
    assert_folded_model_deploys(folded, unfolded, torch.randn(2, 16, 8, 8))
