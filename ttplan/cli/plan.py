"""`ttplan plan ARCH`: plan every conv layer of an architecture, print the table and the model totals."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from ttplan.arch.architecture import plan_architecture
from ttplan.arch.budget import prepare_budget
from ttplan.arch.config import load_config, save_config
from ttplan.arch.policy import CONV_FORMATS, DEFAULT_RANK_FRACTION, Policy
from ttplan.arch.report import render_csv, render_json, render_markdown, render_text
from ttplan.cli.objective_options import objective_options, profile_from_options, speed_options
from ttplan.cli.options import INTS
from ttplan.errors import TTPlanError
from ttplan.models import PRESETS

DEFAULT_ARCH = "resnet18"

EXAMPLES = f"""
ARCH is a preset ({', '.join(PRESETS)}; default {DEFAULT_ARCH}) or module:callable returning an
nn.Module (then give --input-size). Costs are MACs; FLOPs = 2 x MACs.

\b
Examples:
  ttplan plan resnet18                                  # default policy
  ttplan plan resnet56 --config my_ranks.json           # per-layer formats and ranks
  ttplan plan mypkg.nets:build --input-size 3,224,224   # any model
  ttplan plan resnet50 --no-skip-1x1 --rank 16 --markdown --out reports/r50.md
  ttplan plan resnet32 --target-macs-reduction 0.72 --target-params-reduction 0.80 \\
      --save-config reports/configs/resnet32_budget.json

\b
Config file (JSON or YAML; '.weight' suffixes accepted; format defaults to hodec):
  {{"layer3.0.conv1": {{"format": "hodec", "tt_shapes": [8,8,9,4,8], "ranks": [1,8,32,32,8,1]}},
   "layer3.0.conv2": {{"format": "hodec", "in_modes": [4,4,4], "out_modes": [4,4,4], "rank": 16}},
   "linear": {{"format": "dense"}}}}
"""


def _input_size(value: tuple[int, ...] | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    if len(value) != 3:
        raise TTPlanError(f"--input-size {','.join(map(str, value))}: expected three ints C,H,W, e.g. 3,224,224")
    return value  # type: ignore[return-value]


def _output_kind(output: str | None, out: Path | None) -> str:
    """The flag's format, else the --out suffix's, else text."""
    if output:
        return output
    if out is not None:
        return {".md": "markdown", ".json": "json", ".csv": "csv"}.get(out.suffix.lower(), "text")
    return "text"


@click.command(epilog=EXAMPLES)
@click.argument("arch", required=False, default=DEFAULT_ARCH)
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="JSON/YAML file of per-layer formats and ranks; layers it does not name follow the policy.")
@click.option("--input-size", type=INTS, default=None,
              help="Input C,H,W, e.g. 3,224,224 (presets have their own; required for module:callable).")
@click.option("--format", "kind", type=click.Choice(CONV_FORMATS), default="hodec", show_default=True,
              help="Policy: TT format of the conv layers no config covers (linear layers use ttm).")
@click.option("--rank", "-r", type=click.IntRange(min=1), default=None,
              help="Policy: uniform rank R (clipped at small boundary modes); replaces --rank-fraction.")
@click.option("--rank-fraction", type=click.FloatRange(0, 1, min_open=True), default=DEFAULT_RANK_FRACTION,
              show_default=True, help="Policy: each rank as this fraction of the exact TT rank at its cut.")
@click.option("--order", "-d", type=click.IntRange(min=1), default=None,
              help="Policy: modes per side (balanced factors; default 3, tucker2 1).")
@click.option("--skip-first/--no-skip-first", default=True, show_default=True, help="Keep the first conv dense.")
@click.option("--skip-1x1/--no-skip-1x1", default=True, show_default=True,
              help="Keep 1x1 convs (shortcut/downsample, bottleneck ends) dense.")
@click.option("--min-channels", type=click.IntRange(min=1), default=1, show_default=True,
              help="Keep layers with fewer than N input or output channels dense.")
@click.option("--linear", is_flag=True, help="Also decompose nn.Linear layers (TT-matrix, ttm).")
@click.option("--batch", "-b", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size B.")
@click.option("--fold-weights", is_flag=True, help="Weights folded at load time: weight-only steps cost nothing.")
@click.option("--skip-worse", is_flag=True,
              help="Leave dense every layer whose published order costs more MACs or params than dense.")
@click.option("--target-macs-reduction", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Budget: model-level MACs (= FLOPs) reduction to reach, e.g. 0.72.")
@click.option("--target-params-reduction", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Budget: model-level parameter reduction to reach, e.g. 0.80.")
@click.option("--target-speedup", type=click.FloatRange(1, min_open=True), default=None,
              help="Budget: predicted speedup of the conv/linear layers to reach, e.g. 1.5 (instead of a MACs target).")
@objective_options
@speed_options
@click.option("--search-format", is_flag=True,
              help="Budget: also search the number of modes (1-3 a side) and their factorisation.")
@click.option("--save-config", type=click.Path(path_type=Path), default=None,
              help="Write the planned formats as a reusable config (JSON, or YAML for .yaml).")
@click.option("--json", "output", flag_value="json", help="Write JSON.")
@click.option("--csv", "output", flag_value="csv", help="Write CSV.")
@click.option("--markdown", "output", flag_value="markdown", help="Write Markdown.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Save the report here (format from the flag or the suffix: .md, .json, .csv).")
@click.pass_context
def plan(ctx: click.Context, arch: str, config_path: Path | None, input_size, kind: str, rank: int | None,
         rank_fraction: float, order: int | None, skip_first: bool, skip_1x1: bool, min_channels: int,
         linear: bool, batch: int, fold_weights: bool, skip_worse: bool, target_macs_reduction: float | None,
         target_params_reduction: float | None, target_speedup: float | None, objective: str, profile_path,
         skip_slower: bool | None, autotune: str | None, search_format: bool, save_config: Path | None,
         output: str | None, out: Path | None) -> None:
    """Plan every conv layer of an architecture: per-layer costs, then model totals and FLOPs↓/params↓."""
    if rank is not None and ctx.get_parameter_source("rank_fraction") == ParameterSource.COMMANDLINE:
        raise TTPlanError("--rank and --rank-fraction both given: use one (a uniform rank or a fraction)")
    budget = target_macs_reduction is not None or target_params_reduction is not None or target_speedup is not None
    profile = profile_from_options(profile_path)
    if search_format and not budget:
        raise TTPlanError("--search-format needs a budget: add --target-macs-reduction and/or "
                          "--target-params-reduction")
    policy = Policy(kind, rank, rank_fraction, order, skip_first, skip_1x1, min_channels, linear)
    config = load_config(config_path) if config_path is not None else None
    size = _input_size(input_size)
    extra = None
    if budget:
        problem = prepare_budget(arch, size, target_macs_reduction=target_macs_reduction,
                                 target_params_reduction=target_params_reduction, policy=policy, config=config,
                                 search_format=search_format, batch=batch, fold_weights=fold_weights,
                                 target_speedup=target_speedup, objective=objective, profile=profile)
        with click.progressbar(length=len(problem.jobs), label="costing candidate formats", file=sys.stderr,
                               show_pos=True) as bar:
            result = problem.solve(progress=bar.update)
        result_plan, extra = result.plan, {"budget": result.to_dict()}
        if not result.met:
            click.echo(result.message, err=True)
        formats = result.formats
    else:
        result_plan = plan_architecture(arch, size, config, policy, batch, fold_weights, skip_worse,
                                        objective=objective, profile=profile, skip_slower=skip_slower,
                                        autotune=autotune)
        formats = result_plan.formats()
    if config_path is not None:
        result_plan.notes.insert(0, f"config: {config_path}")
    if save_config is not None:
        save_config_path = save_config_file(formats, result_plan.specs(), save_config)
        result_plan.notes.append(f"config written to {save_config_path}")
    kind_out = _output_kind(output, out)
    if kind_out == "json":
        text = render_json(result_plan, extra)
    elif kind_out == "csv":
        text = render_csv(result_plan)
    elif kind_out == "markdown":
        text = render_markdown(result_plan, f"ttplan plan {arch}" + (" (budget)" if budget else ""))
    else:
        text = render_text(result_plan)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text if text.endswith("\n") else text + "\n")
        click.echo(f"wrote {out}")
        for line in result_plan.notes:
            click.echo(line)
    else:
        click.echo(text)


def save_config_file(formats, specs, path: Path) -> Path:
    """Write the config; an unwritable path is a one-line error."""
    try:
        return save_config(formats, specs, path)
    except OSError as error:
        raise TTPlanError(f"--save-config {path}: cannot write it ({error.strerror or error})") from error
