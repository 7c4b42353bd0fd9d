"""ImageNet ResNet-18/34/50 (He et al. 2016), with torchvision's module names so state_dicts line up.

Names: `conv1`, `bn1`, `layer{1..4}.{b}.conv{1,2[,3]}`, `layer{N}.0.downsample.{0,1}`, `fc`. The
bottleneck puts the stride on its 3x3 conv (`conv2`, "ResNet v1.5"), as torchvision does. Written
from the paper's description, not from torchvision's source.
"""

from __future__ import annotations

import torch
from torch import nn


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """Projection shortcut (1x1 conv + BN) where the shape changes; None for an identity shortcut."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs; the first carries the stride."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        # one ReLU module per call, so folding can hand conv1's ReLU to its TT layer (runtime.batchnorm)
        self.relu1 = nn.ReLU(inplace=True)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = _downsample(in_channels, channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (with the stride), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        # one ReLU module per call, so folding can hand conv1's and conv2's ReLUs to their TT layers
        self.relu1 = nn.ReLU(inplace=True)
        self.relu2 = nn.ReLU(inplace=True)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """7x7/2 stem, 3x3/2 max-pool, four stages (64/128/256/512 base channels), global pool, `fc`."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], blocks: list[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = 64
        for index, (channels, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
            stride = 1 if index == 1 else 2
            stage = [block(in_channels, channels, stride)]
            in_channels = channels * block.expansion
            stage += [block(in_channels, channels) for _ in range(count - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18: 11.69 M parameters, 1.82 G MACs at 224x224."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet34(num_classes: int = 1000) -> ResNet:
    """ResNet-34: 21.80 M parameters, 3.67 G MACs at 224x224."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes)


def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50: 25.56 M parameters, 4.1 G MACs at 224x224."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)
