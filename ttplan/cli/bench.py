"""`ttplan bench`: benchmarks that write Markdown reports under reports/ (`latency`, `planner`)."""

from __future__ import annotations

import click

from ttplan.cli.options import device_options
from ttplan.cli.output import emit_text, out_option
from ttplan.errors import TTPlanError
from ttplan.training.run import DEVICES


@click.group()
def bench() -> None:
    """Benchmarks; each writes a Markdown report under reports/."""


@bench.command("latency")
@device_options(DEVICES, threads_default=1)
@click.option("--repeats", type=click.IntRange(min=1), default=7, show_default=True,
              help="Timed calls per variant; the median is reported (cuda synchronizes around every call).")
@click.option("--rank", "-r", type=click.IntRange(min=1), default=16, show_default=True, help="Uniform TT rank.")
@click.option("--batch", "batches", type=click.IntRange(min=1), multiple=True, default=(1, 32), show_default=True,
              help="Batch sizes (repeat the option for several).")
@click.option("--layers", default=None,
              help="Comma-separated layer names to keep (e.g. layer3.0.conv1); default: every 3x3 conv.")
@out_option("Markdown report.", default="reports/latency.md")
@click.option("--append", is_flag=True, help="Add this run below an existing report instead of replacing it.")
@click.option("--cuda-graphs", is_flag=True,
              help="With --device cuda: replay each layer as one captured CUDA graph (no per-kernel launch cost).")
def latency(device: str, repeats: int, threads: int, rank: int, batches: tuple[int, ...], layers: str | None,
            out, append: bool, cuda_graphs: bool) -> None:
    """Time dense nn.Conv2d against TT layers (classical, hodec and best orders) on ResNet-18's 3x3 convs."""
    import torch

    from ttplan.bench.latency import render_report, render_section, resnet18_3x3_groups, run_latency, select_groups

    if cuda_graphs and device != "cuda":
        raise TTPlanError(f"--cuda-graphs needs --device cuda, got --device {device}")
    if append and not out.is_file():
        raise TTPlanError(f"--append: {out} does not exist yet; run once without --append first")
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
    text = out.read_text().rstrip("\n") + "\n\n" + section if append else render_report(section)
    emit_text(text, out)
    click.echo(section.strip().splitlines()[-1])


@bench.command("planner")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True, help="Timing repeats per network.")
@out_option("Markdown report to write.", default="reports/planner.md")
def planner(repeats: int, out) -> None:
    """Time ttplan's exact search against opt_einsum (optimal, dp) on networks of 4 to 16 tensors."""
    from ttplan.bench.search_speed import benchmark_networks, render_markdown, run_benchmark

    count = len(benchmark_networks())
    with click.progressbar(length=count, label="planning networks") as bar:
        rows = run_benchmark(repeats=repeats, progress=bar.update)
    command = "ttplan bench planner" + (f" --repeats {repeats}" if repeats != 5 else "")
    emit_text(render_markdown(rows, command), out, f" ({len(rows)} networks)")
