"""`ttplan sweep`: one layer over a range of ranks, classical, hodec (1-3 modes a side), tr and cp, as a table, JSON or
CSV."""

from __future__ import annotations

import sys

import click

from ttplan.cli.objective_options import objective_options, profile_from_options
from ttplan.cli.options import INTS, geometry_options, spec_from_options
from ttplan.cli.output import emit_text, output_options
from ttplan.errors import TTPlanError

EXAMPLE = """
Example (ResNet-18 layer3.0.conv1, the data behind reports/sweep_layer3.0.conv1.png):

\b
  ttplan sweep --in-channels 128 --out-channels 256 --kernel-size 3 --stride 2 \\
      --padding 1 --input-size 28 --ranks-range 2:64 --name layer3.0.conv1 \\
      --json --out reports/sweep_layer3.0.conv1.json

Ranks above the largest one any format accepts for the layer give the same formats; the range is
clipped to it first (and says so), and each distinct point is planned once.
"""


@click.command(epilog=EXAMPLE)
@geometry_options
@click.option("--ranks-range", default=None, metavar="START:STOP[:STEP]",
              help="Uniform ranks to sweep, STOP included, e.g. 2:64 or 2:64:2 (default 2:64).")
@click.option("--ranks", "rank_list", type=INTS, default=None, help="Uniform ranks to sweep, e.g. 2,4,8,16,32.")
@click.option("--batch", "-b", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch size B: feature-map steps scale with it, weight-only steps do not.")
@click.option("--name", default="", help="The layer's name, shown in figure titles, e.g. layer3.0.conv1.")
@objective_options
@output_options(("json", "csv", "markdown"),
                out_help="Write to this file instead of stdout (format from --json/--csv/--markdown, or the "
                         ".json/.csv/.md suffix; reload JSON or CSV with `ttplan plot sweep`; a Markdown page "
                         "shows the figure `ttplan plot sweep` draws beside it).")
def sweep(ranks_range: str | None, rank_list: tuple[int, ...] | None, batch: int, name: str, objective: str,
          profile_path, output: str | None, out, **opts) -> None:
    """Sweep ranks for one layer: parameter reduction and MACs vs dense of the published and the best order,
    for classical (3 modes), hodec with 1 (tucker2), 2 and 3 modes a side, the tensor ring (3 modes) and CP."""
    from ttplan.analysis.sweep import (
        DEFAULT_FORMATS,
        parse_rank_range,
        rank_bound,
        render_markdown,
        render_sweep,
        sweep_layer,
    )

    if ranks_range is not None and rank_list is not None:
        raise TTPlanError(f"--ranks-range {ranks_range} and --ranks given: use one, not both")
    if output is None and out is not None:
        raise TTPlanError(f"--out {str(out)!r}: add --json, --csv or --markdown, or name the file *.json, *.csv "
                          "or *.md")
    spec = spec_from_options(opts)
    bound = rank_bound(spec, DEFAULT_FORMATS)
    ranks = rank_list if rank_list is not None else parse_rank_range(ranks_range or "2:64", bound)
    asked = max(rank_list) if rank_list is not None else int((ranks_range or "2:64").split(":")[1])
    if asked > bound:
        click.echo(f"ranks above {bound} give the same formats for this layer (every rank is clipped to its "
                   f"bound): sweeping up to {bound}", err=True)
    distinct = sorted({min(r, bound) for r in ranks})
    with click.progressbar(length=len(distinct) * len(DEFAULT_FORMATS), label="planning", file=sys.stderr) as bar:
        result = sweep_layer(spec, distinct, batch=batch, name=name, progress=lambda: bar.update(1),
                             objective=objective,
                             profile=profile_from_options(profile_path, by_time=objective == "latency"))
    for note in result.skipped:
        click.echo(f"skipped {note}", err=True)
    figure = out.with_suffix(".png").name if out is not None else None
    text = {"json": result.to_json, "csv": result.to_csv,
            "markdown": lambda: render_markdown(result, figure)}.get(output or "", lambda: render_sweep(result))()
    emit_text(text, out, f" ({len(result.points)} points)")
