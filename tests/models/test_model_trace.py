"""trace_layers on hand-made models: geometry, grouped and 'same' convs, eval-mode safety, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.models import count_model_params, dense_totals, layer_macs, layer_params, trace_layers


class Odd(nn.Module):
    """A grouped conv, a 'same' conv, a dilated conv, BN, a reused conv and a linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.same = nn.Conv2d(8, 16, 5, padding="same", bias=False)
        self.dilated = nn.Conv2d(16, 16, 3, padding=2, dilation=2, bias=False)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.stem(x))
        x = self.same(self.depthwise(x))
        x = self.dilated(self.dilated(x))
        return self.head(x.mean((2, 3)))


def test_specs_in_execution_order() -> None:
    layers = trace_layers(Odd(), (3, 20, 20))
    assert [(layer.name, layer.kind) for layer in layers] == [
        ("stem", "conv"),
        ("depthwise", "conv"),
        ("same", "conv"),
        ("dilated", "conv"),
        ("head", "linear"),
    ]
    spec = {layer.name: layer.spec for layer in layers}
    assert spec["stem"] == ConvSpec.make(3, 8, 3, 2, 1, 1, 20, bias=True)
    assert spec["stem"].output_size == (10, 10)
    assert spec["same"] == ConvSpec.make(8, 16, 5, 1, 2, 1, 10)
    assert spec["same"].output_size == (10, 10)
    assert spec["dilated"] == ConvSpec.make(16, 16, 3, 1, 2, 2, 10)
    assert spec["head"] == ConvSpec.make_linear(16, 4, bias=True)


def test_grouped_conv_is_traced_and_marked() -> None:
    layers = {layer.name: layer for layer in trace_layers(Odd(), (3, 20, 20))}
    depthwise = layers["depthwise"]
    assert depthwise.spec.groups == 8 and not depthwise.plannable
    assert layers["stem"].plannable
    assert layer_macs(depthwise.spec) == 10 * 10 * 8 * 9
    assert layer_params(depthwise.spec) == 8 * 9 + 8


def test_dense_totals_equal_torch_counts() -> None:
    """Params: exactly the conv/linear parameters; MACs: what FlopCounterMode reports, halved."""
    model = Odd()
    layers = trace_layers(model, (3, 20, 20))
    macs, params = dense_totals(layers)
    expected_params = sum(
        p.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) for p in m.parameters()
    )
    assert params == expected_params
    assert count_model_params(model) == expected_params + 16  # BN weight and bias
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 20, 20))
    # The reused `dilated` conv runs twice: listed once (one weight), counted per call.
    assert layers[3].n_calls == 2
    assert 2 * macs == counter.get_total_flops()
    assert dense_totals(layers, batch=4)[0] == 4 * macs


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_even_same_padding_uses_left_pad() -> None:
    conv = nn.Conv2d(2, 2, 4, padding="same", bias=False)
    (layer,) = trace_layers(conv, (2, 9, 9))
    assert layer.spec.padding == (1, 1)
    valid = nn.Conv2d(2, 2, 3, padding="valid")
    (layer,) = trace_layers(valid, (2, 9, 9))
    assert layer.spec.padding == (0, 0) and layer.spec.output_size == (7, 7)


def test_trace_leaves_bn_statistics_and_mode_alone() -> None:
    model = Odd().train()
    before = model.bn.running_mean.clone(), int(model.bn.num_batches_tracked)
    trace_layers(model, (3, 20, 20))
    assert torch.equal(model.bn.running_mean, before[0]) and int(model.bn.num_batches_tracked) == before[1]
    assert model.training and model.bn.training
    model.eval()
    trace_layers(model, (3, 20, 20))
    assert not model.training
    assert all(not hooks for m in model.modules() for hooks in (m._forward_hooks, m._forward_hooks_with_kwargs))


def test_meta_device_model_traces_without_memory() -> None:
    with torch.device("meta"):
        model = Odd()
    layers = trace_layers(model, (3, 20, 20))
    assert [layer.name for layer in layers][-1] == "head"


def test_wrong_input_size_is_one_line_error() -> None:
    with pytest.raises(TTPlanError, match=r"running the model on zeros of shape \(1, 1, 20, 20\) failed") as info:
        trace_layers(Odd(), (1, 20, 20))
    assert "\n" not in str(info.value)


def test_trace_records_padding_as_torch_pads():
    """Items 2 and 5: 'same' with an even window pads one pixel more after each axis, and the padding mode is kept."""
    model = nn.Sequential(nn.Conv2d(32, 32, 4, padding="same"), nn.Conv2d(32, 8, (2, 3), padding="same",
                                                                          padding_mode="reflect"))
    same, reflect = (layer.spec for layer in trace_layers(model, (32, 16, 16)))
    assert same == ConvSpec.make(32, 32, 4, padding=1, extra_padding=1, input_size=16, bias=True)
    assert same.output_size == (16, 16) and same.dense_macs() == 4_194_304
    assert reflect == ConvSpec.make(32, 8, (2, 3), padding=(0, 1), extra_padding=(1, 0), input_size=16, bias=True,
                                    padding_mode="reflect")
    assert reflect.explicit_pad == (1, 1, 0, 1)  # F.pad's (left, right, top, bottom)
    assert reflect.describe() == "32->8 2x3 s1 p0:1x1 reflect 16x16->16x16"
