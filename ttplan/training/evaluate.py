"""Top-1 accuracy of a model on a data set, sharded over data-parallel ranks when there are several."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ttplan.training import distributed as D


def evaluate(model: nn.Module, dataset: Dataset, ctx: D.DistContext | None = None, batch_size: int = 256,
             max_batches: int | None = None) -> float:
    """Top-1 accuracy of `model` on `dataset`, in eval mode; under DDP each rank scores its shard, then sums."""
    ctx = ctx or D.DistContext()
    device = next(model.parameters()).device
    shard = Subset(dataset, D.shard_indices(len(dataset), ctx)) if ctx.enabled else dataset
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False)
    was_training = model.training
    model.eval()
    correct, count = 0.0, 0.0
    with torch.no_grad():
        for b, (x, y) in enumerate(loader):
            if max_batches is not None and b >= max_batches:
                break
            pred = model(x.to(device)).argmax(dim=1)
            correct += float((pred == y.to(device)).sum())
            count += len(y)
    model.train(was_training)
    correct, count = D.sum_across([correct, count], ctx)
    return correct / count if count else float("nan")
