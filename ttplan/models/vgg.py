"""VGG-16 for ImageNet (Simonyan & Zisserman 2015, configuration D, no BN), torchvision's names.

`features.N` counts every module of the feature stack (conv, ReLU, max-pool), so the convs are
`features.0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28`; the classifier's linears are
`classifier.0, 3, 6`. A 7x7 adaptive pool sits between them, as in torchvision.
"""

from __future__ import annotations

import torch
from torch import nn

VGG16_STAGES: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
"""(channels, convs) per stage; each stage ends in a 2x2/2 max-pool."""


class VGG(nn.Module):
    """3x3 conv stages, 7x7 adaptive average pool, three fully connected layers."""

    def __init__(self, stages: tuple[tuple[int, int], ...] = VGG16_STAGES, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for channels, convs in stages:
            for _ in range(convs):
                layers += [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
                in_channels = channels
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(in_channels * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg16(num_classes: int = 1000) -> VGG:
    """VGG-16: 138.36 M parameters, 15.47 G MACs at 224x224."""
    return VGG(VGG16_STAGES, num_classes)
