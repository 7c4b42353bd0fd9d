"""Render an `ArchPlan` as a text table, Markdown, CSV or JSON: one row per layer, then the model totals.

Every cost column is in MACs (FLOPs = 2 x MACs); the reduction columns are `1 - planned/dense`, which is
the same for MACs and FLOPs, so "FLOPs↓" in the totals is the papers' number.
"""

from __future__ import annotations

import csv
import io
import json

from ttplan.arch.architecture import ArchLayer, ArchPlan

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
    ("macs_reduction", "MACs↓"),
    ("params_reduction", "params↓"),
    ("note", "note"),
)
NUMERIC = {"dense_macs", "dense_params", "published_macs", "best_macs", "params", "macs_reduction",
           "params_reduction"}


def layer_row(layer: ArchLayer) -> dict[str, object]:
    """One layer as plain values (ints and strings); dense layers repeat their dense cost as planned."""
    fmt = layer.fmt or layer.rejected
    plan = layer.plan or layer.rejected_plan
    if fmt is None:
        shape = ranks = "dense"
    else:
        shape = fmt.describe(layer.spec)
        ranks = ",".join(map(str, fmt.ranks))
    notes = []
    if layer.worse_than_dense and plan is not None:
        notes.append(f"worse than dense ({plan.published.name} order)")
    if layer.reason:
        notes.append(layer.reason)
    return {
        "layer": layer.name,
        "geometry": layer.spec.describe(),
        "dense_macs": layer.baseline_macs,
        "dense_params": layer.baseline_params,
        "format": shape,
        "ranks": ranks,
        "published_macs": plan.published.macs if plan is not None else layer.baseline_macs,
        "best_macs": layer.macs,
        "params": layer.params,
        "macs_reduction": 1 - layer.macs / layer.baseline_macs if layer.baseline_macs else 0.0,
        "params_reduction": 1 - layer.params / layer.baseline_params if layer.baseline_params else 0.0,
        "note": "; ".join(notes),
    }


def total_row(plan: ArchPlan) -> dict[str, object]:
    """The model totals as a row of the same table."""
    t = plan.totals
    return {
        "layer": "TOTAL", "geometry": f"{t.decomposed} decomposed, {t.dense} dense",
        "dense_macs": t.baseline_macs, "dense_params": t.baseline_params, "format": "", "ranks": "",
        "published_macs": t.published_macs, "best_macs": t.tt_macs, "params": t.tt_params,
        "macs_reduction": t.macs_reduction, "params_reduction": t.params_reduction,
        "note": "dense-kept layers included",
    }


def _cell(key: str, value: object) -> str:
    if key in ("macs_reduction", "params_reduction"):
        return f"{value:.1%}"
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
        *plan.notes,
    ]


def summary_lines(plan: ArchPlan) -> list[str]:
    """The model-level totals in words."""
    t = plan.totals
    lines = [
        f"dense model:   {t.baseline_macs:,} MACs ({2 * t.baseline_macs:,} FLOPs), {t.baseline_params:,} params "
        f"(conv + linear layers)",
        f"planned model: {t.tt_macs:,} MACs at the best orders ({t.published_macs:,} at the published orders), "
        f"{t.tt_params:,} params",
        f"FLOPs↓ {t.macs_reduction:.1%}   params↓ {t.params_reduction:.1%}   "
        f"({t.decomposed} layers decomposed, {t.dense} kept dense and counted)",
    ]
    if t.all_params is not None:
        lines.append(f"all parameters of the dense model (BN included): {t.all_params:,}")
    worse = [layer.name for layer in plan.layers if layer.worse_than_dense]
    if worse:
        lines.append(f"worse than dense at the published order ({len(worse)}): {', '.join(worse)}")
    return lines


def render_text(plan: ArchPlan) -> str:
    """A fixed-width table for the terminal."""
    rows = [layer_row(layer) for layer in plan.layers] + [total_row(plan)]
    cells = [[_cell(k, r[k]) for k, _ in COLUMNS] for r in rows]
    heads = [title for _, title in COLUMNS]
    widths = [max(len(heads[j]), *(len(c[j]) for c in cells)) for j in range(len(COLUMNS))]

    def line(values: list[str]) -> str:
        parts = [v.rjust(widths[j]) if COLUMNS[j][0] in NUMERIC else v.ljust(widths[j])
                 for j, v in enumerate(values)]
        return "  ".join(parts).rstrip()

    body = [line(heads), "-" * len(line(heads))]
    body += [line(c) for c in cells[:-1]]
    body += ["-" * len(line(heads)), line(cells[-1])]
    return "\n".join([*header_lines(plan), "", *body, "", *summary_lines(plan)])


def render_markdown(plan: ArchPlan, title: str | None = None) -> str:
    """A Markdown report: header, the table, the totals."""
    rows = [layer_row(layer) for layer in plan.layers] + [total_row(plan)]
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
    for row in [layer_row(layer) for layer in plan.layers] + [total_row(plan)]:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def render_json(plan: ArchPlan, extra: dict | None = None) -> str:
    """`plan.to_dict()` (plus `extra` keys, e.g. the budget outcome) as indented JSON."""
    data = plan.to_dict()
    if extra:
        data.update(extra)
    return json.dumps(data, indent=2)


RENDERERS = {"text": render_text, "markdown": render_markdown, "csv": render_csv, "json": render_json}
