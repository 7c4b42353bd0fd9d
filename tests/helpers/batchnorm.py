"""BatchNorms worth folding in tests: fresh ones are nearly the identity, so a wrong fold would go unseen."""

from __future__ import annotations

import torch
from torch import nn


def randomize_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """`model` with random running statistics and affine parameters in every BatchNorm2d (changed in place)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                module.running_var.copy_(torch.rand(n, generator=gen) * 2 + 0.1)
                module.weight.copy_(torch.randn(n, generator=gen))
                module.bias.copy_(torch.randn(n, generator=gen) * 0.5)
    return model


def batchnorms(model: nn.Module) -> int:
    """How many BatchNorm2d modules `model` holds."""
    return sum(isinstance(module, nn.BatchNorm2d) for module in model.modules())
