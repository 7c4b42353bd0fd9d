"""A rank sweep of one layer: parameters against MACs for the classical format, hodec with 1-3 modes a side,
the tensor ring (3 modes a side) and CP.

Each point is one format at one uniform rank (clipped at small boundary modes, `make_format`), planned with
`plan_layer`: its parameter reduction and the MACs of its published order and of the searched best order,
both relative to the dense conv. Requested ranks that clip to a format already in the series are skipped,
so every point is a distinct format. The result is plain data (`Sweep`, `SweepPoint`) that round-trips
through JSON and CSV; the loaders say what they expected when a file is empty or corrupted.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from ttplan.core.formats import get_format, make_format
from ttplan.core.latency import LatencyProfile
from ttplan.core.layer import plan_layer
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.files import read_user_text

#: the swept formats as (kind, modes per side): classical (Garipov), hodec with 1 (= tucker2), 2 and 3 modes, the
#: tensor ring with 3 modes (Wang et al.) and CP of the plain kernel (Lebedev et al.)
DEFAULT_FORMATS: tuple[tuple[str, int], ...] = (("classical", 3), ("hodec", 1), ("hodec", 2), ("hodec", 3),
                                                 ("tr", 3), ("cp", 1))
DEFAULT_RANKS: tuple[int, ...] = tuple(range(2, 65))
EXPECTED = "the JSON or CSV that `ttplan sweep --json/--csv` writes"


def format_label(kind: str, order: int) -> str:
    """Short label of a swept format: the format's own label where it implies the order (`tucker2`), else
    `classical-3`, `hodec-2`, ..."""
    label = get_format(kind)((1,) * order, (1,) * order, ()).label
    return label if label != kind else f"{kind}-{order}"


@dataclass(frozen=True)
class SweepPoint:
    """One format at one rank: its size and its MACs (published and best order), absolute and relative to dense."""

    format: str
    kind: str
    order: int
    rank: int
    ranks: tuple[int, ...]
    in_modes: tuple[int, ...]
    out_modes: tuple[int, ...]
    params: int
    param_reduction: float  # 1 - params / dense params
    published_macs: int
    best_macs: int
    published_vs_dense: float  # published MACs / dense MACs
    best_vs_dense: float
    best_ms: float = 0.0  # the best order's predicted ms (latency profile); absent in older sweeps
    dense_ms: float = 0.0  # the dense conv's predicted ms


@dataclass
class Sweep:
    """All points of one layer's sweep and the dense baseline they are relative to."""

    layer: str  # `ConvSpec.describe()`
    name: str
    batch: int
    dense_macs: int
    dense_params: int
    points: list[SweepPoint] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # formats that do not fit the layer, with the reason

    @property
    def formats(self) -> list[str]:
        """Format labels in the order they were swept."""
        seen: list[str] = []
        for p in self.points:
            if p.format not in seen:
                seen.append(p.format)
        return seen

    def series(self, label: str) -> list[SweepPoint]:
        """The points of one format, by increasing rank."""
        return sorted((p for p in self.points if p.format == label), key=lambda p: p.rank)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        return {
            "layer": self.layer,
            "name": self.name,
            "batch": self.batch,
            "dense": {"macs": self.dense_macs, "params": self.dense_params},
            "skipped": list(self.skipped),
            "points": [{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(p).items()} for p in self.points],
        }

    def to_json(self) -> str:
        """The sweep as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def to_csv(self) -> str:
        """One row per point; the layer, batch and dense baseline are repeated on every row."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for p in self.points:
            row = {"layer": self.layer, "name": self.name, "batch": self.batch, "dense_macs": self.dense_macs,
                   "dense_params": self.dense_params, **asdict(p)}
            writer.writerow([" ".join(map(str, v)) if isinstance(v, tuple) else v for v in (row[c] for c in
                                                                                          CSV_COLUMNS)])
        return buf.getvalue()


POINT_FIELDS = tuple(f.name for f in fields(SweepPoint))
#: fields every saved point must have (the predicted times came later and are optional)
REQUIRED_FIELDS = tuple(f.name for f in fields(SweepPoint) if f.default is MISSING)
CSV_COLUMNS = ("layer", "name", "batch", "dense_macs", "dense_params", *POINT_FIELDS)


def parse_rank_range(text: str, bound: int | None = None) -> tuple[int, ...]:
    """`START:STOP` or `START:STOP:STEP` (STOP included) as ranks, e.g. `2:64` or `2:64:2`.

    With `bound` (see `rank_bound`), STOP is clipped to it before any rank is listed, so a huge STOP costs nothing.
    """
    parts = str(text).strip().split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or min(values) < 1 or values[0] > values[1]:
        raise TTPlanError(f"ranks range {text!r}: expected START:STOP or START:STOP:STEP with 1 <= START <= STOP, "
                          "e.g. 2:64 or 2:64:2")
    start, stop = values[0], values[1]
    step = values[2] if len(values) == 3 else 1
    if bound is not None:
        if start > bound:
            return (bound,)
        stop = min(stop, bound)
    return tuple(range(start, stop + 1, step))


def rank_bound(spec: ConvSpec, formats: Iterable[tuple[str, int]] = DEFAULT_FORMATS) -> int:
    """The largest uniform rank that still changes a format of `formats` on `spec`: every larger rank is clipped
    to the same format (`TTFormat.rank_bounds`). Formats whose modes do not fit the layer are left out."""
    bounds = []
    for kind, order in formats:
        try:
            fmt = make_format(kind, spec, rank=1, order=order)
        except TTPlanError:
            continue
        bounds.append(max(fmt.rank_bounds(spec)))
    return max(bounds, default=1)


def sweep_layer(
    spec: ConvSpec,
    ranks: Iterable[int] = DEFAULT_RANKS,
    formats: Iterable[tuple[str, int]] = DEFAULT_FORMATS,
    *,
    batch: int = 1,
    name: str = "",
    progress: Callable[[], None] | None = None,
    objective: str = "macs",
    profile: LatencyProfile | None = None,
) -> Sweep:
    """Plan `spec` in every format of `formats` at every uniform rank of `ranks`.

    `progress` is called once per (format, rank) tried, so a caller can drive a progress bar. `profile` prices each
    point's ms (None: not predicted, 0.0; `latency` needs one).
    A format whose modes do not fit the layer is listed in `skipped` with the reason.
    """
    ranks = tuple(ranks)
    formats = tuple(formats)
    if not ranks:
        raise TTPlanError("ranks=(): expected at least one rank, e.g. 2:64")
    bad = [r for r in ranks if not isinstance(r, int) or isinstance(r, bool) or r < 1]
    if bad:
        raise TTPlanError(f"ranks {bad}: every rank must be a positive int")
    bound = rank_bound(spec, formats)
    ranks = tuple(sorted({min(r, bound) for r in ranks}))  # larger ranks give the same formats: plan each once
    sweep = Sweep(spec.describe(), name, batch, spec.dense_macs(batch), spec.dense_params())
    for kind, order in formats:
        label = format_label(kind, order)
        seen: set[tuple[int, ...]] = set()
        for rank in ranks:
            if progress is not None:
                progress()
            try:
                fmt = make_format(kind, spec, rank=rank, order=order)
            except TTPlanError as err:  # the modes do not fit the layer: no rank will
                sweep.skipped.append(f"{label}: {err}")
                break
            if fmt.ranks in seen:
                continue
            seen.add(fmt.ranks)
            result = plan_layer(spec, fmt, batch=batch, objective=objective, profile=profile)
            published, best = result.published.macs, result.best.macs
            params = result.best.params
            sweep.points.append(SweepPoint(
                label, kind, order, rank, fmt.ranks, fmt.in_modes, fmt.out_modes, params,
                1.0 - params / sweep.dense_params, published, best,
                published / sweep.dense_macs, best / sweep.dense_macs,
                result.predicted_ms(result.best) or 0.0, result.baseline_ms or 0.0,
            ))
    if not sweep.points:
        raise TTPlanError(f"no format fits layer {spec.describe()}: " + "; ".join(sweep.skipped))
    return sweep


def render_sweep(result: Sweep) -> str:
    """A table: one line per point, MACs relative to dense for the published and the best order."""
    lines = [
        f"layer   {result.name + '  ' if result.name else ''}{result.layer}   batch {result.batch}",
        f"dense   {result.dense_macs:,} MACs, {result.dense_params:,} params (FLOPs = 2 x MACs)",
        "",
    ]
    header = (f"{'format':<13}{'rank':>5}{'params':>10}{'reduction':>11}{'published x':>13}{'best x':>9}"
              f"{'pred ms':>9}{'dense ms':>10}")
    lines += [header, "-" * len(header)]
    for p in result.points:
        flag = "  published > dense" if p.published_vs_dense > 1 else ""
        lines.append(f"{p.format:<13}{p.rank:>5}{p.params:>10,}{100 * p.param_reduction:>10.1f}%"
                     f"{p.published_vs_dense:>13.3f}{p.best_vs_dense:>9.3f}{p.best_ms:>9.3f}{p.dense_ms:>10.3f}{flag}")
    return "\n".join(lines)


def render_markdown(result: Sweep, figure: str | None = None) -> str:
    """A report page: the layer, the figure (`figure`: its path relative to the page) and one summary row per
    format: rank range, parameter reduction and MACs relative to dense of the published and the best order."""
    title = result.name or result.layer
    lines = [f"# Rank sweep: {title}", "",
             f"Written by `ttplan sweep --markdown`. Layer {result.layer}, batch {result.batch}; the dense conv: "
             f"{result.dense_macs:,} MACs, {result.dense_params:,} params (FLOPs = 2 × MACs). Each point is one format "
             "at one uniform rank; its MACs are those of the format's published order and of the order ttplan's "
             "search finds for the same cores, relative to the dense conv.", ""]
    if figure is not None:
        lines += [f"![MACs relative to dense against parameter reduction, {title}]({figure})", "",
                  "Dashed: each format's published order; solid: the searched order. Drawn by `ttplan plot sweep` "
                  "from the same sweep's `--json` output.", ""]
    lines += ["| format | ranks | params↓ | published × dense | ranks where published > dense | best × dense | "
              "ranks where best < published |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for label in result.formats:
        points = result.series(label)
        low, high = points[0].rank, points[-1].rank
        worse = sum(p.published_vs_dense > 1 for p in points)
        better = sum(p.best_macs < p.published_macs for p in points)
        reductions = [100 * p.param_reduction for p in points]
        published = [p.published_vs_dense for p in points]
        best = [p.best_vs_dense for p in points]
        lines.append(f"| {label} | {low}–{high} ({len(points)}) | {min(reductions):.1f}–{max(reductions):.1f}% | "
                     f"{min(published):.3f}–{max(published):.3f} | {worse} of {len(points)} | "
                     f"{min(best):.3f}–{max(best):.3f} | {better} of {len(points)} |")
    never_worse = all(p.best_macs <= p.published_macs for p in result.points)
    lines += ["", f"The searched order is {'never' if never_worse else 'sometimes'} costlier than the published one."]
    lines += [f"Skipped: {note}." for note in result.skipped]
    return "\n".join(lines) + "\n"


def _point(raw: dict, where: str) -> SweepPoint:
    """One point from a JSON object or CSV row, with every field checked."""
    missing = [f for f in REQUIRED_FIELDS if f not in raw]
    if missing:
        raise TTPlanError(f"{where} lacks {', '.join(missing)}: expected {EXPECTED}")
    values: dict = {}
    try:
        for f in POINT_FIELDS:
            if f not in raw or raw[f] in ("", None):
                continue
            v = raw[f]
            if f in ("format", "kind"):
                if not isinstance(v, str) or not v:
                    raise ValueError(f"{f}={v!r}")
                values[f] = v
            elif f in ("ranks", "in_modes", "out_modes"):
                items = v.split() if isinstance(v, str) else v
                values[f] = tuple(int(x) for x in items)
                if not values[f]:
                    raise ValueError(f"{f} is empty")
            elif f in ("param_reduction", "published_vs_dense", "best_vs_dense", "best_ms", "dense_ms"):
                values[f] = float(v)
                if not math.isfinite(values[f]):
                    raise ValueError(f"{f}={v!r}")
            else:
                values[f] = int(v)
                if values[f] < 0:
                    raise ValueError(f"{f}={v!r}")
    except (TypeError, ValueError) as err:
        raise TTPlanError(f"{where}: bad value ({err}); expected {EXPECTED}") from None
    return SweepPoint(**values)


def _header(raw: dict, where: str) -> tuple[str, str, int, int, int]:
    """Layer, name, batch, dense MACs and params from the JSON top level or a CSV row."""
    try:
        layer, name = str(raw["layer"]), str(raw.get("name") or "")
        batch, macs, params = int(raw["batch"]), int(raw["dense_macs"]), int(raw["dense_params"])
    except KeyError as err:
        raise TTPlanError(f"{where} lacks {err.args[0]}: expected {EXPECTED}") from None
    except (TypeError, ValueError) as err:
        raise TTPlanError(f"{where}: bad value ({err}); expected {EXPECTED}") from None
    if min(batch, macs, params) < 1:
        raise TTPlanError(f"{where}: batch, dense MACs and params must be positive; expected {EXPECTED}")
    return layer, name, batch, macs, params


def sweep_from_json(text: str, source: str = "sweep") -> Sweep:
    """A `Sweep` from `Sweep.to_json()` output."""
    if not text.strip():
        raise TTPlanError(f"{source} is empty: expected {EXPECTED}")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise TTPlanError(f"{source} is not valid JSON ({err.msg} at line {err.lineno}): expected {EXPECTED}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("points"), list) or not isinstance(raw.get("dense"), dict):
        raise TTPlanError(f"{source} is JSON but not a sweep: expected an object with layer, batch, dense and "
                          f"points, as {EXPECTED}")
    flat = {**raw, "dense_macs": raw["dense"].get("macs"), "dense_params": raw["dense"].get("params")}
    if flat["dense_macs"] is None or flat["dense_params"] is None:
        raise TTPlanError(f"{source}: dense lacks macs or params; expected {EXPECTED}")
    layer, name, batch, macs, params = _header(flat, source)
    points = [_point(p if isinstance(p, dict) else {}, f"{source} point {n}") for n, p in enumerate(raw["points"])]
    if not points:
        raise TTPlanError(f"{source} holds no points: expected {EXPECTED}")
    skipped = [str(s) for s in raw.get("skipped", [])]
    return Sweep(layer, name, batch, macs, params, points, skipped)


def sweep_from_csv(text: str, source: str = "sweep") -> Sweep:
    """A `Sweep` from `Sweep.to_csv()` output."""
    if not text.strip():
        raise TTPlanError(f"{source} is empty: expected {EXPECTED}")
    try:
        reader = csv.DictReader(io.StringIO(text))
        rows = list(reader)
    except csv.Error as err:
        raise TTPlanError(f"{source} is not valid CSV ({err}): expected {EXPECTED}") from None
    header = reader.fieldnames or []
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise TTPlanError(f"{source} has no column {', '.join(missing)}: expected {EXPECTED} "
                          f"(header {','.join(CSV_COLUMNS)})")
    if not rows:
        raise TTPlanError(f"{source} holds a header but no points: expected {EXPECTED}")
    layer, name, batch, macs, params = _header(rows[0], f"{source} row 2")
    points = []
    for n, row in enumerate(rows, start=2):
        if None in row or any(v is None for v in row.values()):
            raise TTPlanError(f"{source} row {n} has {len(row) - (None in row)} fields, the header "
                              f"{len(CSV_COLUMNS)}: expected {EXPECTED}")
        if _header(row, f"{source} row {n}") != (layer, name, batch, macs, params):
            raise TTPlanError(f"{source} row {n} belongs to another layer or baseline: expected one sweep per file")
        points.append(_point(row, f"{source} row {n}"))
    return Sweep(layer, name, batch, macs, params, points)


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep file: JSON or CSV, told apart by the content (a JSON sweep starts with `{`)."""
    path = Path(path)
    text = read_user_text(path, "sweep file", EXPECTED)
    source = f"sweep file {str(path)!r}"
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")) or path.suffix.lower() == ".json":
        return sweep_from_json(text, source)
    return sweep_from_csv(text, source)


__all__ = [
    "DEFAULT_FORMATS",
    "DEFAULT_RANKS",
    "Sweep",
    "SweepPoint",
    "format_label",
    "load_sweep",
    "parse_rank_range",
    "rank_bound",
    "render_sweep",
    "sweep_from_csv",
    "sweep_from_json",
    "sweep_layer",
]
