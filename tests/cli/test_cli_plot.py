"""`ttplan plot` as a new user meets it: PNG + SVG from each input, and one-line errors for bad inputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.helpers.cli import GEOMETRY, one_line_error, run
from ttplan.analysis.sweep import sweep_layer
from ttplan.core.spec import ConvSpec


def assert_written(prefix) -> None:
    png, svg = prefix.parent / f"{prefix.name}.png", prefix.parent / f"{prefix.name}.svg"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert ET.parse(svg).getroot().tag.endswith("svg")


@pytest.fixture(scope="module")
def sweep_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    sweep = sweep_layer(ConvSpec.make(128, 256, 3, 2, 1, input_size=28), [2, 16, 64])
    (folder / "s.json").write_text(sweep.to_json())
    (folder / "s.csv").write_text(sweep.to_csv())
    return folder


@pytest.mark.parametrize("name", ["s.json", "s.csv"])
def test_plot_sweep_default_prefix_beside_the_data(sweep_files, name) -> None:
    result = run(["plot", "sweep", str(sweep_files / name)])
    assert result.exit_code == 0, result.output
    assert_written(sweep_files / "s")
    assert result.stderr.startswith(("wrote ", "replaced ")) and result.stdout == ""


def test_plot_sweep_out(sweep_files, tmp_path) -> None:
    result = run(["plot", "sweep", str(sweep_files / "s.json"), "--out", str(tmp_path / "fig" / "sweep.png")])
    assert result.exit_code == 0, result.output
    assert_written(tmp_path / "fig" / "sweep")


@pytest.mark.parametrize(
    "name, content, message",
    [("b.json", "", "is empty"), ("b.json", '{"points": [', "not valid JSON"),
     ("b.csv", "hello,world\n1,2\n", "has no column"), ("b.csv", "\n", "is empty"),
     ("b.json", '{"model": "resnet20", "layers": []}', "not a sweep")],
)
def test_plot_sweep_corrupted(tmp_path, name, content, message) -> None:
    path = tmp_path / name
    path.write_text(content)
    line = one_line_error(run(["plot", "sweep", str(path)]))
    assert message in line and "ttplan sweep" in line
    assert not (tmp_path / "b.png").exists()


def test_plot_sweep_missing_file(tmp_path) -> None:
    assert "does not exist" in one_line_error(run(["plot", "sweep", str(tmp_path / "none.json")]))


def test_plot_plan(tmp_path) -> None:
    args = ["plot", "plan", *GEOMETRY, "--format", "hodec", "--tt-shapes", "4,8,8,9,4,4,8", "--rank", "16",
            "--out", str(tmp_path / "plan")]
    result = run(args)
    assert result.exit_code == 0, result.output
    assert_written(tmp_path / "plan")
    result = run([*args[:-1], str(tmp_path / "pub"), "--scheme", "published", "--order", "3"])
    assert result.exit_code == 0, result.output
    assert_written(tmp_path / "pub")


def test_plot_plan_without_ranks(tmp_path) -> None:
    line = one_line_error(run(["plot", "plan", *GEOMETRY, "--out", str(tmp_path / "p")]))
    assert "--rank" in line


def test_plot_arch(tmp_path) -> None:
    data = {"model": "m", "layers": [{"name": "conv", "baseline": {"macs": 100, "params": 10},
                                      "schemes": {"hodec": {"macs": 60}}, "best": {"macs": 40, "params": 4},
                                      "worse_than_dense": False}], "totals": {}}
    (tmp_path / "arch_m.json").write_text(json.dumps(data))
    result = run(["plot", "arch", str(tmp_path / "arch_m.json")])
    assert result.exit_code == 0, result.output
    assert_written(tmp_path / "arch_m")


@pytest.mark.parametrize("content, message", [("", "is empty"), ("{", "not valid JSON"),
                                              ('{"layers": {}}', "no list 'layers'")])
def test_plot_arch_corrupted(tmp_path, content, message) -> None:
    (tmp_path / "a.json").write_text(content)
    line = one_line_error(run(["plot", "arch", str(tmp_path / "a.json")]))
    assert message in line and "ttplan plan" in line


def test_plot_admm(tmp_path) -> None:
    epochs = [{"epoch": e, "phase": "admm", "loss": 1.0 / (e + 1), "accuracy": 0.9, "rho": 1e-3,
               "distances": {"conv": 0.1 / (e + 1)}} for e in range(4)]
    (tmp_path / "metrics.json").write_text(json.dumps({"config": {}, "epochs": epochs}))
    result = run(["plot", "admm", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert_written(tmp_path / "admm")


@pytest.mark.parametrize("content, message", [(None, "has no metrics.json"), ("", "is empty"),
                                              ("[1, 2", "not valid JSON"), ('{"epochs": []}', "no epochs yet")])
def test_plot_admm_empty_or_corrupted_run_folder(tmp_path, content, message) -> None:
    if content is not None:
        (tmp_path / "metrics.json").write_text(content)
    line = one_line_error(run(["plot", "admm", str(tmp_path)]))
    assert message in line and "metrics.json" in line


def test_plot_admm_not_a_folder(tmp_path) -> None:
    assert "does not exist" in one_line_error(run(["plot", "admm", str(tmp_path / "missing")]))


def test_plot_without_a_subcommand_shows_help() -> None:
    result = run(["plot"])
    assert result.exit_code == 0
    for name in ("sweep", "arch", "plan", "admm"):
        assert name in result.output


def test_unwritable_prefix_is_refused_before_reading_or_drawing(tmp_path) -> None:
    (tmp_path / "plain").write_text("x")
    line = one_line_error(run(["plot", "plan", *GEOMETRY, "--rank", "4", "--out", str(tmp_path / "plain" / "p")]))
    assert "is a file, not a folder" in line
    line = one_line_error(run(["plot", "sweep", str(tmp_path / "none.json"), "--out", "/proc/ttplan/fig"]))
    assert "cannot create files in" in line  # checked before the missing input is even read
