"""Named model presets, and loading either a preset or any `module:callable` that builds an nn.Module."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from ttplan.errors import TTPlanError
from ttplan.models.cifar_resnet import resnet20, resnet32, resnet56
from ttplan.models.resnet import resnet18, resnet34, resnet50
from ttplan.models.vgg import vgg16
from ttplan.user_code import load_callable, one_line


@dataclass(frozen=True)
class Preset:
    """A model builder and the input size (C, H, W) it is meant for; `any_channels`: the builder takes
    `in_channels`, so the preset also accepts e.g. 1-channel grey images."""

    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int]
    summary: str
    any_channels: bool = False


_CIFAR = (3, 32, 32)
_IMAGENET = (3, 224, 224)

PRESETS: dict[str, Preset] = {
    "resnet20": Preset(resnet20, _CIFAR, "CIFAR ResNet-20, option-A shortcuts, 10 classes", True),
    "resnet32": Preset(resnet32, _CIFAR, "CIFAR ResNet-32, option-A shortcuts, 10 classes", True),
    "resnet56": Preset(resnet56, _CIFAR, "CIFAR ResNet-56, option-A shortcuts, 10 classes", True),
    "resnet18": Preset(resnet18, _IMAGENET, "ImageNet ResNet-18, torchvision layout"),
    "resnet34": Preset(resnet34, _IMAGENET, "ImageNet ResNet-34, torchvision layout"),
    "resnet50": Preset(resnet50, _IMAGENET, "ImageNet ResNet-50 (stride on conv2), torchvision layout"),
    "vgg16": Preset(vgg16, _IMAGENET, "ImageNet VGG-16, torchvision layout"),
}


def _check_input_size(input_size: Sequence[int]) -> tuple[int, int, int]:
    """Three positive ints (C, H, W), or a one-line error."""
    values = tuple(input_size)
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise TTPlanError(f"input_size={input_size!r}: expected three positive ints (C, H, W), e.g. (3, 224, 224)")
    return values  # type: ignore[return-value]


def _load_target(target: str) -> nn.Module:
    """Import `module`, look up `callable` (dots allowed), call it with no arguments, expect an nn.Module."""
    if ":" not in target or target.startswith(":") or target.endswith(":"):
        raise TTPlanError(f"model {target!r}: expected a preset name or 'module:callable', e.g. 'mypkg.nets:build'")
    build = load_callable(target, "model", "mypkg.nets:build")
    attr_path = target.partition(":")[2]
    try:
        model = build()
    except Exception as error:
        raise TTPlanError(f"model {target!r}: calling {attr_path}() failed ({one_line(error)})") from error
    if not isinstance(model, nn.Module):
        raise TTPlanError(
            f"model {target!r}: {attr_path}() returned a {type(model).__name__}, expected a torch.nn.Module"
        )
    return model


def load_model(
    name_or_target: str, input_size: tuple[int, int, int] | None = None
) -> tuple[nn.Module, tuple[int, int, int]]:
    """Build a preset (its default input size unless `input_size` is given) or a `module:callable` model.

    A `module:callable` has no default input size, so `input_size` is required for it. Returns the
    model, freshly built with its own initialisation, and the input size (C, H, W) to trace it at.
    """
    if ":" in name_or_target:
        if input_size is None:
            raise TTPlanError(
                f"model {name_or_target!r}: a module:callable model needs an input size (C,H,W), e.g. 3,224,224"
            )
        size = _check_input_size(input_size)
        return _load_target(name_or_target), size
    preset = PRESETS.get(name_or_target)
    if preset is None:
        close = difflib.get_close_matches(name_or_target.lower(), list(PRESETS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise TTPlanError(
            f"unknown model {name_or_target!r}; {hint}presets: {', '.join(PRESETS)} (or give module:callable)"
        )
    size = preset.input_size if input_size is None else _check_input_size(input_size)
    if preset.any_channels and size[0] != preset.input_size[0]:
        return preset.builder(in_channels=size[0]), size
    return preset.builder(), size
