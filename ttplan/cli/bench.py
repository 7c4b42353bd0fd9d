"""`ttplan bench`: benchmarks that write reports under reports/ (`latency`; `planner` when present)."""

from __future__ import annotations

import click

from ttplan.errors import TTPlanError


@click.group()
def bench() -> None:
    """Benchmarks; each writes a Markdown report under reports/."""


@bench.command("latency")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where to time the layers (cuda synchronizes around every call).")
@click.option("--repeats", type=click.IntRange(min=1), default=7, show_default=True,
              help="Timed calls per variant; the median is reported.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch.set_num_threads for the run (one thread is steadiest on a shared machine).")
@click.option("--rank", "-r", type=click.IntRange(min=1), default=16, show_default=True, help="Uniform TT rank.")
@click.option("--batch", "batches", type=click.IntRange(min=1), multiple=True, default=(1, 32), show_default=True,
              help="Batch sizes (repeat the option for several).")
@click.option("--layers", default=None,
              help="Comma-separated layer names to keep (e.g. layer3.0.conv1); default: every 3x3 conv.")
@click.option("--out", type=click.Path(dir_okay=False), default="reports/latency.md", show_default=True,
              help="Markdown report.")
@click.option("--append", is_flag=True, help="Add this run below an existing report instead of replacing it.")
@click.option("--cuda-graphs", is_flag=True,
              help="With --device cuda: replay each layer as one captured CUDA graph (no per-kernel launch cost).")
def latency(device: str, repeats: int, threads: int, rank: int, batches: tuple[int, ...], layers: str | None,
            out: str, append: bool, cuda_graphs: bool) -> None:
    """Time dense nn.Conv2d against TT layers (classical, hodec and best orders) on ResNet-18's 3x3 convs."""
    from pathlib import Path

    import torch

    from ttplan.bench.latency import render_report, render_section, resnet18_3x3_groups, run_latency, select_groups

    if cuda_graphs and device != "cuda":
        raise TTPlanError(f"--cuda-graphs needs --device cuda, got --device {device}")
    groups = resnet18_3x3_groups()
    if layers:
        groups = select_groups(groups, [name.strip() for name in layers.split(",") if name.strip()])
    torch.set_num_threads(threads)
    with click.progressbar(length=len(groups) * len(batches), label=f"timing on {device}") as bar:
        rows = run_latency(groups, tuple(batches), repeats, rank, device, progress=bar.update,
                           cuda_graphs=cuda_graphs)
    command = f"ttplan bench latency --device {device} --repeats {repeats} --threads {threads}"
    if rank != 16:
        command += f" --rank {rank}"
    if tuple(batches) != (1, 32):
        command += "".join(f" --batch {b}" for b in batches)
    if layers:
        command += f" --layers {layers}"
    if cuda_graphs:
        command += " --cuda-graphs"
    section = render_section(rows, device, threads, repeats, rank, command + (" --append" if append else ""),
                             cuda_graphs)
    path = Path(out)
    if append and not path.exists():
        raise TTPlanError(f"--append: {path} does not exist yet; run once without --append first")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text().rstrip("\n") + "\n\n" + section if append else render_report(section)
    path.write_text(text)
    click.echo(f"wrote {path}")
    click.echo(section.strip().splitlines()[-1])


def _attach_planner() -> None:
    """`ttplan bench planner` lives in its own module; attach it when that module is there."""
    try:
        from ttplan.cli.bench_planner import planner
    except ImportError:
        return
    bench.add_command(planner)


_attach_planner()
