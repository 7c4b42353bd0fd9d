"""`ttplan plot`: figures as PNG and SVG from a sweep file, an architecture plan, one layer's plan or an ADMM run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from ttplan.cli.options import format_from_options, format_options, geometry_options, spec_from_options
from ttplan.core.schemes import plan_names
from ttplan.files import check_writable, written

OUT_HELP = "Write PREFIX.png and PREFIX.svg"


def _out_option(default_help: str | None):
    """`--out PREFIX`, with what it defaults to (required when there is no default)."""
    return click.option("--out", "prefix", type=click.Path(path_type=Path), default=None, metavar="PREFIX",
                        required=default_help is None,
                        help=OUT_HELP + (f" (default: {default_help})." if default_help else "."))


def _draw(prefix: Path, draw: Callable[[Path], tuple[Path, Path]]) -> None:
    """Check both figure paths before any work, draw, then say which files were written or replaced (stderr)."""
    from ttplan.analysis.plots import figure_paths

    paths = figure_paths(prefix)
    for path in paths:
        check_writable(path, "--out")
    existed = [path.exists() for path in paths]
    draw(prefix)
    click.echo(" and ".join(written(path, old) for path, old in zip(paths, existed, strict=True)), err=True)


@click.group()
def plot() -> None:
    """Draw figures, each saved as PNG and SVG: `sweep FILE`, `arch FILE`, `plan` (one layer), `admm RUN_DIR`."""


@plot.command("sweep")
@click.argument("file", type=click.Path(path_type=Path))
@_out_option("FILE without its suffix, beside it")
def sweep_cmd(file: Path, prefix: Path | None) -> None:
    """MACs relative to dense against parameter reduction, from `ttplan sweep --json/--csv` output."""
    from ttplan.analysis.plots import plot_sweep
    from ttplan.analysis.sweep import load_sweep

    _draw(prefix or file.with_suffix(""), lambda p: plot_sweep(load_sweep(file), p))


@plot.command("arch")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--title", default=None, help="Figure title (default: the model's name).")
@_out_option("FILE without its suffix, beside it")
def arch_cmd(file: Path, title: str | None, prefix: Path | None) -> None:
    """Per-layer MACs and parameters, dense against TT, from `ttplan plan ARCH --json` output."""
    from ttplan.analysis.plots import plot_arch, read_arch

    _draw(prefix or file.with_suffix(""), lambda p: plot_arch(read_arch(file), p, title))


@plot.command("plan")
@geometry_options
@format_options
@click.option("--batch", "-b", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size B.")
@click.option("--fold-weights", is_flag=True, help="Weights folded at load time: weight-only steps cost nothing.")
@click.option("--scheme", "which", type=click.Choice(plan_names()), default="best", show_default=True,
              help="Which order to draw: the searched best, the format's published one, a named scheme, or dense "
                   "(rebuild-then-conv).")
@click.option("--title", default=None, help="Figure title (default: layer, format, ranks).")
@_out_option(None)
def plan_cmd(batch: int, fold_weights: bool, which: str, title: str | None, prefix: Path, **opts) -> None:
    """Draw one layer's plan: the tensor network and the contraction steps in order, with MACs and resolutions."""
    from ttplan.analysis.plots import plot_plan
    from ttplan.core.layer import plan_layer

    spec = spec_from_options(opts)
    fmt = format_from_options(spec, opts)

    def draw(p: Path) -> tuple[Path, Path]:
        result = plan_layer(spec, fmt, batch=batch, fold_weights=fold_weights)
        return plot_plan(result.named(which), p, title)

    _draw(prefix, draw)


@plot.command("admm")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--title", default=None, help="Figure title (default: from the run's config).")
@_out_option("RUN_DIR/admm")
def admm_cmd(run_dir: Path, title: str | None, prefix: Path | None) -> None:
    """Loss, accuracy and per-layer ‖W−Z‖/‖W‖ against epoch, from a run folder's metrics.json."""
    from ttplan.analysis.plots import plot_admm, read_metrics

    _draw(prefix or run_dir / "admm", lambda p: plot_admm(read_metrics(run_dir), p, title))
