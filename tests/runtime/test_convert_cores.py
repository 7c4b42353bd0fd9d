"""`convert(..., decompose_weights=False)`: the same model structure without the TT-SVDs, whose cores a caller loads
next; with the decomposed model's state loaded it computes exactly what that model does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers.runtime_cases import forbid_svd
from ttplan.core.formats import make_format
from ttplan.core.spec import ConvSpec
from ttplan.runtime.layers import convert


def test_a_model_converted_without_svds_loads_the_decomposed_state_and_equals_it(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=True), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 6 * 6, 12)).eval()
    conv, linear = ConvSpec.make(8, 8, 3, 1, 1, input_size=6, bias=True), ConvSpec.make_linear(288, 12, bias=True)
    formats = {"0": make_format("hodec", conv, in_modes=(2, 4), out_modes=(2, 4), rank=3),
               "3": make_format("ttm", linear, in_modes=(16, 18), out_modes=(3, 4), ranks=(1, 4, 1))}
    decomposed = convert(model, formats, (8, 6, 6))
    forbid_svd(monkeypatch)
    bare = convert(model, formats, (8, 6, 6), decompose_weights=False)
    assert [type(m).__name__ for m in bare] == [type(m).__name__ for m in decomposed]
    assert bare.state_dict().keys() == decomposed.state_dict().keys()
    bare.load_state_dict(decomposed.state_dict())  # strict: every core and bias has its place
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        assert torch.equal(bare(x), decomposed(x))
    with pytest.raises(AssertionError, match="TT-SVD"):
        convert(model, formats, (8, 6, 6))
