"""A user's own code named as `module:callable` (`--arch mynet:build`, `--dataset mydata:load`): imported from
the current folder first, as `python -m` does, with one-line errors that say which part failed."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ttplan.errors import TTPlanError


def one_line(error: BaseException) -> str:
    """`Type: message` squeezed onto one line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def import_from_cwd(module_name: str) -> ModuleType:
    """Import a module with the current directory first on the import path, as `python -m` does."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def load_callable(target: str, what: str, example: str) -> Callable[[], Any]:
    """The callable `module:attr.path` names (not yet called); `what` (e.g. "model") and `example` shape errors."""
    module_name, _, attr_path = str(target).partition(":")
    if not module_name or not attr_path:
        raise TTPlanError(f"{what} {target!r}: expected 'module:callable', e.g. {example!r}")
    try:
        obj: object = import_from_cwd(module_name)
    except Exception as error:
        raise TTPlanError(f"{what} {target!r}: cannot import module {module_name!r} ({one_line(error)})") from error
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise TTPlanError(f"{what} {target!r}: module {module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TTPlanError(f"{what} {target!r}: {attr_path!r} is a {type(obj).__name__}, not a callable")
    return obj


__all__ = ["import_from_cwd", "load_callable", "one_line"]
