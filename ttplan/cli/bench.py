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


@bench.command("model")
@click.argument("arch")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON/YAML per-layer formats and ranks (as `ttplan plan --config`); default: the default policy.")
@click.option("--batch", "batches", type=click.IntRange(min=1), multiple=True, default=(32,), show_default=True,
              help="Batch sizes (repeat the option for several).")
@click.option("--threads", "thread_counts", type=click.IntRange(min=1), multiple=True, default=None,
              help="torch.set_num_threads (repeat for several); default: torch's (all cores).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--objective", type=click.Choice(["macs", "latency"]), default="latency", show_default=True,
              help="What each layer's order minimises (latency also keeps dense the layers predicted slower).")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False), default=None,
              help="Latency profile (default: ~/.cache/ttplan/profile.json, else the committed default).")
@click.option("--rounds", type=click.IntRange(min=1), default=9, show_default=True,
              help="Interleaved rounds end to end and per layer; medians are reported.")
@click.option("--runtime", type=click.Choice(["emitted", "layers"]), default="emitted", show_default=True,
              help="Build the TT model by the generated code (`ttplan emit --arch`) or by ttplan.runtime.convert.")
@click.option("--autotune", is_flag=True, help="Autotune each distinct layer first (cached).")
@click.option("--out", type=click.Path(dir_okay=False), default="reports/latency_models.md", show_default=True)
@click.option("--append", is_flag=True, help="Add these runs below an existing report instead of replacing it.")
def model(arch: str, config_path: str | None, batches: tuple[int, ...], thread_counts: tuple[int, ...] | None,
          device: str, objective: str, profile_path: str | None, rounds: int, runtime: str, autotune: bool, out: str,
          append: bool) -> None:
    """Time a dense model against its TT conversion end to end, with a per-layer breakdown (measured, predicted)."""
    from pathlib import Path

    import torch

    from ttplan.bench.model import bench_model, render_report, render_section
    from ttplan.core.latency import load_profile

    profile = load_profile(profile_path, device)
    path = Path(out)
    if append and not path.exists():
        raise TTPlanError(f"--append: {path} does not exist yet; run once without --append first")
    sections = []
    for threads in thread_counts or (torch.get_num_threads(),):
        for batch in batches:
            result = bench_model(arch, config=config_path, batch=batch, threads=threads, device=device,
                                 objective=objective, profile=profile, rounds=rounds, layer_rounds=rounds,
                                 runtime=runtime, autotune=autotune, progress=lambda m: click.echo(m, err=True))
            command = (f"ttplan bench model {arch}" + (f" --config {config_path}" if config_path else "")
                       + f" --batch {batch} --threads {threads} --device {device} --objective {objective}"
                       + (f" --profile {profile_path}" if profile_path else "") + f" --rounds {rounds}"
                       + (" --autotune" if autotune else "")
                       + (f" --runtime {runtime}" if runtime != "emitted" else ""))
            sections.append(render_section(result, command))
            click.echo(f"{arch} batch {batch}, {threads} threads: dense {result.dense_ms:.2f} ms, "
                       f"TT {result.tt_ms:.2f} ms, {result.speedup:.2f}x "
                       f"(MACs↓ {result.plan.totals.macs_reduction:.1%})")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text().rstrip("\n") + "\n\n" + "\n".join(sections) if append else render_report(sections)
    path.write_text(text)
    click.echo(f"wrote {path}")


def _attach_planner() -> None:
    """`ttplan bench planner` lives in its own module; attach it when that module is there."""
    try:
        from ttplan.cli.bench_planner import planner
    except ImportError:
        return
    bench.add_command(planner)


_attach_planner()
