"""`ttplan train`: ADMM training towards a layer config, decomposition into TT layers, fine-tuning."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ttplan.training.data import DATASETS, EVAL_SPLITS, FASHION_DIR
from ttplan.training.run import BASELINES, DEVICES, TrainConfig, resume, train

EXAMPLE = """
Examples:

\b
  ttplan train --arch resnet20 --dataset digits --config ranks.json \\
      --pretrain-epochs 10 --admm-epochs 20 --finetune-epochs 10 --rho 1e-3 --out runs/r20
  ttplan train --arch resnet32 --dataset fashion-mnist --config ranks.json --rho 0.1 --out runs/fm
  ttplan train --resume runs/r20
  torchrun --nproc_per_node 2 -m ttplan train ...      # data-parallel (gloo on CPU, nccl on GPU)

The run folder gets checkpoint.pt (every epoch), metrics.json, dense.pt, model_tt.pt, plan.json and curves.png.
"""


def _click_progress(label: str, length: int):
    """One click progress bar per epoch, on stderr."""
    return click.progressbar(length=length, label=label, file=sys.stderr, show_eta=True)


@click.command("train", epilog=EXAMPLE)
@click.option("--arch", default="resnet20", show_default=True,
              help="Model preset (resnet20, resnet32, ...) or module:callable building an nn.Module.")
@click.option("--dataset", type=click.Choice(list(DATASETS)), default="digits", show_default=True,
              help="digits: scikit-learn's bundled 8x8 digits; fashion-mnist: the idx files of Debian's "
                   "dataset-fashion-mnist (or --data-dir); cifar10: python batches in --data-dir.")
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
              help="Layer config (JSON/YAML): layer name -> {format, tt_shapes, ranks} or {format, in_modes, "
                   "out_modes, rank}.")
@click.option("--pretrain-epochs", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--admm-epochs", type=click.IntRange(min=0), default=20, show_default=True,
              help="ADMM epochs (with --baseline direct: the same number of dense epochs without the penalty).")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--rho", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="ADMM penalty ρ.")
@click.option("--rho-growth", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Multiply ρ by this after every ADMM epoch (1: constant).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.05, show_default=True,
              help="SGD learning rate (cosine schedule within each phase).")
@click.option("--finetune-lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate while fine-tuning the TT model (default: --lr).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Global batch size (split over torchrun processes).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--init", "init_path", type=click.Path(), default=None,
              help="Start from dense weights: a run folder (its dense.pt), a .pt checkpoint or a state_dict.")
@click.option("--baseline", type=click.Choice(BASELINES), default="admm", show_default=True,
              help="direct: same epochs, but the dense weights are decomposed without ADMM.")
@click.option("--max-batches", type=click.IntRange(min=1), default=None,
              help="Cap the batches per epoch (quick trials).")
@click.option("--out", "out_dir", type=click.Path(), default=None, help="Run folder to create.")
@click.option("--resume", "resume_dir", type=click.Path(), default=None,
              help="Continue the run in this folder from its last checkpoint (other training options are ignored).")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
def train_command(config_path: str | None, init_path: str | None, out_dir: str | None, resume_dir: str | None,
                  threads: int | None, device: str, **opts) -> None:
    """Train a dense network with ADMM towards the TT formats of a layer config, decompose it, fine-tune it."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if resume_dir is not None:
        if out_dir is not None:
            raise click.UsageError("give either --out (a new run) or --resume (an existing one), not both")
        metrics = resume(resume_dir, device=device, progress=_click_progress)
        run_dir = Path(resume_dir)
    else:
        if out_dir is None:
            raise click.UsageError("no run folder: add --out RUN_DIR (or --resume RUN_DIR to continue one)")
        cfg = TrainConfig(config=config_path, init=init_path, device=device, **opts)
        metrics = train(cfg, out_dir, progress=_click_progress)
        run_dir = Path(out_dir)
    _summary(metrics, run_dir)


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
        lines.append(f"accuracy: dense {pct(final['accuracy_dense'])}, decomposed {pct(final['accuracy_decomposed'])}"
                     f", fine-tuned {pct(final.get('accuracy_finetuned'))}")
        lines.append(f"relative approximation error ||W - W_tt||/||W||: mean {final['approximation_error_mean']:.4f},"
                     f" max {final['approximation_error_max']:.4f}")
        planned = final.get("planned", {})
        if "macs" in planned:
            lines.append(f"planned: {planned['macs']:,} MACs (dense {planned['dense_macs']:,}, "
                         f"{100 * planned['macs_reduction']:.1f}% less), {planned['params']:,} params "
                         f"(dense {planned['dense_params']:,}, {100 * planned['params_reduction']:.1f}% less)")
    else:
        lines.append(f"accuracy {pct(final.get('accuracy'))}")
    click.echo("\n".join(lines))

