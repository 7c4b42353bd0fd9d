"""The text report of one planned layer (`ttplan layer`): costs of dense, the fixed schemes and the best order,
the best order step by step and, if asked, the peer optimizers. Fits a 120-column terminal unless `wide`."""

from __future__ import annotations

import textwrap

from ttplan.core.layer import LayerPlan
from ttplan.core.peers import im2col_equation, im2col_expression

TERMINAL_WIDTH = 120


def render_layer(result: LayerPlan, wide: bool = False, limit: int = TERMINAL_WIDTH) -> str:
    """The human-readable report: a totals table, the best plan's steps and, if asked, the peers.

    Lines fit `limit` columns (prose wrapped, long step descriptions shortened with …) unless `wide`.
    """
    spec, fmt = result.spec, result.fmt
    lines = [
        f"layer   {spec.describe()}   batch {result.network.batch}",
        f"format  {fmt.label}  in_modes={list(fmt.in_modes)} out_modes={list(fmt.out_modes)} "
        f"ranks={list(fmt.ranks)}",
        "costs in MACs (FLOPs = 2 x MACs)" + ("; weights folded at load time" if result.best.fold_weights else "")
        + f"; best = fewest {_OBJECTIVE_WORDS.get(result.objective, result.objective)}",
        f"pred ms: predicted by the {'default ' if result.profile and result.profile.default else ''}latency profile"
        + (f" ({result.profile.source})" if result.profile else ""),
        *(f"note: {warning}" for warning in result.warnings),
        "",
    ]
    rows = [("dense conv", result.baseline_macs, 1.0, _ms(result.baseline_ms), 0, result.baseline_params, 1.0, "", "",
             "")]
    for name, plan in [*result.schemes.items(), ("best", result.best)]:
        s = result.summary(plan)
        flag = "  > dense" if plan.macs > result.baseline_macs else ""
        rows.append((name, s["macs"], s["macs_vs_dense"], _ms(s["predicted_ms"]), s["weight_macs"], s["params"],
                     s["compression"], s["largest_intermediate"], s["peak_live"], flag))
    table = _table(("order", "MACs", "x dense", "pred ms", "weight MACs", "params", "compr.", "largest", "peak live"),
                   rows)
    lines += table
    if result.tuned is not None:
        lines += ["", *_render_tuned(result.tuned)]
    if result.best.fold_weights:
        lines.append(f"runtime weight memory of the best plan (folded factors): "
                     f"{result.best.runtime_weight_elements:,} elements")
    lines += ["", "best order, step by step:"]
    rows = [(f"{step.number:>2}. {step.left_name} x {step.right_name} -> [{','.join(step.indices)}]",
             _where(result, step), step.macs) for step in result.best.steps]
    where_width = max(24, *(len(r[1]) + 1 for r in rows))
    macs_width = max(len(f"{r[2]:,}") for r in rows) + 1
    width = max(len(r[0]) for r in rows)
    if not wide:
        width = min(width, limit - 2 - 2 - where_width - macs_width - len(" MACs"))
        rows = [(what if len(what) <= width else what[: width - 1] + "…", where, macs) for what, where, macs in rows]
    lines += [f"  {what:<{width}}  {where:<{where_width}}{macs:>{macs_width},} MACs" for what, where, macs in rows]
    for peer in result.peers:
        if peer is result.peers[0]:
            lines += ["", "peers plan the layer as an einsum over an unfolded (im2col) input:",
                      f"  {im2col_expression(result.network)}",
                      f"  opt_einsum: {im2col_equation(result.network)[0]}",
                      f"{'optimizer':<22}{'own MACs (im2col)':>19}{'same order, ttplan':>20}{'x best':>9}{'time s':>9}"]
        lines.append(f"{peer.name:<22}{peer.im2col_macs:>19,}{peer.plan.macs:>20,}"
                     f"{peer.plan.macs / result.best.macs:>9.2f}{peer.seconds:>9.4f}")
    lines = [line.rstrip() for line in lines]
    if wide:
        return "\n".join(lines)
    keep = set(table)  # table rows are never wrapped: a wider table beats broken columns
    return "\n".join(out for line in lines for out in (textwrap.wrap(line, limit, subsequent_indent="    ",
                                                                   break_on_hyphens=False)
                                                     if len(line) > limit and line not in keep else [line]))


def _table(heads: tuple[str, ...], rows: list[tuple]) -> list[str]:
    """Right-aligned columns as wide as their widest cell, so counts of any size keep the table aligned."""

    def cell(j: int, value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if j == 2 else f"{value:.1f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    cells = [[cell(j, v) for j, v in enumerate(row[:-1])] for row in rows]
    widths = [max(len(heads[j]), *(len(c[j]) for c in cells)) for j in range(len(heads))]
    widths[0] = max(widths[0], 11)

    def line(values: list[str], flag: str = "") -> str:
        first = values[0].ljust(widths[0])
        return (first + "".join(f"  {v:>{w}}" for v, w in zip(values[1:], widths[1:]))).rstrip() + flag

    header = line(list(heads))
    return [header, "-" * len(header), *(line(c, row[-1]) for c, row in zip(cells, rows))]


_OBJECTIVE_WORDS = {"macs": "MACs", "memory": "elements in the largest intermediate", "latency": "predicted ms"}


def _ms(value: float | None) -> str:
    """Predicted milliseconds as a table cell (empty without a profile)."""
    return "" if value is None else f"{value:.3f}"


def _render_tuned(tuned: dict) -> list[str]:
    """The autotune table: every timed candidate, fastest first."""
    lines = [f"autotune on {tuned['device']}, {tuned['threads']} threads ({tuned['source']}): measured ms, median of "
             f"{tuned['rounds']} interleaved rounds",
             f"  {'candidate':<34}{'lowering':<10}{'MACs':>14}{'pred ms':>9}{'meas ms':>9}{'x dense':>9}"]
    dense = tuned["dense_ms"]
    for row in sorted(tuned["timings"], key=lambda r: r["ms"]):
        pred = "" if row["predicted_ms"] is None else f"{row['predicted_ms']:.3f}"
        lines.append(f"  {row['label']:<34}{row['lowering']:<10}{row['macs']:>14,}{pred:>9}{row['ms']:>9.3f}"
                     f"{row['ms'] / dense:>9.3f}")
    best = tuned["best"]
    lines.append(f"fastest: {best['label']} ({best['lowering']})" + ("; the TT layer is slower than the dense conv"
                                                                     if best["dense"] else ""))
    return lines


def _where(result: LayerPlan, step) -> str:
    """Where a step runs: on the weights, or on the feature map at which resolution."""
    if step.kind == "weight":
        return "weights, once per forward" if not result.best.fold_weights else "weights, folded at load"
    h, w = step.map_size
    return f"{'conv, ' if step.kind == 'conv' else ''}at {h}x{w}"
