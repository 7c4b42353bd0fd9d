"""Options shared by the commands that take one layer (`layer`, `emit`, `sweep`), and their parsing."""

from __future__ import annotations

from collections.abc import Callable

import click

from ttplan.core.formats import KINDS, TTFormat, make_format
from ttplan.core.spec import ConvSpec


class IntList(click.ParamType):
    """Comma-separated positive ints, e.g. `4,4,8`."""

    name = "INTS"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            out = tuple(int(v) for v in str(value).replace(" ", "").split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of ints (e.g. 4,4,8)", param, ctx)
        if any(v <= 0 for v in out):
            self.fail(f"{value!r}: every entry must be a positive int", param, ctx)
        return out


class IntOrPair(click.ParamType):
    """An int, or a pair written `3,5` or `3x5` (height, width)."""

    name = "N|H,W"

    def __init__(self, minimum: int = 1) -> None:
        self.minimum = minimum

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = str(value).lower().replace("x", ",").split(",")
        try:
            out = tuple(int(p) for p in parts)
        except ValueError:
            self.fail(f"{value!r}: expected an int or a pair like 3,5", param, ctx)
        if len(out) == 1:
            out = (out[0], out[0])
        if len(out) != 2 or min(out) < self.minimum:
            self.fail(f"{value!r}: expected an int or a pair of ints >= {self.minimum}, like 3 or 3,5", param, ctx)
        return out


INTS = IntList()


def geometry_options(func: Callable) -> Callable:
    """The conv geometry, spelled as `torch.nn.Conv2d` spells it."""
    options = [
        click.option("--in-channels", "-i", type=click.IntRange(min=1), required=True,
                     help="Input channels I, e.g. 128."),
        click.option("--out-channels", "-o", type=click.IntRange(min=1), required=True,
                     help="Output channels O, e.g. 256."),
        click.option("--kernel-size", "-k", type=IntOrPair(), default="3", show_default=True,
                     help="Kernel k_h x k_w: 3 or 3,5."),
        click.option("--stride", "-s", type=IntOrPair(), default="1", show_default=True, help="Stride: 2 or 2,1."),
        click.option("--padding", "-p", type=IntOrPair(minimum=0), default="0", show_default=True,
                     help="Zero padding: 1 or 1,2."),
        click.option("--dilation", type=IntOrPair(), default="1", show_default=True, help="Dilation: 1 or 2,2."),
        click.option("--input-size", type=IntOrPair(), default="32", show_default=True,
                     help="Input feature map H x W: 28 or 28,32."),
        click.option("--bias/--no-bias", default=False, show_default=True, help="Count a bias in the parameters."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def format_options(func: Callable) -> Callable:
    """The TT format: published style (`--tt-shapes` + `--ranks`) or modes + ranks or a uniform rank."""
    options = [
        click.option("--format", "kind", type=click.Choice(KINDS), default="hodec", show_default=True,
                     help="TT format: classical (Garipov), hodec (spatial core in the middle), tucker2, "
                          "ttm (nn.Linear)."),
        click.option("--tt-shapes", type=INTS, default=None,
                     help="hodec published style: out_modes + [k_h*k_w] + in_modes, e.g. 4,8,8,9,4,4,8."),
        click.option("--ranks", type=INTS, default=None,
                     help="All ranks. hodec: len(tt_shapes)+1 with 1 at both ends, e.g. 1,16,16,16,16,16,16,1; "
                          "classical: r_0,...,r_{d-1},1, e.g. 16,16,16,1."),
        click.option("--rank", "-r", type=click.IntRange(min=1), default=None,
                     help="Uniform rank R (clipped at small boundary modes), e.g. 16."),
        click.option("--in-modes", type=INTS, default=None, help="Input channel modes, product = I, e.g. 4,4,8."),
        click.option("--out-modes", type=INTS, default=None, help="Output channel modes, product = O, e.g. 4,8,8."),
        click.option("--order", "-d", type=click.IntRange(min=1), default=None,
                     help="Modes per side when --in-modes/--out-modes are not given, split into balanced "
                          "factors (default 3; tucker2: 1)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def spec_from_options(opts: dict) -> ConvSpec:
    """A validated `ConvSpec` from parsed geometry options."""
    return ConvSpec.make(
        opts["in_channels"], opts["out_channels"], opts["kernel_size"], opts["stride"], opts["padding"],
        opts["dilation"], opts["input_size"], bias=opts["bias"],
    )


def format_from_options(spec: ConvSpec, opts: dict) -> TTFormat:
    """A validated `TTFormat` from parsed format options (see `format_options`)."""
    if opts["ranks"] is None and opts["rank"] is None:
        raise click.UsageError("no ranks given: add --ranks r,r,... or a uniform --rank R (e.g. --rank 16)")
    return make_format(
        opts["kind"], spec, in_modes=opts["in_modes"], out_modes=opts["out_modes"], ranks=opts["ranks"],
        rank=opts["rank"], order=opts["order"] if opts["in_modes"] is None else None, tt_shapes=opts["tt_shapes"],
    )
