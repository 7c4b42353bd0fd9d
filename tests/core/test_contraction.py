"""Scheme costs against an independent step-by-step recount from docs/cost-model.md's formulas."""

import math
import random

import pytest

from ttplan.core.contraction import ContractionPlan
from ttplan.core.formats import make_format
from ttplan.core.network import build_network, index_order
from ttplan.core.schemes import dense, scheme
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

SPEC = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)


def classical_formula(spec: ConvSpec, fmt, batch: int) -> int:
    """Garipov's order: B·H'W'·I·r_0·K, then B·H'W'·r_{j-1}·r_j·(I_j…I_d)·(O_1…O_j) per core."""
    hw = spec.out_pixels
    total = batch * hw * spec.in_channels * fmt.ranks[0] * spec.window
    for j in range(1, len(fmt.in_modes) + 1):
        total += (batch * hw * fmt.ranks[j - 1] * fmt.ranks[j]
                  * math.prod(fmt.in_modes[j - 1:]) * math.prod(fmt.out_modes[:j]))
    return total


def hodec_formula(spec: ConvSpec, fmt, batch: int) -> int:
    """The published hodec order, per step: input cores at H·W from the far end, conv, output cores at H'·W'."""
    d, e = len(fmt.in_modes), len(fmt.out_modes)
    r = fmt.ranks
    total = 0
    for j in range(d, 0, -1):  # A_j: ranks r[e+j], r[e+j+1]; still carries i_1..i_j
        total += batch * spec.in_pixels * r[e + j] * r[e + j + 1] * math.prod(fmt.in_modes[:j])
    total += batch * spec.out_pixels * r[e] * r[e + 1] * spec.window
    for j in range(e, 0, -1):  # B_j: ranks r[j-1], r[j]; already carries o_{j+1}..o_e
        total += batch * spec.out_pixels * r[j - 1] * r[j] * math.prod(fmt.out_modes[j - 1:])
    return total


def test_issue_reference_numbers():
    cl = make_format("classical", SPEC, in_modes=(4, 4, 8), out_modes=(4, 8, 8), rank=16)
    plan = scheme("classical", build_network(SPEC, cl))
    assert plan.macs == 87_105_536 and plan.params == 13_456
    assert round(plan.macs / SPEC.dense_macs(), 2) == 1.51
    hd = make_format("hodec", SPEC, tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(1, 16, 16, 16, 16, 16, 16, 1))
    plan = scheme("hodec", build_network(SPEC, hd))
    assert plan.macs == 10_486_784 and plan.params == 8_640


@pytest.mark.parametrize("batch", [1, 3])
def test_schemes_equal_formula_recount_on_random_layers(make_random_layer, batch):
    rng = random.Random(10 + batch)
    for _ in range(60):
        spec, fmt = make_random_layer(rng, max_cores=7)
        net = build_network(spec, fmt, batch)
        if fmt.name == "classical":
            assert scheme("classical", net).macs == classical_formula(spec, fmt, batch)
        else:
            assert scheme("hodec", net).macs == hodec_formula(spec, fmt, batch)


def test_dense_scheme_is_rebuild_plus_one_dense_conv():
    fmt = make_format("hodec", SPEC, tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(1, 16, 16, 16, 16, 16, 16, 1))
    plan = dense(build_network(SPEC, fmt))
    assert plan.feature_macs == SPEC.dense_macs()
    assert [s.kind for s in plan.steps][-1] == "conv"
    assert all(s.kind == "weight" for s in plan.steps[:-1])
    assert plan.steps[-2].elements == SPEC.dense_params()  # the rebuilt kernel


def test_fold_weights_drops_weight_macs_and_reports_folded_size():
    fmt = make_format("hodec", SPEC, tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(1, 16, 16, 16, 16, 16, 16, 1))
    net = build_network(SPEC, fmt)
    unfolded, folded = dense(net), dense(net, fold_weights=True)
    assert folded.macs == unfolded.feature_macs == unfolded.macs - unfolded.weight_macs
    assert folded.runtime_weight_elements == SPEC.dense_params()
    assert unfolded.runtime_weight_elements == fmt.params(SPEC)


def test_memory_counts_follow_the_steps():
    fmt = make_format("classical", SPEC, in_modes=(4, 4, 8), out_modes=(4, 8, 8), rank=16)
    plan = scheme("classical", build_network(SPEC, fmt))
    # after G2 the map holds b, H'W', i3, o1, o2, r2: 196 * 8 * 4 * 8 * 16
    assert plan.largest_intermediate == 196 * 8 * 4 * 8 * 16
    assert plan.peak_live >= plan.largest_intermediate + 128 * 784


def test_bad_paths_are_rejected():
    fmt = make_format("tucker2", SPEC, rank=8)
    net = build_network(SPEC, fmt)
    with pytest.raises(TTPlanError, match="does not name two live tensors"):
        ContractionPlan(net, [(0, 9)])
    with pytest.raises(TTPlanError, match="uncontracted"):
        ContractionPlan(net, [(0, 3)])


LAYER3 = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)


def test_contracted_at_of_the_classical_order():
    plan = scheme("classical", build_network(LAYER3, make_format("classical", LAYER3, rank=16)))
    # X×S sums k; X·S×G1 sums r0 and i1; then G2 sums r1, i2; G3 sums r2, i3
    assert plan.contracted_at() == {"k": 1, "r0": 2, "i1": 2, "r1": 3, "i2": 3, "r2": 4, "i3": 4}


def test_contracted_at_covers_every_shared_index_of_the_best_plan():
    fmt = make_format("hodec", LAYER3, tt_shapes=(4, 8, 8, 9, 4, 4, 8), rank=16)
    network = build_network(LAYER3, fmt)
    best = optimize(network)
    at = best.contracted_at()
    shared = {i for t in network.tensors for i in t.indices} - set(network.output)
    assert set(at) == shared
    # an index is summed where its two owners first meet in one operand
    for name, number in at.items():
        owners = {n for n, t in enumerate(network.tensors) if name in t.indices}
        merged = {n: {n} for n in range(len(network.tensors))}
        for step in best.steps:
            merged[step.result] = merged.pop(step.left) | merged.pop(step.right)
            if owners <= merged[step.result]:
                assert step.number == number
                break


def test_each_feature_step_knows_the_map_size_it_runs_at(make_random_layer):
    rng = random.Random(4)
    for _ in range(30):
        spec, fmt = make_random_layer(rng)
        for plan in (optimize(build_network(spec, fmt)), scheme(fmt.published_scheme, build_network(spec, fmt))):
            conv = next(s.number for s in plan.steps if s.kind == "conv")
            for step in plan.steps:
                if step.kind == "weight":
                    assert step.map_size is None and step.pixels is None
                else:
                    want = spec.output_size if step.number >= conv else spec.input_size
                    assert step.map_size == want and step.pixels == want[0] * want[1]


def test_one_index_order():
    names = ["r10", "o2", "i1", "r2", "k", "s", "b", "o10", "o1"]
    assert sorted(names, key=index_order) == ["b", "s", "k", "i1", "o1", "o2", "o10", "r2", "r10"]
