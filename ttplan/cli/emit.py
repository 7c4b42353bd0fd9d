"""`ttplan emit`: write a standalone PyTorch file that runs a plan, for one layer or a whole architecture."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from ttplan.cli.options import IntList, format_from_options, format_options, geometry_options, spec_from_options
from ttplan.core.formats import published_schemes
from ttplan.errors import TTPlanError

SCHEMES = ("best", "published", *published_schemes(), "dense")
LAYER_ONLY = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "bias", "tt_shapes",
              "ranks", "in_modes", "out_modes")
ARCH_ONLY = ("config_path", "rank_fraction", "skip_first", "skip_1x1", "min_channels", "linear", "skip_worse")

EXAMPLES = """
Examples:

\b
  # ResNet-18 layer3.0.conv1, hodec at uniform rank 16, the best order at batch 32
  ttplan emit --in-channels 128 --out-channels 256 --kernel-size 3 --stride 2 --padding 1 \\
      --input-size 28 --tt-shapes 4,8,8,9,4,4,8 --ranks 1,16,16,16,16,16,16,1 --batch 32 --out layer.py
  # the classical order of a classical format
  ttplan emit -i 64 -o 64 -p 1 --format classical --rank 16 --scheme classical --out classical.py
  # every decomposed layer of an architecture (policy and config as in `ttplan plan`)
  ttplan emit --arch resnet18 --rank 16 --out resnet18_tt.py

The file imports torch only; a single layer's `__all__` names its one class, an architecture's file adds
`LAYERS` and `convert(model)`.
"""


class SizeType(click.ParamType):
    """`--input-size`: H or H,W for a layer (as `ttplan layer`), C,H,W for `--arch`."""

    name = "H,W|C,H,W"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        values = IntList().convert(str(value).lower().replace("x", ","), param, ctx)
        if len(values) == 1:
            values = (values[0], values[0])
        if len(values) not in (2, 3):
            self.fail(f"{value!r}: expected H, H,W or (with --arch) C,H,W", param, ctx)
        return values


@click.command(epilog=EXAMPLES)
@geometry_options
@format_options
@click.option("--scheme", type=click.Choice(SCHEMES), default="best", show_default=True,
              help="Order to emit: the searched best, the format's published order, a named scheme, or dense "
                   "(rebuild the kernel, one conv).")
@click.option("--batch", "-b", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch size the order is chosen for (the code runs any batch).")
@click.option("--fold-weights", is_flag=True,
              help="Choose the order for folded weights and make the layers cache the weight-only steps.")
@click.option("--class-name", default=None, help="Class name for a single layer (default from the geometry).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Python file to write (default: print the source).")
@click.option("--arch", default=None,
              help="Emit every decomposed layer of this model: a preset (resnet18, ...) or module:callable.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="--arch: JSON/YAML per-layer formats and ranks, as `ttplan plan --config`.")
@click.option("--rank-fraction", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="--arch policy: each rank as this fraction of the exact TT rank.")
@click.option("--skip-first/--no-skip-first", default=True, show_default=True,
              help="--arch: keep the first conv dense.")
@click.option("--skip-1x1/--no-skip-1x1", default=True, show_default=True, help="--arch: keep 1x1 convs dense.")
@click.option("--min-channels", type=click.IntRange(min=1), default=1, show_default=True,
              help="--arch: keep layers with fewer than N input or output channels dense.")
@click.option("--linear", is_flag=True, help="--arch: also decompose nn.Linear layers (ttm).")
@click.option("--skip-worse", is_flag=True, help="--arch: leave dense the layers whose published order costs more.")
@click.pass_context
def emit(ctx: click.Context, scheme: str, batch: int, fold_weights: bool, class_name: str | None, out: Path | None,
         arch: str | None, **opts) -> None:
    """Write a standalone PyTorch file whose layers run the planned contraction order."""
    given = {name for name in (*LAYER_ONLY, *ARCH_ONLY)
             if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    if arch is None:
        stray = sorted(given & set(ARCH_ONLY))
        if stray:
            raise TTPlanError(f"--{stray[0].replace('_path', '').replace('_', '-')} applies to --arch only")
        source, summary = _emit_layer(opts, scheme, batch, fold_weights, class_name)
    else:
        stray = sorted(given & set(LAYER_ONLY))
        if stray:
            raise TTPlanError(f"--{stray[0].replace('_', '-')} describes one layer; with --arch the layers come "
                              "from the model (use --config for per-layer formats)")
        explicit = ctx.get_parameter_source("input_size") == ParameterSource.COMMANDLINE
        source, summary = _emit_arch(arch, opts, explicit, scheme, batch, fold_weights)
    if out is None:
        click.echo(source, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(source)
    click.echo(f"wrote {out}: {summary}")


def _emit_layer(opts: dict, scheme: str, batch: int, fold_weights: bool, name: str | None) -> tuple[str, str]:
    """Source and a one-line summary for the layer the geometry and format options describe."""
    from ttplan.runtime.codegen import class_name, emit_layer
    from ttplan.runtime.layers import resolve_plan

    for option in ("in_channels", "out_channels"):
        if opts[option] is None:
            raise click.UsageError(f"Missing option '--{option.replace('_', '-')}' (or give --arch)")
    if len(opts["input_size"]) != 2:
        raise TTPlanError(f"--input-size {','.join(map(str, opts['input_size']))}: a layer takes H or H,W")
    if name is not None and not name.isidentifier():
        raise TTPlanError(f"--class-name {name!r}: expected a Python identifier, e.g. MyTTConv")
    spec = spec_from_options(opts)
    fmt = format_from_options(spec, opts)
    plan = resolve_plan(spec, fmt, scheme, fold_weights, batch)
    name = name or class_name(plan)
    summary = (f"class {name}, {fmt.label} format, {plan.name!r} order, {plan.macs:,} MACs per forward at batch "
               f"{batch} (dense {spec.dense_macs(batch):,}), {plan.params:,} parameters")
    return emit_layer(plan, name), summary


def _emit_arch(arch: str, opts: dict, explicit_size: bool, scheme: str, batch: int,
               fold_weights: bool) -> tuple[str, str]:
    """Source and a summary for every decomposed layer of a planned architecture (`ttplan plan`'s rules)."""
    from ttplan.arch.architecture import plan_architecture
    from ttplan.arch.config import load_config
    from ttplan.arch.policy import Policy
    from ttplan.runtime.codegen import emit_model

    size = None
    if explicit_size:
        if len(opts["input_size"]) != 3:
            raise TTPlanError(f"--input-size {','.join(map(str, opts['input_size']))}: with --arch give C,H,W, "
                              "e.g. 3,224,224")
        size = opts["input_size"]
    policy = Policy(opts["kind"], opts["rank"], opts["rank_fraction"], opts["order"], opts["skip_first"],
                    opts["skip_1x1"], opts["min_channels"], opts["linear"])
    config = load_config(opts["config_path"]) if opts["config_path"] is not None else None
    planned = plan_architecture(arch, size, config, policy, batch, fold_weights, opts["skip_worse"])
    layers = []
    for layer in planned.layers:
        if not layer.decomposed:
            continue
        if scheme == "best":
            plan = layer.plan.best
        elif scheme == "published":
            plan = layer.plan.published
        elif scheme in layer.plan.schemes:
            plan = layer.plan.schemes[scheme]
        else:
            raise TTPlanError(f"--scheme {scheme}: layer {layer.name} is in the {layer.fmt.label} format, whose "
                              f"schemes are {', '.join(layer.plan.schemes)}; use best, published or dense")
        layers.append((layer.name, plan))
    if not layers:
        raise TTPlanError(f"model {arch!r}: no layer is decomposed under this policy/config, so there is nothing "
                          "to emit (try --rank 16 or --no-skip-1x1)")
    totals = planned.totals
    summary = (f"{len(layers)} TT layers of {planned.model}; model MACs {totals.tt_macs:,} vs dense "
               f"{totals.baseline_macs:,} at batch {batch}")
    return emit_model(layers, planned.model), summary


for _param in emit.params:  # the shared geometry options serve both modes
    if _param.name in ("in_channels", "out_channels"):
        _param.required = False
    if _param.name == "input_size":
        _param.type = SizeType()
        _param.help = "Layer input H x W: 28 or 28,32; with --arch the model input C,H,W (default: the preset's)."
