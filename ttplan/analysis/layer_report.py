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
        "",
    ]
    header = f"{'order':<12}{'MACs':>15}{'x dense':>9}{'pred ms':>9}{'weight MACs':>13}{'params':>11}{'compr.':>8}" \
             f"{'largest':>12}{'peak live':>12}"
    lines += [header, "-" * len(header)]
    lines.append(f"{'dense conv':<12}{result.baseline_macs:>15,}{1.0:>9.3f}{_ms(result.baseline_ms)}{0:>13,}"
                 f"{result.baseline_params:>11,}{1.0:>8.1f}{'':>12}{'':>12}")
    for name, plan in [*result.schemes.items(), ("best", result.best)]:
        s = result.summary(plan)
        flag = "  > dense" if plan.macs > result.baseline_macs else ""
        lines.append(
            f"{name:<12}{s['macs']:>15,}{s['macs_vs_dense']:>9.3f}{_ms(s['predicted_ms'])}{s['weight_macs']:>13,}"
            f"{s['params']:>11,}{s['compression']:>8.1f}{s['largest_intermediate']:>12,}{s['peak_live']:>12,}{flag}"
        )
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
    return "\n".join(out for line in lines for out in (textwrap.wrap(line, limit, subsequent_indent="    ",
                                                                   break_on_hyphens=False)
                                                     if len(line) > limit else [line]))


_OBJECTIVE_WORDS = {"macs": "MACs", "memory": "elements in the largest intermediate", "latency": "predicted ms"}


def _ms(value: float | None) -> str:
    return f"{'':>9}" if value is None else f"{value:>9.3f}"


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
