"""`ttplan emit`: write a standalone PyTorch file that runs a plan, for one layer or a whole architecture."""

from __future__ import annotations

import keyword
import symtable
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from ttplan.cli.objective_options import objective_options, profile_from_options, speed_options
from ttplan.cli.options import (
    arch_option,
    format_from_options,
    format_options,
    geometry_options,
    model_input_size,
    policy_from_options,
    policy_options,
    spec_from_options,
)
from ttplan.cli.output import emit_text, out_option, warn
from ttplan.core.schemes import plan_names
from ttplan.errors import TTPlanError

if TYPE_CHECKING:
    from ttplan.runtime.lowering import Lowering

LAYER_ONLY = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "bias", "tt_shapes",
              "ranks", "in_modes", "out_modes", "class_name")
ARCH_ONLY = ("config_path", "rank_fraction", "skip_first", "skip_1x1", "min_channels", "linear", "skip_worse",
             "skip_slower")

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


@click.command(epilog=EXAMPLES)
@geometry_options(required=False)
@format_options
@click.option("--scheme", type=click.Choice(plan_names()), default="best", show_default=True,
              help="Order to emit: the searched best, the format's published order, a named scheme, or dense "
                   "(rebuild the kernel, one conv).")
@click.option("--batch", "-b", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch size the order is chosen for (the code runs any batch).")
@click.option("--fold-weights", is_flag=True,
              help="Choose the order for folded weights and make the layers cache the weight-only steps.")
@click.option("--class-name", default=None, help="Class name for a single layer (default from the geometry).")
@out_option("Python file to write (default: print the source).")
@arch_option(help_suffix=" Emits every decomposed layer of it (--input-size: C,H,W, or H,W with a preset's C).")
@policy_options(with_format=False, prefix="--arch policy: ")
@objective_options
@speed_options
@click.pass_context
def emit(ctx: click.Context, scheme: str, batch: int, fold_weights: bool, class_name: str | None, out,
         arch: str | None, **opts) -> None:
    """Write a standalone PyTorch file whose layers run the planned contraction order."""
    given = {name for name in (*LAYER_ONLY, *ARCH_ONLY)
             if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    if arch is None:
        stray = sorted(given & set(ARCH_ONLY))
        if stray:
            raise TTPlanError(f"--{stray[0].replace('_path', '').replace('_', '-')} applies to --arch only")
        source, summary, warnings = _emit_layer(opts, scheme, batch, fold_weights, class_name)
    else:
        stray = sorted(given & set(LAYER_ONLY))
        if stray:
            raise TTPlanError(f"--{stray[0].replace('_', '-')} describes one layer; with --arch the layers come "
                              "from the model (use --config for per-layer formats)")
        source, summary, warnings = _emit_arch(arch, opts, scheme, batch, fold_weights)
    emit_text(source, out, f": {summary}")
    warn(warnings)


def check_class_name(name: str, source: str = "", own: str = "") -> str:
    """A usable Python class name, or a one-line error: an identifier, not a keyword, and none of the global names
    `source` (a generated file whose class is called `own`) imports, defines or reads, which the class would replace."""
    if not name.isidentifier() or keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise TTPlanError(f"--class-name {name!r}: expected a Python identifier that is not a keyword, e.g. MyTTConv")
    if name != own and name in global_names(source):
        raise TTPlanError(f"--class-name {name!r}: the generated file uses that name itself (an import, a helper or "
                          f"a builtin it calls), which the class would replace; choose another, e.g. MyTTConv")
    return name


def global_names(source: str) -> set[str]:
    """The global names Python source binds or reads: the module's own, and those its functions and classes read."""
    if not source:
        return set()
    module = symtable.symtable(source, "<emitted>", "exec")
    names = set(module.get_identifiers())
    tables = list(module.get_children())
    while tables:
        table = tables.pop()
        names.update(symbol.get_name() for symbol in table.get_symbols() if symbol.is_global())
        tables.extend(table.get_children())
    return names


def _emit_layer(opts: dict, scheme: str, batch: int, fold_weights: bool,
                name: str | None) -> tuple[str, str, list[str]]:
    """Source, a one-line summary and warnings for the layer the geometry and format options describe."""
    from ttplan.core.memory_format import memory_format_warning
    from ttplan.core.search import BOUNDED_NOTE
    from ttplan.runtime.codegen import class_name, emit_layer
    from ttplan.runtime.layers import resolve_plan

    for option in ("in_channels", "out_channels"):
        if opts[option] is None:
            raise TTPlanError(f"missing option --{option.replace('_', '-')} (or give --arch for a whole model)")
    if name is not None:
        check_class_name(name)  # the spelling before any planning; the names the file uses once it is generated
    spec = spec_from_options(opts)
    fmt = format_from_options(spec, opts)
    profile = profile_from_options(opts["profile_path"], opts["channels_last"],
                                   by_time=opts["objective"] == "latency" or opts["autotune"] is not None)
    plan = resolve_plan(spec, fmt, scheme, fold_weights, batch, opts["objective"], profile)
    from ttplan.runtime.lowering import Lowering, default_lowering

    lowering, note = default_lowering(opts["channels_last"]), ""
    if scheme == "best" and opts["objective"] == "latency" and opts["autotune"] is None and _fuse(opts):
        from ttplan.core.layer import fused_choice
        from ttplan.core.network import build_network

        fused = fused_choice(build_network(spec, fmt, batch), plan, fold_weights, profile)
        if fused is not None:
            plan, lowering, note = fused, Lowering(fused=True), "; run by the fused kernel (predicted faster)"
            missing = _kernel_missing()
            if missing:
                note = (f"; planned for the fused kernel (predicted faster), which cannot run here ({missing}): "
                        "it falls back to stock torch ops")
    if opts["autotune"] is not None and scheme == "best":
        from ttplan.runtime.autotune import autotune_layer

        tuned = autotune_layer(spec, fmt, batch, fold_weights, device=opts["autotune"], profile=profile,
                               channels_last=opts["channels_last"])
        fastest = min((t for t in tuned.timings if t.plan is not None), key=lambda t: t.ms)
        plan, lowering = fastest.plan, fastest.lowering
        note = (f"; autotuned: {fastest.ms:.3f} ms ({lowering.label}) vs dense {tuned.dense_ms:.3f} ms"
                + (" (the dense conv is faster)" if tuned.plan is None else ""))
    default = class_name(plan)
    if name is not None:
        check_class_name(name, emit_layer(plan, default, lowering), default)
    name = name or default
    summary = (f"class {name}, {fmt.label} format, {plan.name!r} order, {plan.macs:,} MACs per forward at batch "
               f"{batch} (dense {spec.dense_macs(batch):,}), {plan.params:,} parameters{note}")
    warnings = [f"{spec.describe()}: the order {BOUNDED_NOTE}"] if plan.bounded else []
    mismatch = memory_format_warning(profile, opts["channels_last"])
    return emit_layer(plan, name, _exported(lowering, opts)), summary, warnings + ([mismatch] if mismatch else [])


def _by_time(opts: dict) -> bool:
    """Whether planning the model chooses anything by predicted time (only then is the user's profile read)."""
    return opts["objective"] == "latency" or bool(opts["skip_slower"]) or opts["autotune"] is not None


def _exported(lowering: Lowering, opts: dict) -> Lowering:
    """`lowering`, keeping the fused op in torch.jit.trace / torch.export captures where --fuse was given (the
    captured model then needs ttplan); by default, and with --no-fuse, captures hold stock ops only."""
    from dataclasses import replace

    return replace(lowering, export_fused=lowering.fused and opts["fuse"] is True)


def _kernel_missing() -> str | None:
    """Why the fused kernel cannot run here, or None where it builds and loads (built once, if need be)."""
    from ttplan.runtime.kernels import kernel_status

    status = kernel_status()
    return None if status.available else status.detail.removesuffix(": stock torch ops are used")


def _fuse(opts: dict) -> bool:
    """`--fuse/--no-fuse`, by default on where a C compiler is found and maps are NCHW."""
    from ttplan.runtime.kernels.build import fusion_wanted

    return fusion_wanted(opts["fuse"], opts["channels_last"])


def _emit_arch(arch: str, opts: dict, scheme: str, batch: int, fold_weights: bool) -> tuple[str, str, list[str]]:
    """Source, a summary and warnings for every decomposed layer of a planned architecture (`ttplan plan`'s rules)."""
    from ttplan.arch.architecture import plan_architecture
    from ttplan.arch.request import bounded_note
    from ttplan.core.memory_format import memory_format_warning
    from ttplan.runtime.codegen import emit_model
    from ttplan.runtime.lowering import Lowering

    policy = policy_from_options(opts)
    planned = plan_architecture(arch, model_input_size(arch, opts["input_size"]), opts["config_path"], policy, batch,
                                fold_weights, opts["skip_worse"], objective=opts["objective"],
                                profile=profile_from_options(opts["profile_path"], opts["channels_last"],
                                                             by_time=_by_time(opts)),
                                skip_slower=opts["skip_slower"],
                                autotune=opts["autotune"], channels_last=opts["channels_last"], fused=opts["fuse"])
    layers = planned.plans(scheme)
    if not layers:
        if any(layer.slower_than_dense for layer in planned.layers):
            raise TTPlanError(f"model {arch!r}: every TT layer is predicted slower than its dense conv at batch {batch}"
                              ", so --skip-slower keeps them all dense and there is nothing to emit; plan at the "
                              "batch you run (e.g. --batch 32) or add --no-skip-slower")
        raise TTPlanError(f"model {arch!r}: no layer is decomposed under this policy/config, so there is nothing "
                          "to emit (try --rank 16 or --no-skip-1x1)")
    totals = planned.totals
    summary = (f"{len(layers)} TT layers of {planned.model}; model MACs {totals.tt_macs:,} vs dense "
               f"{totals.baseline_macs:,} at batch {batch}; predicted {totals.tt_ms:.2f} ms vs dense "
               f"{totals.baseline_ms:.2f} ms")
    slower = [layer.name for layer in planned.layers if layer.slower_than_dense and not layer.decomposed]
    if slower:
        summary += f"; kept dense as slower: {', '.join(slower)}"
    lowerings = {name: _exported(Lowering(**lowering), opts) for name, lowering in planned.lowerings().items()}
    profile = next(layer.plan.profile for layer in planned.layers if layer.plan is not None)  # what planned them
    warnings = [line for line in (bounded_note(planned), memory_format_warning(profile, opts["channels_last"]))
                if line is not None]
    fused = sum(lowering.fused for lowering in lowerings.values())
    missing = _kernel_missing() if fused else None
    if missing:
        summary += (f"; {fused} layers planned for the fused kernel, which cannot run here ({missing}): they fall "
                    "back to stock torch ops")
    return emit_model(layers, planned.model, lowerings, channels_last=planned.channels_last), summary, warnings
