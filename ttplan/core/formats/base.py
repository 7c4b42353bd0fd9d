"""What every format answers: its cores, ranks and their bounds, its published order and its saved form.

A format is one class (a subclass of `TTFormat`) registered under its name (`registry.py`). The base
implements what all chain formats share: the rank bounds from the cuts of the chain, the rank checks,
the uniform and fractional rank rules, the parameter count and the plain-data form. A subclass says
where its cores sit (`tt_shapes`, `cores`, `_chain_axes`), which ranks it stores (`_stored`) and in
which order its published scheme absorbs the cores (`published_order`).

Conventions (docs/conventions.md): channel `c = (((i_1)·I_2 + i_2)·I_3 + …)`, i.e. row-major over
the modes, as `x.reshape(B, I_1, …, I_d, H, W)` splits it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from ttplan.core.formats.modes import DEFAULT_ORDER, balanced_factors
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError


@dataclass(frozen=True)
class CoreShape:
    """One core: its name, its parameter shape, its network indices (boundary ranks carry none) and axis names.

    `axes` names each parameter axis for people: `r1`, `o2`, `kh`, `kw`, or `1` for a boundary rank.
    """

    name: str
    shape: tuple[int, ...]
    indices: tuple[str, ...]
    axes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChainLayout:
    """How a format reads the dense kernel `W[o_1…o_e, i_1…i_d, k_h, k_w]` as a chain of 3-way cores.

    `chain_axes` are the axes of `W` (viewed with `kernel_modes`) in core order, `chain_sizes` each
    core's mode size and `chain_ranks` the `len(chain_sizes) + 1` chain ranks. Both ends are equal: 1 for an
    open chain, the closing rank of a ring (traced over when the kernel is rebuilt).
    """

    kernel_modes: tuple[int, ...]
    chain_axes: tuple[int, ...]
    chain_sizes: tuple[int, ...]
    chain_ranks: tuple[int, ...]


@dataclass(frozen=True)
class FactorLayout:
    """How a format reads the dense kernel as factors `[n, R]` on one shared rank (a CP hyperedge).

    `kernel_modes` views `W` as `[o_1…o_e, i_1…i_d, k_h, k_w]`; `factor_axes` are, per factor in core order,
    the axes of that view it covers (the joint window factor covers `k_h, k_w`); `factor_sizes` their products;
    `rank` the shared rank R. `W = Σ_r Π_n F_n[·, r]`, the factors' axes permuted back into place.
    """

    kernel_modes: tuple[int, ...]
    factor_axes: tuple[tuple[int, ...], ...]
    factor_sizes: tuple[int, ...]
    rank: int

    @property
    def axes(self) -> tuple[int, ...]:
        """The kernel view's axes in factor order (flattened)."""
        return tuple(a for group in self.factor_axes for a in group)


def check_ints(name: str, values: object, *, allow_empty: bool = False) -> tuple[int, ...]:
    """A tuple of positive ints, or a one-line error naming the argument."""
    if isinstance(values, (list, tuple)) and (values or allow_empty) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
    ):
        return tuple(int(v) for v in values)
    shown = list(values) if isinstance(values, (list, tuple)) else values
    raise TTPlanError(f"{name}={shown!r}: expected a non-empty list of positive ints")


def check_positive(name: str, value: object) -> int:
    """A positive int (not a bool, not a float), or a one-line error naming the argument."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TTPlanError(f"{name}={value!r}: expected a positive int")
    return int(value)


def paired_modes(spec: ConvSpec, order: int | None, in_modes: tuple[int, ...] | None,
                 out_modes: tuple[int, ...] | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Default modes of paired formats: balanced, input modes descending, output modes ascending, same count."""
    if in_modes is None:
        d = order or len(out_modes or ()) or DEFAULT_ORDER
        in_modes = tuple(sorted(balanced_factors(spec.in_channels, d), reverse=True))
    if out_modes is None:
        out_modes = tuple(sorted(balanced_factors(spec.out_channels, len(in_modes))))
    return tuple(in_modes), tuple(out_modes)


@dataclass(frozen=True, eq=False)
class TTFormat:
    """A TT format with its modes and ranks. Subclasses are the formats; equal when label, modes and ranks are."""

    in_modes: tuple[int, ...]
    out_modes: tuple[int, ...]
    ranks: tuple[int, ...]

    #: the registry name (`--format`); `label` may refine it (hodec with one mode a side is `tucker2`)
    name: ClassVar[str] = ""
    #: the published contraction order of this format, by scheme name
    published_scheme: ClassVar[str] = ""
    #: for nn.Linear layers (1x1 on 1x1) rather than convs
    linear: ClassVar[bool] = False
    #: each core pairs one input with one output mode, so both sides need the same count
    paired: ClassVar[bool] = False
    #: said after "needs N ranks" when the count is wrong
    rank_note: ClassVar[str] = " (1 at both ends)"
    #: formats that differ only in how they factor the window share a family (`--format cp --spatial separable`)
    family: ClassVar[str] = ""
    #: how the window is factored: `joint` (one `k_h·k_w` index) or `separable` (`k_h` and `k_w` apart)
    spatial: ClassVar[str] = "joint"
    #: what `rank_bounds` is, said when a rank exceeds it
    bound_note: ClassVar[str] = "the larger of the exact TT rank and the product of the modes of the two cores it joins"
    #: accepts the published `tt_shapes` spelling (`_from_tt_shapes`)
    tt_shapes_spelling: ClassVar[bool] = False

    # -- identity and plain data ------------------------------------------------------------------

    @property
    def label(self) -> str:
        """The name shown in reports and saved in `to_dict`."""
        return self.name

    def _key(self) -> tuple:
        return (self.label, tuple(self.in_modes), tuple(self.out_modes), tuple(self.ranks))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TTFormat) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def to_dict(self) -> dict:
        """Plain data (`{"kind", "in_modes", "out_modes", "ranks"}`) that `from_dict` reads back."""
        return {"kind": self.label, "in_modes": list(self.in_modes), "out_modes": list(self.out_modes),
                "ranks": list(self.ranks)}

    @staticmethod
    def from_dict(data: object) -> TTFormat:
        """The format saved by `to_dict` (checked for spelling; validate it against a layer with `validate`)."""
        from ttplan.core.formats.registry import format_from_dict

        return format_from_dict(data)

    def to_config(self, spec: ConvSpec) -> dict:
        """The entry a per-layer config file holds for this format (see `ttplan.arch.config`)."""
        data = self.to_dict()
        return {"format": data.pop("kind"), **data}

    def describe(self, spec: ConvSpec) -> str:
        """A short shape for tables: `classical in 4·4·8 out 4·8·8`."""
        return f"{self.label} in {'·'.join(map(str, self.in_modes))} out {'·'.join(map(str, self.out_modes))}"

    # -- what a subclass defines --------------------------------------------------------------------

    def tt_shapes(self, spec: ConvSpec) -> tuple[int, ...]:
        """The per-core mode sizes in chain order."""
        raise NotImplementedError

    def cores(self, spec: ConvSpec) -> tuple[CoreShape, ...]:
        """Every core's name, parameter shape and network indices, in chain order."""
        raise NotImplementedError

    def _chain_axes(self, e: int, d: int) -> tuple[int, ...]:
        """Axes of `W[o_1…o_e, i_1…i_d, k_h, k_w]` in core order."""
        raise NotImplementedError

    def published_order(self) -> tuple[str | tuple[str, ...], ...]:
        """The core names in the order the published scheme absorbs them into the feature map; a tuple of names
        is merged first (left to right) and absorbed as one."""
        raise NotImplementedError

    def _stored(self, chain: tuple) -> tuple:
        """The entries of the `n + 1` chain ranks this format stores in `ranks` (all of them by default)."""
        return tuple(chain)

    def _chain_ranks(self) -> tuple[int, ...]:
        """The `n + 1` chain ranks (equal ends: 1, or a ring's closing rank), from the stored ranks."""
        return tuple(self.ranks)

    @classmethod
    def _default_modes(cls, spec: ConvSpec, order: int | None, in_modes: tuple[int, ...] | None,
                       out_modes: tuple[int, ...] | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Balanced modes where none are given: `order` a side, else as many as the other side, else 3."""
        if in_modes is None:
            in_modes = balanced_factors(spec.in_channels, order or len(out_modes or ()) or DEFAULT_ORDER)
        if out_modes is None:
            out_modes = balanced_factors(spec.out_channels, order or len(in_modes))
        return tuple(in_modes), tuple(out_modes)

    @classmethod
    def _from_tt_shapes(cls, spec: ConvSpec, tt_shapes: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(in_modes, out_modes) from the published `tt_shapes` spelling (formats with `tt_shapes_spelling`)."""
        raise NotImplementedError

    @classmethod
    def search_orders(cls, max_order: int) -> tuple[int, ...]:
        """Modes per side a format search tries for this format (up to `max_order`)."""
        return tuple(range(1, max_order + 1))

    # -- what the chain gives every format ----------------------------------------------------------

    def core_params(self, spec: ConvSpec) -> int:
        """Elements of all cores."""
        return sum(math.prod(c.shape) for c in self.cores(spec))

    def params(self, spec: ConvSpec) -> int:
        """Elements of all cores, plus the bias if the layer has one. The one count of a format's parameters."""
        return self.core_params(spec) + (spec.out_channels if spec.bias else 0)

    def rank_size(self, index: str) -> int:
        """The size of a rank index of the network (`r3` is `ranks[3]`)."""
        return self.ranks[int(index[1:])]

    def chain_layout(self, spec: ConvSpec) -> ChainLayout:
        """The kernel's axes in core order, the chain's sizes and ranks: what TT-SVD and the rebuild follow."""
        kh, kw = spec.kernel_size
        modes = (*self.out_modes, *self.in_modes, kh, kw)
        return ChainLayout(modes, self._chain_axes(len(self.out_modes), len(self.in_modes)), self.tt_shapes(spec),
                           self._chain_ranks())

    def kernel_layout(self, spec: ConvSpec) -> ChainLayout | FactorLayout:
        """How the runtime decomposes and rebuilds the kernel: a chain or ring of 3-way cores (`chain_layout`,
        by sequential SVDs), or factors on one shared rank (`FactorLayout`, by ALS)."""
        return self.chain_layout(spec)

    def _cuts(self, spec: ConvSpec) -> tuple[list[int], list[int]]:
        """At each interior cut of the chain: the exact rank and the product of the two joined cores' modes."""
        shapes = self.tt_shapes(spec)
        exact = [min(math.prod(shapes[:t]), math.prod(shapes[t:])) for t in range(1, len(shapes))]
        near = [shapes[t - 1] * shapes[t] for t in range(1, len(shapes))]
        return exact, near

    def max_ranks(self, spec: ConvSpec) -> tuple[int, ...]:
        """Exact ranks at each cut: min(product of mode sizes on either side). TT-SVD is exact here."""
        exact, _ = self._cuts(spec)
        return self._stored((1, *exact, 1))

    def rank_bounds(self, spec: ConvSpec) -> tuple[int, ...]:
        """Accepted ranks: the larger of the exact rank and the product of the two joined cores' modes.

        Looser than `max_ranks` on purpose: published configs use uniform ranks above the exact
        bound next to small boundary modes (e.g. 16 after an output mode of 4); such ranks only
        cost parameters and compute, and TT-SVD pads them with zeros.
        """
        exact, near = self._cuts(spec)
        return self._stored((1, *(max(a, b) for a, b in zip(exact, near)), 1))

    def free_positions(self, spec: ConvSpec) -> tuple[int, ...]:
        """Positions in `ranks` that are chosen (the others are boundary ranks of 1)."""
        n = len(self.tt_shapes(spec))
        return tuple(p for p, t in enumerate(self._stored(tuple(range(n + 1)))) if 0 < t < n)

    def fill_ranks(self, spec: ConvSpec, choose: Callable[[int], int]) -> tuple[int, ...]:
        """A full rank tuple: `choose(position)` at the free positions, 1 at the boundaries."""
        free = set(self.free_positions(spec))
        count = len(self._stored(tuple(range(len(self.tt_shapes(spec)) + 1))))
        return tuple(choose(p) if p in free else 1 for p in range(count))

    def _rank_axis(self, spec: ConvSpec) -> Callable[[int], tuple[tuple[str, ...], str]]:
        """For rank position j: its network index (none for a boundary rank) and its axis name (`1` there)."""
        free = set(self.free_positions(spec))

        def rank(j: int) -> tuple[tuple[str, ...], str]:
            # interior ranks are indices even when 1 (the chain stays connected); boundary ranks are not
            return ((f"r{j}",), f"r{j}") if j in free else ((), "1")

        return rank

    def _paired_cores(self, spec: ConvSpec) -> list[CoreShape]:
        """`G_j[r_{j-1}, I_j, O_j, r_j]`: one core per (input, output) mode pair (classical and ttm)."""
        rank = self._rank_axis(spec)
        out = []
        for j in range(len(self.in_modes)):
            (left, la), (right, ra) = rank(j), rank(j + 1)
            shape = (self.ranks[j], self.in_modes[j], self.out_modes[j], self.ranks[j + 1])
            out.append(CoreShape(f"G{j + 1}", shape, (*left, f"i{j + 1}", f"o{j + 1}", *right),
                                 (la, f"i{j + 1}", f"o{j + 1}", ra)))
        return out

    def with_ranks(self, ranks: tuple[int, ...]) -> TTFormat:
        """The same format and modes with other ranks."""
        return type(self)(self.in_modes, self.out_modes, tuple(ranks))

    # -- checks -------------------------------------------------------------------------------------

    def validate(self, spec: ConvSpec) -> None:
        """Check modes against the channels and ranks against their bounds; one-line errors."""
        self.validate_modes(spec)
        self.validate_ranks(spec)

    def validate_modes(self, spec: ConvSpec) -> None:
        """The layer and mode checks alone (ranks may not be known yet)."""
        self.validate_layer(spec)
        for name, modes, channels in (
            ("in_modes", self.in_modes, spec.in_channels),
            ("out_modes", self.out_modes, spec.out_channels),
        ):
            if not modes or any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in modes):
                raise TTPlanError(f"{name}={list(modes)}: expected positive mode sizes")
            if math.prod(modes) != channels:
                raise TTPlanError(
                    f"{name}={list(modes)}: their product is {math.prod(modes)}, "
                    f"but the layer has {channels} {'input' if name == 'in_modes' else 'output'} channels"
                )
        if self.paired and len(self.in_modes) != len(self.out_modes):
            raise TTPlanError(
                f"in_modes={list(self.in_modes)}, out_modes={list(self.out_modes)}: the {self.name} format "
                "pairs one input with one output mode per core, so both need the same count"
            )

    @classmethod
    def validate_layer(cls, spec: ConvSpec) -> None:
        """The checks on the layer alone: a valid spec that a TT format can decompose (groups=1)."""
        spec.validate()
        if spec.groups != 1:
            raise TTPlanError(
                f"groups={spec.groups}: only groups=1 convs can be TT-decomposed; leave grouped convs dense"
            )

    def validate_ranks(self, spec: ConvSpec) -> None:
        """Rank count, positivity, boundary ranks and the per-cut bounds of `rank_bounds`."""
        bounds = self.rank_bounds(spec)
        if len(self.ranks) != len(bounds):
            raise TTPlanError(
                f"ranks={list(self.ranks)}: the {self.label} format with {len(self.in_modes)} input and "
                f"{len(self.out_modes)} output modes needs {len(bounds)} ranks" + self.rank_note
            )
        if any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in self.ranks):
            raise TTPlanError(f"ranks={list(self.ranks)}: ranks must be positive ints")
        free = set(self.free_positions(spec))
        if any(r != 1 for p, r in enumerate(self.ranks) if p not in free):
            raise TTPlanError(f"ranks={list(self.ranks)}: boundary ranks must be 1")
        for j, (r, bound) in enumerate(zip(self.ranks, bounds)):
            if r > bound:
                raise TTPlanError(
                    f"ranks={list(self.ranks)}: rank {r} at position {j} exceeds its bound {bound} "
                    f"({self.bound_note}); bounds are {list(bounds)}"
                )

    def check_cores(self, shapes: list[tuple[int, ...]], spec: ConvSpec) -> None:
        """One-line error unless `shapes` are exactly this format's core shapes on `spec`, in order."""
        expected = self.cores(spec)
        if len(shapes) != len(expected):
            raise TTPlanError(
                f"{len(shapes)} cores given: the {self.label} format has {len(expected)} "
                f"({', '.join(c.name for c in expected)})"
            )
        for shape, want in zip(shapes, expected):
            if tuple(shape) != want.shape:
                raise TTPlanError(f"core {want.name} of shape {list(shape)}: expected {list(want.shape)}")

    # -- building -----------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        spec: ConvSpec,
        *,
        in_modes: tuple[int, ...] | None = None,
        out_modes: tuple[int, ...] | None = None,
        ranks: tuple[int, ...] | None = None,
        rank: int | None = None,
        order: int | None = None,
        tt_shapes: tuple[int, ...] | None = None,
    ) -> TTFormat:
        """Build and validate a format of this class from any accepted spelling (see `make_format`)."""
        cls.validate_layer(spec)
        if rank is not None:
            check_positive("rank", rank)
        if order is not None:
            check_positive("order", order)
        if ranks is not None:
            ranks = check_ints("ranks", ranks)
        if tt_shapes is not None:
            if not cls.tt_shapes_spelling:
                from ttplan.core.formats.registry import format_names, get_format

                spelled = "/".join(n for n in format_names() if get_format(n).tt_shapes_spelling)
                raise TTPlanError(f"tt_shapes given with format={cls.name!r}: tt_shapes is the {spelled} spelling")
            tt_shapes = check_ints("tt_shapes", tt_shapes)
            if ranks is None and rank is None:
                raise TTPlanError("tt_shapes given without ranks: add ranks (len(tt_shapes)+1 values) or a rank")
            in_modes, out_modes = cls._from_tt_shapes(spec, tt_shapes)
        else:
            in_modes = None if in_modes is None else check_ints("in_modes", in_modes)
            out_modes = None if out_modes is None else check_ints("out_modes", out_modes)
            in_modes, out_modes = cls._default_modes(spec, order, in_modes, out_modes)
        probe = cls(in_modes, out_modes, ())
        if ranks is None:
            if rank is None:
                raise TTPlanError(f"format={cls.name!r}: give ranks or a uniform rank")
            # validate modes before computing bounds so the error speaks of the modes
            probe.validate_modes(spec)
            bounds = probe.rank_bounds(spec)
            ranks = probe.fill_ranks(spec, lambda p: min(rank, bounds[p]))
        fmt = probe.with_ranks(ranks)
        fmt.validate(spec)
        return fmt


__all__ = ["ChainLayout", "CoreShape", "FactorLayout", "TTFormat", "check_ints", "check_positive", "paired_modes"]
