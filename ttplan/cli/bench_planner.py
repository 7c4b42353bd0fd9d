"""`ttplan bench planner`: planning time and plan quality next to opt_einsum, written to reports/planner.md."""

from __future__ import annotations

from pathlib import Path

import click

from ttplan.bench.search_speed import benchmark_networks, render_markdown, run_benchmark


@click.command("planner")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True, help="Timing repeats per network.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("reports/planner.md"),
              show_default=True, help="Markdown report to write.")
def planner(repeats: int, out: Path) -> None:
    """Time ttplan's exact search against opt_einsum (optimal, dp) on networks of 4 to 16 tensors."""
    count = len(benchmark_networks())
    with click.progressbar(length=count, label="planning networks") as bar:
        rows = run_benchmark(repeats=repeats, progress=bar.update)
    command = "ttplan bench planner" + (f" --repeats {repeats}" if repeats != 5 else "")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(rows, command))
    click.echo(f"wrote {out} ({len(rows)} networks)")
