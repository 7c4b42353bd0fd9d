"""`ttplan calibrate`'s timers: every step of a program is timed, on NCHW and on channels-last maps."""

import pytest
import torch

from ttplan.bench.calibrate import time_dense, time_layer, time_steps
from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.runtime.lowering import Lowering, lower


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_every_step_is_timed_in_either_memory_format(channels_last):
    spec = ConvSpec.make(16, 32, 3, 2, 1, input_size=8)
    plan = optimize(build_network(spec, make_format("hodec", spec, rank=4), 2), fold_weights=True)
    program = lower(plan, Lowering(channels_last=channels_last))
    timed = time_steps(program, 2, torch.device("cpu"), budget_s=0.0)
    feature = [s.number for s in plan.steps if s.kind != "weight"]
    assert [step for step, _ in timed if step in feature] == feature  # each feature-map step once, in order
    assert all(us > 0 for _, us in timed)
    assert time_layer(plan, torch.device("cpu"), 0.0, channels_last) > 0
    assert time_dense(spec, 2, torch.device("cpu"), 0.0, channels_last) > 0
