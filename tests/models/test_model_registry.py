"""load_model: presets, module:callable targets, and the one-line errors for bad names."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

from ttplan.errors import TTPlanError
from ttplan.models import PRESETS, load_model, trace_layers

EXPECTED_PRESETS = {"resnet20", "resnet32", "resnet56", "resnet18", "resnet34", "resnet50", "vgg16"}

TINY_MODULE = """
from torch import nn

def build():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))

class Factory:
    @staticmethod
    def make():
        return nn.Linear(3, 3)

def not_a_model():
    return 42

def broken():
    raise RuntimeError("boom\\nsecond line")

VALUE = 7
"""


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Name of a fresh importable module holding small model builders."""
    name = f"ttplan_tiny_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(TINY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_presets_listed() -> None:
    assert set(PRESETS) == EXPECTED_PRESETS
    assert PRESETS["resnet20"].input_size == (3, 32, 32)
    assert PRESETS["vgg16"].input_size == (3, 224, 224)


def test_preset_with_default_and_given_input_size() -> None:
    model, size = load_model("resnet20")
    assert isinstance(model, nn.Module) and size == (3, 32, 32)
    model, size = load_model("resnet20", (3, 64, 64))
    assert size == (3, 64, 64)
    assert trace_layers(model, size)[0].spec.input_size == (64, 64)


@pytest.mark.parametrize("name", ["resnet20", "resnet32", "resnet56"])
def test_cifar_presets_take_grey_images(name: str) -> None:
    """One input channel at 28x28 (Fashion-MNIST): the first conv has 1 input channel, the rest is unchanged."""
    grey, size = load_model(name, (1, 28, 28))
    rgb, _ = load_model(name)
    assert size == (1, 28, 28) and grey.conv1.weight.shape == (16, 1, 3, 3)
    assert grey(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    layers = trace_layers(grey, size)
    assert layers[0].spec.in_channels == 1 and layers[0].spec.input_size == (28, 28)
    grey_params = sum(p.numel() for p in grey.parameters())
    assert grey_params == sum(p.numel() for p in rgb.parameters()) - 2 * 16 * 9


def test_module_callable(tiny: str) -> None:
    model, size = load_model(f"{tiny}:build", (3, 8, 8))
    assert size == (3, 8, 8)
    assert [layer.name for layer in trace_layers(model, size)] == ["0", "2"]
    model, _ = load_model(f"{tiny}:Factory.make", (3, 1, 1))
    assert isinstance(model, nn.Linear)


def test_unknown_preset_suggests_closest() -> None:
    with pytest.raises(TTPlanError) as info:
        load_model("resnt18")
    message = str(info.value)
    assert "did you mean 'resnet18'?" in message
    assert all(name in message for name in EXPECTED_PRESETS)
    assert "\n" not in message


def test_unknown_preset_without_close_match() -> None:
    with pytest.raises(TTPlanError, match="unknown model 'transformer'; presets: resnet20") as info:
        load_model("transformer")
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize(
    ("target", "pattern"),
    [
        ("ttplan_no_such_module_xyz:build", r"cannot import module 'ttplan_no_such_module_xyz' \(ModuleNotFoundError"),
        ("{tiny}:missing", r"has no attribute 'missing'"),
        ("{tiny}:Factory.nope", r"has no attribute 'Factory.nope'"),
        ("{tiny}:VALUE", r"'VALUE' is a int, not a callable"),
        ("{tiny}:not_a_model", r"not_a_model\(\) returned a int, expected a torch.nn.Module"),
        ("{tiny}:broken", r"broken\(\) failed \(RuntimeError: boom second line\)"),
        ("{tiny}:", r"expected a preset name or 'module:callable'"),
        (":build", r"expected a preset name or 'module:callable'"),
    ],
)
def test_bad_module_callable(tiny: str, target: str, pattern: str) -> None:
    with pytest.raises(TTPlanError, match=pattern) as info:
        load_model(target.format(tiny=tiny), (3, 8, 8))
    assert "\n" not in str(info.value)


def test_module_callable_needs_input_size(tiny: str) -> None:
    with pytest.raises(TTPlanError, match="needs an input size"):
        load_model(f"{tiny}:build")


@pytest.mark.parametrize("size", [(3, 32), (3, 0, 32), (3, 32.0, 32), (True, 32, 32)])
def test_bad_input_size(size: tuple) -> None:
    with pytest.raises(TTPlanError, match="expected three positive ints"):
        load_model("resnet20", size)
