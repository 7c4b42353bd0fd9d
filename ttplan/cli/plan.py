"""`ttplan plan ARCH`: plan every conv layer of an architecture, print the table and the model totals."""

from __future__ import annotations

import sys

import click

from ttplan.cli.objective_options import objective_options, speed_options
from ttplan.cli.options import (
    ArchName,
    budget_options,
    input_size_option,
    model_input_size,
    plan_choices,
    policy_options,
)
from ttplan.cli.output import emit_text, out_option, output_options, warn
from ttplan.errors import TTPlanError
from ttplan.files import written

DEFAULT_ARCH = "resnet18"

EXAMPLES = f"""
ARCH (or --arch ARCH) is a preset (resnet18, resnet20, resnet32, resnet50, resnet56, vgg16, ...; default
{DEFAULT_ARCH}) or module:callable returning an nn.Module (then give --input-size C,H,W). Costs are MACs;
FLOPs = 2 x MACs. The default table fits 120 columns; --wide, --json, --csv and --markdown give every column.

\b
Examples:
  ttplan plan resnet18                                  # default policy
  ttplan plan resnet56 --config my_ranks.json           # per-layer formats and ranks, every other layer dense
  ttplan plan resnet56 --config my_ranks.json --unnamed policy   # ... every other layer by the policy
  ttplan plan mypkg.nets:build --input-size 3,224,224   # any model
  ttplan plan resnet50 --no-skip-1x1 --rank 16 --markdown --out reports/r50.md
  ttplan plan resnet32 --target-macs-reduction 0.72 --target-params-reduction 0.80 \\
      --save-config reports/configs/resnet32_budget.json

\b
Config file (JSON or YAML; '.weight' suffixes accepted; format defaults to hodec; the JSON of --json is one too):
  {{"layer3.0.conv1": {{"format": "hodec", "tt_shapes": [8,8,9,4,8], "ranks": [1,8,32,32,8,1]}},
   "layer3.0.conv2": {{"format": "hodec", "in_modes": [4,4,4], "out_modes": [4,4,4], "rank": 16}},
   "linear": {{"format": "dense"}}}}
"""


def click_progress(label: str, length: int):
    """A click progress bar on stderr (the `Progress` the library's long steps accept)."""
    return click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True)


@click.command(epilog=EXAMPLES)
@click.argument("arch_argument", metavar="[ARCH]", type=ArchName(), required=False, default=None)
@click.option("--arch", type=ArchName(), default=None, help="The model, as ARCH (either spelling).")
@input_size_option(None, "Model input C,H,W, or H,W with a preset's C (default: the preset's; required for "
                         "module:callable).")
@policy_options(prefix="Policy: ")
@click.option("--batch", "-b", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size B.")
@click.option("--fold-weights", is_flag=True, help="Weights folded at load time: weight-only steps cost nothing.")
@budget_options
@objective_options
@speed_options
@out_option("Write the planned formats as a reusable config (JSON, or YAML for .yaml).", "--save-config")
@output_options(wide=True)
def plan(arch_argument: str | None, arch: str | None, input_size, batch: int, fold_weights: bool, objective: str,
         profile_path, skip_slower: bool | None, autotune: str | None, channels_last: bool, fuse: bool | None,
         save_config, output: str | None, out, wide: bool, **choices) -> None:
    """Plan every conv layer of an architecture: per-layer costs, then model totals and FLOPs↓/params↓."""
    from ttplan.arch.report import render
    from ttplan.arch.request import PlanRequest, run_request, save_plan_config

    if arch_argument is not None and arch is not None and arch_argument != arch:
        raise TTPlanError(f"two models given: ARCH {arch_argument!r} and --arch {arch!r}; give one")
    name = arch_argument or arch or DEFAULT_ARCH
    request = PlanRequest.with_choices(name, plan_choices(choices), input_size=model_input_size(name, input_size),
                                       batch=batch, fold_weights=fold_weights, objective=objective,
                                       profile_path=profile_path, skip_slower=skip_slower, autotune=autotune,
                                       channels_last=channels_last, fused=fuse)
    outcome = run_request(request, progress=click_progress)
    warn(outcome.warnings)
    if outcome.unmet:
        click.echo(outcome.unmet, err=True)
    if save_config is not None:
        replaced = save_plan_config(outcome, save_config)
        click.echo(written(save_config, replaced), err=True)
    title = f"ttplan plan {name}" + (" (budget)" if request.budget else "")
    emit_text(render(outcome.plan, output or "text", extra=outcome.extra, title=title, wide=wide), out)
