"""When the folded-weight cache may be reused, for `TTConv2d` and the generated layers alike: while the cores hold
the values they were folded from.

An entry is `(copies, folded)`: a copy of each core and the folded operands. It is reused while every core has its
copy's dtype, device, shape and values (`cores_unchanged`), so a change by any route refolds: torch ops,
`load_state_dict`, a move, and writes through `.data` (`p.data.mul_(2)`, `p.data.copy_(w)`), which count no
version and keep the storage, so a key of versions and addresses missed them. The check is one `torch.equal` per
core per forward (about 1.5 µs each on CPU; docs/reliability.md gives the cost on a ResNet-56 layer); the copies
double the cores' memory, the small part of a TT layer. An entry is made without autograd and outside inference
mode, so a cache filled under `torch.inference_mode()` serves a later forward that records gradients.
`UNCHANGED_SOURCE` is that function's own source, which generated code (importing torch only) embeds.

A layer frozen for inference (`freeze`) trusts torch's own change counters instead: `tensors_key` records each
watched tensor with its version and storage address, and `key_unchanged` compares them (about 3 µs for a layer's
eight tensors, no value read), so in-place ops, optimizer steps, `load_state_dict` and moves refold, and a write
through `.data` is not seen. `FROZEN_SOURCE` is their source for generated code.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def cores_unchanged(copies: list[torch.Tensor], cores: list[torch.Tensor]) -> bool:
    """Whether every core has its copy's dtype, device, shape and values: the folded-weight cache is reused only
    then, so no change is missed (.data writes count no version and keep the storage; `torch.equal` compares shapes
    and values only, and across dtypes: 1.0 in float32 equals 1.0 in float64)."""
    if len(copies) != len(cores):
        return False
    for kept, core in zip(copies, cores):
        if kept.dtype != core.dtype or kept.device != core.device or not torch.equal(kept, core):
            return False
    return True


def tensors_key(tensors: list[torch.Tensor]) -> list[tuple[torch.Tensor, int, int]]:
    """What a frozen layer trusts about the tensors it was folded from: each one, its version counter and its
    storage address."""
    return [(t, t._version, t.data_ptr()) for t in tensors]


def key_unchanged(key: list[tuple[torch.Tensor, int, int]], tensors: list[torch.Tensor]) -> bool:
    """Whether `tensors` are the keyed ones with no change torch counts (another tensor or storage, an in-place op);
    a write through `.data` counts none."""
    return len(key) == len(tensors) and all(t is kept and t._version == version and t.data_ptr() == pointer
                                            for (kept, version, pointer), t in zip(key, tensors))


#: `cores_unchanged` as generated code embeds it (that code imports torch only; this module's own source)
UNCHANGED_SOURCE = "\n\n" + inspect.getsource(cores_unchanged)
#: `tensors_key` and `key_unchanged` as generated code embeds them
FROZEN_SOURCE = "\n\n" + inspect.getsource(tensors_key) + "\n\n" + inspect.getsource(key_unchanged)


def cached_fold(entry: tuple | None, cores: Sequence[torch.Tensor], compute: Callable[[], T]) -> tuple:
    """`entry` while the cores are `unchanged` from its copies, else a new `(copies, compute())`, made without autograd
    and outside inference mode."""
    if entry is not None and cores_unchanged(entry[0], cores):
        return entry
    with torch.inference_mode(False), torch.no_grad():  # this order: inference_mode(False) turns grad mode on
        return tuple(core.detach().clone() for core in cores), compute()


__all__ = ["FROZEN_SOURCE", "UNCHANGED_SOURCE", "cached_fold", "cores_unchanged", "key_unchanged", "tensors_key"]
