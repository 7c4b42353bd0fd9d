"""Data-parallel training under `torchrun`: process group from the environment, sharded data, ADMM state kept
identical on every rank, and only rank 0 writing files.

Outside `torchrun` (no `WORLD_SIZE` in the environment, or `WORLD_SIZE=1`) every helper degrades to the
single-process behaviour, so the training pipeline has one code path. Backend: gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler, Sampler

from ttplan.errors import TTPlanError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: its rank among `world_size` processes, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints progress."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    """An integer environment variable set by torchrun, or a one-line error naming it."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise TTPlanError(f"environment {name}={value!r}: expected an int (as torchrun sets it)") from None


def launched_as_main() -> bool:
    """Whether this process is rank 0 (or not under torchrun), read from the environment before any group is
    joined: the one process that locks and writes the run folder."""
    return _env_int("RANK", 0) == 0


def init_from_env(device: str = "cpu") -> DistContext:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA).

    Without torchrun this returns a single-process context and touches nothing. On CUDA each rank takes
    the GPU `LOCAL_RANK`. Calling it again in a process that already joined reuses the group.
    """
    if device not in ("cpu", "cuda"):
        raise TTPlanError(f"device={device!r}: expected cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise TTPlanError("device='cuda' but torch sees no CUDA GPU; use --device cpu")
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size <= 1:
        return DistContext(device="cuda:0" if device == "cuda" else "cpu")
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise TTPlanError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                "start at most that many processes per node"
            )
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    dev = f"cuda:{local_rank}" if device == "cuda" else "cpu"
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, backend=backend)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (a no-op for a single process)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (a no-op for a single process)."""
    if ctx.enabled:
        dist.barrier()


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel around `model` (already on `ctx.device`); the model itself for one process.

    DDP copies rank 0's parameters and buffers to every rank on construction, so all ranks start equal.
    """
    if not ctx.enabled:
        return model
    ids = [ctx.local_rank] if ctx.device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (the model itself otherwise): the one to save and to constrain."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def train_sampler(dataset: Dataset, ctx: DistContext, seed: int) -> Sampler | None:
    """A DistributedSampler giving each rank its shard (reshuffled per epoch via `set_epoch`); None alone."""
    if not ctx.enabled:
        return None
    return DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed,
                              drop_last=False)


def shard_indices(length: int, ctx: DistContext) -> list[int]:
    """This rank's share of `range(length)` without padding (for evaluation: every sample counted once)."""
    return list(range(ctx.rank, length, ctx.world_size))


def sum_across(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum of `values` over all ranks (float64); the values themselves for one process."""
    if not ctx.enabled:
        return [float(v) for v in values]
    device = ctx.device if ctx.backend == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu().tolist()]


def any_across(flag: bool, ctx: DistContext) -> bool:
    """True if `flag` is true on any rank: all ranks then take the same branch (e.g. stop on a NaN loss)."""
    if not ctx.enabled:
        return bool(flag)
    return sum_across([1.0 if flag else 0.0], ctx)[0] > 0


def broadcast_tensors(tensors: dict[str, torch.Tensor], ctx: DistContext) -> None:
    """Overwrite each tensor, in place, with rank 0's copy (sorted by key so every rank pairs them alike)."""
    if not ctx.enabled:
        return
    for key in sorted(tensors):
        t = tensors[key]
        if ctx.backend == "nccl" or t.device.type == "cpu":
            dist.broadcast(t, src=0)
        else:  # gloo moves CPU tensors only
            host = t.detach().cpu()
            dist.broadcast(host, src=0)
            t.copy_(host)


def sync_admm(admm, ctx: DistContext) -> None:
    """Make `Z` and `U` of an `ADMM` equal on every rank by broadcasting rank 0's (after `update`)."""
    if not ctx.enabled:
        return
    for store in (admm.Z, admm.U):
        for name in store:
            store[name] = store[name].contiguous()
        broadcast_tensors(store, ctx)


def max_divergence(tensors: dict[str, torch.Tensor], ctx: DistContext) -> float:
    """Largest |difference| between this rank's tensors and rank 0's: 0 when all ranks agree exactly."""
    if not ctx.enabled:
        return 0.0
    copies = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    broadcast_tensors(copies, ctx)
    local = max((float((copies[k] - tensors[k]).abs().max()) for k in tensors if tensors[k].numel()), default=0.0)
    device = ctx.device if ctx.backend == "nccl" else "cpu"
    t = torch.tensor([local], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


__all__ = [
    "DistContext",
    "any_across",
    "barrier",
    "broadcast_tensors",
    "init_from_env",
    "max_divergence",
    "shard_indices",
    "shutdown",
    "sum_across",
    "sync_admm",
    "train_sampler",
    "unwrap",
    "wrap_model",
]
