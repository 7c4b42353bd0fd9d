"""`ttplan sweep`: one layer over a range of ranks, classical and hodec (1-3 modes a side), as a table, JSON or CSV."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ttplan.analysis.sweep import DEFAULT_FORMATS, Sweep, parse_rank_range, sweep_layer
from ttplan.cli.objective_options import objective_options, profile_from_options
from ttplan.cli.options import INTS, geometry_options, spec_from_options
from ttplan.errors import TTPlanError

EXAMPLE = """
Example (ResNet-18 layer3.0.conv1, the data behind reports/sweep_layer3.0.conv1.png):

\b
  ttplan sweep --in-channels 128 --out-channels 256 --kernel-size 3 --stride 2 \\
      --padding 1 --input-size 28 --ranks-range 2:64 --name layer3.0.conv1 \\
      --json --out reports/sweep_layer3.0.conv1.json
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
@click.option("--json", "output", flag_value="json", help="Write JSON (reload with `ttplan plot sweep`).")
@click.option("--csv", "output", flag_value="csv", help="Write CSV, one row per point.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of stdout (format from --json/--csv, or the .json/.csv suffix).")
def sweep(ranks_range: str | None, rank_list: tuple[int, ...] | None, batch: int, name: str, objective: str,
          profile_path, output: str | None, out: Path | None, **opts) -> None:
    """Sweep ranks for one layer: parameter reduction and MACs vs dense of the published and the best order,
    for classical (3 modes) and hodec with 1 (tucker2), 2 and 3 modes a side."""
    if ranks_range is not None and rank_list is not None:
        raise click.UsageError("give --ranks-range or --ranks, not both")
    ranks = rank_list if rank_list is not None else parse_rank_range(ranks_range or "2:64")
    if output is None and out is not None:
        output = {".json": "json", ".csv": "csv"}.get(out.suffix.lower())
        if output is None:
            raise TTPlanError(f"--out {str(out)!r}: add --json or --csv, or name the file *.json or *.csv")
    spec = spec_from_options(opts)
    total = len(set(ranks)) * len(DEFAULT_FORMATS)
    with click.progressbar(length=total, label="planning", file=sys.stderr) as bar:
        result = sweep_layer(spec, ranks, batch=batch, name=name, progress=lambda: bar.update(1), objective=objective,
                             profile=profile_from_options(profile_path))
    for note in result.skipped:
        click.echo(f"skipped {note}", err=True)
    text = {"json": result.to_json, "csv": result.to_csv}.get(output or "", lambda: render_sweep(result))()
    if out is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    click.echo(f"wrote {out} ({len(result.points)} points)", err=True)


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
