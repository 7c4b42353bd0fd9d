"""Options of the commands that choose orders by time: `--objective` and `--profile` (and their parsing)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

#: the names in `ttplan.core.objectives.OBJECTIVES` (a test keeps them equal), so that `--help` imports no planning
OBJECTIVE_NAMES = ("macs", "memory", "latency")


def objective_options(func: Callable) -> Callable:
    """`--objective macs|memory|latency` and `--profile FILE` (the latency model; see `ttplan calibrate`)."""
    options = [
        click.option("--objective", type=click.Choice(OBJECTIVE_NAMES), default="macs", show_default=True,
                     help="What the best order minimises: MACs, the largest intermediate, or the time predicted "
                          "by the latency profile."),
        click.option("--profile", "profile_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Latency profile (JSON from `ttplan calibrate`); default where orders are chosen by "
                          "time (--objective latency, --skip-slower, --autotune, --target-speedup): "
                          "~/.cache/ttplan/profile.json, else the committed default profile; otherwise the "
                          "committed default, which then only prices the ms columns."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def speed_options(func: Callable) -> Callable:
    """`--skip-slower/--no-skip-slower` (default: on with `--objective latency`), `--autotune [cpu|cuda]` and
    `--channels-last` (the memory format the model will run in)."""
    options = [
        click.option("--skip-slower/--no-skip-slower", default=None,
                     help="Keep a layer dense where no TT order is faster than the dense conv (predicted, or "
                          "measured with --autotune). Default: on with --objective latency."),
        click.option("--autotune", type=click.Choice(["cpu", "cuda"]), is_flag=False, flag_value="cpu", default=None,
                     help="Time the few best orders of each distinct layer (bmm and 1x1-conv lowerings) and the "
                          "dense conv on this device (cpu if no value), keep the fastest; cached in ~/.cache/ttplan."),
        channels_last_option("Plan for a model run channels-last (model.to(memory_format=torch.channels_last)): "
                             "TT layers keep NHWC maps from input to output; --autotune measures them so."),
        fuse_option(),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def fuse_option() -> Callable:
    """`--fuse/--no-fuse`: whether layers may run as one call of ttplan's fused CPU kernel."""
    return click.option("--fuse/--no-fuse", default=None,
                        help="With --objective latency: run a layer as one call of ttplan's fused CPU kernel (a "
                             "mixing, the conv and a mixing in one pass) where predicted faster. Default: where a C "
                             "compiler is found and maps are NCHW.")


def channels_last_option(help_text: str) -> Callable:
    """`--channels-last`: one spelling wherever the memory format of the model matters."""
    return click.option("--channels-last", is_flag=True, help=help_text)


def profile_from_options(profile_path: Path | None, channels_last: bool = False, *, by_time: bool = True):
    """The latency profile the options name (a missing or malformed file is a one-line error); without a file, where
    the command chooses by predicted time (`by_time`), the user's calibrated one (the channels-last one first for a
    channels-last model), else the committed default, which then only prices the ms columns."""
    from ttplan.latency.profiles import load_profile

    return load_profile(profile_path, channels_last=channels_last, by_time=by_time)
