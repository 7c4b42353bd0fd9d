"""`ttplan emit --arch ... --weights`: trained weights reach the generated code, for a user's own model.

The emitted file plans exactly the formats a run recorded, writes the weights beside itself in the emitted model's
naming (the cores as `cores.0`, ... as `TTConv2d` saves them), and its `load(model)` computes what `ttplan.load`
gives, with no import of ttplan. `emit --arch` also takes the budget targets as `ttplan plan` does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import ttplan
import ttplan.training.models
from tests.helpers.cli import one_line_error, run
from tests.helpers.user_code import CONFIG, INPUT_SIZE, forget, write_user_code
from ttplan.arch.config import load_config, resolve_formats
from ttplan.models import load_model, trace_layers
from ttplan.runtime.layers import convert

SIZE = tuple(int(v) for v in INPUT_SIZE.split(","))


@pytest.fixture
def user(tmp_path, monkeypatch):
    """The user's net and data set in the test's folder, which is the current folder; and a layer config."""
    net, data = write_user_code(tmp_path)
    (tmp_path / "c.json").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    yield net, data
    forget(net, data)


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(f"{path.stem}_{abs(hash(str(path))) % 10**8}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_run(net: str, path: Path, seed: int = 0) -> torch.nn.Module:
    """A `model_tt.pt` as `ttplan train` writes it, for the net converted by the config, its cores, biases and BN
    buffers moved off their decomposed values (as training moves them); returns that TT model (eval)."""
    model, size = load_model(f"{net}:build", SIZE)
    formats = resolve_formats(load_config("c.json"), trace_layers(model, size))
    tt = convert(model, formats, size).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in tt.state_dict().items():
            if key.endswith("running_var"):
                value.copy_(0.5 + torch.rand(value.shape, generator=gen))
            elif value.is_floating_point():
                value.add_(0.1 * torch.randn(value.shape, generator=gen))
    torch.save({"model": tt.state_dict(), "formats": {name: fmt.to_dict() for name, fmt in formats.items()},
                "arch": f"{net}:build", "input_size": list(size), "scheme": "best"}, path)
    return tt


def _planned_macs(net: str, *extra: str) -> int:
    """The model's planned MACs at batch 1, from `ttplan plan --config` (the run's formats)."""
    result = run(["plan", f"{net}:build", "--input-size", INPUT_SIZE, "--config", "c.json", "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["totals"]["tt"]["macs"]


@pytest.mark.parametrize("fold", [False, True])
def test_emitted_file_loads_the_trained_cores_and_computes_the_trained_model(user, tmp_path, fold):
    net, _ = user
    reference = _fake_run(net, tmp_path / "model_tt.pt")
    out = tmp_path / "tt_net.py"
    result = run(["emit", "--arch", f"{net}:build", "--input-size", INPUT_SIZE, "--weights", tmp_path / "model_tt.pt",
                  "--out", out, *(["--fold-weights"] if fold else [])])
    assert result.exit_code == 0, result.output
    assert "3 TT layers' trained cores" in result.stderr and (tmp_path / "tt_net.pt").is_file()
    emitted = _import(out)
    assert sorted(emitted.LAYERS) == ["11", "3", "6"] and emitted.WEIGHTS == "tt_net.pt"
    state = torch.load(tmp_path / "tt_net.pt", weights_only=True)
    assert state.keys() == reference.state_dict().keys()  # the library's naming: no renaming either way
    model = emitted.load(load_model(f"{net}:build", SIZE)[0]).eval()
    assert torch.equal(model.get_submodule("6").cores()[0], reference.get_submodule("6").cores[0])
    loaded = ttplan.load(tmp_path / "model_tt.pt")
    x = torch.randn(3, *SIZE)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max() <= 1e-5
        assert torch.equal(loaded(x), reference(x))
        model(x[:1])  # a folded model fills its cache here
        with FlopCounterMode(display=False) as counter:
            model(x[:1])
    assert counter.get_total_flops() == 2 * _planned_macs(net, *(["--fold-weights"] if fold else []))
    assert ttplan.load is ttplan.training.models.load and "load" in ttplan.__all__


def test_weights_that_do_not_fit_the_emitted_model_are_one_line(user, tmp_path):
    net, _ = user
    _fake_run(net, tmp_path / "model_tt.pt")
    out = tmp_path / "tt_net.py"
    result = run(["emit", "--arch", f"{net}:build", "--input-size", INPUT_SIZE, "--weights", tmp_path / "model_tt.pt",
                  "--out", out])
    assert result.exit_code == 0, result.output
    emitted = _import(out)
    state = torch.load(tmp_path / "tt_net.pt", weights_only=True)
    dense = load_model(f"{net}:build", SIZE)[0]
    for bad, needle in (({k: v for k, v in state.items() if k != "1.running_mean"}, "1 missing (e.g. 1.running_mean)"),
                        ({**state, "extra": torch.zeros(1)}, "1 unexpected (e.g. extra)"),
                        ({**state, "3.cores.0": torch.zeros(1, 1)}, "1 of another shape (e.g. 3.cores.0: [1, 1]")):
        with pytest.raises(ValueError, match=re.escape(needle)) as error:
            emitted.convert(dense, bad)
        assert "\n" not in str(error.value)


def test_a_layer_kept_dense_gets_the_kernel_its_trained_cores_rebuild(user, tmp_path):
    net, _ = user
    reference = _fake_run(net, tmp_path / "model_tt.pt")
    out = tmp_path / "tt_net.py"
    # the ttm layer costs more MACs than the dense one at its published order, so --skip-worse keeps it dense
    result = run(["emit", "--arch", f"{net}:build", "--input-size", INPUT_SIZE, "--weights", tmp_path / "model_tt.pt",
                  "--skip-worse", "--out", out])
    assert result.exit_code == 0, result.output
    assert "2 TT layers' trained cores, 1 kept dense with the kernels their trained cores rebuild" in result.stderr
    emitted = _import(out)
    assert sorted(emitted.LAYERS) == ["3", "6"]
    model = emitted.load(load_model(f"{net}:build", SIZE)[0]).eval()
    linear = model.get_submodule("11")
    assert type(linear) is torch.nn.Linear  # noqa: E721 - exactly the dense layer
    tt_linear = reference.get_submodule("11")
    with torch.no_grad():  # the kernel the TT layer computes, read off by its plan on unit inputs: I @ W.T + b
        kernel = (tt_linear(torch.eye(16)) - tt_linear.bias).T
    assert (linear.weight - kernel).abs().max() <= 1e-6 and torch.equal(linear.bias, tt_linear.bias)
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max() <= 1e-5


def test_dense_weights_are_decomposed_into_the_planned_formats(user, tmp_path):
    net, _ = user
    dense, _ = load_model(f"{net}:build", SIZE)
    with torch.no_grad():
        for p in dense.parameters():
            p.mul_(1.5)
    torch.save({"model": dense.state_dict(), "config": {}}, tmp_path / "dense.pt")  # as a run's dense.pt
    out = tmp_path / "tt_net.py"
    result = run(["emit", "--arch", f"{net}:build", "--input-size", INPUT_SIZE, "--weights", tmp_path / "dense.pt",
                  "--config", "c.json", "--out", out])
    assert result.exit_code == 0, result.output
    assert "3 decomposed from trained dense kernels" in result.stderr
    model = _import(out).load(load_model(f"{net}:build", SIZE)[0]).eval()
    formats = resolve_formats(load_config("c.json"), trace_layers(dense, SIZE))
    library = convert(dense.eval(), formats, SIZE)
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert (model(x) - library(x)).abs().max() <= 1e-5


def test_a_bare_tt_state_dict_must_fit_the_planned_formats(user, tmp_path):
    net, _ = user
    reference = _fake_run(net, tmp_path / "model_tt.pt")
    torch.save(reference.state_dict(), tmp_path / "tt_state.pt")
    out = tmp_path / "tt_net.py"
    ok = run(["emit", "--arch", f"{net}:build", "--input-size", INPUT_SIZE, "--weights", tmp_path / "tt_state.pt",
              "--config", "c.json", "--out", out])
    assert ok.exit_code == 0, ok.output
    model = _import(out).load(load_model(f"{net}:build", SIZE)[0]).eval()
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max() <= 1e-5
    other = run(["emit", "--arch", f"{net}:build", "--input-size", INPUT_SIZE, "--weights", tmp_path / "tt_state.pt",
                 "--rank", "2", "--out", out])
    one_line_error(other, "the cores of layer '3' do not fit the planned hodec", "--config")


@pytest.mark.parametrize("args, needles", [
    (["--config", "c.json"], ["--config and --weights", "the run fixes every layer's format"]),
    (["--target-macs-reduction", "0.5"], ["--target-macs-reduction and --weights"]),
    (["--rank", "2"], ["--rank and --weights"]),
])
def test_a_run_fixes_the_formats_so_choosing_them_again_is_one_line(user, tmp_path, args, needles):
    net, _ = user
    _fake_run(net, tmp_path / "model_tt.pt")
    result = run(["emit", "--arch", f"{net}:build", "--input-size", INPUT_SIZE, "--weights", tmp_path / "model_tt.pt",
                  *args, "--out", tmp_path / "f.py"])
    one_line_error(result, *needles)


def test_bad_weights_are_one_line(user, tmp_path):
    net, _ = user
    _fake_run(net, tmp_path / "model_tt.pt")
    arch = ["--arch", f"{net}:build", "--input-size", INPUT_SIZE]
    one_line_error(run(["emit", "--arch", "resnet20", "--weights", tmp_path / "model_tt.pt", "--out", "f.py"]),
                   "the run decomposed layer '3', which this model does not have", f"{net}:build")
    one_line_error(run(["emit", *arch, "--weights", tmp_path / "model_tt.pt"]), "needs --out FILE.py")
    one_line_error(run(["emit", *arch, "--weights", tmp_path / "model_tt.pt", "--out", "f.pt"]), "give a .py file")
    (tmp_path / "empty_run").mkdir()
    one_line_error(run(["emit", *arch, "--weights", tmp_path / "empty_run", "--out", "f.py"]),
                   "has no model_tt.pt", "expected a finished train run folder")
    torch.save({"0.weight": torch.zeros(3)}, tmp_path / "wrong.pt")
    one_line_error(run(["emit", *arch, "--config", "c.json", "--weights", tmp_path / "wrong.pt", "--out", "f.py"]),
                   "does not fit this model", "missing")
    damaged = torch.load(tmp_path / "model_tt.pt", weights_only=True)
    damaged["formats"]["0"] = damaged["formats"]["3"]
    torch.save(damaged, tmp_path / "damaged.pt")
    one_line_error(run(["emit", *arch, "--weights", tmp_path / "damaged.pt", "--out", "f.py"]),
                   "layer '0' is recorded as decomposed but has no cores")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    one_line_error(run(["emit", *arch, "--weights", tmp_path / "junk.pt", "--out", "f.py"]), "junk.pt")
    one_line_error(run(["emit", "-i", "8", "-o", "8", "--rank", "2", "--weights", tmp_path / "wrong.pt", "--out",
                        "f.py"]),
                   "--weights applies to --arch only")


def test_emit_arch_takes_the_budget_targets_as_plan_does(user, tmp_path):
    net, _ = user
    target = ["--input-size", INPUT_SIZE, "--target-macs-reduction", "0.6"]
    planned = run(["plan", f"{net}:build", *target, "--save-config", tmp_path / "budget.json", "--json"])
    assert planned.exit_code == 0, planned.output
    out = tmp_path / "budget_net.py"
    result = run(["emit", "--arch", f"{net}:build", *target, "--out", out])
    assert result.exit_code == 0, result.output
    emitted = _import(out)
    chosen = {name for name, entry in json.loads((tmp_path / "budget.json").read_text()).items()
              if entry["format"] != "dense"}
    assert set(emitted.LAYERS) == chosen and chosen
    model = emitted.convert(load_model(f"{net}:build", SIZE)[0]).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *SIZE))
    totals = json.loads(planned.stdout)["totals"]
    assert counter.get_total_flops() == 2 * totals["tt"]["macs"]
    assert totals["macs_reduction"] >= 0.6
    one_line_error(run(["emit", "--arch", f"{net}:build", *target, "--rank", "4"]), "--rank 4 both given")


#: run in a fresh interpreter where `import ttplan` fails: each emitted file's `load` on the user's net, its
#: largest difference from the trained model's outputs and its FLOPs at batch 1
CHECK = r"""
import importlib
import json
import sys

class NoTTPlan:
    def find_spec(self, name, path=None, target=None):
        if name == "ttplan" or name.startswith("ttplan."):
            raise ImportError(f"{name} is blocked: the emitted file must run without ttplan")

sys.meta_path.insert(0, NoTTPlan())
sys.path.insert(0, sys.argv[1])
import torch
from torch.utils.flop_counter import FlopCounterMode

net = importlib.import_module(sys.argv[2])
x, expected = torch.load("inputs.pt", weights_only=True)
out = {}
for name in sys.argv[3:]:
    model = importlib.import_module(name).load(net.build()).eval()
    with torch.no_grad():
        error = (model(x) - expected).abs().max().item()
        model(x[:1])
        with FlopCounterMode(display=False) as counter:
            model(x[:1])
    out[name] = {"error": error, "flops": counter.get_total_flops()}
try:
    import ttplan
    out["ttplan"] = "imported"
except ImportError:
    out["ttplan"] = "blocked"
print(json.dumps(out))
"""


@pytest.mark.slow
def test_from_a_user_model_to_a_standalone_trained_file_in_one_path(user, tmp_path):
    """plan (budget) -> train (ADMM, the user's data set) -> emit --weights, folded and not; the files run where
    ttplan cannot be imported and compute the trained TT model (`ttplan.load`); FLOPs are 2 x the planned MACs."""
    net, data = user
    arch = ["--input-size", INPUT_SIZE]
    planned = run(["plan", f"{net}:build", *arch, "--target-macs-reduction", "0.5", "--save-config", "budget.json"])
    assert planned.exit_code == 0, planned.output
    trained = run(["train", "--arch", f"{net}:build", "--dataset", f"{data}:load", "--config", "budget.json",
                   "--pretrain-epochs", "1", "--admm-epochs", "1", "--finetune-epochs", "1", "--batch-size", "16",
                   "--out", "RUN"])
    assert trained.exit_code == 0, trained.output
    macs = {}
    for name, fold in (("tt_plain", []), ("tt_folded", ["--fold-weights"])):
        emitted = run(["emit", "--arch", f"{net}:build", *arch, "--weights", "RUN", "--out", f"{name}.py", *fold])
        assert emitted.exit_code == 0, emitted.output
        again = run(["plan", f"{net}:build", *arch, "--config", "budget.json", "--json", *fold])
        macs[name] = json.loads(again.stdout)["totals"]["tt"]["macs"]
    assert macs["tt_plain"] == json.loads((tmp_path / "RUN" / "plan.json").read_text())["totals"]["tt"]["macs"]
    reference = ttplan.load("RUN")
    x = torch.randn(4, *SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.save((x, reference(x)), tmp_path / "inputs.pt")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-I", "-c", CHECK, str(tmp_path), net, "tt_plain", "tt_folded"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["ttplan"] == "blocked"
    for name in ("tt_plain", "tt_folded"):
        assert found[name]["error"] <= 1e-5, found
        assert found[name]["flops"] == 2 * macs[name], (found, macs)
