"""`ttplan export`: a train run's TT model as a deployment file (`torch.export` .pt2, or ONNX)."""

from __future__ import annotations

from pathlib import Path

import click

from ttplan.cli.output import out_option

#: what running each format needs, for the message after writing
NEEDS = {"pt2": "torch only (torch.export.load)", "onnx": "onnxruntime (or any ONNX runtime)"}


@click.command(epilog="""\b
Examples:
  ttplan export --weights runs/mine --format pt2 --out mine.pt2
  ttplan export --weights runs/mine/model_tt.pt --format onnx --out mine.onnx --batch 8
  ttplan export --weights runs/mine --format onnx --out mine.onnx --dynamic-batch
""")
@click.option("--weights", required=True, metavar="RUN|FILE",
              help="The trained model: a train run folder, or its model_tt.pt.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "pt2"]), required=True,
              help="pt2: torch.export program (torch.export.save); onnx: ONNX (needs ttplan[deploy]).")
@out_option("File to write (atomically; checked before any work).", required=True)
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch of the example input the model is captured on (the file's batch without --dynamic-batch).")
@click.option("--dynamic-batch", is_flag=True,
              help="Leave the batch open: the file takes any batch of 1 or more, not just --batch.")
@click.option("--opset", type=click.IntRange(min=18), default=None,
              help="ONNX opset version, 18 or above (what torch's dynamo exporter writes; default: its own).")
def export(weights: str, fmt: str, out: Path, batch: int, opset: int | None, dynamic_batch: bool) -> None:
    """Export a train run's TT model as a .pt2 (torch.export) or ONNX file whose TT layers are stock ops.

    The example input is a batch of the run's recorded input size; the file loads without ttplan.
    """
    from ttplan.errors import TTPlanError
    from ttplan.files import written

    if opset is not None and fmt != "onnx":
        raise TTPlanError(f"--opset {opset} applies to --format onnx only")
    from ttplan.runtime.export import export_model, onnx_missing

    if fmt == "onnx" and (missing := onnx_missing()) is not None:
        raise TTPlanError(f'--format onnx needs the {missing} package: pip install "ttplan[deploy]"')
    import torch

    from ttplan.training.models import load_tt_run
    from ttplan.training.run_folder import TT_MODEL

    source = Path(weights).expanduser()
    if not (source / TT_MODEL if source.is_dir() else source).is_file():
        what = f"the folder has no {TT_MODEL}" if source.is_dir() else "no such file"
        raise TTPlanError(f"--weights {weights}: {what}; expected a finished train run folder or its {TT_MODEL}")
    model, input_size = load_tt_run(source)
    replaced = export_model(model, torch.randn(batch, *input_size), fmt, out, opset, dynamic_batch)
    size = out.stat().st_size
    shape = f"{'any batch' if dynamic_batch else batch}x{'x'.join(map(str, input_size))}"
    click.echo(f"{written(out, replaced)} ({size / 1024:,.1f} KiB, {fmt}, input {shape}); it needs {NEEDS[fmt]}",
               err=True)
