"""The Python API checks its arguments like the CLI: a wrong argument is one sentence naming it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ttplan.core.formats import make_format
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.runtime.layers import TTConv2d, TTLinear, convert

SPEC = ConvSpec.make(16, 16, 3, padding=1, input_size=8)
FMT = make_format("hodec", SPEC, rank=4)


def one_sentence(info: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)


def test_layer_spec_and_format_of_the_wrong_type():
    with pytest.raises(TTPlanError) as info:
        TTConv2d(None, FMT)
    one_sentence(info, "spec=None", "ConvSpec")
    with pytest.raises(TTPlanError) as info:
        TTConv2d(SPEC, "hodec")
    one_sentence(info, "fmt='hodec'", "TTFormat", "make_format")
    with pytest.raises(TTPlanError) as info:
        TTLinear(ConvSpec.make_linear(16, 16), None)
    one_sentence(info, "TTLinear", "fmt=None")


def test_a_grouped_spec_is_refused():
    grouped = ConvSpec(16, 16, (3, 3), (1, 1), (1, 1), (1, 1), (8, 8), groups=4)
    with pytest.raises(TTPlanError) as info:
        TTConv2d(grouped, FMT)
    one_sentence(info, "groups=4", "nn.Conv2d")


def test_convert_arguments():
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
    with pytest.raises(TTPlanError) as info:
        convert(model, ["2"], (16, 8, 8))
    one_sentence(info, "formats=['2']", "dict of layer name")
    with pytest.raises(TTPlanError) as info:
        convert(model, {"2": "hodec"}, (16, 8, 8))
    one_sentence(info, "formats['2']='hodec'", "TTFormat or None")
    with pytest.raises(TTPlanError) as info:
        convert("resnet18", {}, (3, 224, 224))
    one_sentence(info, "model='resnet18'", "nn.Module", "load_model('resnet18')")
    converted = convert(model, {"2": FMT, "0": None}, (16, 8, 8))  # the right spelling still works
    assert type(converted[2]).__name__ == "TTConv2d"


def test_from_dense_of_a_weight_with_nan():
    weight = torch.randn(16, 16, 3, 3)
    weight[3, 2, 1, 0] = float("nan")
    with pytest.raises(TTPlanError) as info:
        TTConv2d.from_dense(weight, None, SPEC, FMT)
    one_sentence(info, "1 non-finite entries", "finite weights")
