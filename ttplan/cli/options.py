"""Option groups every command shares, declared once, and their parsing into library objects.

Groups: `geometry_options` (one conv layer), `format_options` (its TT format), `policy_options` (how a
model's layers are decomposed), `output_options` (in cli/output.py), `device_options`. Each group is a
list of click options applied by `apply`, so a command (or a new feature) adds options by adding to a list.

`--input-size` means the same everywhere: the input of what is planned, spelled `N`, `H,W` or `C,H,W`
(`x` also separates). C is optional where it is known — a layer's `--in-channels`, a preset's own
input — and must match it when given; a `module:callable` model needs C,H,W.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable

import click

from ttplan.core.formats import KINDS
from ttplan.errors import TTPlanError
from ttplan.runtime.allocator import MALLOC_MODES  # ctypes only: --help stays free of torch


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


class InputSize(click.ParamType):
    """`--input-size`: `N` (square), `H,W` or `C,H,W`; returns (H, W) or (C, H, W)."""

    name = "[C,]H[,W]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = str(value).lower().replace("x", ",").replace(" ", "").split(",")
        try:
            out = tuple(int(p) for p in parts)
        except ValueError:
            out = ()
        if not 1 <= len(out) <= 3 or min(out) < 1:
            self.fail(f"{value!r}: expected N, H,W or C,H,W of positive ints, e.g. 28, 28,32 or 3,224,224",
                      param, ctx)
        return (out[0], out[0]) if len(out) == 1 else out


class Threads(click.ParamType):
    """`--threads`: a positive int, at most this machine's CPU count (`os.cpu_count()`, where it is known)."""

    name = "N"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            threads = value
        else:
            try:
                threads = int(str(value).strip())
            except ValueError:
                threads = 0
        cpus = os.cpu_count()
        if threads < 1 or (cpus is not None and threads > cpus):
            accepted = f"1 to {cpus} (this machine's CPU count, os.cpu_count())" if cpus else "a positive int"
            self.fail(f"{value!r}: expected {accepted}; more threads than CPUs only oversubscribe them", param, ctx)
        return threads


class ArchName(click.ParamType):
    """A model: a preset name (checked here, with a close match as a hint) or `module:callable`."""

    name = "ARCH"

    def convert(self, value, param, ctx):
        from ttplan.models.registry import PRESETS

        text = str(value)
        if ":" in text or text in PRESETS:
            return text
        close = difflib.get_close_matches(text.lower(), list(PRESETS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        self.fail(f"{text!r} is not a preset: {hint}presets are {', '.join(PRESETS)}, or give module:callable",
                  param, ctx)


INTS = IntList()
ARCH_HELP = "Model: a preset (resnet18, resnet20, ...) or module:callable returning an nn.Module."
INPUT_SIZE_HELP = "Input size N, H,W or C,H,W, e.g. 28 or 3,224,224 (C optional where known)."


def apply(options: list[Callable]) -> Callable[[Callable], Callable]:
    """A decorator adding `options` to a command, first option first in `--help`."""

    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def arch_option(default: str | None = None, help_suffix: str = "") -> Callable:
    """`--arch`: the model, spelled the same in every command that takes one."""
    return click.option("--arch", type=ArchName(), default=default, show_default=default is not None,
                        help=ARCH_HELP + help_suffix)


def input_size_option(default: str | None, help_text: str = INPUT_SIZE_HELP) -> Callable:
    """`--input-size`, with the one rule of the module docstring."""
    return click.option("--input-size", type=InputSize(), default=default, show_default=default is not None,
                        help=help_text)


def geometry_options(func: Callable | None = None, *, required: bool = True) -> Callable:
    """The conv geometry, spelled as `torch.nn.Conv2d` spells it (`required=False` where a model can stand in)."""
    options = [
        click.option("--in-channels", "-i", type=click.IntRange(min=1), required=required,
                     help="Input channels I, e.g. 128."),
        click.option("--out-channels", "-o", type=click.IntRange(min=1), required=required,
                     help="Output channels O, e.g. 256."),
        click.option("--kernel-size", "-k", type=IntOrPair(), default="3", show_default=True,
                     help="Kernel k_h x k_w: 3 or 3,5."),
        click.option("--stride", "-s", type=IntOrPair(), default="1", show_default=True, help="Stride: 2 or 2,1."),
        click.option("--padding", "-p", type=IntOrPair(minimum=0), default="0", show_default=True,
                     help="Zero padding: 1 or 1,2."),
        click.option("--dilation", type=IntOrPair(), default="1", show_default=True, help="Dilation: 1 or 2,2."),
        input_size_option(None, "Input size N, H,W or C,H,W (C = --in-channels), e.g. 28 [default: 32]."),
        click.option("--bias/--no-bias", default=False, show_default=True, help="Count a bias in the parameters."),
    ]
    return apply(options) if func is None else apply(options)(func)


def format_options(func: Callable) -> Callable:
    """The TT format: published style (`--tt-shapes` + `--ranks`) or modes + ranks or a uniform rank."""
    return apply([
        click.option("--format", "kind", type=click.Choice(KINDS), default="hodec", show_default=True,
                     help="TT format: classical (Garipov), hodec (spatial core in the middle), tucker2, "
                          "tr (tensor ring), cp (CP, one rank shared by all factors), ttm (nn.Linear)."),
        click.option("--spatial", type=click.Choice(("joint", "separable")), default=None,
                     help="cp: one k_h*k_w window factor (joint, default) or k_h and k_w apart (separable: "
                          "depthwise k_h x 1 then 1 x k_w)."),
        click.option("--tt-shapes", type=INTS, default=None,
                     help="hodec/tr published style: out_modes + [k_h*k_w] + in_modes, e.g. 4,8,8,9,4,4,8."),
        click.option("--ranks", type=INTS, default=None,
                     help="All ranks. hodec: len(tt_shapes)+1 with 1 at both ends, e.g. 1,16,16,16,16,16,16,1; "
                          "tr: the same with r_0 == r_N, e.g. 16,16,16,16,16,16,16,16; cp: one rank, e.g. 64; "
                          "classical: r_0,...,r_{d-1},1, e.g. 16,16,16,1."),
        click.option("--rank", "-r", type=click.IntRange(min=1), default=None,
                     help="Uniform rank R (clipped at small boundary modes), e.g. 16."),
        click.option("--in-modes", type=INTS, default=None, help="Input channel modes, product = I, e.g. 4,4,8."),
        click.option("--out-modes", type=INTS, default=None, help="Output channel modes, product = O, e.g. 4,8,8."),
        click.option("--order", "-d", type=click.IntRange(min=1), default=None,
                     help="Modes per side when --in-modes/--out-modes are not given, split into balanced "
                          "factors (default 3; tucker2: 1)."),
    ])(func)


def policy_options(func: Callable | None = None, *, with_format: bool = True, with_config: bool = True,
                   with_skip_worse: bool = True, prefix: str = "") -> Callable:
    """How a model's layers are decomposed: a config, the rule for the layers it does not name (`--unnamed`), then
    the policy. `with_format=False` where `format_options` already declares `--format/--rank/--order` (the policy
    then reads those); `with_config=False`/`with_skip_worse=False` where a command declares its own `--config` or
    has no use for `--skip-worse` (`train`). `policy_from_options` turns the parsed values into a `Policy`,
    `plan_choices` all of them (and the budget's) into a `PlanRequest`'s choices."""
    from ttplan.arch.policy import CONV_FORMATS, DEFAULT_RANK_FRACTION, UNNAMED

    shared = [
        click.option("--format", "kind", type=click.Choice(CONV_FORMATS), default="hodec", show_default=True,
                     help=f"{prefix}TT format the policy gives conv layers (linear layers use ttm)."),
        click.option("--rank", "-r", type=click.IntRange(min=1), default=None,
                     help=f"{prefix}uniform rank R (clipped at small boundary modes); instead of --rank-fraction."),
        click.option("--order", "-d", type=click.IntRange(min=1), default=None,
                     help=f"{prefix}modes per side (balanced factors; default 3, tucker2 1)."),
    ] if with_format else []
    config = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                     help=f"{prefix}JSON/YAML file of per-layer formats and ranks (or the JSON of `ttplan plan "
                          "--json`); the layers it does not name: --unnamed."),
    ] if with_config else []
    unnamed = click.option(
        "--unnamed", type=click.Choice(UNNAMED), default=None,
        help=f"{prefix}what the layers --config does not name get: dense, or what the policy options decide. "
             "Default: dense with --config (with a budget target, the budget searches them); without --config "
             "every layer follows the policy.")
    skip_worse = [
        click.option("--skip-worse", is_flag=True,
                     help=f"{prefix}leave dense every layer whose published order costs more MACs or params "
                          "than dense."),
    ] if with_skip_worse else []
    options = [
        *config,
        unnamed,
        *shared,
        click.option("--rank-fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
                     help=f"{prefix}each rank as this fraction of the exact TT rank at its cut "
                          f"[default: {DEFAULT_RANK_FRACTION}]."),
        click.option("--skip-first/--no-skip-first", default=True, show_default=True,
                     help=f"{prefix}keep the first conv dense."),
        click.option("--skip-1x1/--no-skip-1x1", default=True, show_default=True,
                     help=f"{prefix}keep 1x1 convs (shortcut/downsample, bottleneck ends) dense."),
        click.option("--min-channels", type=click.IntRange(min=1), default=1, show_default=True,
                     help=f"{prefix}keep layers with fewer than N input or output channels dense."),
        click.option("--linear", is_flag=True, help=f"{prefix}also decompose nn.Linear layers (TT-matrix, ttm)."),
        *skip_worse,
    ]
    return apply(options) if func is None else apply(options)(func)


def budget_options(func: Callable | None = None, *, prefix: str = "Budget: ") -> Callable:
    """The model-level budget (`ttplan.arch.request.PlanRequest`'s targets): reductions of MACs and parameters, a
    predicted speedup, and `--search-format`; a budget picks every layer's ranks."""
    options = [
        click.option("--target-macs-reduction", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help=f"{prefix}model-level MACs (= FLOPs) reduction to reach, e.g. 0.72 (picks every "
                          "layer's ranks)."),
        click.option("--target-params-reduction", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help=f"{prefix}model-level parameter reduction to reach, e.g. 0.80 (picks every "
                          "layer's ranks)."),
        click.option("--target-speedup", type=click.FloatRange(1, min_open=True), default=None,
                     help=f"{prefix}predicted speedup of the conv/linear layers to reach, e.g. 1.5 "
                          "(replaces a MACs target)."),
        click.option("--search-format", is_flag=True,
                     help=f"{prefix}also search the number of modes (1-3 a side) and their factorisation."),
    ]
    return apply(options) if func is None else apply(options)(func)


def threads_option(default: int | None = None,
                   help_text: str = "CPU threads for torch (torch.set_num_threads).") -> Callable:
    """`--threads`, the one spelling of torch's intra-op thread count: 1 to `os.cpu_count()`."""
    return click.option("--threads", type=Threads(), default=default, show_default=default is not None,
                        help=help_text)


def device_options(devices: tuple[str, ...], threads_default: int | None = None) -> Callable:
    """`--device` (choices from the caller's registry) and `--threads` (torch intra-op threads)."""
    return apply([
        click.option("--device", type=click.Choice(devices), default=devices[0], show_default=True,
                     help="Where torch runs."),
        threads_option(threads_default),
    ])


malloc_option = click.option(
    "--malloc", type=click.Choice(MALLOC_MODES), default="default", show_default=True,
    help="CPU timing: leave the C allocator as it is, or make glibc retain freed memory for reuse (no page "
         "faults per forward; the whole process, dense and TT alike; see docs/latency.md).")


def spec_from_options(opts: dict):
    """A validated `ConvSpec` from parsed geometry options (`--input-size` as in the module docstring)."""
    from ttplan.core.spec import ConvSpec

    size = opts["input_size"] or (32, 32)
    if len(size) == 3:
        if size[0] != opts["in_channels"]:
            raise TTPlanError(f"--input-size {','.join(map(str, size))}: C={size[0]} differs from --in-channels "
                              f"{opts['in_channels']}; give H,W or C,H,W with C = {opts['in_channels']}")
        size = size[1:]
    return ConvSpec.make(
        opts["in_channels"], opts["out_channels"], opts["kernel_size"], opts["stride"], opts["padding"],
        opts["dilation"], size, bias=opts["bias"],
    )


def format_from_options(spec, opts: dict):
    """A validated `TTFormat` from parsed format options (see `format_options`)."""
    from ttplan.core.formats import make_format, spatial_variant

    if opts["ranks"] is None and opts["rank"] is None:
        raise TTPlanError("no ranks given: add --ranks r,r,... or a uniform --rank R (e.g. --rank 16)")
    if opts["ranks"] is not None and opts["rank"] is not None:
        raise TTPlanError(f"--ranks {','.join(map(str, opts['ranks']))} and --rank {opts['rank']} both given: "
                          "use one (every rank, or one uniform rank)")
    return make_format(
        spatial_variant(opts["kind"], opts.get("spatial")), spec, in_modes=opts["in_modes"],
        out_modes=opts["out_modes"], ranks=opts["ranks"],
        rank=opts["rank"], order=opts["order"] if opts["in_modes"] is None else None, tt_shapes=opts["tt_shapes"],
    )


def policy_from_options(opts: dict):
    """The `Policy` of parsed policy options; `--rank` with `--rank-fraction` is a one-line error."""
    from ttplan.arch.policy import DEFAULT_RANK_FRACTION, Policy

    if opts["rank"] is not None and opts["rank_fraction"] is not None:
        raise TTPlanError(f"--rank {opts['rank']} and --rank-fraction {opts['rank_fraction']:g} both given: use one "
                          "(a uniform rank or a fraction of the exact ranks)")
    fraction = DEFAULT_RANK_FRACTION if opts["rank_fraction"] is None else opts["rank_fraction"]
    return Policy(opts["kind"], opts["rank"], fraction, opts["order"], opts["skip_first"], opts["skip_1x1"],
                  opts["min_channels"], opts["linear"])


def plan_choices(opts: dict) -> dict:
    """The parsed `policy_options` and `budget_options` as a `PlanRequest`'s choices (`PlanRequest.with_choices`);
    options a command does not declare keep their defaults."""
    from ttplan.arch.request import CHOICES

    given = {"policy": policy_from_options(opts).to_dict(), **{name: opts[name] for name in CHOICES if name in opts}}
    return {name: value for name, value in given.items() if value is not None}


def given_flags(ctx: click.Context, values: dict) -> str:
    """The options among `values` given on the command line, spelled back as flags in declaration order (e.g.
    ` --config c.json --rank 8`): what a report's command line needs beyond the defaults."""
    from click.core import ParameterSource

    words = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name not in values:
            continue
        if ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = values[param.name]
        long = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        if param.is_flag:
            off = next((o for o in param.secondary_opts if o.startswith("--")), None)
            words.append(long if value or off is None else off)
        else:
            words.append(f"{long} {value:g}" if isinstance(value, float) else f"{long} {value}")
    return "".join(f" {word}" for word in words)


def model_input_size(arch: str, size: tuple[int, ...] | None) -> tuple[int, int, int] | None:
    """`--input-size` for a model: C,H,W as given; H,W take a preset's C; None keeps the preset's own size."""
    from ttplan.models.registry import PRESETS

    if size is None or len(size) == 3:
        return size  # type: ignore[return-value]
    if arch in PRESETS:
        return (PRESETS[arch].input_size[0], *size)  # type: ignore[return-value]
    raise TTPlanError(f"--input-size {','.join(map(str, size))}: {arch!r} is module:callable, whose input channels "
                      "are not known: give C,H,W, e.g. 3,224,224")
