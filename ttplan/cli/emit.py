"""`ttplan emit`: write a standalone PyTorch file that runs a plan, for one layer or a whole architecture."""

from __future__ import annotations

import keyword
import symtable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from ttplan.cli.objective_options import objective_options, profile_from_options, speed_options
from ttplan.cli.options import (
    arch_option,
    budget_options,
    format_from_options,
    format_options,
    geometry_options,
    model_input_size,
    plan_choices,
    policy_options,
    spec_from_options,
)
from ttplan.cli.output import emit_text, out_option, warn
from ttplan.core.schemes import plan_names
from ttplan.errors import TTPlanError

if TYPE_CHECKING:  # planning and the weights import torch: loaded only when a file is emitted
    from ttplan.arch.architecture import ArchPlan
    from ttplan.runtime.lowering import Lowering
    from ttplan.training.trained import Trained

LAYER_ONLY = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "bias", "tt_shapes",
              "ranks", "in_modes", "out_modes", "class_name")
ARCH_ONLY = ("config_path", "unnamed", "rank_fraction", "skip_first", "skip_1x1", "min_channels", "linear",
             "skip_worse", "skip_slower", "target_macs_reduction", "target_params_reduction", "target_speedup",
             "search_format", "weights")
#: options that choose the formats: a run's `--weights` fixes them (the run's recorded formats) instead
CHOOSERS = ("config_path", "unnamed", "kind", "rank", "rank_fraction", "order", "skip_first", "skip_1x1",
            "min_channels", "linear", "target_macs_reduction", "target_params_reduction", "target_speedup",
            "search_format")

EXAMPLES = """
Examples:

\b
  # ResNet-18 layer3.0.conv1, hodec at uniform rank 16, the best order at batch 32
  ttplan emit --in-channels 128 --out-channels 256 --kernel-size 3 --stride 2 --padding 1 \\
      --input-size 28 --tt-shapes 4,8,8,9,4,4,8 --ranks 1,16,16,16,16,16,16,1 --batch 32 --out layer.py
  # the classical order of a classical format
  ttplan emit -i 64 -o 64 -p 1 --format classical --rank 16 --scheme classical --out classical.py
  # every decomposed layer of an architecture (policy, config and budget as in `ttplan plan`)
  ttplan emit --arch resnet18 --rank 16 --out resnet18_tt.py
  ttplan emit --arch mynet:build --input-size 1,28,28 --target-macs-reduction 0.7 --out mynet_tt.py
  # a trained run: its recorded formats, its trained cores in mynet_tt.pt beside the file
  ttplan emit --arch mynet:build --input-size 1,28,28 --weights runs/mine --out mynet_tt.py

The file imports torch only; a single layer's `__all__` names its one class, an architecture's file adds
`LAYERS` and `convert(model, weights=None)`; with --weights also `load(model)`, the trained model.
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
@budget_options(prefix="--arch budget: ")
@objective_options
@speed_options
@click.option("--weights", default=None, metavar="RUN|FILE",
              help="With --arch: trained weights to ship with the file: a train run folder (or its model_tt.pt), "
                   "whose recorded formats the file then plans, or a .pt holding a dense or TT state_dict. Written "
                   "beside --out as FILE.pt; the file's load(model) returns the trained model.")
@click.pass_context
def emit(ctx: click.Context, scheme: str, batch: int, fold_weights: bool, class_name: str | None, out,
         arch: str | None, weights: str | None, **opts) -> None:
    """Write a standalone PyTorch file whose layers run the planned contraction order."""
    given = {name for name in (*LAYER_ONLY, *ARCH_ONLY, *CHOOSERS)
             if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    trained = None
    if weights is not None:
        from ttplan.training.trained import read_trained

        if out is None:
            raise TTPlanError(f"--weights {weights} needs --out FILE.py: the weights are written beside it")
        if out.suffix == ".pt":
            raise TTPlanError(f"--out {out}: the weights go to {out.name} beside the Python file; give a .py file")
        trained = read_trained(weights)
        arch = arch or trained.arch  # a run knows its model
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
        if trained is not None and trained.formats is not None:
            chosen = sorted(given & set(CHOOSERS))
            if chosen:
                raise TTPlanError(f"--{_flag(chosen[0])} and --weights {weights} both given: the run fixes every "
                                  "layer's format (the formats it trained), so drop --"
                                  f"{_flag(chosen[0])}; --objective, --skip-slower and --skip-worse may still keep "
                                  "layers dense")
        source, summary, warnings = _emit_arch(arch, opts, scheme, batch, fold_weights, trained, out)
    emit_text(source, out, f": {summary}")
    warn(warnings)


def _flag(name: str) -> str:
    """The command-line spelling of an option's parameter name."""
    return {"config_path": "config", "kind": "format"}.get(name, name.replace("_", "-"))


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
    from ttplan.core.search import BOUNDED_NOTE
    from ttplan.latency.machine import profile_warnings
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
        from ttplan.latency.autotune import autotune_layer

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
    warnings += profile_warnings(profile, opts["channels_last"])
    return emit_layer(plan, name, _exported(lowering, opts)), summary, warnings


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
    from ttplan.core.fusion import fusion_wanted
    from ttplan.runtime.kernels.build import find_compiler

    return fusion_wanted(opts["fuse"], opts["channels_last"], opts["fuse"] is None and find_compiler() is not None)


def _emit_arch(arch: str, opts: dict, scheme: str, batch: int, fold_weights: bool, trained: Trained | None = None,
               out: Path | None = None) -> tuple[str, str, list[str]]:
    """Source, a summary and warnings for every decomposed layer of an architecture planned as `ttplan plan` plans
    it (`PlanRequest`: policy, config or budget); with `trained` weights, also write them beside `out`."""
    from ttplan.arch.request import PlanRequest, run_request
    from ttplan.cli.plan import click_progress
    from ttplan.runtime.codegen import emit_model
    from ttplan.runtime.lowering import Lowering

    size = model_input_size(arch, opts["input_size"])
    layer_config = None
    if trained is not None and trained.formats is not None:  # exactly the run's formats, every other layer dense
        from ttplan.models import load_model, trace_layers
        from ttplan.training.trained import recorded_config

        if size is None and trained.input_size is not None and arch == trained.arch:
            size = trained.input_size
        model, size = load_model(arch, size)
        layer_config = recorded_config(trained, trace_layers(model, size))
    request = PlanRequest.with_choices(arch, plan_choices(opts), input_size=size, batch=batch,
                                       fold_weights=fold_weights, objective=opts["objective"],
                                       profile_path=opts["profile_path"], skip_slower=opts["skip_slower"],
                                       autotune=opts["autotune"], channels_last=opts["channels_last"],
                                       fused=opts["fuse"], layer_config=layer_config)
    outcome = run_request(request, progress=click_progress if request.budget else None)
    if outcome.unmet:
        click.echo(outcome.unmet, err=True)
    planned = outcome.plan
    layers = planned.plans(scheme)
    if not layers:
        if any(layer.slower_than_dense for layer in planned.layers):
            how = "measured (--autotune)" if opts["autotune"] else "predicted"
            raise TTPlanError(f"model {arch!r}: every TT layer is {how} slower than its dense conv at batch {batch}"
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
    weights_name = None
    if trained is not None:
        assert out is not None
        weights_path = out.with_suffix(".pt")
        summary += "; " + _write_weights(trained, arch, planned, weights_path)
        weights_name = weights_path.name
    lowerings = {name: _exported(Lowering(**lowering), opts) for name, lowering in planned.lowerings().items()}
    fused = sum(lowering.fused for lowering in lowerings.values())
    missing = _kernel_missing() if fused else None
    if missing:
        summary += (f"; {fused} layers planned for the fused kernel, which cannot run here ({missing}): they fall "
                    "back to stock torch ops")
    source = emit_model(layers, planned.model, lowerings, channels_last=planned.channels_last, weights=weights_name)
    return source, summary, outcome.warnings


def _write_weights(trained: Trained, arch: str, planned: ArchPlan, path: Path) -> str:
    """Write `trained` as the state_dict of the model `planned` emits (`ttplan.training.trained`); says what it did."""
    from ttplan.files import atomic_torch_save, written
    from ttplan.models import load_model
    from ttplan.training.trained import emitted_state, trained_formats

    model, _ = load_model(arch, planned.input_size)
    specs = planned.specs()
    source = trained_formats(trained, {layer.name: layer.fmt or layer.rejected for layer in planned.layers}, specs)
    emitted = {layer.name: layer.fmt for layer in planned.layers if layer.fmt is not None}
    if trained.formats is not None:  # the run's config was planned: every TT layer in the format it trained
        differ = [name for name, fmt in emitted.items() if trained.formats.get(name) != fmt]
        if differ:
            raise TTPlanError(f"{trained.where()}: layer {differ[0]!r} was planned in another format than the run "
                              f"trained ({emitted[differ[0]]} vs {trained.formats.get(differ[0])})")
    state = emitted_state(trained, model, specs, source, emitted)
    replaced = atomic_torch_save(state, path)
    copied = sum(1 for name, fmt in emitted.items() if source.get(name) == fmt)
    rebuilt = [name for name in source if name not in emitted]
    words = [f"{copied} TT layers' trained cores" if copied else "",
             f"{len(emitted) - copied} decomposed from trained dense kernels" if len(emitted) > copied else "",
             f"{len(rebuilt)} kept dense with the kernels their trained cores rebuild" if rebuilt else ""]
    return f"{written(path, replaced)} ({', '.join(w for w in words if w)})"
