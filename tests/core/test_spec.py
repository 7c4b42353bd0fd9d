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
        (dict(groups=2), "groups=2"),
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
