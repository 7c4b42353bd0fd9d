"""Preset architectures: dense totals against the literature, names and geometry of key layers."""

from __future__ import annotations

import pytest
import torch

from ttplan.models import PRESETS, count_model_params, dense_totals, load_model, trace_layers
from ttplan.models.trace import TracedLayer

# Literature values. MACs: conv + linear only. Params: the papers' numbers match both the conv+fc
# count and the all-parameter count (BN included) within 1%; both are checked.
LITERATURE = {
    "resnet20": (40.55e6, 0.27e6),
    "resnet32": (68.86e6, 0.46e6),
    "resnet56": (125.49e6, 0.85e6),
    "resnet18": (1.82e9, 11.69e6),
    "resnet50": (4.1e9, 25.6e6),
    "vgg16": (15.5e9, 138.4e6),
}

# Exact counts a correct architecture must hit: torchvision's well-known parameter counts, and
# the CIFAR MACs worked out by hand (e.g. ResNet-20: 442,368 + 6·2,359,296 + 2·(1,179,648 +
# 5·2,359,296) + 640).
EXACT_ALL_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "vgg16": 138_357_544}
EXACT_MACS = {"resnet20": 40_551_040, "resnet32": 68_862_592, "resnet56": 125_485_696}


@pytest.fixture(scope="module")
def traced() -> dict[str, tuple[torch.nn.Module, list[TracedLayer]]]:
    """Every preset built and traced once, at its default input size."""
    result = {}
    for name in PRESETS:
        model, size = load_model(name)
        result[name] = (model, trace_layers(model, size))
    return result


@pytest.mark.parametrize("name", sorted(LITERATURE))
def test_dense_totals_match_literature(traced, name: str) -> None:
    model, layers = traced[name]
    macs, conv_fc_params = dense_totals(layers)
    lit_macs, lit_params = LITERATURE[name]
    assert macs == pytest.approx(lit_macs, rel=0.01)
    assert conv_fc_params == pytest.approx(lit_params, rel=0.01)
    assert count_model_params(model) == pytest.approx(lit_params, rel=0.01)
    assert conv_fc_params <= count_model_params(model)


@pytest.mark.parametrize("name", sorted(EXACT_ALL_PARAMS))
def test_exact_parameter_counts(traced, name: str) -> None:
    assert count_model_params(traced[name][0]) == EXACT_ALL_PARAMS[name]


@pytest.mark.parametrize("name", sorted(EXACT_MACS))
def test_exact_cifar_macs(traced, name: str) -> None:
    assert dense_totals(traced[name][1])[0] == EXACT_MACS[name]


def test_every_weight_is_traced(traced) -> None:
    """Each conv/linear weight in the state_dict appears once among the traced layers."""
    for model, layers in traced.values():
        weights = {
            name for name, module in model.named_modules() if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))
        }
        assert [layer.name for layer in layers] == list(dict.fromkeys(layer.name for layer in layers))
        assert {layer.name for layer in layers} == weights
        state = model.state_dict()
        assert all(layer.name + ".weight" in state for layer in layers)


def test_resnet18_layer3_conv1_reference(traced) -> None:
    layers = {layer.name: layer for layer in traced["resnet18"][1]}
    spec = layers["layer3.0.conv1"].spec
    assert (spec.in_channels, spec.out_channels, spec.kernel_size) == (128, 256, (3, 3))
    assert (spec.stride, spec.padding, spec.input_size, spec.output_size) == ((2, 2), (1, 1), (28, 28), (14, 14))
    assert spec.dense_macs() == 57_802_752
    assert spec.dense_params() == 294_912
    assert layers["layer3.0.downsample.0"].spec.describe() == "128->256 1x1 s2 p0 28x28->14x14"
    assert layers["conv1"].spec.describe() == "3->64 7x7 s2 p3 224x224->112x112"
    assert layers["fc"].kind == "linear" and layers["fc"].spec.bias


def test_resnet18_execution_order(traced) -> None:
    names = [layer.name for layer in traced["resnet18"][1]]
    assert names[:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    assert names[-1] == "fc"
    assert names.index("layer2.0.conv1") < names.index("layer2.0.downsample.0") < names.index("layer2.1.conv1")


def test_resnet50_bottleneck_stride_on_conv2(traced) -> None:
    layers = {layer.name: layer.spec for layer in traced["resnet50"][1]}
    assert layers["layer2.0.conv1"].describe() == "256->128 1x1 s1 p0 56x56->56x56"
    assert layers["layer2.0.conv2"].describe() == "128->128 3x3 s2 p1 56x56->28x28"
    assert layers["layer2.0.conv3"].describe() == "128->512 1x1 s1 p0 28x28->28x28"
    assert layers["layer2.0.downsample.0"].describe() == "256->512 1x1 s2 p0 56x56->28x28"
    assert layers["layer1.0.downsample.0"].describe() == "64->256 1x1 s1 p0 56x56->56x56"
    assert layers["fc"].in_channels == 2048


def test_cifar_resnet_names_and_option_a_shortcuts(traced) -> None:
    model, layers = traced["resnet20"]
    names = [layer.name for layer in layers]
    assert names[0] == "conv1" and names[-1] == "linear"
    assert "layer3.2.conv2" in names
    assert not any("shortcut" in name or "downsample" in name for name in names)
    spec = {layer.name: layer.spec for layer in layers}["layer2.0.conv1"]
    assert spec.describe() == "16->32 3x3 s2 p1 32x32->16x16"
    # Option A: the shortcut has no parameters and pads zeros into the new channels.
    block = model.layer2[0]
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    x = torch.randn(2, 16, 32, 32)
    out = block.shortcut(x)
    assert out.shape == (2, 32, 16, 16)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()


def test_vgg16_names(traced) -> None:
    names = [layer.name for layer in traced["vgg16"][1]]
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert names == [f"features.{i}" for i in convs] + ["classifier.0", "classifier.3", "classifier.6"]
    spec = {layer.name: layer.spec for layer in traced["vgg16"][1]}["classifier.0"]
    assert (spec.in_channels, spec.out_channels, spec.linear) == (25088, 4096, True)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_class_counts(traced, name: str) -> None:
    """Outputs have the class count the preset promises (10 for CIFAR, 1000 for ImageNet)."""
    model, layers = traced[name]
    assert layers[-1].spec.out_channels == (10 if PRESETS[name].input_size == (3, 32, 32) else 1000)
