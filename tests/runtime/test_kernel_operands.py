"""`ttplan.runtime.kernels.tucker_conv2d` checks its operands before the C kernel reads them: a wrong shape, dtype,
device or geometry is one error naming the argument (it read out of bounds, or float64 bits as float32, before)."""

from __future__ import annotations

import pytest
import torch

from ttplan.errors import TTPlanError
from ttplan.runtime.kernels import tucker_conv2d


def operands(**changes) -> dict:
    """Good operands (x [2, 6, 9, 7], wa [4, 6], g [5, 4, 3, 3], wc [8, 5], 3x3 window, padding 1), then `changes`."""
    gen = torch.Generator().manual_seed(0)
    args = {"x": torch.randn(2, 6, 9, 7, generator=gen), "wa": torch.randn(4, 6, generator=gen),
            "g": torch.randn(5, 4, 3, 3, generator=gen), "wc": torch.randn(8, 5, generator=gen),
            "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1]}
    args.update(changes)
    return args


@pytest.mark.parametrize(("changes", "names"), [
    ({"wa": torch.randn(4, 5)}, "wa of shape [4, 5]"),
    ({"wa": torch.randn(4, 6, 1, 1)}, "wa of shape [4, 6, 1, 1]"),
    ({"g": torch.randn(5, 3, 3, 3)}, "g of shape [5, 3, 3, 3]"),
    ({"wa": None, "g": torch.randn(5, 4, 3, 3)}, "g of shape [5, 4, 3, 3] reads 4 channels, but gets x's 6"),
    ({"wc": torch.randn(8, 4)}, "wc of shape [8, 4]"),
    ({"wc": torch.randn(0, 5)}, "wc of shape [0, 5]"),
    ({"x": torch.randn(6, 9, 7)}, "x of shape [6, 9, 7]"),
    ({"x": torch.randn(2, 6, 9, 7, dtype=torch.float64)}, "x is torch.float64"),
    ({"g": torch.randn(5, 4, 3, 3, dtype=torch.float16)}, "g is torch.float16"),
    ({"wa": torch.ones(4, 6, dtype=torch.int32)}, "wa is torch.int32"),
    ({"wc": [[1.0] * 5] * 8}, "wc is a list"),
    ({"stride": [0, 1]}, "stride=[0, 1]"),
    ({"padding": [1]}, "padding=[1]"),
    ({"dilation": [1, -1]}, "dilation=[1, -1]"),
    ({"x": torch.randn(2, 6, 1, 1), "padding": [0, 0]}, "x's 1x1 map"),
])
def test_a_bad_operand_is_one_error_naming_it(changes, names):
    with pytest.raises(TTPlanError) as error:
        tucker_conv2d(**operands(**changes))
    message = str(error.value)
    assert names in message and "\n" not in message


def test_the_registered_op_checks_too():
    with pytest.raises(TTPlanError, match="wa of shape"):
        torch.ops.ttplan.tucker_conv2d(**operands(wa=torch.randn(4, 5)))


def test_the_fake_shape_function_checks_too():
    from torch._subclasses.fake_tensor import FakeTensorMode

    args = operands(wc=torch.randn(8, 4))
    with FakeTensorMode() as mode:
        fakes = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        with pytest.raises(TTPlanError, match="wc of shape"):
            torch.ops.ttplan.tucker_conv2d(**fakes)
