"""`ttplan bench`: benchmarks that write Markdown reports under reports/ (`latency`, `planner`, `formats`, `model`,
`lowerings`)."""

from __future__ import annotations

import click

from ttplan.cli.objective_options import channels_last_option, fuse_option
from ttplan.cli.options import (
    budget_options,
    device_options,
    given_flags,
    input_size_option,
    malloc_option,
    model_input_size,
    plan_choices,
    policy_options,
    threads_option,
)
from ttplan.cli.output import emit_text, out_option, warn
from ttplan.errors import TTPlanError
from ttplan.training.config import DEVICES


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
@malloc_option
def latency(device: str, repeats: int, threads: int, rank: int, batches: tuple[int, ...], layers: str | None,
            out, append: bool, cuda_graphs: bool, malloc: str) -> None:
    """Time dense nn.Conv2d against TT layers (classical, hodec and best orders) on ResNet-18's 3x3 convs."""
    import torch

    from ttplan.bench.latency import render_report, render_section, resnet18_3x3_groups, run_latency, select_groups
    from ttplan.latency.profiles import load_profile
    from ttplan.runtime.allocator import set_malloc

    if cuda_graphs and device != "cuda":
        raise TTPlanError(f"--cuda-graphs needs --device cuda, got --device {device}")
    if append and not out.is_file():
        raise TTPlanError(f"--append: {out} does not exist yet; run once without --append first")
    groups = resnet18_3x3_groups()
    if layers:
        groups = select_groups(groups, [name.strip() for name in layers.split(",") if name.strip()])
    torch.set_num_threads(threads)
    set_malloc(malloc)
    with click.progressbar(length=len(groups) * len(batches), label=f"timing on {device}") as bar:
        rows = run_latency(groups, tuple(batches), repeats, rank, device, progress=bar.update,
                           cuda_graphs=cuda_graphs, profile=load_profile())
    command = f"ttplan bench latency --device {device} --repeats {repeats} --threads {threads}"
    if rank != 16:
        command += f" --rank {rank}"
    if tuple(batches) != (1, 32):
        command += "".join(f" --batch {b}" for b in batches)
    if layers:
        command += f" --layers {layers}"
    if cuda_graphs:
        command += " --cuda-graphs"
    if malloc != "default":
        command += f" --malloc {malloc}"
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


@bench.command("formats")
@click.option("--targets", default="0.90,0.97", show_default=True,
              help="Parameter reductions to compare the formats at, comma-separated.")
@click.option("--batch", "-b", type=click.IntRange(min=1), default=32, show_default=True, help="Timing batch size.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed blocks per variant; the median is reported.")
@threads_option(1)
@out_option("Markdown report.", default="reports/formats_layer3.0.conv1.md")
def formats(targets: str, batch: int, repeats: int, threads: int, out) -> None:
    """Every format at equal parameters on ResNet-18's layer3.0.conv1: published and best-order MACs, CPU time."""
    import torch

    from ttplan.bench.formats import compare_formats, load_average, render_markdown
    from ttplan.core.spec import ConvSpec

    try:
        wanted = tuple(float(t) for t in targets.split(","))
    except ValueError:
        wanted = ()
    if not wanted or any(not 0 < t < 1 for t in wanted):
        raise TTPlanError(f"--targets {targets}: expected reductions between 0 and 1, e.g. 0.90,0.97")
    spec = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)
    load = load_average()
    torch.set_num_threads(threads)
    with click.progressbar(length=len(wanted), label="timing formats") as bar:
        rows, dense_ms = compare_formats(spec, wanted, batch, repeats, progress=bar.update)
    command = "ttplan bench formats" + "".join(
        f" {flag} {value}" for flag, value, default in (("--targets", targets, "0.90,0.97"), ("--batch", batch, 32),
                                                        ("--repeats", repeats, 5), ("--threads", threads, 1))
        if value != default)
    emit_text(render_markdown(rows, spec, "layer3.0.conv1", batch, dense_ms, threads, repeats, command, load), out,
              f" ({len(rows)} rows)")


@bench.command("model")
@click.argument("arch")
@input_size_option(None, "Model input C,H,W, or H,W with a preset's C (default: the preset's; required for "
                         "module:callable).")
@device_options(DEVICES)
@policy_options(prefix="Policy (as `ttplan plan`): ")
@budget_options
@click.option("--batch", "batches", type=click.IntRange(min=1), multiple=True, default=(32,), show_default=True,
              help="Batch sizes (repeat the option for several).")
@click.option("--objective", type=click.Choice(["macs", "latency"]), default="latency", show_default=True,
              help="What each layer's order minimises (latency also keeps dense the layers predicted slower).")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False), default=None,
              help="Latency profile (default: ~/.cache/ttplan/profile.json, else the committed default).")
@click.option("--rounds", type=click.IntRange(min=1), default=9, show_default=True,
              help="Interleaved rounds end to end and per layer; medians are reported.")
@click.option("--runtime", type=click.Choice(["emitted", "layers"]), default="emitted", show_default=True,
              help="Build the TT model by the generated code (`ttplan emit --arch`) or by ttplan.runtime.convert.")
@click.option("--autotune", is_flag=True, help="Autotune each distinct layer first (cached).")
@malloc_option
@click.option("--compile", "compile_", is_flag=True,
              help="Also time both models under torch.compile (inductor: layout optimization on and off, "
                   "each without and with freezing).")
@click.option("--processes", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also repeat the end-to-end timing in N fresh processes and report the median speedup.")
@channels_last_option("Run both models and the input channels-last (torch.channels_last), the TT layers planned "
                      "for NHWC maps: the fair comparison where a dense model would run channels-last.")
@fuse_option()
@click.option("--best", is_flag=True,
              help="Also time each model in every form a user deploys (eager NCHW, eager channels-last, torch.compile "
                   "with freezing, ONNX Runtime where installed), all interleaved, and lead with the best TT form "
                   "against the best dense form.")
@out_option("Markdown report (with --json: the JSON file; default then stdout).", default="reports/latency_models.md")
@click.option("--append", is_flag=True, help="Add these runs below an existing report instead of replacing it.")
@click.option("--json", "as_json", is_flag=True,
              help="Write the runs as JSON instead of the Markdown report: to --out if given, else to stdout.")
@click.pass_context
def model(ctx: click.Context, arch: str, input_size, device: str, threads: int | None, batches: tuple[int, ...],
          objective: str, profile_path: str | None, rounds: int, runtime: str, autotune: bool, malloc: str,
          compile_: bool, processes: int, channels_last: bool, fuse: bool | None, best: bool, out, append: bool,
          as_json: bool, **options) -> None:
    """Time a dense model against its TT conversion end to end, with a per-layer breakdown (measured, predicted);
    the TT model is planned as `ttplan plan` plans it, with the same policy, config and budget options. With --best,
    each model in every deployed form, best against best first."""
    import json

    import torch

    from ttplan.bench.model import bench_model, median_speedup, render_report, render_section
    from ttplan.latency.machine import profile_warnings
    from ttplan.latency.profiles import load_profile

    if as_json and append:
        raise TTPlanError("--json and --append both given: a JSON file is one document; write it anew, or drop --json "
                          "to append to the Markdown report")
    if as_json and ctx.get_parameter_source("out") == click.core.ParameterSource.DEFAULT:
        out = None  # JSON goes to stdout unless --out names a file
    if append and not out.is_file():
        raise TTPlanError(f"--append: {out} does not exist yet; run once without --append first")
    size = model_input_size(arch, input_size)
    if size is None and ":" in arch:
        raise TTPlanError(f"model {arch!r}: a module:callable model needs --input-size C,H,W, e.g. 3,224,224")
    profile = load_profile(profile_path, device, channels_last)
    warn(profile_warnings(profile, channels_last))
    # the models of the other memory format (--channels-last, --best) are planned with that format's own profile
    other = load_profile(None, device, not channels_last) if channels_last or best else None
    threads = threads or torch.get_num_threads()
    choices = plan_choices(options)
    chosen = given_flags(ctx, options)
    sections, runs = [], []
    for batch in batches:
        result = bench_model(arch, choices=choices, batch=batch, threads=threads, device=device,
                             objective=objective, profile=profile, other_profile=other, rounds=rounds,
                             layer_rounds=rounds,
                             runtime=runtime, autotune=autotune, malloc=malloc, compile=compile_,
                             processes=processes, channels_last=channels_last, fused=fuse,
                             progress=lambda m: click.echo(m, err=True), input_size=size, best=best)
        command = (f"ttplan bench model {arch}" + (f" --input-size {','.join(map(str, size))}" if size else "")
                   + chosen
                   + f" --batch {batch} --threads {threads} --device {device} --objective {objective}"
                   + (f" --profile {profile_path}" if profile_path else "") + f" --rounds {rounds}"
                   + (" --autotune" if autotune else "") + (f" --runtime {runtime}" if runtime != "emitted" else "")
                   + (f" --malloc {malloc}" if malloc != "default" else "") + (" --compile" if compile_ else "")
                   + (f" --processes {processes}" if processes else "") + (" --channels-last" if channels_last else "")
                   + ({True: " --fuse", False: " --no-fuse", None: ""}[fuse]) + (" --best" if best else ""))
        sections.append(render_section(result, command))
        runs.append({"command": command, **result.to_dict()})
        eager = (f"eager {'channels-last' if channels_last else 'NCHW'}: dense {result.dense_ms:.2f} ms, TT "
                 f"{result.tt_ms:.2f} ms, {result.speedup:.2f}x")
        click.echo(f"{arch} batch {batch}, {threads} threads, malloc {malloc}: "
                   + (f"{result.best.headline}; " if result.best is not None else "") + eager
                   + f" (MACs↓ {result.plan.totals.macs_reduction:.1%})"
                   + "".join(f"; compiled, {t.setting}: {t.speedup:.2f}x" for t in result.compiled)
                   + (f"; median over {processes} fresh processes: {median_speedup(result.processes):.2f}x"
                      if result.processes else ""), err=True)
    if as_json:
        from ttplan.latency.machine import describe

        emit_text(json.dumps({"machine": describe(), "runs": runs}, indent=2), out)
        return
    text = out.read_text().rstrip("\n") + "\n\n" + "\n".join(sections) if append else render_report(sections)
    emit_text(text, out)


@bench.command("lowerings")
@click.argument("arch")
@policy_options(prefix="Policy (as `ttplan plan`): ")
@budget_options
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True, help="Batch size.")
@threads_option(None, "CPU threads for torch (torch.set_num_threads); default: torch's.")
@click.option("--rounds", type=click.IntRange(min=1), default=9, show_default=True,
              help="Interleaved rounds; medians are reported.")
@malloc_option
@out_option("Markdown report.", default="reports/lowerings.md")
@click.option("--append", is_flag=True, help="Add this run below an existing report instead of replacing it.")
@click.pass_context
def lowerings(ctx: click.Context, arch: str, batch: int, threads: int | None, rounds: int, malloc: str, out,
              append: bool, **options) -> None:
    """Time each distinct TT layer of ARCH in every lowering (NCHW/NHWC, bmm/1x1-conv mixings, fused) and the dense
    conv in both memory formats: which way of running the steps is fastest on this machine. ARCH is planned as
    `ttplan plan` plans it, with the same policy, config and budget options."""
    import torch

    from ttplan.bench.lowerings import layer_groups, render_report, render_section, run_lowerings
    from ttplan.latency.machine import describe
    from ttplan.runtime.allocator import set_malloc

    if append and not out.is_file():
        raise TTPlanError(f"--append: {out} does not exist yet; run once without --append first")
    groups = layer_groups(arch, batch, plan_choices(options), say=lambda line: click.echo(line, err=True))
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    set_malloc(malloc)
    with click.progressbar(length=len(groups), label=f"timing {len(groups)} layers") as bar:
        rows = run_lowerings(groups, batch, rounds, progress=bar.update)
    command = (f"ttplan bench lowerings {arch}" + given_flags(ctx, options)
               + f" --batch {batch} --threads {threads} --rounds {rounds}"
               + (f" --malloc {malloc}" if malloc != "default" else ""))
    section = render_section(rows, arch, batch, threads, rounds, command + (" --append" if append else ""))
    text = out.read_text().rstrip("\n") + "\n\n" + section if append else render_report([section], describe())
    emit_text(text, out)
    for line in section.strip().splitlines()[-2:]:  # how often each format's default lowering was fastest
        click.echo(line)
