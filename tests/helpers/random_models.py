"""Seeded random small models with what dense counting gets wrong most easily: a conv called several times,
grouped and dilated convs, and linears applied token-wise to `(B, T, F)`; importable as `module:callable`. And
chains of convs with every option `nn.Conv2d` has (`RandomConvNet`), for converting."""

from __future__ import annotations

import random

import torch
from torch import nn

from ttplan.core.spec import PADDING_MODES


class RandomNet(nn.Module):
    """A small conv net drawn from `seed`; `input_size` is the (C, H, W) it is built for."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        rng = random.Random(seed)
        channels, size = rng.choice([3, 4]), rng.randint(6, 12)
        self.input_size = (channels, size, size)
        width = rng.choice([8, 12, 16])
        self.stem = nn.Conv2d(channels, width, 3, stride=rng.choice([1, 2]), padding=1, bias=rng.random() < 0.5)
        dilation = rng.choice([1, 2])
        self.shared = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=rng.random() < 0.5)
        self.repeats = rng.randint(1, 3)
        groups = rng.choice([2, 4])
        wide = rng.choice([8, 16])
        self.grouped = nn.Conv2d(width, wide, 3, padding=1, groups=groups, bias=rng.random() < 0.5)
        self.dilated = nn.Conv2d(wide, wide, 3, padding=2, dilation=2, bias=False)
        features = rng.choice([6, 12])
        self.token = nn.Linear(wide, features, bias=rng.random() < 0.5)
        self.mixer = nn.Linear(features, features)
        self.mixes = rng.randint(1, 2)
        self.head = nn.Linear(features, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        for _ in range(self.repeats):
            x = torch.relu(self.shared(x))
        x = self.dilated(self.grouped(x))
        tokens = self.token(x.flatten(2).transpose(1, 2))  # (B, T, F): applied to every token
        for _ in range(self.mixes):
            tokens = self.mixer(tokens)
        return self.head(tokens.mean(1))


def module_source(seed: int) -> str:
    """The text of a module whose `build()` returns `RandomNet(seed)`, for `ttplan plan file:build`."""
    return f"from tests.helpers.random_models import RandomNet\n\n\ndef build():\n    return RandomNet({seed})\n"


def _random_conv(rng: random.Random, channels: int, size: tuple[int, int]) -> tuple[nn.Conv2d, tuple[int, int]]:
    """A conv on `channels` x `size` maps with random options torch accepts there, and its output size."""
    while True:
        kernel = (rng.randint(1, 4), rng.randint(1, 4))
        dilation = (rng.choice([1, 1, 2]), rng.choice([1, 1, 2]))
        if rng.random() < 0.4:  # torch's 'same' is for stride 1 only; an even window pads one more pixel after
            padding, stride = "same", (1, 1)
        else:
            padding, stride = (rng.randint(0, 2), rng.randint(0, 2)), (rng.choice([1, 1, 2]), rng.choice([1, 2]))
        conv = nn.Conv2d(channels, rng.choice([4, 6, 8, 12]), kernel, stride, padding, dilation,
                         groups=rng.choice([1, 1, 1, 1, 2]), bias=rng.random() < 0.5,
                         padding_mode=rng.choice(PADDING_MODES))
        try:
            out = conv(torch.zeros(1, channels, *size)).shape[-2:]
        except RuntimeError:  # e.g. a reflect pad as wide as the map, or a window wider than the padded map
            continue
        if min(out) >= 2:
            return conv, (int(out[0]), int(out[1]))


class RandomConvNet(nn.Module):
    """A chain of 2-4 convs drawn from `seed`: non-square kernels of 1-4, strides, int and 'same' paddings (even
    windows too), dilations, groups, every padding mode, biases; `input_size` is the (C, H, W) it is built for.
    Weights are drawn from `seed` too, without touching torch's global generator."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        rng = random.Random(seed)
        channels, size = rng.choice([4, 6, 8]), (rng.randint(5, 10), rng.randint(5, 10))
        self.input_size = (channels, *size)
        convs = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(rng.randint(2, 4)):
                conv, size = _random_conv(rng, channels, size)
                convs.append(conv)
                channels = conv.out_channels
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = torch.tanh(conv(x))
        return x
