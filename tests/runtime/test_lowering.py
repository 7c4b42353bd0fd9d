"""`ttplan.runtime.lowering`: every plan equals conv2d with the rebuilt kernel and costs exactly its planned FLOPs."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.runtime_cases import (
    assert_close,
    assert_counts_planned_flops,
    plans_for,
    random_case,
    random_linear,
    random_tensors,
    reference,
)
from ttplan.core.contraction import ContractionPlan
from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.runtime.decomposition import rebuild
from ttplan.runtime.lowering import Conv, Lowering, MatMul, _Lowering, copied_elements, lower, run_plan

CASES = 200


def test_every_plan_equals_conv2d_with_the_rebuilt_kernel_values_and_gradients():
    rng, gen = random.Random(20261127), torch.Generator().manual_seed(7)
    checked = set()
    for _ in range(CASES):
        spec, fmt, batch = random_case(rng)
        x, cores = random_tensors(spec, fmt, batch, gen)
        expected = reference(x, cores, spec, fmt)
        probe = torch.randn(expected.shape, dtype=torch.float64, generator=gen)
        grads = torch.autograd.grad((expected * probe).sum(), [x, *cores])
        for name, plan in plans_for(spec, fmt, batch).items():
            out = run_plan(plan, x, cores)
            assert_close(out, expected)
            for got, want in zip(torch.autograd.grad((out * probe).sum(), [x, *cores]), grads):
                assert_close(got, want)
            checked.add((fmt.published_scheme, name))
    assert checked >= {("classical", "classical"), ("hodec", "hodec"), ("classical", "dense"), ("hodec", "dense"),
                       ("classical", "best"), ("hodec", "best")}


def test_flop_counter_reports_exactly_twice_the_planned_macs():
    rng, gen = random.Random(11), torch.Generator().manual_seed(3)
    for _ in range(60):
        spec, fmt, batch = random_case(rng)
        x, cores = random_tensors(spec, fmt, batch, gen)
        for fold_weights in (False, True):
            for plan in plans_for(spec, fmt, batch, fold_weights).values():
                program = lower(plan)
                assert_counts_planned_flops(program, x, cores)
                if fold_weights:
                    assert 2 * plan.feature_macs == plan.flops


def test_every_step_is_one_product_and_the_conv_step_one_conv2d():
    rng = random.Random(5)
    for _ in range(50):
        spec, fmt, batch = random_case(rng)
        for plan in plans_for(spec, fmt, batch).values():
            program = lower(plan)
            products = [ins for ins in (*program.weight, *program.feature) if isinstance(ins, (MatMul, Conv))]
            assert [ins.step for ins in products] == sorted(
                [s.number for s in plan.steps if s.kind == "weight"]) + [
                s.number for s in plan.steps if s.kind != "weight"]
            convs = [ins.step for ins in products if isinstance(ins, Conv)]
            assert convs == [s.number for s in plan.steps if s.kind == "conv"] and len(convs) == 1


def test_linear_layers_in_the_ttm_format():
    rng, gen = random.Random(2), torch.Generator().manual_seed(2)
    for _ in range(40):
        spec, fmt, batch = random_linear(rng)
        x = torch.randn(batch, spec.in_channels, 1, 1, dtype=torch.float64, generator=gen)
        cores = [torch.randn(c.shape, dtype=torch.float64, generator=gen) for c in fmt.cores(spec)]
        expected = (x.flatten(1) @ rebuild(cores, fmt, spec).T).reshape(batch, -1, 1, 1)
        for plan in plans_for(spec, fmt, batch).values():
            with FlopCounterMode(display=False) as counter:
                assert_close(run_plan(plan, x, cores), expected)
            assert counter.get_total_flops() == 2 * plan.macs


def test_outer_products_run_as_products_with_one_summed_element():
    spec = ConvSpec.make(8, 6, 3, 1, 1, 1, 7)
    fmt = make_format("hodec", spec, in_modes=(2, 4), out_modes=(2, 3), rank=3)
    network = build_network(spec, fmt, 2)
    names = [t.name for t in network.tensors]
    b1, a1 = names.index("B1"), names.index("A1")  # no shared index: an outer product
    n = len(names)
    pairs = [(b1, a1), (0, names.index("A2")), (n + 1, n), (n + 2, names.index("C")), (n + 3, names.index("B2"))]
    plan = ContractionPlan(network, pairs, "outer")
    assert plan.steps[0].kind == "weight" and plan.steps[2].kind == "feature"
    gen = torch.Generator().manual_seed(1)
    x, cores = random_tensors(spec, fmt, 2, gen)
    with FlopCounterMode(display=False) as counter:
        out = run_plan(plan, x, cores)
    assert_close(out, reference(x, cores, spec, fmt))
    assert counter.get_total_flops() == 2 * plan.macs


def test_the_published_example_runs_without_copies_of_the_feature_map():
    spec = ConvSpec.make(128, 256, 3, 2, 1, 1, 28)
    fmt = make_format("hodec", spec, tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(1, 16, 16, 16, 16, 16, 16, 1))
    program = lower(optimize(build_network(spec, fmt, 32)))
    reshapes = [ins for ins in program.feature if not isinstance(ins, (MatMul, Conv)) and ins.src in ("x", "t")]
    assert all(ins.perm is None for ins in reshapes)


def test_the_output_mode_a_late_product_creates_lands_in_place_without_a_copy():
    # ResNet-56's 32->32 layer at the latency objective's order: conv to (r1, o2, o3), then r1 x B1 -> o1. With the
    # never-summed modes first the conv gives (o2, o3, r1), o1 lands last and the output is permuted: 32 x 16 x 16
    # elements copied per image; with r1 first o1 lands ahead of o2, o3 and nothing is copied.
    spec = ConvSpec.make(32, 32, 3, 1, 1, 1, 16)
    fmt = make_format("hodec", spec, in_modes=(4, 4, 2), out_modes=(4, 4, 2), ranks=(1, 2, 8, 16, 16, 8, 1, 1))
    plan = None
    for candidate in plans_for(spec, fmt, 32, fold_weights=True).values():
        old = _Lowering(candidate, Lowering(), False).run()
        if copied_elements(old) == 32 * 16 * 16:
            plan = candidate
            break
    assert plan is not None
    assert copied_elements(lower(plan)) == 0
    gen = torch.Generator().manual_seed(2)
    x, cores = random_tensors(spec, fmt, 2, gen)
    assert_close(run_plan(plan, x, cores), reference(x, cores, spec, fmt))


def test_bad_cores_and_inputs_are_one_line_errors():
    spec = ConvSpec.make(4, 4, 3, 1, 1, 1, 5)
    fmt = make_format("hodec", spec, in_modes=(2, 2), out_modes=(4,), rank=2)
    plan = optimize(build_network(spec, fmt))
    cores = [torch.zeros(c.shape) for c in fmt.cores(spec)]
    with pytest.raises(TTPlanError, match="cores given"):
        run_plan(plan, torch.zeros(1, 4, 5, 5), cores[:-1])
    with pytest.raises(TTPlanError, match="core A1 of shape"):
        run_plan(plan, torch.zeros(1, 4, 5, 5), [*cores[:-2], torch.zeros(3, 3), cores[-1]])
    with pytest.raises(TTPlanError, match=r"expected \[B, 4, H, W\]"):
        run_plan(plan, torch.zeros(1, 3, 5, 5), cores)
