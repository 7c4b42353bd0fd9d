"""`ttplan.runtime.export.export_model`: a converted TT model captured with its batch open runs every batch in a
`.pt2` program and in ONNX Runtime, equal to eager; a fixed capture takes only its own batch; a model whose code
fixes its batch is refused in one line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.runtime.export import batch_dimension, export_model
from ttplan.runtime.layers import convert

SPEC = ConvSpec.make(16, 16, 3, padding=1, input_size=8)


def tt_model() -> nn.Module:
    """A conv, BatchNorm and ReLU whose conv is a hodec layer run by its stock ops, as export captures it."""
    torch.manual_seed(0)
    fmt = make_format("hodec", SPEC, in_modes=(4, 4), out_modes=(4, 4), rank=8)
    plan = optimize(build_network(SPEC, fmt, 2), fold_weights=True)
    dense = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()).eval()
    return convert(dense, {"0": fmt}, (16, 8, 8), fold_weights=True, plans={"0": plan}).eval()


class FixedBatch(nn.Module):
    """Flattens with the example's batch written into its code: no other batch can run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(2, -1).sum(1)


def test_a_dynamic_batch_export_runs_every_batch_and_a_fixed_one_only_its_own(tmp_path):
    model = tt_model()
    path = tmp_path / "m.pt2"
    export_model(model, torch.randn(1, 16, 8, 8), "pt2", path, dynamic_batch=True)
    program = torch.export.load(path).module()
    with torch.no_grad():
        for batch in (1, 3, 8):
            x = torch.randn(batch, 16, 8, 8)
            torch.testing.assert_close(program(x), model(x), rtol=1e-5, atol=1e-5)
    export_model(model, torch.randn(1, 16, 8, 8), "pt2", path)
    fixed = torch.export.load(path).module()
    with torch.no_grad():
        fixed(torch.randn(1, 16, 8, 8))
        with pytest.raises(Exception, match="size"):
            fixed(torch.randn(3, 16, 8, 8))


def test_a_dynamic_batch_onnx_file_runs_every_batch_in_onnx_runtime(tmp_path):
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name)
    import onnxruntime

    model = tt_model()
    path = tmp_path / "m.onnx"
    export_model(model, torch.randn(2, 16, 8, 8), "onnx", path, dynamic_batch=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert not isinstance(session.get_inputs()[0].shape[0], int)  # a named, open dimension
    with torch.no_grad():
        for batch in (1, 5):
            x = torch.randn(batch, 16, 8, 8)
            (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
            torch.testing.assert_close(torch.from_numpy(y), model(x), rtol=1e-4, atol=1e-4)


def test_a_model_that_fixes_its_batch_is_refused_in_one_line(tmp_path):
    path = tmp_path / "m.pt2"
    with pytest.raises(TTPlanError, match="fixes its batch size") as error:
        export_model(FixedBatch(), torch.randn(2, 3), "pt2", path, dynamic_batch=True)
    assert "\n" not in str(error.value) and not path.exists()
    export_model(FixedBatch(), torch.randn(2, 3), "pt2", path)  # a fixed batch still exports
    assert path.exists()


def test_an_example_batch_of_one_is_captured_as_two_and_a_scalar_is_refused():
    example, shapes = batch_dimension(torch.randn(1, 3, 4, 4))
    assert example.shape == (2, 3, 4, 4) and torch.equal(example[0], example[1])
    assert list(shapes[0]) == [0]
    example, _ = batch_dimension(torch.randn(5, 3))
    assert example.shape == (5, 3)
    with pytest.raises(TTPlanError, match="batch dimension"):
        batch_dimension(torch.tensor(1.0))
