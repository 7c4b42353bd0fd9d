"""CIFAR ResNet-20/32/56 (He et al. 2016, Sec. 4.2): 6n+2 layers, 16/32/64 channels, 32x32 input.

Shortcuts are option A: parameter-free, the identity subsampled by the stride and zero-padded in
channels, so the only weights are the convs, the BNs and the final `linear`. Layer names follow the
widely used CIFAR layout: `conv1`, `layer{1,2,3}.{b}.conv{1,2}`, `linear`.
"""

from __future__ import annotations

import torch
from torch import nn


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by `stride`, then zero-pad the channels up to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.front = (out_channels - in_channels) // 2
        self.back = out_channels - in_channels - self.front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, self.front, self.back))


class CifarBasicBlock(nn.Module):
    """Two 3x3 convs with BN; the first carries the stride."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        # one ReLU module per call, so folding can hand conv1's ReLU to its TT layer (runtime.batchnorm)
        self.relu1 = nn.ReLU(inplace=True)
        self.relu = nn.ReLU(inplace=True)
        needs_shortcut = stride != 1 or in_channels != channels
        self.shortcut: nn.Module = PadShortcut(in_channels, channels, stride) if needs_shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images: three stages of `n` basic blocks each (`in_channels`: 3 for RGB, 1 for
    grey images such as Fashion-MNIST; any square size works, the pooling is adaptive)."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(16, 16, blocks_per_stage, 1)
        self.layer2 = self._stage(16, 32, blocks_per_stage, 2)
        self.layer3 = self._stage(32, 64, blocks_per_stage, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    @staticmethod
    def _stage(in_channels: int, channels: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [CifarBasicBlock(in_channels, channels, stride)]
        layers += [CifarBasicBlock(channels, channels) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(self.avgpool(x), 1))


def resnet20(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 (n=3): 0.27 M parameters, 40.55 M MACs at 32x32."""
    return CifarResNet(3, num_classes, in_channels)


def resnet32(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-32 (n=5): 0.46 M parameters, 68.86 M MACs at 32x32."""
    return CifarResNet(5, num_classes, in_channels)


def resnet56(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-56 (n=9): 0.85 M parameters, 125.49 M MACs at 32x32."""
    return CifarResNet(9, num_classes, in_channels)
