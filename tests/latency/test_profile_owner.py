"""One owner of profile files (ttplan/latency/profiles.py): the library's planning functions take a profile and never
read one, planning by MACs reads none at all, and no other module of the package reads a profile file."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

import ttplan.latency.profiles as profiles
from ttplan.core.formats import make_format
from ttplan.core.latency import LatencyProfile, OpModel
from ttplan.core.layer import plan_layer
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ttplan"
OWNER = "ttplan/latency/profiles.py"
SPEC = ConvSpec.make(32, 32, 3, 1, 1, input_size=8)
FMT = make_format("hodec", SPEC, rank=4)


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1))


@pytest.fixture
def no_profile_file(monkeypatch):
    """Every way into a profile file raises: the owner's rule, its reader of files and of the committed default."""
    def refused(*args, **kwargs):
        raise AssertionError("a profile file was read")

    for name in ("load_profile", "default_profile", "_read_profile"):
        monkeypatch.setattr(profiles, name, refused)


def test_planning_by_macs_reads_no_profile_file(no_profile_file):
    from ttplan.analysis.sweep import sweep_layer
    from ttplan.arch.architecture import plan_architecture
    from ttplan.arch.budget import prepare_budget
    from ttplan.arch.report import render_markdown, render_text

    layer = plan_layer(SPEC, FMT, batch=2)
    assert layer.profile is None and layer.predicted_ms(layer.best) is None and layer.baseline_ms is None
    assert layer.to_dict()["best"]["predicted_ms"] is None
    assert sweep_layer(SPEC, [4], formats=(("hodec", 2),)).points
    arch = plan_architecture(_model(), (3, 16, 16))
    assert arch.totals.tt_macs < arch.totals.baseline_macs
    assert arch.totals.baseline_ms is None and arch.totals.predicted_speedup is None
    text = render_text(arch, wide=True)
    assert "none (planned without a latency profile)" in text and "no ms: planned without" in text
    assert "None" not in text and "None" not in render_markdown(arch)
    budget = prepare_budget(_model(), (3, 16, 16), target_params_reduction=0.5).solve()
    assert budget.plan.totals.tt_params <= budget.plan.totals.baseline_params


def test_a_request_reads_its_profile_once_and_by_macs_only_the_committed_default(monkeypatch, tmp_path):
    """`PlanRequest` resolves the profile of a command once, through the owner; ordering by MACs, the user's cached
    profile is never read (a broken one cannot break such a plan)."""
    from ttplan.arch.request import PlanRequest, run_request

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = tmp_path / "ttplan" / "profile.json"
    cached.parent.mkdir()
    cached.write_bytes(b"{broken")
    calls = []
    real = profiles.load_profile

    def counted(*args, **kwargs):
        calls.append(kwargs.get("by_time"))
        return real(*args, **kwargs)

    monkeypatch.setattr(profiles, "load_profile", counted)
    outcome = run_request(PlanRequest("resnet20"))
    assert calls == [False] and outcome.plan.totals.baseline_ms > 0  # the committed default prices the ms
    with pytest.raises(TTPlanError, match="cached latency profile"):
        run_request(PlanRequest("resnet20", objective="latency"))


@pytest.mark.parametrize("call", ["layer", "best_order", "objective", "arch", "arch-skip-slower", "arch-autotune",
                                  "budget-speedup", "sweep"])
def test_choosing_by_time_without_a_profile_is_one_line_naming_what_needs_it(no_profile_file, call):
    from ttplan.analysis.sweep import sweep_layer
    from ttplan.arch.architecture import plan_architecture
    from ttplan.arch.budget import prepare_budget
    from ttplan.core.layer import best_order
    from ttplan.core.network import build_network
    from ttplan.core.objectives import make_objective

    run = {
        "layer": lambda: plan_layer(SPEC, FMT, objective="latency"),
        "best_order": lambda: best_order(build_network(SPEC, FMT, 1), objective="latency"),
        "objective": lambda: make_objective("latency"),
        "arch": lambda: plan_architecture(_model(), (3, 16, 16), objective="latency"),
        "arch-skip-slower": lambda: plan_architecture(_model(), (3, 16, 16), skip_slower=True),
        "arch-autotune": lambda: plan_architecture(_model(), (3, 16, 16), autotune="cpu"),
        "budget-speedup": lambda: prepare_budget(_model(), (3, 16, 16), target_speedup=1.5),
        "sweep": lambda: sweep_layer(SPEC, [4], objective="latency"),
    }[call]
    with pytest.raises(TTPlanError) as info:
        run()
    message = str(info.value)
    assert "needs a latency profile: pass profile=" in message and "\n" not in message


SCRIPT = """
import os, sys
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
import torch
from ttplan.arch.architecture import plan_architecture
from ttplan.core.formats import make_format
from ttplan.core.layer import plan_layer
from ttplan.core.spec import ConvSpec

start = len(opened)
spec = ConvSpec.make(32, 32, 3, 1, 1, input_size=8)
plan_layer(spec, make_format("hodec", spec, rank=4), batch=2)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 3, padding=1))
plan_architecture(model, (3, 16, 16))
def profiles(paths):
    return [path for path in paths if "profile" in os.path.basename(path) and path.endswith(".json")]
print("planned:", profiles(opened[start:]))
from ttplan.latency.profiles import load_profile
start = len(opened)
print("loaded:", load_profile().label, profiles(opened[start:]))
"""


def test_no_profile_file_is_even_opened_when_planning_by_macs(tmp_path):
    """Audited at the `open` of every file, in a fresh process: nothing named like a profile is opened while planning
    a layer and an architecture by MACs (any `*profile*.json`: the cache's, the committed default), though a cached
    profile is there; the owner then opens it (the control)."""
    cached = tmp_path / "ttplan" / "profile.json"
    profiles_dir = cached.parent
    profiles_dir.mkdir()
    profiles.save_profile(LatencyProfile("cached", "cpu", 1, "x", {"dense:any": OpModel(1, 0, 0)}), cached)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    planned, loaded = done.stdout.splitlines()[-2:]
    assert planned == "planned: []"
    assert loaded == f"loaded: cached [{str(cached)!r}]"


#: what reads a profile file: the owner's rule and its readers
READERS = {"load_profile", "default_profile", "_read_profile"}
#: the modules that may call them: the owner, and the commands, which call it once and pass the profile down
#: (`PlanRequest` resolves a planning command)
CALLERS = {OWNER, "ttplan/arch/request.py", "ttplan/cli/objective_options.py", "ttplan/cli/bench.py",
           "ttplan/cli/calibrate.py"}
#: a profile file's name or path as a literal (no spaces: prose in help texts and docstrings is not a read)
NAMED = re.compile(r"profile[\w.-]*\.json$")
#: where the user's cache folder is used: the latency subsystem (profiles, autotune) and the runtime's built kernels
CACHE_USERS = {"ttplan/files.py", OWNER, "ttplan/latency/autotune.py", "ttplan/runtime/kernels/build.py"}


def _scan(path: Path) -> tuple[set[str], list[str]]:
    """The names `path` uses (identifiers, attributes, imported names) and the profile-file literals it holds."""
    tree = ast.parse(path.read_text())
    names, literals = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            names.update(alias.name.split(".")[-1] for alias in node.names)
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and not re.search(r"\s", node.value):
            if NAMED.search(node.value):
                literals.append(node.value)
    return names, literals


def _modules() -> dict[str, tuple[set[str], list[str]]]:
    return {str(path.relative_to(ROOT)): _scan(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_only_the_owner_reads_profile_files():
    """Exact sets, so that a second reader anywhere in the package (calling the owner's readers, naming a profile
    file, or using the cache folder) fails here, and so does a list that outlived a caller."""
    modules = _modules()
    calling = {name for name, (names, _) in modules.items() if names & READERS}
    assert calling == CALLERS, "modules reading profiles changed: library functions take a profile argument"
    naming = {name: literals for name, (_, literals) in modules.items() if literals}
    assert set(naming) == {OWNER}, naming
    assert "default_profile.json" in naming[OWNER]  # the check sees the owner's own read of the committed default
    assert {name for name, (names, _) in modules.items() if "cache_dir" in names} == CACHE_USERS


def test_the_scan_sees_a_second_reader(tmp_path):
    """The same scan on a module that reads a profile file the two ways a second reader would."""
    rogue = tmp_path / "rogue.py"
    rogue.write_text("import json\nfrom pathlib import Path\nfrom ttplan.latency.profiles import load_profile\n\n"
                     "def mine():\n    return json.loads((Path.home() / '.cache/ttplan/profile.json').read_text())\n"
                     "\ndef theirs():\n    return load_profile()\n")
    names, literals = _scan(rogue)
    assert names & READERS == {"load_profile"} and literals == [".cache/ttplan/profile.json"]


def test_a_request_autotuned_on_cuda_reads_the_cuda_profile(monkeypatch, tmp_path):
    """`--autotune cuda` ranks its candidates by the CUDA profile `ttplan calibrate --device cuda` saved; it read the
    CPU one, whatever the device."""
    from ttplan.arch.request import PlanRequest
    from ttplan.latency.profiles import save_profile, user_profile_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ops = {kind: OpModel(1.0, 0.0, 1.0) for kind in ("feature", "conv", "weight", "dense")}
    save_profile(LatencyProfile("my cpu", "cpu", 2, "x", ops), user_profile_path("cpu"))
    save_profile(LatencyProfile("my gpu", "cuda", 1, "x", ops), user_profile_path("cuda"))
    assert PlanRequest("resnet20", objective="latency").profile().label == "my cpu"
    assert PlanRequest("resnet20", objective="latency", autotune="cuda").profile().label == "my gpu"
    assert PlanRequest("resnet20", objective="latency", autotune="cpu").profile().label == "my cpu"
