"""The default policy: which format and ranks a layer gets when no config entry covers it, and what stays dense.

Precedence for each traced layer: a config entry (its format, or `dense`) > with a config, the layers it does not
name stay dense unless `unnamed_rule` sends them on to the policy > grouped convs stay dense > the skip rules
(first conv, 1x1 convs, fewer than `min_channels` channels, linear layers unless `linear`) > the policy's format
at a uniform `rank` or at `rank_fraction` of the exact ranks (`TTFormat.max_ranks`). A layer whose channels cannot
be split into `order` modes stays dense, and says why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from ttplan.arch.config import LayerConfig, resolve_formats
from ttplan.core.formats import TTFormat, format_names, linear_format, make_format
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

if TYPE_CHECKING:  # tracing needs torch; planning from a config does not
    from ttplan.models.trace import TracedLayer

DEFAULT_FORMAT = "hodec"
#: the formats a policy may give conv layers: the default first, then the other registered conv formats
CONV_FORMATS = (DEFAULT_FORMAT, *(n for n in format_names(linear=False) if n != DEFAULT_FORMAT))
DEFAULT_RANK_FRACTION = 0.5
#: what the layers a config does not name get (`--unnamed`): the policy's decision, or dense
UNNAMED = ("policy", "dense")
#: the reason a layer the config does not name stays dense under `--unnamed dense`
UNNAMED_DENSE = "not in config"


@dataclass(frozen=True)
class Policy:
    """The format of layers no config covers. `rank` (uniform, clipped) wins over `rank_fraction`.

    Defaults: hodec with `order` modes a side (None: ttplan's default of 3) at half of the exact
    ranks; the first conv and 1x1 convs stay dense; linear layers stay dense unless `linear` (then
    TT-matrix at the same rank rule).
    """

    format: str = DEFAULT_FORMAT
    rank: int | None = None
    rank_fraction: float = DEFAULT_RANK_FRACTION
    order: int | None = None
    skip_first: bool = True
    skip_1x1: bool = True
    min_channels: int = 1
    linear: bool = False

    def __post_init__(self) -> None:
        if self.format not in CONV_FORMATS:
            raise TTPlanError(f"policy format={self.format!r}: expected one of {', '.join(CONV_FORMATS)} "
                              "(linear layers always use ttm)")
        if self.rank is not None and self.rank < 1:
            raise TTPlanError(f"rank={self.rank}: expected a positive int")
        if not 0 < self.rank_fraction <= 1:
            raise TTPlanError(f"rank_fraction={self.rank_fraction}: expected a number in (0, 1], e.g. 0.25")
        if self.order is not None and self.order < 1:
            raise TTPlanError(f"order={self.order}: expected a positive int")
        if self.min_channels < 1:
            raise TTPlanError(f"min_channels={self.min_channels}: expected a positive int")

    def describe(self) -> str:
        """One line for report headers."""
        ranks = f"uniform rank {self.rank}" if self.rank is not None else f"rank {self.rank_fraction:g} x exact rank"
        order = self.order if self.order is not None else "3 (default)"
        skips = [s for s, on in (("first conv", self.skip_first), ("1x1 convs", self.skip_1x1),
                                 ("linear", not self.linear)) if on]
        if self.min_channels > 1:
            skips.append(f"< {self.min_channels} channels")
        return f"{self.format}, order {order}, {ranks}; dense: {', '.join(skips) or 'none'}"

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> Policy:
        """The policy of `to_dict`'s fields (missing: the defaults); anything else is a one-line error."""
        if not isinstance(data, dict):
            raise TTPlanError(f"policy={data!r}: expected a mapping of Policy fields, e.g. {{'rank': 8}}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TTPlanError(f"policy has unknown field(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
        return cls(**data)


def unnamed_rule(unnamed: str | None, config: bool, budget: bool = False) -> str:
    """What the layers a config does not name get, `policy` or `dense`: `unnamed` if given, else `dense` where a
    `config` is given (it is the user's choice of layers) and `policy` without one or with a `budget` (which searches
    them). Every command decides its layers by this rule (`decide`); a value it cannot use is a one-line error."""
    if unnamed is None:
        return "dense" if config and not budget else "policy"
    if unnamed not in UNNAMED:
        raise TTPlanError(f"unnamed={unnamed!r}: expected one of {', '.join(UNNAMED)}")
    if unnamed == "dense" and not config:
        raise TTPlanError("--unnamed dense without --config: every layer would stay dense; give --config FILE "
                          "(or drop --unnamed)")
    if unnamed == "dense" and budget:
        raise TTPlanError("--unnamed dense with a budget target: the budget picks the formats of the layers the "
                          "config does not name, so none would be left to search; drop --unnamed dense (or the "
                          "target)")
    return unnamed


@dataclass(frozen=True)
class Decision:
    """What a layer gets: a format, or `None` with the reason it stays dense; `source` is config or policy."""

    fmt: TTFormat | None
    reason: str | None
    source: str


def fraction_ranks(fmt: TTFormat, spec: ConvSpec, fraction: float) -> tuple[int, ...]:
    """`fraction` of each exact rank, rounded up (at least 1), boundary ranks kept."""
    exact = fmt.max_ranks(spec)
    return fmt.fill_ranks(spec, lambda p: max(1, math.ceil(fraction * exact[p] - 1e-9)))


def policy_format(layer: TracedLayer, policy: Policy) -> TTFormat:
    """The policy's format for one layer (ttm for linear layers); TTPlanError if the channels do not split."""
    kind = linear_format() if layer.kind == "linear" else policy.format
    spec = layer.spec
    if policy.rank is not None:
        return make_format(kind, spec, rank=policy.rank, order=policy.order)
    shape = make_format(kind, spec, rank=1, order=policy.order)
    return make_format(kind, spec, in_modes=shape.in_modes, out_modes=shape.out_modes,
                       ranks=fraction_ranks(shape, spec, policy.rank_fraction))


def skip_reason(layer: TracedLayer, policy: Policy, first_conv: str | None) -> str | None:
    """Why the policy leaves a layer dense, or None if it decomposes it."""
    spec = layer.spec
    if not layer.plannable:
        return f"grouped conv (groups={spec.groups})"
    if layer.kind == "linear" and not policy.linear:
        return "linear (add --linear for TT-matrix)"
    if policy.skip_first and layer.name == first_conv:
        return "first conv"
    if policy.skip_1x1 and layer.kind == "conv" and spec.window == 1:
        return "1x1 conv"
    if min(spec.in_channels, spec.out_channels) < policy.min_channels:
        return f"fewer than {policy.min_channels} channels"
    return None


def decide(
    layers: list[TracedLayer], policy: Policy, config: dict[str, LayerConfig] | None = None,
    unnamed: str | None = None,
) -> dict[str, Decision]:
    """Every layer's decision in trace order: config entries first, then the layers the config does not name, dense
    or by the policy's rules as `unnamed_rule(unnamed, ...)` says."""
    rule = unnamed_rule(unnamed, bool(config))
    from_config = resolve_formats(config, layers) if config else {}
    first_conv = next((layer.name for layer in layers if layer.kind == "conv"), None)
    out: dict[str, Decision] = {}
    for layer in layers:
        if config and layer.name in config:
            fmt = from_config.get(layer.name)
            out[layer.name] = Decision(fmt, None if fmt else "dense in config", "config")
            continue
        if rule == "dense":
            out[layer.name] = Decision(None, UNNAMED_DENSE, "config")
            continue
        reason = skip_reason(layer, policy, first_conv)
        if reason is not None:
            out[layer.name] = Decision(None, reason, "policy")
            continue
        try:
            out[layer.name] = Decision(policy_format(layer, policy), None, "policy")
        except TTPlanError as error:
            out[layer.name] = Decision(None, f"no {policy.format} format: {error}", "policy")
    return out


def formats_for(
    layers: list[TracedLayer], policy: Policy, config: dict[str, LayerConfig] | None = None,
    unnamed: str | None = None,
) -> dict[str, TTFormat | None]:
    """Each layer's format, `None` where it stays dense (`decide` gives the reason)."""
    return {name: decision.fmt for name, decision in decide(layers, policy, config, unnamed).items()}
