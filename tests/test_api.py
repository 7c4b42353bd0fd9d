"""The top-level API: `import ttplan` offers the documented names, and planning through it never needs torch."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import ttplan

ROOT = Path(__file__).resolve().parents[1]

PLAN_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # any import of torch now fails
import ttplan
spec = ttplan.ConvSpec.make(128, 256, 3, stride=2, padding=1, input_size=28)
print(ttplan.plan_layer(spec, ttplan.make_format("hodec", spec, rank=16)).best.macs)
"""


def test_documented_names_are_exposed() -> None:
    from ttplan.arch.apply import convert
    from ttplan.core.formats import TTFormat
    from ttplan.runtime.layers import TTConv2d

    expected = {"ConvSpec", "make_format", "TTFormat", "plan_layer", "plan_architecture", "TTConv2d", "TTLinear",
                "convert", "load", "ADMMCompression", "TTPlanError"}
    assert expected <= set(ttplan.__all__) <= set(dir(ttplan)) | {"__version__"}
    assert ttplan.TTFormat is TTFormat and ttplan.TTConv2d is TTConv2d and ttplan.convert is convert
    assert issubclass(ttplan.TTPlanError, ValueError)


@pytest.mark.parametrize("name, home", [
    ("optimize", "ttplan.core.search"),
    ("ContractionPlan", "ttplan.core.contraction"),
    ("retain_freed_memory", "ttplan.runtime.allocator"),
])
def test_internals_left_the_top_level_and_say_where_they_live(name: str, home: str) -> None:
    assert name not in ttplan.__all__ and name not in dir(ttplan)
    with pytest.raises(AttributeError) as info:
        getattr(ttplan, name)
    assert str(info.value) == f"ttplan.{name} is no longer a top-level name: from {home} import {name}"
    assert getattr(importlib.import_module(home), name) is not None


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        ttplan.plan_layers  # noqa: B018
    except AttributeError as error:
        assert "plan_layer" in str(error)
    else:
        raise AssertionError("ttplan.plan_layers should not exist")


def test_planning_through_the_api_is_torch_free_and_gives_the_same_macs() -> None:
    spec = ttplan.ConvSpec.make(128, 256, 3, stride=2, padding=1, input_size=28)
    with_torch = ttplan.plan_layer(spec, ttplan.make_format("hodec", spec, rank=16)).best.macs
    result = subprocess.run([sys.executable, "-c", PLAN_WITHOUT_TORCH], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == with_torch


def test_the_readme_example_plans_the_documented_macs() -> None:
    """README.md's Python example prints 2,978,816 MACs (tests/test_readme.py runs the example itself)."""
    spec = ttplan.ConvSpec.make(128, 256, 3, stride=2, padding=1, input_size=28)
    plan = ttplan.plan_layer(spec, ttplan.make_format("hodec", spec, rank=16))
    assert plan.best.macs == 2_978_816 and plan.baseline_macs == 57_802_752
    assert "2,978,816 MACs" in (ROOT / "README.md").read_text()


def test_the_version_has_one_owner_and_the_cli_says_it() -> None:
    """`pyproject.toml` reads the version from `ttplan.__version__` (it said 0.1.0 while the changelog said 0.3)."""
    from click.testing import CliRunner

    from ttplan.cli.main import cli

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in text and 'version = {attr = "ttplan.__version__"}' in text
    assert "\nversion =" not in text.split("[tool.")[0]  # no second, static version in [project]
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"ttplan {ttplan.__version__}"
