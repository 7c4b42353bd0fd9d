"""ttplan: plan, cost and run contraction orders for tensor-train convolutions.

A few verbs, each loaded on first use, so `import ttplan` is instant and planning (`ConvSpec`, `make_format`,
`plan_layer`) never imports torch; the layers, `plan_architecture` (which traces a model), `convert` and `load` do.

Plan one layer, in MACs (FLOPs = 2 x MACs):

    >>> import ttplan
    >>> spec = ttplan.ConvSpec.make(128, 256, 3, stride=2, padding=1, input_size=28)
    >>> plan = ttplan.plan_layer(spec, ttplan.make_format("hodec", spec, rank=16))
    >>> f"{plan.best.macs:,} MACs vs {plan.baseline_macs:,} dense"
    '2,978,816 MACs vs 57,802,752 dense'

Decompose one module, as tensorly-torch does (`format`, `rank` or `ranks`, `input_size`):

    >>> import torch
    >>> layer = ttplan.TTConv2d.from_conv(torch.nn.Conv2d(64, 64, 3, padding=1), format="hodec", rank=16,
    ...                                   input_size=32)
    >>> fc = ttplan.TTLinear.from_linear(torch.nn.Linear(512, 256), format="ttm", rank=8)

Plan a whole model (a preset, a `module:callable` or an `nn.Module`), then swap its layers:

    >>> arch = ttplan.plan_architecture("resnet20", (3, 32, 32))
    >>> f"{arch.totals.macs_reduction:.1%} fewer MACs"
    '69.5% fewer MACs'
    >>> from ttplan.models import load_model
    >>> dense, input_size = load_model("resnet20")
    >>> tt = ttplan.convert(dense, arch)
    >>> type(tt.layer1[1].conv1).__name__
    'TTConv2d'

For inference, freeze it: each TT layer folds its weights once and binds its fused kernel call:

    >>> tt = ttplan.freeze(tt.eval())

Load the TT model a `ttplan train` run saved (its folder, or its `model_tt.pt`):

    >>> ttplan.load("no-such-run")
    Traceback (most recent call last):
    ttplan.errors.TTPlanError: TT model 'no-such-run' does not exist

The search (`ttplan.core.search.optimize`), its result type (`ttplan.core.contraction.ContractionPlan`) and the
allocator setting (`ttplan.runtime.allocator.retain_freed_memory`) live in their modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ttplan.errors import TTPlanError

__version__ = "0.3.0.dev0"  # the unreleased 0.3 of CHANGELOG.md

#: public name -> the module that defines it
_HOMES = {
    "ConvSpec": "ttplan.core.spec",
    "TTFormat": "ttplan.core.formats",
    "make_format": "ttplan.core.formats",
    "plan_layer": "ttplan.core.layer",
    "plan_architecture": "ttplan.arch.architecture",
    "TTConv2d": "ttplan.runtime.layers",
    "TTLinear": "ttplan.runtime.layers",
    "convert": "ttplan.arch.apply",
    "freeze": "ttplan.runtime.layers",
    "ADMMCompression": "ttplan.training.compression",
    "load": "ttplan.training.models",
}

#: internals that were top-level names once -> the module they live in
_MOVED = {
    "optimize": "ttplan.core.search",
    "ContractionPlan": "ttplan.core.contraction",
    "retain_freed_memory": "ttplan.runtime.allocator",
}

__all__ = [
    "ADMMCompression", "ConvSpec", "TTConv2d", "TTFormat", "TTLinear", "TTPlanError", "__version__", "convert",
    "freeze", "load", "make_format", "plan_architecture", "plan_layer",
]

if TYPE_CHECKING:  # for type checkers and editors; at run time `__getattr__` loads each name on first use
    from ttplan.arch.apply import convert
    from ttplan.arch.architecture import plan_architecture
    from ttplan.core.formats import TTFormat, make_format
    from ttplan.core.layer import plan_layer
    from ttplan.core.spec import ConvSpec
    from ttplan.runtime.layers import TTConv2d, TTLinear, freeze
    from ttplan.training.compression import ADMMCompression
    from ttplan.training.models import load


def __getattr__(name: str) -> Any:
    """Load a documented name from its module on first access (PEP 562)."""
    if name in _MOVED:
        raise AttributeError(f"ttplan.{name} is no longer a top-level name: from {_MOVED[name]} import {name}")
    if name not in _HOMES:
        raise AttributeError(f"module 'ttplan' has no attribute {name!r}; public names: {', '.join(__all__)}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
