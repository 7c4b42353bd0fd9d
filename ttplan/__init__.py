"""ttplan: plan, cost and run contraction orders for tensor-train convolutions.

The documented names are importable from here. Each is loaded on first use, so `import ttplan` is instant
and planning (`ConvSpec`, `make_format`, `plan_layer`, `optimize`, `ContractionPlan`) never imports torch;
`TTConv2d`, `TTLinear`, `convert`, `plan_architecture` (which traces a model) and `load` (a trained run's TT
model, `ttplan train`'s `model_tt.pt`) do.
`retain_freed_memory` sets the C allocator of a CPU inference process to reuse freed memory (docs/latency.md).

    >>> import ttplan
    >>> spec = ttplan.ConvSpec.make(128, 256, 3, stride=2, padding=1, input_size=28)
    >>> ttplan.plan_layer(spec, ttplan.make_format("hodec", spec, rank=16)).best.macs  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ttplan.errors import TTPlanError

__version__ = "0.1.0"

#: public name -> the module that defines it
_HOMES = {
    "ConvSpec": "ttplan.core.spec",
    "TTFormat": "ttplan.core.formats",
    "make_format": "ttplan.core.formats",
    "plan_layer": "ttplan.core.layer",
    "optimize": "ttplan.core.search",
    "ContractionPlan": "ttplan.core.contraction",
    "plan_architecture": "ttplan.arch.architecture",
    "TTConv2d": "ttplan.runtime.layers",
    "TTLinear": "ttplan.runtime.layers",
    "convert": "ttplan.runtime.layers",
    "retain_freed_memory": "ttplan.runtime.allocator",
    "ADMMCompression": "ttplan.training.compression",
    "load": "ttplan.training.models",
}

__all__ = [
    "ADMMCompression", "ContractionPlan", "ConvSpec", "TTConv2d", "TTFormat", "TTLinear", "TTPlanError",
    "__version__", "convert", "load",
    "make_format", "optimize", "plan_architecture", "plan_layer", "retain_freed_memory",
]

if TYPE_CHECKING:  # for type checkers and editors; at run time `__getattr__` loads each name on first use
    from ttplan.arch.architecture import plan_architecture
    from ttplan.core.contraction import ContractionPlan
    from ttplan.core.formats import TTFormat, make_format
    from ttplan.core.layer import plan_layer
    from ttplan.core.search import optimize
    from ttplan.core.spec import ConvSpec
    from ttplan.runtime.allocator import retain_freed_memory
    from ttplan.runtime.layers import TTConv2d, TTLinear, convert
    from ttplan.training.compression import ADMMCompression
    from ttplan.training.models import load


def __getattr__(name: str) -> Any:
    """Load a documented name from its module on first access (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f"module 'ttplan' has no attribute {name!r}; public names: {', '.join(__all__)}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
