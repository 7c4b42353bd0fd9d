"""Render an `ArchPlan` as a text table, Markdown, CSV or JSON: one row per layer, then the model totals.

Every cost column is in MACs (FLOPs = 2 x MACs); the reduction columns are `1 - planned/dense`, which is
the same for MACs and FLOPs, so "FLOPs↓" in the totals is the papers' number.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rendering needs no torch; planning the architecture does
    from ttplan.arch.architecture import ArchLayer, ArchPlan
    from ttplan.models.trace import UntracedOp

#: the default text table fits a terminal this wide; `wide=True` prints every column
TERMINAL_WIDTH = 120

COLUMNS = (
    ("layer", "layer"),
    ("geometry", "geometry"),
    ("dense_macs", "dense MACs"),
    ("dense_params", "dense params"),
    ("format", "format (tt_shapes / modes)"),
    ("ranks", "ranks"),
    ("published_macs", "published-order MACs"),
    ("best_macs", "best-order MACs"),
    ("params", "params"),
    ("dense_ms", "dense ms"),
    ("ms", "TT ms"),
    ("macs_reduction", "MACs↓"),
    ("params_reduction", "params↓"),
    ("note", "note"),
)
#: the default text table: fewer, shorter columns (the rest in --wide, JSON, CSV and Markdown)
COMPACT = (
    ("layer", "layer"),
    ("short_format", "format"),
    ("max_rank", "rank≤"),
    ("best_macs", "MACs"),
    ("ms", "ms"),
    ("macs_reduction", "MACs↓"),
    ("params", "params"),
    ("params_reduction", "params↓"),
    ("note", "note"),
)
NUMERIC = {"dense_macs", "dense_params", "published_macs", "best_macs", "params", "macs_reduction",
           "params_reduction", "max_rank", "dense_ms", "ms"}
#: text columns shortened (with …) when the compact table would be wider than the terminal, in this order
SHRINKABLE = ("note", "layer", "short_format")
#: a format's own description longer than this is shown as `label in→out` modes in the compact table
SHORT_FORMAT = 24


def _modes(values: tuple[int, ...]) -> str:
    return "·".join(map(str, values))


def layer_row(layer: ArchLayer) -> dict[str, object]:
    """One layer as plain values (ints and strings); dense layers repeat their dense cost as planned."""
    fmt = layer.fmt or layer.rejected
    plan = layer.plan or layer.rejected_plan
    if fmt is None:
        shape = ranks = short = "dense"
    else:
        shape = fmt.describe(layer.spec)
        modes = f"{fmt.label} {_modes(fmt.in_modes)}→{_modes(fmt.out_modes)}"
        short = shape if len(shape) <= SHORT_FORMAT else modes
        ranks = ",".join(map(str, fmt.ranks))
    notes = []
    if layer.worse_than_dense and plan is not None:
        notes.append(f"worse than dense ({plan.published.name} order)")
    if layer.slower_than_dense and plan is not None and not layer.reason:
        notes.append(slower_by(layer))
    if layer.reason:
        notes.append(layer.reason)
    if layer.decomposed and layer.spec.explicit_pad is not None:  # padding conv2d cannot do: one F.pad, not MACs
        notes.append(f"pads by F.pad ({layer.spec.padding_mode}, left/right/top/bottom "
                     f"{'/'.join(map(str, layer.spec.explicit_pad))})")
    if layer.n_calls > 1:
        notes.append(f"{layer.n_calls} calls per forward, each counted" +
                     ("; one order for all" if len(set(layer.calls)) > 1 and layer.decomposed else ""))
    if layer.tuned is not None:
        notes.append("measured (autotune)")
    if layer.fused:
        notes.append("fused kernel")
    return {
        "layer": layer.name,
        "geometry": layer.spec.describe(),
        "dense_macs": layer.baseline_macs,
        "dense_params": layer.baseline_params,
        "format": shape,
        "short_format": short,
        "ranks": ranks,
        "max_rank": max(fmt.ranks) if fmt is not None else "",
        "published_macs": layer.shown_published_macs,
        "best_macs": layer.macs,
        "params": layer.params,
        "dense_ms": _measured(layer, dense=True),
        "ms": _measured(layer, dense=False),
        "macs_reduction": 1 - layer.macs / layer.baseline_macs if layer.baseline_macs else 0.0,
        "params_reduction": 1 - layer.params / layer.baseline_params if layer.baseline_params else 0.0,
        "note": "; ".join(notes),
    }


def slower_by(layer: ArchLayer) -> str:
    """By what a TT layer is slower than its dense conv: both times, measured (autotune) or predicted (by the
    latency profile the summary names), with the weight-only steps folded or not."""
    plan = layer.plan or layer.rejected_plan
    assert plan is not None
    if layer.tuned is not None:
        tt = min(t["ms"] for t in layer.tuned["timings"] if not t["dense"])
        dense, how = layer.tuned["dense_ms"], "measured"
    else:  # a layer kept dense too: its TT plan's time, not the dense one its row shows
        tt = sum(p.predicted_ms(p.best) or 0.0 for p in layer.call_plans)
        dense, how = layer.dense_ms, "predicted"
    ratio = f"{tt / dense:.1f}x" if dense > 0 else f"{tt:.3f} ms vs {dense:.3f} ms"
    return f"{ratio} slower than dense ({how}, {'folded' if plan.best.fold_weights else 'unfolded'})"


def slower_lines(plan: ArchPlan) -> list[str]:
    """The layers of `plan` whose TT order is slower than dense: by what (which profile predicted it, folded or
    not) and what to try."""
    slower = [layer for layer in plan.layers if layer.slower_than_dense]
    if not slower:
        return []
    predicted = [layer for layer in slower if layer.tuned is None]
    profiles = {id(p): p for p in ((layer.plan or layer.rejected_plan).profile for layer in predicted) if p}
    names = ", ".join(_profile_name(p) for p in profiles.values())
    how = [f"predicted by the latency profile {names}" if predicted else "",
           f"measured by autotune ({len(slower) - len(predicted)})" if len(predicted) < len(slower) else ""]
    folded = ("weight-only steps folded (run once at load time)" if plan.fold_weights
              else "weight-only steps not folded (run every forward)")
    named = ", ".join(layer.name + ("" if layer.decomposed else " (kept dense)") for layer in slower)
    lines = [f"TT slower than dense ({len(slower)}): {named}; "
             + ", ".join(h for h in how if h) + f"; {folded}"]
    tries = []
    if not plan.fold_weights:
        tries.append("--fold-weights (weights folded at load time, as a deployed model runs)")
    if plan.objective != "latency":
        tries.append("--objective latency (orders chosen by predicted time; layers still slower kept dense)")
    elif any(layer.decomposed for layer in slower):
        tries.append("--skip-slower (keep them dense)")
    if any(p.default for p in profiles.values()):
        tries.append("`ttplan calibrate` (fit the profile on this machine: the default one was fitted elsewhere)")
    if tries:
        lines.append("to make them faster, try: " + "; ".join(tries))
    return lines


def _profile_name(profile) -> str:
    """A latency profile as the summary names it: ttplan's committed default, else its file (or its label)."""
    if profile.default:
        return "'default' (ttplan's, not fitted on this machine)"
    return repr(profile.source or profile.label)


def untraced_row(op: UntracedOp, batch: int) -> dict[str, object]:
    """An op ttplan does not plan, as a row of the same table: dense, counted, no predicted time."""
    macs = op.macs(batch)
    note = op.reason + (f"; {op.calls} calls per forward" if op.calls > 1 else "")
    return {
        "layer": op.label, "geometry": f"{op.op} ({op.module})", "dense_macs": macs, "dense_params": op.params,
        "format": "dense", "short_format": "dense", "ranks": "dense", "max_rank": "", "published_macs": macs,
        "best_macs": macs, "params": op.params, "dense_ms": "", "ms": "", "macs_reduction": 0.0,
        "params_reduction": 0.0, "note": note,
    }


def _rows(plan: ArchPlan) -> list[dict[str, object]]:
    """Every row of the table: the layers, the ops ttplan does not plan, then the totals."""
    return ([layer_row(layer) for layer in plan.layers] + [untraced_row(op, plan.batch) for op in plan.untraced]
            + [total_row(plan)])


def _measured(layer: ArchLayer, dense: bool) -> float | None:
    """The layer's ms: autotune's measurement when it has one, else the profile's prediction (None without one)."""
    if layer.tuned is not None:
        if dense or layer.plan is None:
            return layer.tuned["dense_ms"]
        return min(t["ms"] for t in layer.tuned["timings"] if not t["dense"])
    return layer.dense_ms if dense else layer.predicted_ms


def total_row(plan: ArchPlan) -> dict[str, object]:
    """The model totals as a row of the same table."""
    t = plan.totals
    return {
        "layer": "TOTAL", "geometry": f"{t.decomposed} decomposed, {t.dense} dense",
        "dense_macs": t.baseline_macs, "dense_params": t.baseline_params, "format": "", "ranks": "",
        "short_format": "", "max_rank": "",
        "published_macs": t.published_macs, "best_macs": t.tt_macs, "params": t.tt_params,
        "dense_ms": t.baseline_ms, "ms": t.tt_ms,
        "macs_reduction": t.macs_reduction, "params_reduction": t.params_reduction,
        "note": "dense-kept layers included" + (", and ops not planned" if plan.untraced else ""),
    }


def _cell(key: str, value: object) -> str:
    if value is None:  # an ms column of a plan made without a latency profile
        return ""
    if key in ("macs_reduction", "params_reduction"):
        return f"{value:.1%}"
    if key in ("dense_ms", "ms") and isinstance(value, float):  # 3 decimals, or 4 significant digits from 1000 ms
        return f"{value:.3f}" if value < 1000 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def header_lines(plan: ArchPlan) -> list[str]:
    """What was planned and how: model, input, batch, policy, units."""
    c, h, w = plan.input_size
    fold = "; weights folded at load time (weight-only steps free)" if plan.fold_weights else ""
    return [
        f"model {plan.model}, input {c}x{h}x{w}, batch {plan.batch}{fold}",
        f"policy for layers no config covers: {plan.policy.describe()}",
        "costs in MACs (FLOPs = 2 x MACs; papers' 'FLOPs' are MACs); params = conv/linear weights + biases",
        f"best orders minimise {plan.objective}; "
        + ("ms predicted by the latency profile (measured where autotuned)" if _predicted(plan)
           else "no ms: planned without a latency profile"),
        *plan.notes,
    ]


def _predicted(plan: ArchPlan) -> bool:
    """Whether the plan has predicted times (it was planned with a latency profile)."""
    t = plan.totals
    return t.baseline_ms is not None and t.tt_ms is not None


def summary_lines(plan: ArchPlan) -> list[str]:
    """The model-level totals in words."""
    t = plan.totals
    lines = [
        f"dense model:   {t.baseline_macs:,} MACs ({2 * t.baseline_macs:,} FLOPs), {t.baseline_params:,} params "
        f"(conv + linear layers{' + ops not planned' if plan.untraced else ''})",
        f"planned model: {t.tt_macs:,} MACs at the best orders ({t.published_macs:,} at the published orders), "
        f"{t.tt_params:,} params",
        f"FLOPs↓ {t.macs_reduction:.1%}   params↓ {t.params_reduction:.1%}   "
        f"({t.decomposed} layers decomposed, {t.dense} kept dense and counted)",
        f"predicted time of the conv/linear layers: dense {t.baseline_ms:.2f} ms, planned {t.tt_ms:.2f} ms "
        f"({t.predicted_speedup:.2f}x)" if _predicted(plan) else
        "predicted time of the conv/linear layers: none (planned without a latency profile)",
    ]
    if plan.untraced:
        lines.append(f"ops ttplan does not plan, dense and counted in both totals ({len(plan.untraced)}): "
                     f"{t.untraced_macs:,} MACs, {t.untraced_params:,} params; not in the predicted times: "
                     + ", ".join(f"{op.label} {op.op} ({op.module})" for op in plan.untraced))
    lines += slower_lines(plan)
    fused = sum(1 for layer in plan.layers if layer.fused)
    if fused:
        lines.append(f"fused kernel: {fused} TT layers run as one call of ttplan's fused CPU kernel (predicted faster "
                     "than stock ops; --no-fuse to plan without it)")
    if t.all_params is not None:
        lines.append(f"all parameters of the dense model (BN included): {t.all_params:,}")
    worse = [layer.name for layer in plan.layers if layer.worse_than_dense]
    if worse:
        lines.append(f"worse than dense at the published order ({len(worse)}): {', '.join(worse)}")
    return lines


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _fit(columns: tuple[tuple[str, str], ...], cells: list[list[str]], widths: list[int], limit: int) -> None:
    """Shorten the text columns of `SHRINKABLE` (in place, cells and widths) until a line fits `limit`."""
    for key in SHRINKABLE:
        j = next((n for n, (k, _) in enumerate(columns) if k == key), None)
        excess = sum(widths) + 2 * (len(widths) - 1) - limit
        if j is None or excess <= 0:
            continue
        floor = len(columns[j][1]) if key != "note" else max(len(columns[j][1]), 12)
        widths[j] = max(floor, widths[j] - excess)
        for row in cells:
            row[j] = _shorten(row[j], widths[j])


def table_lines(plan: ArchPlan, wide: bool = False, limit: int = TERMINAL_WIDTH) -> list[str]:
    """The per-layer table; compact (fits `limit` columns, text shortened with …) unless `wide`."""
    columns = COLUMNS if wide else COMPACT
    rows = _rows(plan)
    if not wide:
        t = plan.totals
        rows[-1]["note"] = f"{t.decomposed} TT + {t.dense} dense layers"
    cells = [[_cell(k, r[k]) for k, _ in columns] for r in rows]
    heads = [title for _, title in columns]
    widths = [max(len(heads[j]), *(len(c[j]) for c in cells)) for j in range(len(columns))]
    if not wide:
        _fit(columns, cells, widths, limit)

    def line(values: list[str]) -> str:
        parts = [v.rjust(widths[j]) if columns[j][0] in NUMERIC else v.ljust(widths[j])
                 for j, v in enumerate(values)]
        return "  ".join(parts).rstrip()

    rule = "-" * max(len(line(c)) for c in [heads, *cells])
    return [line(heads), rule, *(line(c) for c in cells[:-1]), rule, line(cells[-1])]


def _wrap(lines: list[str], limit: int) -> list[str]:
    """Prose lines wrapped to `limit` columns (continuations indented)."""
    out: list[str] = []
    for text in lines:
        out += textwrap.wrap(text, limit, subsequent_indent="  ", break_on_hyphens=False) or [""]
    return out


def render_text(plan: ArchPlan, wide: bool = False) -> str:
    """A fixed-width table for the terminal: 120 columns at most unless `wide` (every column, nothing shortened)."""
    head, tail = header_lines(plan), summary_lines(plan)
    if not wide:
        head, tail = _wrap(head, TERMINAL_WIDTH), _wrap(tail, TERMINAL_WIDTH)
        tail.append("(--wide: every column: geometry, dense MACs and params, ranks, published-order MACs)")
    return "\n".join([*head, "", *table_lines(plan, wide), "", *tail])


def render_markdown(plan: ArchPlan, title: str | None = None) -> str:
    """A Markdown report: header, the table, the totals."""
    rows = _rows(plan)
    out = [f"# {title or f'ttplan plan {plan.model}'}", ""]
    out += [f"- {line}" for line in header_lines(plan)]
    out += ["", "| " + " | ".join(t for _, t in COLUMNS) + " |",
            "| " + " | ".join("---:" if k in NUMERIC else "---" for k, _ in COLUMNS) + " |"]
    for n, r in enumerate(rows):
        cells = [_cell(k, r[k]).replace("|", "\\|") for k, _ in COLUMNS]
        if n == len(rows) - 1:
            cells = [f"**{c}**" if c else c for c in cells]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", *(f"- {line}" for line in summary_lines(plan)), ""]
    return "\n".join(out)


def render_csv(plan: ArchPlan) -> str:
    """One row per layer, then a TOTAL row; raw numbers (reductions as fractions)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[k for k, _ in COLUMNS], lineterminator="\n")
    writer.writeheader()
    for row in _rows(plan):
        writer.writerow({k: (f"{row[k]:.6f}" if isinstance(row[k], float) else row[k]) for k, _ in COLUMNS})
    return buffer.getvalue()


def render_json(plan: ArchPlan, extra: dict | None = None) -> str:
    """`plan.to_dict()` (plus `extra` keys, e.g. the budget outcome) as indented JSON."""
    data = plan.to_dict()
    if extra:
        data.update(extra)
    return json.dumps(data, indent=2)


def render(plan: ArchPlan, kind: str = "text", *, extra: dict | None = None, title: str | None = None,
           wide: bool = False) -> str:
    """`plan` as `kind`: text (compact unless `wide`), markdown, csv or json (with `extra` keys)."""
    if kind == "json":
        return render_json(plan, extra)
    if kind == "csv":
        return render_csv(plan)
    if kind == "markdown":
        return render_markdown(plan, title)
    if kind == "text":
        return render_text(plan, wide)
    raise ValueError(f"kind={kind!r}: expected text, markdown, csv or json")
