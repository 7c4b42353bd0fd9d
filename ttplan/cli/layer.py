"""`ttplan layer`: plan one conv layer and print dense, the fixed schemes and the best order."""

from __future__ import annotations

import json

import click

from ttplan.cli.options import format_from_options, format_options, geometry_options, spec_from_options
from ttplan.core.layer import LayerPlan, plan_layer
from ttplan.core.peers import im2col_equation, im2col_expression

EXAMPLE = """
Example (ResNet-18 layer3.0.conv1, hodec at uniform rank 16):

\b
  ttplan layer --in-channels 128 --out-channels 256 --kernel-size 3 --stride 2 \\
      --padding 1 --input-size 28 --format hodec \\
      --tt-shapes 4,8,8,9,4,4,8 --ranks 1,16,16,16,16,16,16,1
"""


@click.command(epilog=EXAMPLE)
@geometry_options
@format_options
@click.option("--batch", "-b", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch size B: feature-map steps scale with it, weight-only steps do not.")
@click.option("--fold-weights", is_flag=True,
              help="Inference with weights folded at load time: weight-only steps cost nothing per forward.")
@click.option("--memory-limit", type=click.IntRange(min=1), default=None,
              help="Largest intermediate allowed, in elements (e.g. 1000000).")
@click.option("--compare", is_flag=True,
              help="Also plan the layer as an im2col einsum with opt_einsum (optimal, dp) and cotengra.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def layer(batch: int, fold_weights: bool, memory_limit: int | None, compare: bool, as_json: bool, **opts) -> None:
    """Plan one TT-conv layer: MACs, parameters and memory of dense, the published order and the best order."""
    spec = spec_from_options(opts)
    fmt = format_from_options(spec, opts)
    result = plan_layer(spec, fmt, batch=batch, fold_weights=fold_weights, memory_limit=memory_limit,
                        compare=compare)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(render_layer(result))


def render_layer(result: LayerPlan) -> str:
    """The human-readable report: a totals table, the best plan's steps and, if asked, the peers."""
    spec, fmt = result.spec, result.fmt
    lines = [
        f"layer   {spec.describe()}   batch {result.network.batch}",
        f"format  {fmt.label}  in_modes={list(fmt.in_modes)} out_modes={list(fmt.out_modes)} "
        f"ranks={list(fmt.ranks)}",
        "costs in MACs (FLOPs = 2 x MACs)" + ("; weights folded at load time" if result.best.fold_weights else ""),
        "",
    ]
    header = f"{'order':<12}{'MACs':>15}{'x dense':>9}{'weight MACs':>13}{'params':>11}{'compr.':>8}" \
             f"{'largest':>12}{'peak live':>12}"
    lines += [header, "-" * len(header)]
    lines.append(f"{'dense conv':<12}{result.baseline_macs:>15,}{1.0:>9.3f}{0:>13,}{result.baseline_params:>11,}"
                 f"{1.0:>8.1f}{'':>12}{'':>12}")
    for name, plan in [*result.schemes.items(), ("best", result.best)]:
        s = result.summary(plan)
        flag = "  > dense" if plan.macs > result.baseline_macs else ""
        lines.append(
            f"{name:<12}{s['macs']:>15,}{s['macs_vs_dense']:>9.3f}{s['weight_macs']:>13,}{s['params']:>11,}"
            f"{s['compression']:>8.1f}{s['largest_intermediate']:>12,}{s['peak_live']:>12,}{flag}"
        )
    if result.best.fold_weights:
        lines.append(f"runtime weight memory of the best plan (folded factors): "
                     f"{result.best.runtime_weight_elements:,} elements")
    lines += ["", "best order, step by step:"]
    rows = [(f"{step.number:>2}. {step.left_name} x {step.right_name} -> [{','.join(step.indices)}]",
             _where(result, step), step.macs) for step in result.best.steps]
    width = max(len(r[0]) for r in rows)
    lines += [f"  {what:<{width}}  {where:<24}{macs:>14,} MACs" for what, where, macs in rows]
    for peer in result.peers:
        if peer is result.peers[0]:
            lines += ["", "peers plan the layer as an einsum over an unfolded (im2col) input:",
                      f"  {im2col_expression(result.network)}",
                      f"  opt_einsum: {im2col_equation(result.network)[0]}",
                      f"{'optimizer':<22}{'own MACs (im2col)':>19}{'same order, ttplan':>20}{'x best':>9}{'time s':>9}"]
        lines.append(f"{peer.name:<22}{peer.im2col_macs:>19,}{peer.plan.macs:>20,}"
                     f"{peer.plan.macs / result.best.macs:>9.2f}{peer.seconds:>9.4f}")
    return "\n".join(lines)


def _where(result: LayerPlan, step) -> str:
    """Where a step runs: on the weights, or on the feature map at which resolution."""
    if step.kind == "weight":
        return "weights, once per forward" if not result.best.fold_weights else "weights, folded at load"
    h, w = step.map_size
    return f"{'conv, ' if step.kind == 'conv' else ''}at {h}x{w}"
