"""`ttplan train`: ADMM training towards a layer config, decomposition into TT layers, fine-tuning."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from ttplan.cli.main import Interrupted
from ttplan.cli.options import arch_option, device_options, policy_from_options, policy_options
from ttplan.errors import TTPlanError
from ttplan.training.config import BASELINES, DEVICES, TrainConfig
from ttplan.training.datasets import DATASETS, EVAL_SPLITS, FASHION_DIR, dataset_key
from ttplan.training.run_folder import CHECKPOINT
from ttplan.training.schedule import SCHEDULES

#: the policy options, spelled as `ttplan plan` spells them
POLICY_OPTIONS = ("kind", "rank", "rank_fraction", "order", "skip_first", "skip_1x1", "min_channels", "linear")
#: the options beside --config that choose the layer formats (recorded in the run: refused on resume)
LAYER_OPTIONS = (*POLICY_OPTIONS, "unnamed")
#: dense epochs of a run that starts from random weights (with --init: none)
DEFAULT_PRETRAIN_EPOCHS = 10
#: CLI parameter name -> TrainConfig field, where they differ
FIELDS = {"config_path": "config", "init_path": "init"}

EXAMPLE = """
Examples:

\b
  ttplan train --arch resnet20 --dataset digits --config ranks.json \\
      --pretrain-epochs 10 --admm-epochs 20 --finetune-epochs 10 --rho 1e-3 --out runs/r20
  ttplan train --arch resnet20 --admm-epochs 20 --out runs/r20_policy    # no config: ttplan plan's policy
  ttplan train --arch resnet20 --config ranks.json --unnamed policy --out runs/r20_mixed  # + the policy elsewhere
  ttplan train --arch resnet32 --dataset fashion-mnist --config ranks.json --out runs/fm
  ttplan train --arch mynet:build --dataset mydata:load --init mynet.pt --config budget.json --out runs/mine
  ttplan train --resume runs/r20                  # continue, exactly as recorded (from any directory)
  ttplan train --resume runs/r20 --lr 0.01        # a deliberate change, recorded in metrics.json
  torchrun --nproc_per_node 2 -m ttplan train ...      # data-parallel (gloo on CPU, nccl on GPU)

The run folder gets checkpoint.pt (every epoch), metrics.json, dense.pt, model_tt.pt, plan.json and curves.png.
--out must be a new or empty folder. On --resume only --lr, --finetune-lr, the epoch counts (of epochs not yet
run), --device and --threads may change; every other setting is the run's own.
"""


def _click_progress(label: str, length: int):
    """One click progress bar per epoch, on stderr."""
    return click.progressbar(length=length, label=label, file=sys.stderr, show_eta=True)


@click.command("train", epilog=EXAMPLE)
@arch_option("resnet20")
@click.option("--dataset", default=DATASETS[0], show_default=True, callback=lambda _c, _p, v: _dataset(v),
              help="digits: scikit-learn's bundled 8x8 digits, normalised by the training split's mean and std; "
                   "fashion-mnist: the idx files of Debian's dataset-fashion-mnist (or --data-dir), normalised by "
                   "the training images' mean and std; cifar10: python batches in --data-dir, normalised per "
                   "channel by the training set's mean and std; or module:callable returning (train, test) torch "
                   "Datasets (or a dict with train, test and optionally validation), used as they are.")
@click.option("--data-dir", type=click.Path(), default=None,
              help="fashion-mnist: folder with the four idx files (.gz or plain; default "
                   f"{FASHION_DIR}); cifar10: cifar-10-batches-py or its parent.")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="Images are resized to this square size (default: 28 for fashion-mnist, 32 otherwise).")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Random crop (4-pixel padding) + horizontal flip of the training images (fashion-mnist, "
                   "cifar10; never for evaluation).")
@click.option("--train-subset", type=click.IntRange(min=1), default=None,
              help="Train on this many fixed training images (never from the validation split).")
@click.option("--eval-split", type=click.Choice(list(EVAL_SPLITS)), default="test", show_default=True,
              help="validation: evaluate on the fixed validation split of the training images (to choose ρ "
                   "or the learning rate) and train on the rest.")
@click.option("--config", "config_path", type=click.Path(), default=None,
              help="Layer config (JSON/YAML, or the JSON of `ttplan plan --json`): layer name -> {format, tt_shapes, "
                   "ranks} or {format, in_modes, out_modes, rank}; the layers it does not name stay dense unless "
                   "--unnamed policy. Without it: the policy options below.")
@policy_options(with_config=False, with_skip_worse=False, prefix="Policy: ")
@click.option("--pretrain-epochs", type=click.IntRange(min=0), default=None,
              help="Dense epochs before ADMM (default: 10, or 0 with --init: the weights given are the start).")
@click.option("--admm-epochs", type=click.IntRange(min=0), default=20, show_default=True,
              help="ADMM epochs (with --baseline direct: the same number of dense epochs without the penalty).")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--rho", type=click.FloatRange(min=0, min_open=True), default=None,
              help="ADMM penalty ρ of the first ADMM epoch. Default: set from the learning rate, momentum and "
                   "steps per epoch, growing each epoch (docs/training.md).")
@click.option("--rho-growth", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Multiply ρ by this after every ADMM epoch (default: the auto schedule's growth; 1 with --rho).")
@click.option("--admm-updates-per-epoch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Update ADMM's Z and U this many times per ADMM epoch, evenly spaced (for long epochs).")
@click.option("--distill/--no-distill", default=None,
              help="Fine-tune towards the dense model as it was before ADMM (knowledge distillation). "
                   "Default: on where dense weights exist (pretraining epochs or --init).")
@click.option("--distill-temperature", type=click.FloatRange(min=0, min_open=True), default=4.0,
              show_default=True, help="Distillation temperature T.")
@click.option("--distill-weight", type=click.FloatRange(min=0, max=1), default=0.5, show_default=True,
              help="Weight w of the distillation term: (1 - w)·CE + w·T²·KL.")
@click.option("--balance/--no-balance", default=True, show_default=True,
              help="Equal the norms of each decomposed layer's cores before fine-tuning (off: to measure it).")
@click.option("--lr-schedule", type=click.Choice(SCHEDULES), default="batch", show_default=True,
              help="batch: a short warm-up, then cosine to 0, stepped per batch; epoch: cosine stepped per epoch, "
                   "no warm-up (ttplan 0.2's; to measure the difference).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.05, show_default=True,
              help="SGD learning rate (per batch: a short warm-up, then cosine to 0 within each phase).")
@click.option("--finetune-lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate while fine-tuning the TT model (default: a tenth of --lr where it starts from "
                   "trained weights, i.e. after pretraining, --init or ADMM; else --lr).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Global batch size (split over torchrun processes).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--init", "init_path", type=click.Path(), default=None,
              help="Start from dense weights: a run folder (its dense.pt), a .pt checkpoint or a state_dict.")
@click.option("--baseline", type=click.Choice(BASELINES), default="admm", show_default=True,
              help="direct: same epochs, but the dense weights are decomposed without ADMM.")
@click.option("--max-batches", type=click.IntRange(min=1), default=None,
              help="Cap the batches per epoch (quick trials).")
@click.option("--out", "out_dir", type=click.Path(), default=None, help="Run folder to create (new or empty).")
@click.option("--resume", "resume_dir", type=click.Path(), default=None,
              help="Continue the run in this folder from its last checkpoint, with its recorded settings.")
@device_options(DEVICES)
@click.pass_context
def train_command(ctx: click.Context, out_dir: str | None, resume_dir: str | None, **opts) -> None:
    """Train with ADMM towards TT formats (a layer config, or plan's policy), decompose, fine-tune."""
    if resume_dir is not None and out_dir is not None:
        raise click.UsageError("give either --out (a new run) or --resume (an existing one), not both")
    if resume_dir is None and out_dir is None:
        raise click.UsageError("no run folder: add --out RUN_DIR (or --resume RUN_DIR to continue one)")
    run_dir = Path(resume_dir or out_dir)
    from ttplan.training.run import resume, train  # torch: loaded only when a run starts, not for --help

    try:
        if resume_dir is not None:
            given = [name for name in opts if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
            metrics = resume(resume_dir, options=_resume_options(opts, given), progress=_click_progress,
                             on_epoch_end=_epoch_line)
        else:
            metrics = train(_config(opts), out_dir, progress=_click_progress, on_epoch_end=_epoch_line)
    except KeyboardInterrupt:
        raise Interrupted(_where_to_resume(run_dir)) from None
    _summary(metrics, run_dir)


def _dataset(value: str) -> str:
    """The --dataset value in its canonical spelling, or a usage error naming what is accepted."""
    try:
        return dataset_key(value)
    except TTPlanError as error:
        raise click.BadParameter(str(error)) from None


def _config(opts: dict) -> TrainConfig:
    """The run's config from the parsed options (the policy options as `ttplan plan` reads them)."""
    fields = {FIELDS.get(name, name): value for name, value in opts.items() if name not in POLICY_OPTIONS}
    if fields["pretrain_epochs"] is None:
        fields["pretrain_epochs"] = 0 if fields["init"] is not None else DEFAULT_PRETRAIN_EPOCHS
    return TrainConfig(**fields, policy=policy_from_options(opts).to_dict())


def _epoch_line(end) -> None:
    """One line on stderr after each epoch: accuracy, and while ADMM runs ρ and the distances to the format."""
    if not end.ctx.is_main:
        return
    record = end.record
    line = f"epoch {record['epoch']} {record['phase']}: accuracy {100 * record['accuracy']:.2f}%"
    if record.get("rho") is not None:
        line += f", rho {record['rho']:.3g}"
    summary = record.get("distance_summary")
    if summary:
        line += (f", ||W - Z||/||W|| min {summary['min']:.4f} median {summary['median']:.4f} "
                 f"max {summary['max']:.4f}")
    click.echo(line, err=True)


def _where_to_resume(run_dir: Path) -> str:
    """What Ctrl-C leaves: the run folder to resume from, or that no epoch was saved yet."""
    if (run_dir / CHECKPOINT).is_file():
        return (f"the run folder {run_dir} keeps its last finished epoch; continue with "
                f"`ttplan train --resume {run_dir}`")
    return f"no epoch had finished, so {run_dir} holds no checkpoint yet; start the run again"


def _resume_options(opts: dict, given: list[str]) -> dict:
    """The settings given on the command line of a resume, as TrainConfig fields (the library checks them)."""
    out = {FIELDS.get(name, name): opts[name] for name in given if name not in LAYER_OPTIONS}
    chosen = [name for name in given if name in LAYER_OPTIONS]
    if chosen:
        raise TTPlanError(f"--{_flag_name(chosen[0])}: the layer formats are recorded in the run and cannot "
                          "change on resume; start a new run with --out")
    return out


def _summary(metrics: dict, run_dir: Path) -> None:
    """A few lines on stdout: accuracies, approximation error, planned cost (rank 0 only)."""
    import os

    if os.environ.get("RANK", "0") != "0":
        return
    final = metrics["final"]

    def pct(value) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    lines = [f"run folder {run_dir}   {final.get('epochs')} epochs   baseline {final.get('baseline')}"]
    if "accuracy_dense" in final:
        lines.append(f"accuracy: start {pct(final.get('accuracy_start'))} -> before decomposition "
                     f"{pct(final['accuracy_dense'])} -> decomposed {pct(final['accuracy_decomposed'])} -> "
                     f"fine-tuned {pct(final.get('accuracy_finetuned'))}")
        lines.append(f"relative approximation error ||W - W_tt||/||W||: mean {final['approximation_error_mean']:.4f},"
                     f" max {final['approximation_error_max']:.4f}")
        planned = final.get("planned", {})
        if "macs" in planned:
            lines.append(f"planned: {planned['macs']:,} MACs (dense {planned['dense_macs']:,}, "
                         f"{100 * planned['macs_reduction']:.1f}% less), {planned['params']:,} params "
                         f"(dense {planned['dense_params']:,}, {100 * planned['params_reduction']:.1f}% less)")
    else:
        lines.append(f"accuracy: start {pct(final.get('accuracy_start'))} -> {pct(final.get('accuracy'))}")
    click.echo("\n".join(lines))



def _flag_name(name: str) -> str:
    """The option as typed: `kind` is `format`, underscores are dashes."""
    return "format" if name == "kind" else name.replace("_", "-")
