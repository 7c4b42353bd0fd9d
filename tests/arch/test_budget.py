"""Budgets: the HODEC paper's reductions for ResNet-32/56, replay through a saved config, the selection
against brute force on small problems, and a plain answer when targets cannot be met."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from ttplan.arch.architecture import plan_architecture
from ttplan.arch.budget import Candidate, factorisations, prepare_budget, select
from ttplan.arch.config import load_config, save_config
from ttplan.arch.policy import Policy
from ttplan.core.formats import get_format
from ttplan.errors import TTPlanError

# The published HODEC results on CIFAR-10, model-level FLOPs (= MACs) and params reductions
HODEC = {"resnet32": (0.72, 0.80), "resnet56": (0.62, 0.67)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(HODEC))
def test_budget_reaches_the_hodec_reductions_and_replays(name, tmp_path) -> None:
    macs_target, params_target = HODEC[name]
    result = prepare_budget(name, target_macs_reduction=macs_target, target_params_reduction=params_target).solve()
    assert result.met, result.message
    totals = result.plan.totals
    assert totals.macs_reduction >= macs_target and totals.params_reduction >= params_target
    # the targets are in integers of the dense totals, not rounded percentages
    assert totals.tt_macs <= result.target_macs == math.floor((1 - macs_target) * totals.baseline_macs)
    # no layer is wiped out: every searched layer keeps at least a twentieth of its dense parameters
    for layer in result.plan.layers:
        if layer.source == "budget":
            assert layer.params >= layer.baseline_params / 20
    # the saved config replays to exactly the same model through the ordinary planner
    path = save_config(result.formats, result.plan.specs(), tmp_path / "budget.json")
    replay = plan_architecture(name, config=load_config(path))
    assert replay.totals == totals
    assert [layer.fmt for layer in replay.layers] == [layer.fmt for layer in result.plan.layers]


@pytest.mark.slow
def test_unreachable_target_says_how_close() -> None:
    result = prepare_budget("resnet20", target_macs_reduction=0.999).solve()
    assert not result.met
    assert "cannot be met" in result.message and "outside the search" in result.message
    # the first conv (dense, skipped) alone costs 3*16*9*32*32 MACs, more than 0.1% of the model
    assert result.plan.totals.tt_macs > result.target_macs
    assert f"{16 * 3 * 9 * 32 * 32 + 64 * 10:,} MACs" in result.message  # plus the dense linear


def test_needs_a_target_and_valid_fractions() -> None:
    with pytest.raises(TTPlanError, match="needs a target"):
        prepare_budget("resnet20")
    with pytest.raises(TTPlanError, match="fraction"):
        prepare_budget("resnet20", target_params_reduction=1.2)


def test_factorisations() -> None:
    assert factorisations(64, 1) == [(64,)]
    assert factorisations(64, 2) == [(16, 4), (8, 8)]
    assert factorisations(64, 3) == [(8, 4, 2), (4, 4, 4)]  # 16*2*2 spreads more than 4x
    for n, d in [(512, 3), (96, 2), (256, 4)]:
        for f in factorisations(n, d):
            assert math.prod(f) == n and len(f) == d and list(f) == sorted(f, reverse=True)


@pytest.mark.slow
def test_search_format_tries_other_mode_counts() -> None:
    problem = prepare_budget("resnet20", target_params_reduction=0.5, search_format=True)
    counts = {(len(f.in_modes), len(f.out_modes)) for _, f in problem.jobs}
    assert counts == {(1, 1), (2, 2), (3, 3)}
    plain = prepare_budget("resnet20", target_params_reduction=0.5)
    assert {(len(f.in_modes), len(f.out_modes)) for _, f in plain.jobs} == {(3, 3)}
    assert set(plain.jobs) < set(problem.jobs)


def _toy(seed: int) -> dict[str, list[Candidate]]:
    """Three layers, each dense plus four TT points whose MACs and params grow with the rank."""
    rng = random.Random(seed)
    out = {}
    for n in range(3):
        dense_p = rng.randint(500, 2000)
        dense = Candidate(None, dense_p * rng.randint(10, 100), dense_p)
        tts = []
        for r in range(1, 5):
            p = int(dense_p * r / 5 * rng.uniform(0.7, 1.2))
            fmt = get_format("hodec")((r,), (n,), ())
            tts.append(Candidate(fmt, int(dense.macs * r / 6 * rng.uniform(0.5, 1.3)), p))
        out[f"l{n}"] = [dense, *tts]
    return out


@pytest.mark.parametrize("seed", range(8))
def test_select_is_feasible_exactly_when_brute_force_is(seed) -> None:
    candidates = _toy(seed)
    names = list(candidates)
    dense_m = sum(c[0].macs for c in candidates.values())
    dense_p = sum(c[0].params for c in candidates.values())
    rng = random.Random(seed)
    cap_m, cap_p = int(dense_m * rng.uniform(0.2, 0.8)), int(dense_p * rng.uniform(0.2, 0.8))
    combos = list(itertools.product(*(candidates[n] for n in names)))
    feasible = [c for c in combos if sum(x.macs for x in c) <= cap_m and sum(x.params for x in c) <= cap_p]
    choice, met = select(candidates, 0, 0, cap_m, cap_p)
    assert met == bool(feasible)
    if met:
        assert sum(c.macs for c in choice.values()) <= cap_m
        assert sum(c.params for c in choice.values()) <= cap_p
        # capacity (sum of log params, capped at dense) within 25% of the brute-force best
        def capacity(combo):
            return sum(math.log(min(x.params, candidates[n][0].params)) for n, x in zip(names, combo))
        best = max(capacity(c) for c in feasible)
        assert capacity([choice[n] for n in names]) >= best - math.log(1.25)


def test_skip_worse_applies_to_a_budget(tmp_path) -> None:
    """`plan --target-… --skip-worse` ignored the flag (issue #25, item 19): a budget over classical formats chose
    layers whose published order costs more than dense. Now such candidates are not offered, a config entry that is
    worse stays dense (and is costed dense), and the targets are judged on the plan as returned."""
    config = tmp_path / "config.json"
    config.write_text('{"layer1.0.conv1": {"format": "classical", "rank": 16}}')
    policy = Policy(format="classical")
    plain = prepare_budget("resnet20", target_params_reduction=0.3, policy=policy, config=config).solve()
    assert any(layer.worse_than_dense and layer.decomposed for layer in plain.plan.layers)
    result = prepare_budget("resnet20", target_params_reduction=0.3, policy=policy, config=config,
                            skip_worse=True).solve()
    assert result.met and result.plan.totals.tt_params <= result.target_params
    assert not any(layer.worse_than_dense and layer.decomposed for layer in result.plan.layers)
    fixed = next(layer for layer in result.plan.layers if layer.name == "layer1.0.conv1")
    assert not fixed.decomposed and fixed.reason.startswith("--skip-worse")
    assert any(layer.decomposed for layer in result.plan.layers if layer.source == "budget")
