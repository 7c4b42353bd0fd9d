"""`ttplan emit`: writes a loadable torch-only file for a layer or an architecture; bad input is one line, exit 2."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.batchnorm import batchnorms, randomize_batchnorms
from tests.helpers.cli import one_line_error, run
from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.models import load_model

LAYER = ["--in-channels", "128", "--out-channels", "256", "--kernel-size", "3", "--stride", "2", "--padding", "1",
         "--input-size", "28", "--tt-shapes", "4,8,8,9,4,4,8", "--ranks", "1,16,16,16,16,16,16,1"]


def _run(args: list[str]):
    return run(["emit", *args])


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_layer_file_runs_the_best_order_at_its_planned_cost(tmp_path):
    out = tmp_path / "layer.py"
    result = _run([*LAYER, "--batch", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "TTHodecConv128to256K3S2P1" in result.output
    module = _load(out)
    (name,) = module.__all__
    layer = getattr(module, name)()
    spec = ConvSpec.make(128, 256, 3, 2, 1, 1, 28)
    fmt = make_format("hodec", spec, tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(1, 16, 16, 16, 16, 16, 16, 1))
    plan = optimize(build_network(spec, fmt, 2))
    with FlopCounterMode(display=False) as counter:
        y = layer(torch.randn(2, 128, 28, 28))
    assert y.shape == (2, 256, 14, 14)
    assert counter.get_total_flops() == 2 * plan.macs


def test_scheme_class_name_and_stdout():
    result = _run(["-i", "8", "-o", "6", "-p", "1", "--format", "classical", "--in-modes", "4,2", "--out-modes",
                   "2,3", "--rank", "4", "--scheme", "classical", "--class-name", "MyConv"])
    assert result.exit_code == 0, result.output
    namespace: dict = {}
    exec(result.stdout, namespace)
    assert namespace["__all__"] == ["MyConv"]
    assert "'classical' order" in result.output


def test_architecture_file_converts_the_model(tmp_path):
    out = tmp_path / "net.py"
    result = _run(["--arch", "resnet20", "--rank", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    module = _load(out)
    assert "layer1.0.conv1" in module.LAYERS and "conv1" not in module.LAYERS  # the first conv stays dense
    model, size = load_model("resnet20")
    tt = module.convert(model.eval())
    assert type(tt.get_submodule("layer3.2.conv2")).__name__ == module.LAYERS["layer3.2.conv2"].__name__
    with torch.no_grad():
        assert tt(torch.randn(2, *size)).shape == (2, 10)



def test_architecture_file_folds_the_batchnorms_of_an_eval_model(tmp_path):
    """`emit --arch --fold-weights`: the file's convert folds each BN after a TT layer of an eval model (random BN
    statistics), equal to the unfolded model; a model in training mode keeps them."""
    out = tmp_path / "net.py"
    result = _run(["--arch", "resnet20", "--rank", "4", "--fold-weights", "--batch", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    module = _load(out)
    torch.manual_seed(0)
    model, size = load_model("resnet20")
    randomize_batchnorms(model).eval()
    folded, unfolded = module.convert(model), module.convert(model, fold_bn=False)
    assert batchnorms(folded) == batchnorms(model) - len(module.LAYERS) and batchnorms(unfolded) == batchnorms(model)
    x = torch.randn(2, *size)
    with torch.no_grad():
        expected = unfolded(x)
        assert ((folded(x) - expected).abs().max() <= 1e-4 * expected.abs().max()).item()
    assert batchnorms(module.convert(model.train())) == batchnorms(model)

@pytest.mark.parametrize("args, message", [
    (["--rank", "4"], "missing option --in-channels"),
    (["-i", "8", "-o", "8", "--rank", "2", "--config", "x.json"], "--config applies to --arch only"),
    (["-i", "8", "-o", "8", "--rank", "2", "--scheme", "classical"], "needs a classical format"),
    (["-i", "8", "-o", "8", "--rank", "2", "--input-size", "3,8,8"], "C=3 differs from --in-channels 8"),
    (["-i", "8", "-o", "8", "--rank", "2", "--class-name", "9lives"], "expected a Python identifier"),
    (["-i", "8", "-o", "8", "--rank", "2", "--class-name", "class"], "not a keyword"),
    (["-i", "8", "-o", "8", "--rank", "2", "--ranks", "1,2,2,2,2,2,2,1"], "both given"),
    (["--arch", "resnet20", "--rank", "4", "--rank-fraction", "0.3"], "--rank 4 and --rank-fraction 0.3"),
    (["--arch", "resnet20", "--ranks", "1,2,1"], "--ranks describes one layer"),
    (["--arch", "mypkg.nets:build", "--input-size", "32"], "give C,H,W"),
    (["--arch", "ResNet20"], "did you mean 'resnet20'"),
    (["--arch", "resnet20", "--rank", "4", "--scheme", "classical"], "use best, published or dense"),
])
def test_bad_input_is_one_line_with_exit_code_2(args, message):
    one_line_error(_run(args), message)


@pytest.mark.parametrize("name", ["torch", "nn", "F", "math", "tt_svd", "_TTLayer", "super", "range"])
def test_a_class_name_the_file_uses_itself_is_refused(name):
    """`--class-name torch` (or nn, F, math, a helper, a builtin the file calls) wrote a file that failed when run
    (issue #25, item 20): the class replaced the name. Now one line, exit 2, nothing written."""
    one_line_error(_run(["-i", "8", "-o", "8", "--rank", "2", "--class-name", name]),
                   f"--class-name {name!r}: the generated file uses that name itself", "choose another")


def test_a_class_name_that_only_looks_like_a_local_is_fine(tmp_path):
    out = tmp_path / "layer.py"
    assert _run(["-i", "8", "-o", "8", "--rank", "2", "--class-name", "x", "--out", out]).exit_code == 0
    layer = _load(out).x()
    assert layer(torch.randn(1, 8, 32, 32)).shape == (1, 8, 30, 30)
