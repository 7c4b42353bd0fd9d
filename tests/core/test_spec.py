"""ConvSpec: output size as torch computes it, and one-line errors for what cannot be planned."""

import random

import pytest
import torch

from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError


def test_output_size_matches_torch_for_random_geometries():
    rng = random.Random(0)
    for _ in range(60):
        k = (rng.randint(1, 5), rng.randint(1, 5))
        d = (rng.randint(1, 2), rng.randint(1, 2))
        p = (rng.randint(0, 2), rng.randint(0, 2))
        s = (rng.randint(1, 3), rng.randint(1, 3))
        size = (rng.randint(d[0] * (k[0] - 1) + 1, 20), rng.randint(d[1] * (k[1] - 1) + 1, 20))
        spec = ConvSpec.make(3, 4, k, s, p, d, size)
        out = torch.nn.functional.conv2d(torch.zeros(1, 3, *size), torch.zeros(4, 3, *k), None, s, p, d)
        assert spec.output_size == tuple(out.shape[2:])


def test_reference_layer_costs():
    spec = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)
    assert spec.output_size == (14, 14)
    assert spec.dense_macs() == 57_802_752
    assert spec.dense_params() == 294_912
    assert spec.dense_macs(batch=32) == 32 * 57_802_752


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(groups=3), "groups=3: expected a positive int dividing in_channels=8 and out_channels=8"),
        (dict(groups=0), "groups=0"),
        (dict(groups=2.0), "groups=2.0"),
        (dict(kernel_size=9, input_size=4, padding=1), "kernel_size=(9, 9)"),
        (dict(input_size=0), "input_size=(0, 0)"),
        (dict(stride=(0, 1)), "stride=(0, 1)"),
        (dict(padding=-1), "padding=(-1, -1)"),
        (dict(kernel_size=(3, 3, 3)), "kernel_size=(3, 3, 3)"),
    ],
)
def test_bad_geometry_is_one_line_naming_the_value(kwargs, fragment):
    args = dict(in_channels=8, out_channels=8, kernel_size=3, input_size=8)
    args.update(kwargs)
    with pytest.raises(TTPlanError) as err:
        ConvSpec.make(**args)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_nonpositive_channels_rejected():
    with pytest.raises(TTPlanError, match="in_channels=0"):
        ConvSpec.make(0, 8)


def test_grouped_dense_costs():
    spec = ConvSpec.make(64, 64, 3, padding=1, groups=4, input_size=56)
    assert spec.dense_macs(1) == 28_901_376 == 56 * 56 * 64 * (64 // 4) * 9
    assert spec.dense_params() == 9_216
    assert ConvSpec.make(64, 64, 3, groups=4, bias=True).dense_params() == 9_216 + 64


def test_dense_costs_equal_torch_on_random_grouped_convs():
    from torch.utils.flop_counter import FlopCounterMode

    rng = random.Random(3)
    for _ in range(20):
        groups = rng.choice([1, 2, 3, 6])
        cin, cout = groups * rng.randint(1, 4), groups * rng.randint(1, 4)
        k, s, p = (rng.randint(1, 3), rng.randint(1, 3)), (rng.randint(1, 2), rng.randint(1, 2)), rng.randint(0, 1)
        spec = ConvSpec.make(cin, cout, k, s, p, input_size=(rng.randint(3, 9), rng.randint(3, 9)), groups=groups,
                             bias=rng.random() < 0.5)
        conv = torch.nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=spec.bias)
        batch = rng.randint(1, 3)
        with FlopCounterMode(display=False) as counter:
            conv(torch.zeros(batch, cin, *spec.input_size))
        assert counter.get_total_flops() == 2 * spec.dense_macs(batch)
        assert sum(p.numel() for p in conv.parameters()) == spec.dense_params()


def test_an_unchecked_spec_is_named_before_its_modes():
    from ttplan.core.formats import make_format

    with pytest.raises(TTPlanError, match=r"^in_channels=-1: expected a positive int$"):
        make_format("hodec", ConvSpec(-1, 64), rank=2)
    with pytest.raises(TTPlanError, match=r"^in_channels=-1: expected a positive int$"):
        ConvSpec.make(-1, 64)
    grouped = ConvSpec.make(64, 64, 3, groups=4)
    with pytest.raises(TTPlanError, match="groups=4: only groups=1 convs can be TT-decomposed"):
        make_format("hodec", grouped, rank=2)
