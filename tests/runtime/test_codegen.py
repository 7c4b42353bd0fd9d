"""`ttplan.runtime.codegen`: generated layers are standalone, ruff-clean, equal conv2d, cost their plan."""

from __future__ import annotations

import ast
import importlib.util
import random
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.batchnorm import batchnorms, randomize_batchnorms
from tests.helpers.runtime_cases import (
    assert_close,
    assert_same_values_and_gradients,
    conv_with,
    load_source,
    plans_for,
    random_case,
    random_linear,
    the_class,
)
from ttplan.arch.architecture import plan_architecture
from ttplan.core.formats import balanced_factors, make_format, max_rank_format
from ttplan.core.network import build_network
from ttplan.core.schemes import merged
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.models import load_model, trace_layers
from ttplan.runtime.codegen import emit_layer, emit_model
from ttplan.runtime.decomposition import project, rebuild
from ttplan.runtime.layers import TTConv2d, convert
from ttplan.runtime.lowering import Lowering

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_IMPORTS = {"copy", "math", "torch", "torch.nn", "torch.nn.functional"}


def _example():
    spec = ConvSpec.make(128, 256, 3, 2, 1, 1, 28)
    fmt = make_format("hodec", spec, tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(1, 16, 16, 16, 16, 16, 16, 1))
    return spec, fmt


def test_generated_layers_equal_conv2d_with_the_rebuilt_kernel_for_every_scheme_values_and_gradients():
    rng, gen = random.Random(99), torch.Generator().manual_seed(9)
    for _ in range(200):
        spec, fmt, batch = random_case(rng)
        x = torch.randn(batch, spec.in_channels, *spec.input_size, dtype=torch.float64, generator=gen)
        x.requires_grad_()
        for plan in plans_for(spec, fmt, batch).values():
            layer = the_class(emit_layer(plan))(dtype=torch.float64)
            cores = layer.cores()
            assert [tuple(c.shape) for c in cores] == [c.shape for c in fmt.cores(spec)]
            kernel = rebuild(cores, fmt, spec)
            assert_close(layer.to_dense(), kernel)
            expected = conv_with(x, kernel, spec)
            assert_same_values_and_gradients(layer(x), expected, [x, *cores], gen)


def test_generated_layers_cost_exactly_the_planned_flops():
    rng, gen = random.Random(5), torch.Generator().manual_seed(5)
    for _ in range(40):
        spec, fmt, batch = random_case(rng)
        x = torch.randn(batch, spec.in_channels, *spec.input_size, generator=gen)
        for fold_weights in (False, True):
            for plan in plans_for(spec, fmt, batch, fold_weights).values():
                layer = the_class(emit_layer(plan))()
                assert layer.fold_weights is fold_weights
                with torch.no_grad():
                    layer(x)
                    with FlopCounterMode(display=False) as counter:
                        layer(x)
                assert counter.get_total_flops() == 2 * plan.macs
                with FlopCounterMode(display=False) as counter:
                    layer(x)  # gradients recorded: weight-only steps always run
                assert counter.get_total_flops() == 2 * (plan.feature_macs + plan.weight_macs)


def test_generated_cores_match_ttconv2d_and_from_dense_is_tt_svd():
    spec, fmt = _example()
    cls = the_class(emit_layer(optimize(build_network(spec, fmt, 32))))
    weight = torch.randn(256, 128, 3, 3, dtype=torch.float64)
    bias = torch.randn(256, dtype=torch.float64)
    layer = cls.from_dense(weight, bias)
    assert_close(layer.to_dense(), project(weight, fmt, spec), rel=1e-9)  # same truncation as the library's
    library = TTConv2d(replace(spec, bias=True), fmt, plan="hodec", dtype=torch.float64)
    state = layer.state_dict()  # the library's naming: the cores as cores.0, cores.1, ... in chain order
    assert list(state) == list(library.state_dict()) == ["bias", *(f"cores.{n}" for n in range(7))]
    assert all(torch.equal(state[f"cores.{n}"], core) for n, core in enumerate(layer.cores()))
    library.load_state_dict(state)
    x = torch.randn(2, 128, 28, 28, dtype=torch.float64)
    assert_close(layer(x), library(x), rel=1e-9)
    clone = cls(bias=True, dtype=torch.float64)
    clone.load_state_dict(library.state_dict())
    assert_close(clone(x), layer(x))


@pytest.mark.parametrize("kind, in_modes, out_modes", [("hodec", (2, 4), (3, 2)), ("classical", (4, 2), (2, 3))])
def test_generated_from_dense_is_exact_at_maximal_ranks(kind, in_modes, out_modes):
    spec = ConvSpec.make(8, 6, (3, 2), 1, 1, 1, 6)
    fmt = max_rank_format(kind, spec, in_modes, out_modes)
    cls = the_class(emit_layer(optimize(build_network(spec, fmt))))
    weight = torch.randn(6, 8, 3, 2, dtype=torch.float64)
    layer = cls.from_dense(weight)
    assert_close(layer.to_dense(), weight)
    x = torch.randn(1, 8, 6, 6, dtype=torch.float64)
    assert_close(layer(x), F.conv2d(x, weight, padding=1))


def test_generated_linear_layer():
    rng = random.Random(1)
    for _ in range(10):
        spec, fmt, batch = random_linear(rng)
        cls = the_class(emit_layer(optimize(build_network(spec, fmt, batch))))
        weight = torch.randn(spec.out_channels, spec.in_channels, dtype=torch.float64)
        bias = torch.randn(spec.out_channels, dtype=torch.float64)
        layer = cls.from_dense(weight, bias)
        x = torch.randn(batch, 3, spec.in_channels, dtype=torch.float64)
        assert_close(layer(x), F.linear(x, layer.to_dense(), bias))


def _sources() -> dict[str, str]:
    spec, fmt = _example()
    network = build_network(spec, fmt, 32)
    classical_spec = ConvSpec.make(64, 64, (3, 1), 1, (1, 0), (2, 1), 17, bias=True)
    classical = make_format("classical", classical_spec, in_modes=(4, 4, 4), out_modes=(4, 4, 4), rank=8)
    linear = ConvSpec.make_linear(512, 1000, bias=True)
    ttm = make_format("ttm", linear, in_modes=(8, 8, 8), out_modes=(10, 10, 10), rank=8)
    plans = plans_for(classical_spec, classical, 4, fold_weights=True)
    return {
        "best.py": emit_layer(optimize(network)),
        "dense.py": emit_layer(plans_for(spec, fmt, 32)["dense"]),
        "classical.py": emit_layer(plans["classical"]),
        "classical_best.py": emit_layer(plans["best"]),
        "linear.py": emit_layer(optimize(build_network(linear, ttm))),
        "model.py": emit_model([("a.conv", optimize(network)), ("b.conv", optimize(network)),
                                ("fc", optimize(build_network(linear, ttm)))], "a test"),
    }


def test_generated_files_import_torch_only_and_name_their_class():
    for name, source in _sources().items():
        tree = ast.parse(source)
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(f"{node.module}.{node.names[0].name}" if node.module == "torch" else node.module)
        assert imported <= ALLOWED_IMPORTS, (name, imported)
        namespace = load_source(source)
        if name != "model.py":
            assert len(namespace["__all__"]) == 1
    model = load_source(_sources()["model.py"])
    assert model["__all__"] == ["TTHodecConv128to256K3S2P1", "TTTtmLinear512to1000", "LAYERS", "convert", "freeze"]
    assert model["LAYERS"]["a.conv"] is model["LAYERS"]["b.conv"]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_generated_files_pass_ruff(tmp_path):
    for name, source in _sources().items():
        (tmp_path / name).write_text(source)
    result = subprocess.run(["ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_file_loads_as_a_module(tmp_path):
    path = tmp_path / "layer.py"
    path.write_text(_sources()["best.py"])
    spec = importlib.util.spec_from_file_location("layer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    layer = getattr(module, module.__all__[0])()
    assert layer(torch.randn(1, 128, 28, 28)).shape == (1, 256, 14, 14)
    exported = torch.export.export(layer, (torch.randn(2, 128, 28, 28),))
    x = torch.randn(2, 128, 28, 28)
    assert_close(exported.module()(x), layer(x), rel=1e-5)


def test_generated_model_convert_gives_the_dense_logits():
    torch.manual_seed(1)
    model, size = load_model("resnet20")
    model = model.double().eval()
    layers = []
    for traced in trace_layers(model, size):
        spec = traced.spec
        if traced.kind == "linear":
            fmt = max_rank_format("ttm", spec, balanced_factors(spec.in_channels, 2), (2, 5))
        else:
            fmt = max_rank_format("hodec", spec, balanced_factors(spec.in_channels, 1 if spec.in_channels < 8 else 2),
                                  balanced_factors(spec.out_channels, 2))
        layers.append((traced.name, optimize(build_network(spec, fmt))))
    namespace = load_source(emit_model(layers, "resnet20"))
    assert len(namespace["__all__"]) - 2 < len(layers)  # identical layer plans share one class
    tt = namespace["convert"](model)
    assert type(tt.get_submodule("layer2.1.conv2")).__name__.startswith("TTHodecConv32to32")
    assert type(model.get_submodule("layer2.1.conv2")).__name__ == "Conv2d"
    x = torch.randn(2, *size, dtype=torch.float64)
    with torch.no_grad():
        assert_close(tt(x), model(x), rel=1e-9)



def test_generated_convert_folds_the_batchnorms_of_an_eval_model_as_the_library_does():
    """Every other layer runs a merged order on the fused kernel (the scale goes into its last operand), the others
    their searched order (the scale runs after the last product): the folded model equals the unfolded one, counts
    the planned MACs and has the state_dict keys of the library's folded model; a model in training keeps its BNs."""
    torch.manual_seed(0)
    dense, size = load_model("resnet20")
    randomize_batchnorms(dense).eval()
    plan = plan_architecture(dense, size, batch=2, fold_weights=True)
    layers, lowerings = [], {}
    for n, (name, best) in enumerate(plan.plans()):
        if n % 2:
            best = merged(build_network(best.network.spec, best.network.fmt, 2), fold_weights=True)
            lowerings[name] = Lowering(fused=True)
        layers.append((name, best))
    namespace = load_source(emit_model(layers, "resnet20", lowerings))
    folded, unfolded = namespace["convert"](dense), namespace["convert"](dense, fold_bn=False)
    assert batchnorms(unfolded) == batchnorms(dense) and batchnorms(folded) == batchnorms(dense) - len(layers)
    library = convert(dense, plan.formats(), size, fold_weights=True, plans=dict(layers), lowerings=lowerings)
    assert set(folded.state_dict()) == set(library.state_dict())
    x = torch.randn(2, *size)
    with torch.no_grad():
        expected = unfolded(x)
        assert_close(folded(x), expected, rel=1e-4)
        assert_close(library(x), expected, rel=1e-4)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        folded(x)
    planned = sum(layer.macs for layer in plan.layers if not layer.decomposed) + sum(p.macs for _, p in layers)
    assert counter.get_total_flops() == 2 * planned
    assert batchnorms(namespace["convert"](dense.train())) == batchnorms(dense)

def test_generated_files_share_one_base_class_and_check_their_input():
    sources = _sources()
    for name, source in sources.items():
        assert source.count("class _TTLayer(nn.Module):") == 1, name
        assert source.count("def folded_weights(") == 1 and source.count("def from_dense(") == 1, name
    model = load_source(sources["model.py"])
    conv = model["TTHodecConv128to256K3S2P1"]()
    with pytest.raises(ValueError, match=r"input of shape \[2, 64, 28, 28\]: expected \[B, 128, H, W\]"):
        conv(torch.randn(2, 64, 28, 28))
    linear = model["TTTtmLinear512to1000"]()
    with pytest.raises(ValueError, match=r"expected \[\.\.\., 512\]"):
        linear(torch.randn(3, 500))
    assert linear(torch.randn(2, 3, 512)).shape == (2, 3, 1000)


def test_generated_comments_show_physical_sizes():
    source = _sources()["best.py"]
    assert "(i1 i2 i3)=128" in source or "=128]" in source
    assert "expand is a view" in source
