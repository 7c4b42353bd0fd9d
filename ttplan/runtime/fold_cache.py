"""What identifies the cores' values for the folded-weight cache, for `TTConv2d` and the generated layers alike.

A core changes value in place (its version counter), by replacement (its storage), or by a move to
another dtype or device; any of these must refold. `fold_key` computes the key; `fold_key_source`
writes the same expression into generated code, which imports torch only.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

#: the attributes of each core the key holds (a trailing `()` is a call)
FOLD_KEY_FIELDS = ("_version", "data_ptr()", "dtype", "device")


def _field(core: torch.Tensor, field: str):
    return getattr(core, field[:-2])() if field.endswith("()") else getattr(core, field)


def fold_key(cores: Iterable[torch.Tensor]) -> tuple:
    """The cache key of a set of cores: version, storage, dtype and device of each."""
    return tuple(tuple(_field(core, f) for f in FOLD_KEY_FIELDS) for core in cores)


def fold_key_source(cores: str) -> str:
    """The same key as a Python expression over the iterable expression `cores`, for generated code."""
    return f"tuple(({', '.join(f'core.{f}' for f in FOLD_KEY_FIELDS)}) for core in {cores})"


__all__ = ["FOLD_KEY_FIELDS", "fold_key", "fold_key_source"]
