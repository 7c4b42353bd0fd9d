"""TT formats of a conv kernel as plug-ins: one class per format, registered by name.

`make_format(name, spec, ...)` builds and validates one from any accepted spelling; `TTFormat` is the base type
every format derives from. The formats shipped: classical (Garipov et al.), hodec (spatial core in the middle),
tucker2 (hodec with one mode a side), tr (hodec's cores in a tensor ring), cp and cp-separable (one factor per
mode on one shared rank; the window joint or as k_h and k_w) and ttm (TT-matrix, for nn.Linear).
Adding a format is one module with a `TTFormat` subclass, registered here (the order is the order `--format`
lists).
"""

from __future__ import annotations

from ttplan.core.formats.base import ChainLayout, CoreShape, FactorLayout, TTFormat
from ttplan.core.formats.classical import ClassicalTT
from ttplan.core.formats.cp import CPFormat, SeparableCP
from ttplan.core.formats.hodec import HodecTT, hodec_from_tt_shapes
from ttplan.core.formats.modes import DEFAULT_ORDER, balanced_factors
from ttplan.core.formats.registry import (
    format_from_dict,
    format_names,
    get_format,
    linear_format,
    make_format,
    max_rank_format,
    published_schemes,
    register,
    spatial_variant,
)
from ttplan.core.formats.ring import TensorRingTT
from ttplan.core.formats.ttm import TTMatrix
from ttplan.core.formats.tucker2 import Tucker2TT

for _cls in (ClassicalTT, HodecTT, Tucker2TT, TensorRingTT, CPFormat, SeparableCP, TTMatrix):
    register(_cls)

#: the registered format names at import (the registry itself is `format_names()`)
KINDS = format_names()

__all__ = [
    "DEFAULT_ORDER",
    "KINDS",
    "CPFormat",
    "ChainLayout",
    "ClassicalTT",
    "CoreShape",
    "FactorLayout",
    "HodecTT",
    "SeparableCP",
    "TTFormat",
    "TTMatrix",
    "TensorRingTT",
    "Tucker2TT",
    "balanced_factors",
    "format_from_dict",
    "format_names",
    "get_format",
    "hodec_from_tt_shapes",
    "linear_format",
    "make_format",
    "max_rank_format",
    "published_schemes",
    "register",
    "spatial_variant",
]
