"""Every lowering (bmm or 1x1 conv for channel mixings, NCHW or channels-last maps) computes the same layer
and costs exactly the planned FLOPs; weight layouts are prepared once when folded."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.runtime_cases import (
    assert_close,
    assert_counts_planned_flops,
    load_source,
    plans_for,
    random_case,
    random_tensors,
    reference,
)
from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.runtime.codegen import emit_layer
from ttplan.runtime.layers import TTConv2d
from ttplan.runtime.lowering import (
    LOWERINGS,
    Lowering,
    MatMul,
    _Lowering,
    copied_elements,
    default_lowering,
    lower,
    run_plan,
)


@pytest.mark.parametrize("lowering", LOWERINGS, ids=lambda lw: lw.label)
def test_every_lowering_equals_conv2d_values_gradients_and_flops(lowering):
    rng, gen = random.Random(31), torch.Generator().manual_seed(4)
    mixed = differ = 0
    for _ in range(60):
        spec, fmt, batch = random_case(rng)
        x, cores = random_tensors(spec, fmt, batch, gen)
        expected = reference(x, cores, spec, fmt)
        probe = torch.randn(expected.shape, dtype=torch.float64, generator=gen)
        grads = torch.autograd.grad((expected * probe).sum(), [x, *cores])
        for plan in plans_for(spec, fmt, batch).values():
            # both arrangements of the indices a product creates, each checked: lower() keeps the one copying less
            programs = [_Lowering(plan, lowering, summed_first).run() for summed_first in (False, True)]
            assert copied_elements(lower(plan, lowering)) == min(map(copied_elements, programs))
            differ += programs[0].feature != programs[1].feature
            for program in programs:
                mixed += sum(1 for ins in program.feature if isinstance(ins, MatMul) and ins.conv1x1)
                out = run_plan(program, x, cores)
                assert_close(out, expected)
                for got, want in zip(torch.autograd.grad((out * probe).sum(), [x, *cores]), grads):
                    assert_close(got, want)
                assert_counts_planned_flops(program, x, cores)
    assert (mixed > 0) == (lowering.mix == "conv")
    assert differ > 0


@pytest.mark.parametrize("lowering", LOWERINGS, ids=lambda lw: lw.label)
def test_generated_code_runs_each_lowering_exactly(lowering):
    spec = ConvSpec.make(32, 64, 3, 2, 1, input_size=12)
    fmt = make_format("hodec", spec, rank=6)
    plan = optimize(build_network(spec, fmt, 4), fold_weights=True)
    source = emit_layer(plan, "Layer", lowering)
    if lowering.mix == "conv":
        assert "1x1 conv" in source
    layer = load_source(source)["Layer"]().double().eval()
    x = torch.randn(4, 32, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        expected = torch.nn.functional.conv2d(x, layer.to_dense(), stride=2, padding=1)
        layer(x)  # warm the folded cache
        with FlopCounterMode(display=False) as counter:
            out = layer(x)
    assert_close(out, expected)
    assert counter.get_total_flops() == plan.flops


def test_folded_layers_prepare_weight_layouts_once():
    """With folded weights a forward runs no op on the cores: every weight reshape happened at load."""
    spec = ConvSpec.make(16, 32, 3, 1, 1, input_size=8)
    fmt = make_format("hodec", spec, rank=4)
    layer = TTConv2d(spec, fmt, "best", fold_weights=True, batch=2, lowering=Lowering("conv", True)).eval()
    program = layer.program
    assert all(name.startswith("w") for name in program.folded)
    assert not any(ins.src in program.cores for ins in program.feature if hasattr(ins, "src"))
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        dense = torch.nn.functional.conv2d(x, layer.to_dense(), padding=1)
        assert_close(layer(x).double(), dense.double(), rel=1e-4)


def test_unknown_mix_is_a_one_line_error():
    with pytest.raises(TTPlanError, match="mix='gemm': expected one of bmm, conv"):
        Lowering("gemm")


class _Ops(TorchDispatchMode):
    """Records the name of every aten op that runs."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("lowering", LOWERINGS, ids=lambda lw: lw.label)
def test_a_program_copies_the_map_only_where_copied_elements_says_and_nhwc_stays_channels_last(lowering):
    """On an input in the lowering's memory format, a forward whose program counts no copied elements runs no copy
    at all (no hidden `reshape` copy), and an NHWC program returns a channels-last output: a channels-last model
    keeps its format through the layer."""
    rng = random.Random(5)
    copy_free = 0
    for f in ("hodec", "classical", "tucker2", "tr", "cp"):
        for _ in range(4):
            spec = ConvSpec.make(rng.choice([8, 12, 16]), rng.choice([8, 16, 24]), 3, rng.choice([1, 2]), 1,
                                 input_size=(rng.randint(5, 9), rng.randint(5, 9)))
            fmt = make_format(f, spec, rank=rng.choice([3, 4, 6]))
            plan = optimize(build_network(spec, fmt, 2), fold_weights=True, objective=rng.choice(["macs", "memory"]))
            layer = TTConv2d(spec, fmt, plan, fold_weights=True, lowering=lowering).eval()
            x = torch.randn(2, spec.in_channels, *spec.input_size)
            if lowering.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                layer(x)  # fold first
                with _Ops() as seen:
                    out = layer(x)
            copies = [op for op in seen.ops if op.startswith(("aten.clone", "aten.copy_", "aten._to_copy"))]
            if copied_elements(layer.program) == 0:
                copy_free += 1
                assert copies == [], (f, plan.pairs)
            if lowering.channels_last:
                assert out.is_contiguous(memory_format=torch.channels_last)
    assert copy_free >= 5


def test_partial_mixings_of_an_nhwc_map_run_as_1x1_convs_on_its_channels_last_view():
    """A mixing that sums the last modes of an NHWC map and keeps the others open (ResNet-18's default hodec plans
    sum i3 first) is a 1x1 conv on the channels-last view [B, K, H, W·G]: no mm, no copy, the planned FLOPs."""
    spec = ConvSpec.make(16, 16, 3, 1, 1, input_size=6)
    fmt = make_format("hodec", spec, in_modes=[2, 2, 4], out_modes=[2, 2, 4], ranks=[1, 2, 4, 8, 8, 4, 2, 1])
    plan = optimize(build_network(spec, fmt, 2), fold_weights=True)
    first = plan.steps[0]
    assert first.kind == "feature" and {"i3"} <= set(plan.network.tensors[first.right].indices), plan.pairs
    layer = TTConv2d(spec, fmt, plan, fold_weights=True, lowering=Lowering("conv", True)).double().eval()
    mixings = [ins for ins in layer.program.feature if isinstance(ins, MatMul)]
    assert mixings and all(ins.conv1x1 and ins.nhwc for ins in mixings)
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = torch.nn.functional.conv2d(x, layer.to_dense(), padding=1)
        layer(x)  # fold first
        with _Ops() as seen, FlopCounterMode(display=False) as counter:
            out = layer(x)
    assert_close(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert counter.get_total_flops() == plan.flops
    assert not [op for op in seen.ops if op.startswith(("aten.mm", "aten.bmm"))]
    copies = [op for op in seen.ops if op.startswith(("aten.clone", "aten.copy_", "aten._to_copy"))]
    assert bool(copies) == (copied_elements(layer.program) > 0)
    # the generated code runs the same view: equal, channels-last, the planned FLOPs
    generated = load_source(emit_layer(plan, "Layer", Lowering("conv", True)))["Layer"]().double().eval()
    with torch.no_grad():
        expected = torch.nn.functional.conv2d(x, generated.to_dense(), padding=1)
        generated(x)
        with FlopCounterMode(display=False) as counter:
            out = generated(x)
    assert_close(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert counter.get_total_flops() == plan.flops


def test_channels_last_maps_mix_by_1x1_conv_unless_measured_otherwise():
    assert default_lowering(channels_last=True) == Lowering("conv", True)
    assert default_lowering() == Lowering()
    assert default_lowering(fused=True) == Lowering(fused=True)
