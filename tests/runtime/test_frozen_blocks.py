"""A frozen residual block of two bound TT layers runs as one call (`ttplan.runtime.frozen_blocks`): the same output
as the unfrozen model, and wherever the bound calls cannot serve (a FLOP counter, a hook, gradients, torch.compile)
the block's own graph, so counts, hooks and training see what they saw."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import ttplan
from tests.helpers.runtime_cases import assert_close
from tests.runtime.test_batchnorm import converted, resnet, way_input
from tests.runtime.test_deploy import import_file
from ttplan.models import load_model
from ttplan.runtime import frozen_blocks
from ttplan.runtime.codegen import emit_model
from ttplan.runtime.frozen_blocks import bind_blocks, bound_block, bound_chain
from ttplan.runtime.lowering import Lowering

pytestmark = pytest.mark.requires_cc


def bound_blocks(model: torch.nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if bound_block(module) is not None]


def identity_blocks(model: torch.nn.Module) -> list[str]:
    """The blocks whose shortcut is the input itself: what a ResNet's blocks without downsampling are."""
    return [name for name, module in model.named_modules()
            if name.count(".") == 1 and type(getattr(module, "shortcut", None)).__name__ == "Identity"]


def test_identity_shortcut_blocks_of_a_frozen_library_model_are_one_call_and_equal_the_unfrozen_model():
    model = converted("resnet20", "merged-fused")
    x = way_input("merged-fused", resnet("resnet20")[1])
    with torch.no_grad():
        unfrozen = model(x)
        with FlopCounterMode(display=False) as unfrozen_count:
            model(x)
        ttplan.freeze(model)
        assert bound_blocks(model) == identity_blocks(model) and len(bound_blocks(model)) == 7
        block = model.get_submodule(bound_blocks(model)[0])
        calls = []
        with torch.no_grad():
            original = type(block).forward
            type(block).forward = lambda self, x: calls.append(self) or original(self, x)
            try:
                frozen = model(x)
            finally:
                type(block).forward = original
        assert not calls  # no bound block ran its graph
        assert torch.equal(frozen, unfrozen)
        with FlopCounterMode(display=False) as counter:  # the bound calls decline: the graphs run the registered op
            assert torch.equal(model(x), unfrozen)
        assert counter.get_total_flops() == unfrozen_count.get_total_flops()
        seen = []  # a hook on a layer of a bound block sees its call
        handle = block.conv1.register_forward_hook(lambda module, args, out: seen.append(module))
        assert torch.equal(model(x), unfrozen) and seen == [block.conv1]
        handle.remove()
        block.conv2.freeze(False)  # one layer unfrozen by itself: the block runs its graph
        assert torch.equal(model(x), unfrozen)
        block.conv2.freeze()
        copied = copy.deepcopy(model)  # fx copies a block from its graph: its layers stay frozen, the block unbound
        assert not bound_blocks(copied) and torch.equal(copied(x), unfrozen)
        ttplan.freeze(copied)  # bound again, each to the copy's own layers
        twin = copied.get_submodule(bound_blocks(model)[0])
        assert bound_block(twin).first is twin.conv1 and bound_block(twin).block is twin
        assert torch.equal(copied(x), unfrozen)
    # gradients to record: the graph, differentiable
    x = x.clone().requires_grad_()
    model(x).sum().backward()
    assert x.grad is not None
    ttplan.freeze(model, False)
    assert not bound_blocks(model) and not bind_blocks(model, False)


def chains(model: torch.nn.Module) -> dict[str, dict[int, int]]:
    return {name: bound_chain(module).runs for name, module in model.named_modules() if bound_chain(module)}


def test_runs_of_bound_blocks_in_a_sequential_are_one_kernel_call_and_fall_back_block_by_block(monkeypatch):
    model = converted("resnet20", "merged-fused")
    x = way_input("merged-fused", resnet("resnet20")[1])
    chained = []
    real = frozen_blocks.run_chain
    monkeypatch.setattr(frozen_blocks, "run_chain", lambda *args: chained.append(len(args[4])) or real(*args))
    with torch.no_grad():
        unfrozen = model(x)
        ttplan.freeze(model)
        # each stage's identity blocks: all three of the first stage's, the last two of the others (the first
        # downsamples)
        assert chains(model) == {"layer1": {0: 3}, "layer2": {1: 3}, "layer3": {1: 3}}
        assert torch.equal(model(x), unfrozen) and chained == [3, 2, 2]  # one call per run, bit for bit
        chained.clear()
        middle = model.layer1[1]
        seen = []  # a hook on a block in a run: the run goes block by block, and the hook sees its block
        handle = middle.register_forward_pre_hook(lambda module, args: seen.append(module))
        assert torch.equal(model(x), unfrozen) and seen == [middle] and chained == [2, 2]
        handle.remove()
        chained.clear()
        with FlopCounterMode(display=False):  # a dispatch mode must see every op: no run in one call
            assert torch.equal(model(x), unfrozen)
        assert not chained
        middle.conv1.cores[0].mul_(-2.0)  # an in-place change (torch counts it): refolded, and the run follows it
        changed = model(x)
        ttplan.freeze(model, False)
        assert not chains(model) and torch.equal(changed, model(x)) and not torch.equal(changed, unfrozen)
        assert chained == [3, 2, 2]  # the changed model still ran its runs in one call each


def test_a_generated_files_freeze_binds_its_blocks_too(tmp_path):
    dense, size = load_model("resnet20", (3, 8, 8))
    dense.eval()
    arch = ttplan.plan_architecture(dense, size, batch=2, fold_weights=True, fused=True)
    layers = [(layer.name, layer.plan.best) for layer in arch.layers if layer.decomposed]
    fused = dict.fromkeys((name for name, _ in layers), Lowering(fused=True))
    module = import_file(emit_model(layers, "resnet20", fused), tmp_path, "ttplan_test_generated_blocks")
    tt = module.convert(dense)
    frozen = module.freeze(module.convert(dense))
    bound = bound_blocks(frozen)
    assert bound == identity_blocks(frozen) and bound
    assert chains(frozen) == {"layer1": {0: 3}, "layer2": {1: 3}, "layer3": {1: 3}}
    x = torch.randn(2, *size)
    with torch.no_grad():
        assert_close(frozen(x), tt(x), rel=1e-5)
        scripted = torch.jit.script(frozen)  # TorchScript scripts the blocks' graphs, and unbinds them
        assert_close(scripted(x), tt(x), rel=1e-5)
    assert not bound_blocks(frozen) and not chains(frozen)
    module.freeze(frozen)
    assert bound_blocks(frozen) == bound and len(chains(frozen)) == 3
    module.freeze(frozen, False)
    assert not bound_blocks(frozen) and not chains(frozen)
    del sys.modules["ttplan_test_generated_blocks"]


@pytest.mark.parametrize("part", ["block", "stage"])
def test_a_frozen_block_and_a_chained_stage_still_compile_to_one_graph(part):
    """torch.compile traces the block's own graph, and a chained stage's blocks one by one: no graph break, no bound
    call inside."""
    import torch._dynamo

    model = converted("resnet20", "merged-fused")
    block = ttplan.freeze(model).get_submodule(bound_blocks(model)[0])
    module = block if part == "block" else model.layer1
    assert part == "block" or bound_chain(module) is not None
    x = torch.randn(2, block.conv1.spec.in_channels, *block.conv1.spec.input_size)
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(module)(x)
        assert_close(torch.compile(module, dynamic=False)(x), module(x), rel=1e-5)
    torch._dynamo.reset()
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
