"""Exporting a model to a deployment file: a `torch.export` program (`.pt2`) or ONNX, written atomically.

TT layers are captured as stock torch ops (docs/deploy.md), so a `.pt2` file loads with torch alone and an ONNX
file runs in ONNX Runtime. A capture is specialised to the example's shape unless `dynamic_batch` leaves its first
dimension open (any batch of at least 1), as a served model takes whatever batch its requests make.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ttplan.errors import TTPlanError
from ttplan.files import atomic_write, atomic_write_bytes

#: the formats `export_model` writes
FORMATS = ("onnx", "pt2")

#: the namespace of ttplan's own torch ops, which a deployment file must not hold
OWN_OPS = "ttplan."


def own_ops(program: torch.export.ExportedProgram) -> list[str]:
    """The `ttplan::` ops called in `program`'s graph (none when TT layers were captured as stock ops)."""
    return sorted({str(node.target) for node in program.graph.nodes
                   if node.op == "call_function" and str(node.target).startswith(OWN_OPS)})


def onnx_missing() -> str | None:
    """The first of the packages ONNX export needs (`onnx`, `onnxscript`) that cannot be imported; None if both can."""
    import importlib.util

    return next((name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None), None)


@contextlib.contextmanager
def _quiet_onnx() -> Iterator[None]:
    """Silence the ONNX exporter's warnings and log lines (skipped torchvision ops, deprecations) while it runs."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def batch_dimension(example: torch.Tensor) -> tuple[torch.Tensor, tuple[dict[int, torch.export.Dim]]]:
    """`example` and the `dynamic_shapes` that leave its batch open (1 and up). torch.export specialises a dimension
    that is 1 in the example (it cannot tell 1 from a broadcast), so an example batch of 1 is captured as 2 copies."""
    if example.dim() == 0:
        raise TTPlanError("a dynamic batch needs an example input with a batch dimension; got a scalar")
    if example.shape[0] == 1:
        example = torch.cat([example, example])
    return example, ({0: torch.export.Dim("batch", min=1)},)


def _capture(model: nn.Module, example: torch.Tensor, dynamic_batch: bool) -> torch.export.ExportedProgram:
    """`torch.export.export` of `model` on `example`, its batch left open with `dynamic_batch`; a model whose code
    fixes its batch is refused in one line."""
    if not dynamic_batch:
        return torch.export.export(model, (example,))
    example, shapes = batch_dimension(example)
    try:
        return torch.export.export(model, (example,), dynamic_shapes=shapes)
    except Exception as error:  # torch reports a specialised dimension in several error types, over many lines
        if "batch" not in str(error) and "specializ" not in str(error):
            raise
        raise TTPlanError(f"the model's code fixes its batch size, so it cannot be exported with a dynamic batch "
                          f"({str(error).strip().splitlines()[0][:200]}); export without it (a fixed batch)"
                          ) from None


def export_model(model: nn.Module, example: torch.Tensor, fmt: str, path: str | Path,
                 opset: int | None = None, dynamic_batch: bool = False) -> bool:
    """Capture `model` (eval) on `example` and write it to `path` as `fmt` (`pt2` or `onnx`, at `opset` if given),
    atomically; True if an existing file was replaced. `dynamic_batch`: the file takes any batch (`batch_dimension`),
    else only the example's."""
    if fmt not in FORMATS:
        raise TTPlanError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    model = model.eval()
    with torch.no_grad():
        if fmt == "pt2":
            program = _capture(model, example, dynamic_batch)
            found = own_ops(program)
            if found:
                raise TTPlanError(f"the exported graph holds ttplan's own ops ({', '.join(found)}): it would need "
                                  "ttplan to run; export the layers with their stock ops (export_fused=False)")
            buffer = io.BytesIO()  # torch.export.save wants a .pt2 name or a buffer; the temporary file is neither
            torch.export.save(program, buffer)
            return atomic_write_bytes(path, buffer.getvalue())
        missing = onnx_missing()
        if missing is not None:
            raise TTPlanError(f'ONNX export needs the {missing} package: pip install "ttplan[deploy]"')
        options = {} if opset is None else {"opset_version": opset}
        with _quiet_onnx():
            # a dynamic batch is captured here first, for pt2's one-line refusal of a model that fixes its batch;
            # a fixed one by the exporter itself, which tries more than one way of capturing
            source = _capture(model, example, True) if dynamic_batch else model
            onnx_program = torch.onnx.export(source, (example,), dynamo=True, verbose=False, **options)
            return atomic_write(path, lambda tmp: onnx_program.save(tmp))
