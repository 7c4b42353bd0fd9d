"""The learning-rate schedules of a segment: per batch (warm-up, cosine) and per epoch (0.2's, for ablations)."""

from __future__ import annotations

import math

import pytest

from ttplan.errors import TTPlanError
from ttplan.training.config import TrainConfig
from ttplan.training.schedule import EpochCosine, WarmupCosine, segment_schedule


def test_batch_schedule_warms_up_then_decays_within_one_epoch():
    schedule = segment_schedule("batch", 1, 100)
    assert isinstance(schedule, WarmupCosine) and schedule.warmup == 5
    factors = [schedule(t) for t in range(100)]
    assert factors[0] < factors[4] < factors[5] == 1.0  # linear warm-up to the base rate
    assert factors[-1] < 0.01 and all(a >= b for a, b in zip(factors[5:], factors[6:]))


def test_epoch_schedule_is_constant_within_an_epoch_and_cosine_across():
    schedule = segment_schedule("epoch", 3, 10)
    assert isinstance(schedule, EpochCosine)
    assert {schedule(t) for t in range(10)} == {1.0}  # no warm-up, the full rate in epoch 0
    assert schedule(10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 3)))
    assert schedule(29) == pytest.approx(0.5 * (1 + math.cos(2 * math.pi / 3)))
    assert schedule(1000) == schedule(29)  # past the segment: its last epoch's rate
    assert {segment_schedule("epoch", 1, 10)(t) for t in range(10)} == {1.0}  # one epoch: the full rate


def test_unknown_schedule_and_balance_values_are_one_line():
    with pytest.raises(TTPlanError, match="lr_schedule='step': expected one of batch, epoch"):
        TrainConfig(lr_schedule="step").validate()
    with pytest.raises(TTPlanError, match="balance='yes': expected true or false"):
        TrainConfig(balance="yes").validate()
