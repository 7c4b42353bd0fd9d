"""Frozen generated layers (`freeze`): the weights folded once and each fused layer's kernel call bound, so a forward
runs the kernel with no value checks; the output and the FLOPs are the unfrozen layer's, changes torch counts refold,
and whatever a frozen layer cannot serve (gradients, float64, compile, FLOP counting) takes the layer's own path."""

from __future__ import annotations

import copy
import gc
import sys
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import ttplan
from tests.helpers.runtime_cases import assert_close, load_source, plans_for
from tests.runtime.test_deploy import import_file
from tests.runtime.test_fused import OpLog
from ttplan.arch.architecture import plan_architecture
from ttplan.core.formats import make_format
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.models import load_model
from ttplan.runtime.codegen import emit_layer, emit_model
from ttplan.runtime.kernels import FrozenTucker, tucker_conv2d
from ttplan.runtime.layers import TTConv2d
from ttplan.runtime.lowering import Lowering

pytestmark = pytest.mark.requires_cc
FUSED = Lowering(fused=True)


def _grouped_layer() -> tuple[torch.nn.Module, object]:
    """ResNet-56's layer2 plan (grouped mixings, no weight holding every output channel) as a generated layer that
    carries a folded BatchNorm's scale and bias and a ReLU."""
    spec = ConvSpec.make(32, 32, 3, padding=1, input_size=16)
    fmt = make_format("hodec", spec, in_modes=(4, 4, 2), out_modes=(4, 4, 2), ranks=(1, 2, 8, 16, 16, 4, 1, 1))
    plan = plans_for(spec, fmt, 4, fold_weights=True)["best"]
    layer = load_source(emit_layer(plan, "Layer", FUSED))["Layer"]().eval()
    layer.out_scale, layer.bias = torch.linspace(-1, 1, 32), torch.nn.Parameter(torch.randn(32))
    layer.apply_relu = True
    return layer, plan


def _expected(layer, x, residual):
    with torch.no_grad():
        y = F.conv2d(x.double(), layer.to_dense().double(), padding=1) * layer.out_scale.double().view(1, -1, 1, 1)
        return torch.relu(y + layer.bias.double().view(1, -1, 1, 1) + residual.double())


def test_a_frozen_layer_runs_the_bound_kernel_without_value_checks_and_equals_the_rebuilt_conv():
    layer, plan = _grouped_layer()
    x, residual = torch.randn(4, 32, 16, 16), torch.randn(4, 32, 16, 16)
    with torch.no_grad():
        unfrozen = layer(x, residual)
        layer.freeze()
        assert isinstance(layer._frozen[3], FrozenTucker)
        with mock.patch.object(torch, "equal", wraps=torch.equal) as equal:
            frozen = layer(x, residual)
            assert equal.call_count == 0  # unfrozen, the fold cache compares every core with its copy
            layer.freeze(False)
            layer(x, residual)
            assert equal.call_count > 0
        layer.freeze()
        assert torch.equal(frozen, unfrozen)
        assert_close(frozen.double(), _expected(layer, x, residual), rel=1e-4)
        # something watching ops sees the registered op through the layer's own path, and its planned FLOPs
        with OpLog() as log, FlopCounterMode(display=False) as counter:
            counted = layer(x, residual)
        assert "ttplan.tucker_conv2d" in log.ops and counter.get_total_flops() == plan.flops
        assert torch.equal(counted, frozen)
        # a new batch size is checked once, then served
        assert_close(layer(x[:1], residual[:1]), frozen[:1], rel=1e-6)


def test_changes_torch_counts_refold_a_frozen_layer_and_a_data_write_needs_freezing_again():
    layer, _ = _grouped_layer()
    x, residual = torch.randn(2, 32, 16, 16), torch.randn(2, 32, 16, 16)
    layer.freeze()
    core = layer.cores()[3]
    with torch.no_grad():
        core.mul_(-2.0)  # an in-place op: counted
        assert_close(layer(x, residual).double(), _expected(layer, x, residual), rel=1e-4)
        layer.load_state_dict({k: v * 0.5 for k, v in layer.state_dict().items()})  # load_state_dict: counted
        assert_close(layer(x, residual).double(), _expected(layer, x, residual), rel=1e-4)
        layer.apply_relu = False  # the epilogue changed: bound again
        y = layer(x, residual)
        assert (y < 0).any()
        layer.apply_relu = True
        before = layer(x, residual)
        core.data.mul_(3.0)  # counts no version, keeps the storage: not seen while frozen, as freeze() says
        assert torch.equal(layer(x, residual), before)
        layer.freeze()
        assert_close(layer(x, residual).double(), _expected(layer, x, residual), rel=1e-4)
    # a gradient to record: the layer's own path, differentiable
    layer.train()
    out = layer(x.requires_grad_(), residual)
    out.sum().backward()
    assert core.grad is not None and x.grad is not None
    # another dtype: new storage, so refolded, and the stock ops run it
    double = copy.deepcopy(layer).double().eval()
    with torch.no_grad():
        assert_close(double(x.detach().double(), residual.double()), _expected(double, x.detach(), residual),
                     rel=1e-9)


def test_a_frozen_model_from_the_generated_file_equals_the_unfrozen_one_and_scripts(tmp_path):
    dense, size = load_model("resnet20", (3, 8, 8))
    dense.eval()
    arch = plan_architecture(dense, size, batch=2, fold_weights=True, fused=True)
    layers = [(layer.name, layer.plan.best) for layer in arch.layers if layer.decomposed]
    # every other layer on stock ops, so the file mixes classes with and without a fused step
    lowerings = {name: FUSED if n % 2 else Lowering() for n, (name, _) in enumerate(layers)}
    module = import_file(emit_model(layers, "resnet20", lowerings), tmp_path, "ttplan_test_generated_frozen")
    tt = module.convert(dense)
    frozen = module.freeze(module.convert(dense))
    calls = [type(m._frozen[3]) for m in frozen.modules() if isinstance(m, module._TTLayer)]
    assert FrozenTucker in calls and type(None) in calls
    x = torch.randn(2, *size)
    with torch.no_grad():
        assert_close(frozen(x), tt(x), rel=1e-5)
        with FlopCounterMode(display=False) as frozen_count:
            frozen(x)
        with FlopCounterMode(display=False) as count:
            tt(x)
    assert frozen_count.get_total_flops() == count.get_total_flops()
    # TorchScript compiles a frozen layer (its forward runs the stock ops there), and torch.jit.trace records them
    layer = frozen.layer1[0].conv1
    inner = torch.randn(2, layer.in_channels, 8, 8)
    with torch.no_grad():
        assert_close(torch.jit.script(layer)(inner), layer(inner), rel=1e-5)
        traced = torch.jit.trace(frozen, x)
    assert "tucker_conv2d" not in str(traced.inlined_graph)
    module.freeze(frozen, False)
    assert all(m._frozen is None for m in frozen.modules() if isinstance(m, module._TTLayer))
    del sys.modules["ttplan_test_generated_frozen"]


def test_a_bound_call_declines_what_it_cannot_serve():
    gen = torch.Generator().manual_seed(3)
    wa, g, wc = torch.randn(5, 6, generator=gen), torch.randn(4, 5, 3, 3, generator=gen), torch.randn(7, 4,
                                                                                                   generator=gen)
    call = FrozenTucker(wa, g, wc, [1, 1], [1, 1], [1, 1], bias=torch.randn(7, generator=gen), relu=True)
    x = torch.randn(2, 6, 9, 9, generator=gen)
    expected = tucker_conv2d(x, wa, g, wc, [1, 1], [1, 1], [1, 1], bias=call.bias, relu=True)
    assert torch.equal(call(x), expected)
    assert torch.equal(call(x.contiguous(memory_format=torch.channels_last)), expected)  # any layout
    assert call(x.double()) is None  # not float32
    assert call(torch.randn(2, 5, 9, 9)) is None  # the wrong channels: the layer's own path says what is wrong
    assert call(x, torch.randn(2, 7, 8, 8)) is None  # a residual not of the output's shape
    with FlopCounterMode(display=False):
        assert call(x) is None  # a dispatch mode must see the registered op


def test_a_bound_call_binds_the_c_layer_once_per_map_shape_and_frees_it_with_the_call():
    gen = torch.Generator().manual_seed(4)
    wa, g, wc = torch.randn(5, 6, generator=gen), torch.randn(4, 5, 3, 3, generator=gen), torch.randn(7, 4,
                                                                                                   generator=gen)
    call = FrozenTucker(wa, g, wc, [1, 1], [1, 1], [1, 1], scale=torch.rand(7, generator=gen) + 0.5)
    maps = [torch.randn(batch, 6, size, size, generator=gen) for batch, size in ((1, 9), (3, 9), (1, 5), (1, 9))]
    for x in maps:  # each shape's first call binds; later calls of a shape reuse it
        assert torch.equal(call(x), tucker_conv2d(x, wa, g, wc, [1, 1], [1, 1], [1, 1], scale=call.scale))
    assert len(call.shapes) == 3
    finalizers = [entry[1].finalizer for entry in call.shapes.values()]
    assert all(finalizer.alive for finalizer in finalizers)
    copied = copy.deepcopy(call)  # a copy binds its own on first use
    assert not copied.shapes and torch.equal(copied(maps[0]), call(maps[0]))
    del call, copied
    gc.collect()
    assert not any(finalizer.alive for finalizer in finalizers)  # the C side goes with the last reference


def test_library_layers_freeze_alike_and_ttplan_freeze_takes_either_kind():
    layer, plan = _grouped_layer()
    spec, fmt = plan.network.spec, plan.network.fmt
    library = TTConv2d(spec, fmt, plan, fold_weights=True, batch=4, lowering=FUSED).eval()
    library.load_state_dict({f"cores.{n}": core for n, core in enumerate(layer.cores())})
    library.out_scale, library.bias, library.apply_relu = layer.out_scale.clone(), torch.nn.Parameter(
        layer.bias.detach().clone()), True
    x, residual = torch.randn(4, 32, 16, 16), torch.randn(4, 32, 16, 16)
    with torch.no_grad():
        unfrozen = library(x, residual)
        assert ttplan.freeze(torch.nn.Sequential(library)) is not None and isinstance(library._frozen[3], FrozenTucker)
        with mock.patch.object(torch, "equal", wraps=torch.equal) as equal:
            frozen = library(x, residual)
            assert equal.call_count == 0
        assert torch.equal(frozen, unfrozen)
        with FlopCounterMode(display=False) as counter:
            library(x, residual)
        assert counter.get_total_flops() == plan.flops
        library.cores[0].mul_(-1.5)  # counted: refolded
        layer.cores()[0].mul_(-1.5)
        assert_close(library(x, residual).double(), _expected(layer, x, residual), rel=1e-4)
        ttplan.freeze(torch.nn.Sequential(layer))  # a generated layer, by the same verb
        assert isinstance(layer._frozen[3], FrozenTucker)
        ttplan.freeze(torch.nn.Sequential(library, layer), False)
        assert library._frozen is None and layer._frozen is None
    with pytest.raises(TTPlanError, match="freeze: Conv2d holds no TT layer"):
        ttplan.freeze(torch.nn.Conv2d(3, 3, 3))
    with pytest.raises(TTPlanError, match="nn.Module"):
        ttplan.freeze("resnet20")


def test_a_frozen_model_still_compiles_to_one_graph(tmp_path):
    """torch.compile traces a frozen layer's own path, as an unfrozen one's: no graph break, no bound call inside."""
    import torch._dynamo

    _, plan = _grouped_layer()
    spec, fmt = plan.network.spec, plan.network.fmt
    # dynamo looks a generated function's globals up in sys.modules: the file imported as a module
    module = import_file(emit_layer(plan, "Layer", FUSED), tmp_path, "ttplan_test_generated_frozen_compiled")
    library = TTConv2d(spec, fmt, plan, fold_weights=True, batch=4, lowering=FUSED).eval()
    model = ttplan.freeze(torch.nn.Sequential(module.Layer().eval(), library))
    x = torch.randn(4, 32, 16, 16)
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(x)
    torch._dynamo.reset()
    del sys.modules["ttplan_test_generated_frozen_compiled"]
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
