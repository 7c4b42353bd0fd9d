"""`ttplan layer`: plan one conv layer and print dense, the fixed schemes and the best order."""

from __future__ import annotations

import click

from ttplan.cli.objective_options import objective_options, profile_from_options
from ttplan.cli.options import format_from_options, format_options, geometry_options, spec_from_options
from ttplan.cli.output import emit_text, output_options, warn

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
@objective_options
@click.option("--autotune", is_flag=True,
              help="Also time the few best candidate orders (bmm and 1x1-conv lowerings) and the dense conv; "
                   "report the fastest (cached per geometry, format, device, threads and torch version).")
@output_options(("json",), wide=True)
def layer(batch: int, fold_weights: bool, memory_limit: int | None, compare: bool, objective: str, profile_path,
          autotune: bool, output: str | None, out, wide: bool, **opts) -> None:
    """Plan one TT-conv layer: MACs, parameters and memory of dense, the published order and the best order."""
    import json

    from ttplan.analysis.layer_report import render_layer
    from ttplan.core.layer import plan_layer
    from ttplan.latency.machine import profile_warnings

    spec = spec_from_options(opts)
    fmt = format_from_options(spec, opts)
    result = plan_layer(spec, fmt, batch=batch, fold_weights=fold_weights, memory_limit=memory_limit,
                        compare=compare, objective=objective,
                        profile=profile_from_options(profile_path, by_time=objective == "latency" or autotune))
    if autotune:
        from ttplan.latency.autotune import autotune_layer

        tuned = autotune_layer(spec, fmt, batch, fold_weights, profile=result.profile)
        if tuned.plan is not None:
            result.best = tuned.plan
        result.tuned = tuned.to_dict()
    text = json.dumps(result.to_dict(), indent=2) if output == "json" else render_layer(result, wide)
    emit_text(text, out)
    warn([*result.warnings, *(profile_warnings(result.profile, False) if result.profile is not None else [])])
