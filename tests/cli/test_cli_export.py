"""`ttplan export`: a train run's TT model as a .pt2 (torch.export) or ONNX file that computes what `ttplan.load`
gives, with TT layers as stock ops; bad inputs are one line and exit 2."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

import ttplan
from tests.helpers.cli import one_line_error, run
from ttplan.runtime.export import own_ops

CONFIG = {"layer3.0.conv2": {"format": "hodec", "in_modes": [8, 8], "out_modes": [8, 8], "rank": 6}}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A resnet20 run on 8x8 digits: one batch, one fine-tuning epoch, one hodec layer."""
    folder = tmp_path_factory.mktemp("export")
    config = folder / "c.json"
    config.write_text(json.dumps(CONFIG))
    result = run(["train", "--arch", "resnet20", "--dataset", "digits", "--image-size", "8", "--max-batches", "1",
                  "--pretrain-epochs", "0", "--admm-epochs", "0", "--finetune-epochs", "1", "--config", config,
                  "--out", folder / "RUN"])
    assert result.exit_code == 0, result.output
    return folder / "RUN"


def _written(result, fmt: str, needs: str) -> None:
    assert result.exit_code == 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote ") and f"{fmt}," in lines[0] and needs in lines[0], lines


@pytest.mark.slow
def test_pt2_loads_with_stock_ops_and_equals_the_trained_model(tiny_run, tmp_path):
    out = tmp_path / "m.pt2"
    _written(run(["export", "--weights", tiny_run, "--format", "pt2", "--out", out, "--batch", "2"]), "pt2",
             "torch only")
    program = torch.export.load(out)
    assert own_ops(program) == []
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary left beside it
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), ttplan.load(tiny_run)(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_dynamic_batch_file_takes_any_batch_and_says_so(tiny_run, tmp_path):
    out = tmp_path / "m.pt2"
    result = run(["export", "--weights", tiny_run, "--format", "pt2", "--out", out, "--dynamic-batch"])
    _written(result, "pt2", "torch only")
    assert "input any batchx3x8x8" in result.stderr
    program, model = torch.export.load(out).module(), ttplan.load(tiny_run)
    with torch.no_grad():
        for batch in (1, 3):
            x = torch.randn(batch, 3, 8, 8)
            torch.testing.assert_close(program(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_onnx_runs_in_onnx_runtime_and_equals_the_trained_model(tiny_run, tmp_path):
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name)
    import onnxruntime

    out = tmp_path / "m.onnx"
    _written(run(["export", "--weights", tiny_run / "model_tt.pt", "--format", "onnx", "--out", out]), "onnx",
             "onnxruntime")
    session = onnxruntime.InferenceSession(str(out))
    x = torch.randn(1, 3, 8, 8)
    (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y), ttplan.load(tiny_run)(x), rtol=1e-4, atol=1e-4)


def test_onnx_without_its_packages_says_how_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    one_line_error(run(["export", "--weights", tmp_path, "--format", "onnx", "--out", tmp_path / "m.onnx"]),
                   'pip install "ttplan[deploy]"')


def test_bad_inputs_are_one_line(tmp_path):
    out = tmp_path / "m.pt2"
    one_line_error(run(["export", "--weights", tmp_path / "nope", "--format", "pt2", "--out", out]), "nope")
    one_line_error(run(["export", "--weights", tmp_path, "--format", "pt2", "--out", out]), "model_tt.pt")
    one_line_error(run(["export", "--weights", tmp_path, "--format", "tflite", "--out", out]), "--format")
    one_line_error(run(["export", "--weights", tmp_path, "--format", "pt2", "--out", tmp_path]), "folder")
    (tmp_path / "file").write_text("")
    one_line_error(run(["export", "--weights", tmp_path, "--format", "pt2", "--out", tmp_path / "file" / "m.pt2"]),
                   "--out")
    one_line_error(run(["export", "--weights", tmp_path, "--format", "pt2", "--opset", "18", "--out", out]),
                   "--opset")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
