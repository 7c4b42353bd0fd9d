"""The folded-weight cache: one check (dtype, device, shape and values of each core against a copy) for TTConv2d
and the generated layers, so a core changed by any route refolds, `.data` writes included."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.runtime_cases import assert_close, load_source
from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.schemes import merged
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.runtime.codegen import emit_layer
from ttplan.runtime.fold_cache import UNCHANGED_SOURCE, cached_fold
from ttplan.runtime.fold_cache import cores_unchanged as unchanged
from ttplan.runtime.kernels import kernel_status
from ttplan.runtime.layers import TTConv2d
from ttplan.runtime.lowering import Lowering

SPEC = ConvSpec.make(8, 6, 3, padding=1, input_size=5)
FMT = make_format("hodec", SPEC, in_modes=(2, 4), out_modes=(2, 3), rank=3)


def test_the_library_and_the_generated_check_agree_on_dtype_device_shape_and_values():
    namespace = {"torch": torch}
    exec(UNCHANGED_SOURCE, namespace)
    generated = namespace["cores_unchanged"]
    cores = [torch.zeros(2, 3), torch.ones(4, dtype=torch.float64)]
    copies = [core.clone() for core in cores]
    cases = [copies, copies[:1], [copies[0].double(), copies[1]], [copies[0].reshape(3, 2), copies[1]],
             [copies[0], copies[1].float()], [copies[0], copies[1] * 2]]
    assert [unchanged(case, cores) for case in cases] == [True, False, False, False, False, False]
    assert [generated(case, cores) for case in cases] == [unchanged(case, cores) for case in cases]
    cores[1].data[2] = 5.0  # no version counted, same storage: still seen
    assert not unchanged(copies, cores) and not generated(copies, cores)


def test_an_entry_is_reused_while_the_cores_hold_its_values():
    cores = [torch.zeros(2, 3), torch.zeros(4)]
    entry = cached_fold(None, cores, lambda: "folded")
    assert cached_fold(entry, cores, lambda: "again") is entry
    cores[0].data.add_(1.0)
    assert cached_fold(entry, cores, lambda: "again")[1] == "again"


def test_library_and_generated_layers_cache_under_the_same_check():
    x = torch.randn(2, 8, 5, 5)
    library = TTConv2d(SPEC, FMT, fold_weights=True)
    source = emit_layer(optimize(build_network(SPEC, FMT), fold_weights=True))
    assert UNCHANGED_SOURCE in source and "cores_unchanged(cached[0], cores)" in source
    namespace = load_source(source)
    generated = namespace[namespace["__all__"][0]](fold_weights=True)
    with torch.no_grad():
        library(x)
        generated(x)
    assert unchanged(library._folded[0], library.cores) and unchanged(generated._folded[0], generated.cores())
    # a move to another dtype refolds both
    with torch.no_grad():
        library.double()(x.double())
        generated.double()(x.double())
    assert library._folded[0][0].dtype == generated._folded[0][0].dtype == torch.float64


def test_wrong_cores_get_the_same_error_from_the_runtime_and_the_rebuild():
    from ttplan.errors import TTPlanError
    from ttplan.runtime.decomposition import rebuild
    from ttplan.runtime.lowering import fold

    plan = optimize(build_network(SPEC, FMT))
    good = [torch.zeros(c.shape) for c in FMT.cores(SPEC)]
    for cores in (good[:-1], [*good[:-1], torch.zeros(9, 9)]):
        with pytest.raises(TTPlanError) as from_fold:
            fold(plan, cores)
        with pytest.raises(TTPlanError) as from_rebuild:
            rebuild(cores, FMT, SPEC)
        assert str(from_fold.value) == str(from_rebuild.value)
        assert "\n" not in str(from_fold.value)


LAYER_SPEC = ConvSpec.make(16, 16, 3, padding=1, input_size=8)
LAYER_FMT = make_format("hodec", LAYER_SPEC, in_modes=(4, 4), out_modes=(4, 4), rank=8)
#: a merged (fusable) order, weights folded
LAYER_PLAN = merged(build_network(LAYER_SPEC, LAYER_FMT, 2), fold_weights=True)


def _layers(lowering: Lowering) -> list[torch.nn.Module]:
    """A TTConv2d and the generated layer of `LAYER_PLAN`, with the same cores."""
    spec, fmt, plan = LAYER_SPEC, LAYER_FMT, LAYER_PLAN
    library = TTConv2d(spec, fmt, plan, fold_weights=True, batch=2, lowering=lowering).eval()
    generated = load_source(emit_layer(plan, "Layer", lowering))["Layer"]().eval()
    generated.load_state_dict({name: core for (name, _), core in zip(generated.cores_spec, library.cores)})
    return [library, generated]


@pytest.mark.parametrize("fused", [False, True])
def test_data_writes_refold_library_and_generated_layers(fused):
    """`p.data.mul_(2)` and `p.data.copy_(w)` count no version and keep the storage: folded layers (and the fused
    kernel's packed weights) kept the old values, 34-99% off. Each forward equals conv2d with the rebuilt kernel and a
    cached forward counts the planned feature-map FLOPs."""
    if fused and not kernel_status().available:
        pytest.skip("no C compiler: the fused kernel is not built")
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)
    for layer in _layers(Lowering(fused=fused)):
        cores = list(layer.cores) if isinstance(layer, TTConv2d) else layer.cores()
        with torch.no_grad():
            layer(x)  # folds (and packs)
            for edit in ("mul", "copy", "every core"):
                if edit == "mul":
                    cores[0].data.mul_(2.0)
                elif edit == "copy":
                    cores[-1].data.copy_(torch.randn_like(cores[-1]))
                else:
                    for core in cores:
                        core.data.neg_()
                expected = F.conv2d(x.double(), layer.to_dense().double(), padding=1)
                assert_close(layer(x).double(), expected, rel=1e-4)
                with FlopCounterMode(display=False) as counter:
                    again = layer(x)
                assert_close(again.double(), expected, rel=1e-4)
                assert counter.get_total_flops() == 2 * LAYER_PLAN.feature_macs


@pytest.mark.parametrize("fused", [False, True])
def test_a_cache_filled_under_inference_mode_serves_a_later_forward_that_records_gradients(fused):
    """The entry is made outside inference mode: a folded model run first under `torch.inference_mode()` then failed
    a backward pass ("Inference tensors cannot be saved for backward")."""
    if fused and not kernel_status().available:
        pytest.skip("no C compiler: the fused kernel is not built")
    torch.manual_seed(1)
    x = torch.randn(2, 16, 8, 8)
    warmed, fresh = _layers(Lowering(fused=fused)), _layers(Lowering(fused=fused))
    for layer, other in zip(warmed, fresh):
        other.load_state_dict(layer.state_dict())
        with torch.inference_mode():
            layer(x)
        grads = []
        for model in (layer, other):
            model.requires_grad_(False)  # frozen cores: the forward reads the cache and records the map's gradient
            inputs = x.clone().requires_grad_()
            model(inputs).square().sum().backward()
            grads.append(inputs.grad)
        assert_close(grads[0], grads[1], rel=1e-5)


def test_cached_operands_record_no_gradient_and_a_model_that_ran_deep_copies():
    """`torch.inference_mode(False)` turns grad mode on: entered after `torch.no_grad()`, the cache held operands with
    autograd graphs back to the cores, and `copy.deepcopy` of a folded model that had run failed (non-leaf tensors)."""
    torch.manual_seed(2)
    x = torch.randn(2, 16, 8, 8)
    for layer in _layers(Lowering()):
        with torch.no_grad():
            expected = layer(x)
        cached = layer._folded[1]  # TTConv2d's dict of operands, the generated weights() tuple
        operands = cached.values() if isinstance(cached, dict) else cached
        assert all(operand.grad_fn is None for operand in operands)
        with torch.no_grad():
            assert torch.equal(copy.deepcopy(layer)(x), expected)
