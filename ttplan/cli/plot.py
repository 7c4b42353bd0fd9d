"""`ttplan plot`: figures as PNG and SVG from a sweep file, an architecture plan, one layer's plan or an ADMM run."""

from __future__ import annotations

from pathlib import Path

import click

from ttplan.analysis.plots import plot_admm, plot_arch, plot_plan, plot_sweep, read_arch, read_metrics
from ttplan.analysis.sweep import load_sweep
from ttplan.cli.options import format_from_options, format_options, geometry_options, spec_from_options
from ttplan.core.layer import plan_layer

OUT_HELP = "Write PREFIX.png and PREFIX.svg"


def _out_option(default_help: str):
    """`--out PREFIX`, with what it defaults to."""
    return click.option("--out", "prefix", type=click.Path(path_type=Path), default=None, metavar="PREFIX",
                        help=f"{OUT_HELP} (default: {default_help}).")


def _wrote(paths: tuple[Path, Path]) -> None:
    """Say which files were written."""
    click.echo(f"wrote {paths[0]} and {paths[1]}")


@click.group()
def plot() -> None:
    """Draw figures, each saved as PNG and SVG: `sweep FILE`, `arch FILE`, `plan` (one layer), `admm RUN_DIR`."""


@plot.command("sweep")
@click.argument("file", type=click.Path(path_type=Path))
@_out_option("FILE without its suffix, beside it")
def sweep_cmd(file: Path, prefix: Path | None) -> None:
    """MACs relative to dense against parameter reduction, from `ttplan sweep --json/--csv` output."""
    _wrote(plot_sweep(load_sweep(file), prefix or file.with_suffix("")))


@plot.command("arch")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--title", default=None, help="Figure title (default: the model's name).")
@_out_option("FILE without its suffix, beside it")
def arch_cmd(file: Path, title: str | None, prefix: Path | None) -> None:
    """Per-layer MACs and parameters, dense against TT, from `ttplan plan ARCH --json` output."""
    _wrote(plot_arch(read_arch(file), prefix or file.with_suffix(""), title))


@plot.command("plan")
@geometry_options
@format_options
@click.option("--batch", "-b", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size B.")
@click.option("--fold-weights", is_flag=True, help="Weights folded at load time: weight-only steps cost nothing.")
@click.option("--scheme", "which", type=click.Choice(["best", "published", "dense"]), default="best",
              show_default=True, help="Which order to draw: the searched best, the format's published one, "
                                      "or rebuild-then-conv.")
@click.option("--title", default=None, help="Figure title (default: layer, format, ranks).")
@click.option("--out", "prefix", type=click.Path(path_type=Path), required=True, metavar="PREFIX", help=OUT_HELP)
def plan_cmd(batch: int, fold_weights: bool, which: str, title: str | None, prefix: Path, **opts) -> None:
    """Draw one layer's plan: the tensor network and the contraction steps in order, with MACs and resolutions."""
    spec = spec_from_options(opts)
    fmt = format_from_options(spec, opts)
    result = plan_layer(spec, fmt, batch=batch, fold_weights=fold_weights)
    chosen = {"best": result.best, "published": result.published, "dense": result.schemes["dense"]}[which]
    _wrote(plot_plan(chosen, prefix, title))


@plot.command("admm")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--title", default=None, help="Figure title (default: from the run's config).")
@_out_option("RUN_DIR/admm")
def admm_cmd(run_dir: Path, title: str | None, prefix: Path | None) -> None:
    """Loss, accuracy and per-layer ‖W−Z‖/‖W‖ against epoch, from a run folder's metrics.json."""
    _wrote(plot_admm(read_metrics(run_dir), prefix or run_dir / "admm", title))
