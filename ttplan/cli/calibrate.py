"""`ttplan calibrate`: fit the latency model of this machine, save it as a JSON profile, optionally check it."""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

import click

from ttplan.cli.objective_options import channels_last_option
from ttplan.cli.options import malloc_option, threads_option


@click.command()
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Device whose ops are timed.")
@threads_option(None, "torch.set_num_threads for the run (default: torch's, i.e. all cores).")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Profile file to write (with --check only: to check). Default: ~/.cache/ttplan/profile.json "
                   "($XDG_CACHE_HOME respected).")
@click.option("--check", "check_only", is_flag=True,
              help="Do not fit: time held-out layers (ResNet-56/18 3x3 convs) and print the profile's median and "
                   "worst relative error.")
@click.option("--budget", type=click.FloatRange(min=0.001), default=0.02, show_default=True,
              help="Seconds of repeats per timed op (the median is kept).")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Passes over the fitting grid (with --check: over the held-out layers); each op keeps its "
                   "median over them, so a slow moment of the machine spoils one pass, not the result.")
@click.option("--as-default", is_flag=True, hidden=True,
              help="Maintainers: label the profile as the default and write ttplan/core/default_profile.json.")
@malloc_option
@channels_last_option("Time ops on channels-last inputs with TT layers on NHWC maps: the profile that "
                      "`--channels-last` plans read by default (~/.cache/ttplan/profile-channels-last.json).")
def calibrate(device: str, threads: int | None, profile_path: Path | None, check_only: bool, budget: float,
              rounds: int, as_default: bool, malloc: str, channels_last: bool) -> None:
    """Time the ops plans lower to (mm, bmm, conv2d) and fit per-op overhead, bandwidth and throughput.

    The profile drives `--objective latency` in layer, plan, emit, sweep and the budgets. Without a
    calibrated profile the committed default one (measured on a 2-core development machine) is used.
    """
    path = None if check_only else _output_path(profile_path, as_default, device, channels_last)
    import torch

    from ttplan.latency.calibrate import calibrate as run_calibration
    from ttplan.latency.calibrate import check
    from ttplan.latency.profiles import load_profile, save_profile
    from ttplan.runtime.allocator import set_malloc

    if threads is not None:
        torch.set_num_threads(threads)
    set_malloc(malloc)

    def say(message: str) -> None:
        click.echo(message, err=True)

    if check_only:
        profile = load_profile(profile_path, device, channels_last)
        click.echo(f"profile: {profile.source} ({profile.label})" + (" [default profile]" if profile.default else ""))
        result = check(profile, device, budget_s=max(budget, 0.05), progress=say, channels_last=channels_last,
                       rounds=rounds)
        click.echo(render_check(result, torch.get_num_threads()))
        return
    load = _load_per_core()
    if load is not None and load > 0.5:
        say(f"warning: load average {load:.1f} per core: other processes share this machine, so the timings (and "
            "the profile) will be noisy; calibrate on an idle machine for a reliable profile")
    result = run_calibration(device, threads, budget, progress=say, channels_last=channels_last, rounds=rounds)
    profile = result.profile
    if malloc != "default":
        profile = replace(profile, label=f"{profile.label}, malloc {malloc}")
    if as_default:
        profile = replace(profile, default=True, label=f"default profile ({profile.label}); run `ttplan calibrate` "
                                                       "to fit this machine")
    assert path is not None
    save_profile(profile, path)
    click.echo(f"wrote {path}: {len(profile.ops)} op models from {result.samples} timed ops in "
               f"{result.seconds:.0f} s ({profile.label})")


def _output_path(profile_path: Path | None, as_default: bool, device: str, channels_last: bool) -> Path:
    """Where the fitted profile goes, checked before minutes of timing (one line if nothing can be written there)."""
    from ttplan.files import check_writable
    from ttplan.latency.profiles import default_profile_path, user_profile_path

    if profile_path is not None:
        return check_writable(profile_path, "--profile")
    if as_default:
        return check_writable(default_profile_path(), "--as-default")
    return check_writable(user_profile_path(device, channels_last),
                          "the profile's default path (in $XDG_CACHE_HOME, else ~/.cache; or give --profile FILE)")


def render_check(result, threads: int) -> str:
    """Per-layer predicted vs measured µs, then the median and worst relative error."""
    fused = result.fused_errors

    def cell(value: float | None) -> str:
        return f"{value:>11.0f}" if value is not None else f"{'-':>11}"

    lines = [f"{'held-out layer':<34}{'TT pred us':>11}{'TT meas us':>11}{'dense pred':>11}{'dense meas':>11}"
             + (f"{'fused pred':>11}{'fused meas':>11}" if fused else ""), "-" * (78 + (22 if fused else 0))]
    for row in result.rows:
        lines.append(f"{row.name:<34}{row.tt_predicted:>11.0f}{row.tt_measured:>11.0f}{row.dense_predicted:>11.0f}"
                     f"{row.dense_measured:>11.0f}"
                     + (cell(row.fused_predicted) + cell(row.fused_measured) if fused else ""))
    errors = result.errors
    what = "TT, dense and fused (the merged order)" if fused else "TT and dense"
    lines += ["", f"{len(errors)} predictions ({len(result.rows)} layers, {what}), {threads} threads: "
                  f"median relative error {statistics.median(errors):.1%}, worst {max(errors):.1%}"]
    if fused:
        lines.append(f"fused layers alone ({len(fused)}): median relative error {statistics.median(fused):.1%}, "
                     f"worst {max(fused):.1%}")
    return "\n".join(lines)


def _load_per_core() -> float | None:
    """The 1-minute load average per CPU core, where the OS reports one."""
    import os

    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return None
