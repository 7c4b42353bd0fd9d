"""TT formats of a conv kernel: which cores exist, their shapes, and the bounds on their ranks.

Conventions (docs/conventions.md): channel `c = (((i_1)·I_2 + i_2)·I_3 + …)`, i.e. row-major over
the modes, as `x.reshape(B, I_1, …, I_d, H, W)` splits it.

- classical: `S[k_h, k_w, r_0]`, `G_j[r_{j-1}, I_j, O_j, r_j]`, `r_d = 1`; ranks = (r_0, …, r_{d-1}, 1).
- hodec: cores in published order `out_modes + [K] + in_modes`; `B_j[r, O_j, r]`, `C[r, k_h, k_w, r]`,
  `A_j[r, I_j, r]`; ranks of length `len(tt_shapes)+1` with 1 at both ends. tucker2 = one mode a side.
- ttm (TT-matrix, for `nn.Linear`): `G_j[r_{j-1}, I_j, O_j, r_j]` with `r_0 = r_d = 1`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

KINDS = ("classical", "hodec", "tucker2", "ttm")
DEFAULT_ORDER = 3  # modes per side when none are given


@dataclass(frozen=True)
class CoreShape:
    """One core: its name, its parameter shape, and its network indices (boundary ranks carry none)."""

    name: str
    shape: tuple[int, ...]
    indices: tuple[str, ...]


@dataclass(frozen=True)
class TTFormat:
    """A TT format with its modes and ranks; `kind` is classical, hodec (tucker2 is hodec 1+1) or ttm."""

    kind: str
    in_modes: tuple[int, ...]
    out_modes: tuple[int, ...]
    ranks: tuple[int, ...]

    @property
    def label(self) -> str:
        """`tucker2` for hodec with one mode a side, else the kind."""
        if self.kind == "hodec" and len(self.in_modes) == 1 and len(self.out_modes) == 1:
            return "tucker2"
        return self.kind

    def tt_shapes(self, spec: ConvSpec) -> tuple[int, ...]:
        """The per-core mode sizes in chain order (hodec: `out_modes + [K] + in_modes`)."""
        if self.kind == "hodec":
            return (*self.out_modes, spec.window, *self.in_modes)
        pairs = tuple(i * o for i, o in zip(self.in_modes, self.out_modes))
        return (spec.window, *pairs) if self.kind == "classical" else pairs

    def cores(self, spec: ConvSpec) -> tuple[CoreShape, ...]:
        """Every core's name, parameter shape and network indices (boundary ranks of 1 carry no index)."""
        kh, kw = spec.kernel_size
        d = len(self.in_modes)

        last = len(self.ranks) - 1

        def rank(j: int) -> tuple[str, ...]:
            # interior ranks are indices even when 1 (the chain stays connected); boundary ranks are not
            boundary = j == last or (j == 0 and self.kind != "classical")
            return () if boundary else (f"r{j}",)

        out: list[CoreShape] = []
        if self.kind == "classical":
            out.append(CoreShape("S", (kh, kw, self.ranks[0]), ("k", *rank(0))))
            for j in range(d):
                shape = (self.ranks[j], self.in_modes[j], self.out_modes[j], self.ranks[j + 1])
                out.append(CoreShape(f"G{j + 1}", shape, (*rank(j), f"i{j + 1}", f"o{j + 1}", *rank(j + 1))))
        elif self.kind == "ttm":
            for j in range(d):
                shape = (self.ranks[j], self.in_modes[j], self.out_modes[j], self.ranks[j + 1])
                out.append(CoreShape(f"G{j + 1}", shape, (*rank(j), f"i{j + 1}", f"o{j + 1}", *rank(j + 1))))
        else:
            e = len(self.out_modes)
            for j in range(e):
                shape = (self.ranks[j], self.out_modes[j], self.ranks[j + 1])
                out.append(CoreShape(f"B{j + 1}", shape, (*rank(j), f"o{j + 1}", *rank(j + 1))))
            out.append(CoreShape("C", (self.ranks[e], kh, kw, self.ranks[e + 1]), (*rank(e), "k", *rank(e + 1))))
            for j in range(d):
                t = e + 1 + j
                shape = (self.ranks[t], self.in_modes[j], self.ranks[t + 1])
                out.append(CoreShape(f"A{j + 1}", shape, (*rank(t), f"i{j + 1}", *rank(t + 1))))
        return tuple(out)

    def params(self, spec: ConvSpec) -> int:
        """Elements of all cores, plus the bias if the layer has one."""
        cores = sum(math.prod(c.shape) for c in self.cores(spec))
        return cores + (spec.out_channels if spec.bias else 0)

    def max_ranks(self, spec: ConvSpec) -> tuple[int, ...]:
        """Exact ranks at each cut: min(product of mode sizes on either side). TT-SVD is exact here."""
        shapes = self.tt_shapes(spec)
        if self.kind == "classical":
            # cut j sits after S (j=0) or after G_j; the last entry is the boundary rank 1
            cuts = [min(math.prod(shapes[: j + 1]), math.prod(shapes[j + 1 :])) for j in range(len(shapes) - 1)]
            return (*cuts, 1)
        cuts = [min(math.prod(shapes[:t]), math.prod(shapes[t:])) for t in range(1, len(shapes))]
        return (1, *cuts, 1)

    def rank_bounds(self, spec: ConvSpec) -> tuple[int, ...]:
        """Accepted ranks: the larger of the exact rank and the product of the two joined cores' modes.

        Looser than `max_ranks` on purpose: published configs use uniform ranks above the exact
        bound next to small boundary modes (e.g. 16 after an output mode of 4); such ranks only
        cost parameters and compute, and TT-SVD pads them with zeros.
        """
        shapes, exact = self.tt_shapes(spec), self.max_ranks(spec)
        if self.kind == "classical":
            near = [shapes[j] * shapes[j + 1] for j in range(len(shapes) - 1)]
            return (*(max(a, b) for a, b in zip(exact, near)), 1)
        near = [shapes[t - 1] * shapes[t] for t in range(1, len(shapes))]
        return (1, *(max(a, b) for a, b in zip(exact[1:-1], near)), 1)

    def validate(self, spec: ConvSpec) -> None:
        """Check modes against the channels and ranks against their bounds; one-line errors."""
        self.validate_modes(spec)
        self.validate_ranks(spec)

    def validate_modes(self, spec: ConvSpec) -> None:
        """The mode checks alone (ranks may not be known yet)."""
        if self.kind not in ("classical", "hodec", "ttm"):
            raise TTPlanError(f"format={self.kind!r}: expected one of {', '.join(KINDS)}")
        for name, modes, channels in (
            ("in_modes", self.in_modes, spec.in_channels),
            ("out_modes", self.out_modes, spec.out_channels),
        ):
            if not modes or any(m < 1 for m in modes):
                raise TTPlanError(f"{name}={list(modes)}: expected positive mode sizes")
            if math.prod(modes) != channels:
                raise TTPlanError(
                    f"{name}={list(modes)}: their product is {math.prod(modes)}, "
                    f"but the layer has {channels} {'input' if name == 'in_modes' else 'output'} channels"
                )
        if self.kind in ("classical", "ttm") and len(self.in_modes) != len(self.out_modes):
            raise TTPlanError(
                f"in_modes={list(self.in_modes)}, out_modes={list(self.out_modes)}: the {self.kind} format "
                "pairs one input with one output mode per core, so both need the same count"
            )
        if self.kind == "ttm" and not spec.linear and spec.window != 1:
            raise TTPlanError(f"format='ttm' is for nn.Linear layers; this conv has a {spec.kernel_size} kernel")

    def validate_ranks(self, spec: ConvSpec) -> None:
        """Rank count, positivity, boundary ranks and the per-cut bounds of `max_ranks`."""
        expected = len(self.tt_shapes(spec)) + (1 if self.kind != "classical" else 0)
        if len(self.ranks) != expected:
            raise TTPlanError(
                f"ranks={list(self.ranks)}: the {self.label} format with {len(self.in_modes)} input and "
                f"{len(self.out_modes)} output modes needs {expected} ranks"
                + (" (1 at both ends)" if self.kind != "classical" else " (r_0..r_{d-1}, then 1)")
            )
        if any(r < 1 for r in self.ranks):
            raise TTPlanError(f"ranks={list(self.ranks)}: ranks must be positive")
        bounds = self.rank_bounds(spec)
        if self.ranks[-1] != 1 or (self.kind != "classical" and self.ranks[0] != 1):
            raise TTPlanError(f"ranks={list(self.ranks)}: boundary ranks must be 1")
        for j, (r, bound) in enumerate(zip(self.ranks, bounds)):
            if r > bound:
                raise TTPlanError(
                    f"ranks={list(self.ranks)}: rank {r} at position {j} exceeds its bound {bound} "
                    "(the larger of the exact TT rank and the product of the modes of the two cores it joins); "
                    f"bounds are {list(bounds)}"
                )


def balanced_factors(n: int, d: int) -> tuple[int, ...]:
    """Factor `n` into `d` factors > 1 as equal as possible (smallest spread of logs), descending.

    Descending matters for the classical format: large input modes first, large output modes last
    (see `default_modes`).
    """
    if d < 1:
        raise TTPlanError(f"order={d}: expected at least 1 mode")
    if d == 1:
        return (n,)
    primes: list[int] = []
    m, p = n, 2
    while p * p <= m:
        while m % p == 0:
            primes.append(p)
            m //= p
        p += 1
    if m > 1:
        primes.append(m)
    if len(primes) < d:
        raise TTPlanError(
            f"order={d}: {n} = {'·'.join(map(str, primes)) or '1'} cannot be split into {d} modes > 1; "
            f"use an order of at most {max(len(primes), 1)} or give the modes explicitly"
        )
    best: tuple[float, tuple[int, ...]] | None = None
    divisors = [q for q in range(2, n + 1) if n % q == 0]
    target = math.log(n) / d

    def search(rest: int, k: int, lo: int, acc: tuple[int, ...]) -> None:
        nonlocal best
        if k == 1:
            if rest >= lo:
                cand = (*acc, rest)
                spread = sum((math.log(f) - target) ** 2 for f in cand)
                if best is None or spread < best[0]:
                    best = (spread, cand)
            return
        for q in divisors:
            if q < lo:
                continue
            if q ** k > rest:
                break
            if rest % q == 0:
                search(rest // q, k - 1, q, (*acc, q))

    search(n, d, 2, ())
    assert best is not None
    return tuple(sorted(best[1], reverse=True))


def _uniform_ranks(kind: str, spec: ConvSpec, in_modes: tuple[int, ...], out_modes: tuple[int, ...], rank: int):
    """Ranks `rank` everywhere except the boundaries, each clipped to its accepted bound."""
    probe = TTFormat(kind, in_modes, out_modes, ())
    bounds = probe.rank_bounds(spec)
    if kind == "classical":
        return tuple(min(rank, b) for b in bounds[:-1]) + (1,)
    return (1,) + tuple(min(rank, b) for b in bounds[1:-1]) + (1,)


def hodec_from_tt_shapes(spec: ConvSpec, tt_shapes: tuple[int, ...], ranks: tuple[int, ...]) -> TTFormat:
    """Read the published style `tt_shapes = out_modes + [K] + in_modes`: find where K splits O and I."""
    for p, size in enumerate(tt_shapes):
        if (
            size == spec.window
            and math.prod(tt_shapes[:p]) == spec.out_channels
            and math.prod(tt_shapes[p + 1 :]) == spec.in_channels
            and p > 0
            and p < len(tt_shapes) - 1
        ):
            return TTFormat("hodec", tuple(tt_shapes[p + 1 :]), tuple(tt_shapes[:p]), tuple(ranks))
    raise TTPlanError(
        f"tt_shapes={list(tt_shapes)}: expected out_modes + [{spec.window}] + in_modes with products "
        f"{spec.out_channels} and {spec.in_channels} (e.g. out modes of {spec.out_channels}, then "
        f"{spec.window}, then in modes of {spec.in_channels})"
    )


def make_format(
    kind: str,
    spec: ConvSpec,
    *,
    in_modes: tuple[int, ...] | None = None,
    out_modes: tuple[int, ...] | None = None,
    ranks: tuple[int, ...] | None = None,
    rank: int | None = None,
    order: int | None = None,
    tt_shapes: tuple[int, ...] | None = None,
) -> TTFormat:
    """Build and validate a format from any of the accepted spellings (see `ttplan layer --help`)."""
    if kind not in KINDS:
        raise TTPlanError(f"format={kind!r}: expected one of {', '.join(KINDS)}")
    if tt_shapes is not None:
        if kind not in ("hodec", "tucker2"):
            raise TTPlanError(f"tt_shapes given with format={kind!r}: tt_shapes is the hodec/tucker2 spelling")
        if ranks is None:
            if rank is None:
                raise TTPlanError("tt_shapes given without ranks: add ranks (len(tt_shapes)+1 values) or a rank")
            fmt = hodec_from_tt_shapes(spec, tuple(tt_shapes), (1,) * (len(tt_shapes) + 1))
            fmt = TTFormat("hodec", fmt.in_modes, fmt.out_modes, _uniform_ranks("hodec", spec, fmt.in_modes,
                                                                              fmt.out_modes, rank))
        else:
            fmt = hodec_from_tt_shapes(spec, tuple(tt_shapes), tuple(ranks))
    else:
        if kind == "tucker2":
            if order not in (None, 1):
                raise TTPlanError(f"order={order}: tucker2 has exactly one mode a side")
            order = 1
        if in_modes is None:
            in_modes = balanced_factors(spec.in_channels, order or len(out_modes or ()) or DEFAULT_ORDER)
            if kind in ("classical", "ttm"):
                in_modes = tuple(sorted(in_modes, reverse=True))
        if out_modes is None:
            d = len(in_modes) if kind in ("classical", "ttm") else (order or len(in_modes))
            out_modes = balanced_factors(spec.out_channels, d)
            if kind in ("classical", "ttm"):
                out_modes = tuple(sorted(out_modes))
        in_modes, out_modes = tuple(in_modes), tuple(out_modes)
        base = "hodec" if kind == "tucker2" else kind
        if ranks is None:
            if rank is None:
                raise TTPlanError(f"format={kind!r}: give ranks or a uniform rank")
            if rank < 1:
                raise TTPlanError(f"rank={rank}: expected a positive int")
            # validate modes before computing bounds so the error speaks of the modes
            TTFormat(base, in_modes, out_modes, ()).validate_modes(spec)
            ranks = _uniform_ranks(base, spec, in_modes, out_modes, rank)
        fmt = TTFormat(base, in_modes, out_modes, tuple(ranks))
    if kind == "tucker2" and (len(fmt.in_modes) != 1 or len(fmt.out_modes) != 1):
        raise TTPlanError(
            f"format='tucker2' takes one input and one output mode, got in_modes={list(fmt.in_modes)}, "
            f"out_modes={list(fmt.out_modes)}"
        )
    fmt.validate(spec)
    return fmt


def max_rank_format(kind: str, spec: ConvSpec, in_modes: tuple[int, ...], out_modes: tuple[int, ...]) -> TTFormat:
    """The format at the exact ranks `max_ranks`: TT-SVD reproduces any kernel."""
    base = "hodec" if kind == "tucker2" else kind
    probe = TTFormat(base, tuple(in_modes), tuple(out_modes), ())
    return make_format(kind, spec, in_modes=in_modes, out_modes=out_modes, ranks=probe.max_ranks(spec))


__all__ = [
    "KINDS",
    "CoreShape",
    "TTFormat",
    "balanced_factors",
    "hodec_from_tt_shapes",
    "make_format",
    "max_rank_format",
]
