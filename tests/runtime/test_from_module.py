"""`TTConv2d.from_conv` and `TTLinear.from_linear` with tensorly-torch's keywords: the layer computes the module
with its kernel replaced by the rebuilt one, and a wrong keyword is one line naming it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ttplan
from tests.helpers.errors import one_line
from ttplan.core.formats import make_format
from ttplan.core.spec import ConvSpec
from ttplan.runtime.layers import TTConv2d, TTLinear


def _conv_with_rebuilt_kernel(layer: TTConv2d, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, layer.to_dense(), conv.bias, conv.stride, conv.padding, conv.dilation)


def test_from_conv_with_format_and_rank_equals_the_conv_with_its_rebuilt_kernel():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 3, padding=1)
    layer = ttplan.TTConv2d.from_conv(conv, format="hodec", rank=16, input_size=32)
    assert layer.fmt == make_format("hodec", layer.spec, rank=16)
    x = torch.randn(2, 64, 32, 32)
    with torch.no_grad():
        assert (layer(x) - _conv_with_rebuilt_kernel(layer, conv, x)).abs().max() <= 1e-5
    assert torch.equal(layer.bias, conv.bias)


def test_the_positional_format_call_still_works_and_builds_the_same_layer():
    torch.manual_seed(1)
    conv = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
    spec = ConvSpec.make(16, 32, 3, stride=2, padding=1, input_size=(12, 10))
    fmt = make_format("classical", spec, rank=6)
    positional = TTConv2d.from_conv(conv, fmt, (12, 10), "published", True)
    named = TTConv2d.from_conv(conv, format="classical", rank=6, input_size=(12, 10), scheme="published",
                               fold_weights=True)
    assert positional.fmt == named.fmt == fmt and positional.plan.name == named.plan.name
    assert positional.fold_weights and named.fold_weights
    assert all(torch.equal(a, b) for a, b in zip(positional.cores, named.cores))


@pytest.mark.parametrize("spelling", [
    {"order": 2, "ranks": (1, 4, 8, 8, 4, 1)},
    {"in_modes": (2, 8), "out_modes": (4, 4), "rank": 8},
    {"order": 2, "rank": 8},
])
def test_from_conv_takes_make_formats_spellings(spelling):
    conv = nn.Conv2d(16, 16, 3, padding=1)
    layer = TTConv2d.from_conv(conv, format="hodec", input_size=8, **spelling)
    assert layer.fmt == make_format("hodec", layer.spec, **spelling)


def test_from_conv_at_maximal_ranks_is_the_conv():
    torch.manual_seed(2)
    conv = nn.Conv2d(8, 12, 3, padding=1).double()
    layer = TTConv2d.from_conv(conv, format="hodec", rank=10_000, input_size=6)
    x = torch.randn(3, 8, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x))


def test_from_linear_equals_the_linear_with_its_rebuilt_matrix():
    torch.manual_seed(3)
    linear = nn.Linear(64, 48)
    layer = ttplan.TTLinear.from_linear(linear, rank=4)  # ttm by default
    assert layer.fmt.name == "ttm" and layer.spec == ConvSpec.make_linear(64, 48, bias=True)
    x = torch.randn(5, 7, 64)
    with torch.no_grad():
        assert (layer(x) - F.linear(x, layer.to_dense(), linear.bias)).abs().max() <= 1e-5
    same = TTLinear.from_linear(linear, layer.fmt)  # a built format, positionally
    assert all(torch.equal(a, b) for a, b in zip(layer.cores, same.cores))


def test_wrong_keywords_are_one_line_errors():
    conv, linear = nn.Conv2d(16, 16, 3, padding=1), nn.Linear(16, 16)
    spec = ConvSpec.make(16, 16, 3, padding=1, input_size=8)
    one_line(lambda: TTConv2d.from_conv(conv, format="hodex", rank=4, input_size=8), "format='hodex'", "hodec")
    one_line(lambda: TTConv2d.from_conv(conv, format="ttm", rank=4, input_size=8), "format='ttm'", "nn.Conv2d")
    one_line(lambda: TTConv2d.from_conv(conv, format="hodec", input_size=8), "format='hodec'", "rank=R", "ranks=")
    one_line(lambda: TTConv2d.from_conv(conv, format=3, rank=4, input_size=8), "format=3", "TTFormat")
    one_line(lambda: TTConv2d.from_conv(conv, make_format("hodec", spec, rank=4), 8, rank=8),
             "rank=8", "built format", "format='hodec'")
    one_line(lambda: TTConv2d.from_conv(conv, format="hodec", rank=4), "input_size=None", "(H, W)")
    one_line(lambda: TTConv2d.from_conv(conv, format="hodec", rank=4, input_size="32"), "input_size='32'",
             "pair of ints")
    one_line(lambda: TTConv2d.from_conv(linear, format="hodec", rank=4, input_size=8), "Linear", "nn.Conv2d")
    one_line(lambda: TTLinear.from_linear(conv, rank=4), "from_linear", "Conv2d", "nn.Linear")
    one_line(lambda: TTLinear.from_linear(linear, format="hodec", rank=4), "format='hodec'", "ttm")
    one_line(lambda: TTConv2d.from_conv(conv, format="hodec", rank=0, input_size=8), "rank=0")
