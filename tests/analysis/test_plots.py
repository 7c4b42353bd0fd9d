"""Figures: what they draw (curves, lines, step numbers), that the files are real PNG/SVG, and bad inputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from ttplan.analysis.plots import (
    admm_figure,
    arch_figure,
    check_arch,
    plan_figure,
    plot_admm,
    plot_arch,
    plot_plan,
    plot_sweep,
    read_arch,
    read_metrics,
    sweep_figure,
)
from ttplan.analysis.sweep import sweep_layer
from ttplan.core.formats import make_format
from ttplan.core.layer import plan_layer
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

LAYER3 = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png_svg(paths) -> None:
    png, svg = paths
    assert png.suffix == ".png" and svg.suffix == ".svg"
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")


@pytest.fixture(scope="module")
def sweep():
    return sweep_layer(LAYER3, [2, 8, 16, 32, 64], name="layer3.0.conv1")


def metrics() -> dict:
    epochs = []
    for e in range(7):
        phase = "pretrain" if e < 2 else ("admm" if e < 5 else "finetune")
        dist = {"layer1.0.conv1": 0.5 / (e + 1), "layer2.0.conv1": 0.3 / (e + 1)} if phase == "admm" else {}
        epochs.append({"epoch": e, "phase": phase, "loss": 2.0 / (e + 1), "accuracy": 0.5 + 0.05 * e,
                       "rho": 1e-3 if phase == "admm" else None, "distances": dist})
    return {"config": {"model": "resnet20", "dataset": "digits"}, "epochs": epochs}


def arch() -> dict:
    layers = [
        {"name": "conv1", "baseline": {"macs": 442_368, "params": 432}, "schemes": {},
         "best": {"macs": 442_368, "params": 432}, "worse_than_dense": False},
        {"name": "layer1.0.conv1", "baseline": {"macs": 2_359_296, "params": 2_304},
         "schemes": {"hodec": {"macs": 900_000}, "dense": {"macs": 2_400_000}},
         "best": {"macs": 600_000, "params": 700}, "worse_than_dense": False},
        {"name": "layer2.0.conv1", "baseline": {"macs": 1_179_648, "params": 4_608},
         "schemes": {"classical": {"macs": 1_500_000}}, "best": {"macs": 800_000, "params": 1_200},
         "worse_than_dense": True},
    ]
    return {"model": "resnet20", "layers": layers, "totals": {}}


def test_sweep_figure_draws_every_order_and_the_dense_line(sweep) -> None:
    fig = sweep_figure(sweep)
    left, right = fig.axes[:2]
    assert left.get_yscale() == "log"  # 0.005x .. 14.7x
    assert right.get_xscale() == "log"
    dense = [ln for ln in left.lines if list(ln.get_ydata()) == [1.0, 1.0]]
    assert len(dense) == 1
    labels = [ln.get_label() for ln in left.lines]
    # tucker2's and CP's best orders are their published orders: one curve each says so; the others have two
    assert sum("published order = best order" in x for x in labels) == 2
    assert sum(x.endswith(", published order") for x in labels) == 4
    assert sum(x.endswith(", best order") and "=" not in x for x in labels) == 4
    classical = next(ln for ln in left.lines if ln.get_label().startswith("classical") and
                     ln.get_label().endswith("published order"))
    assert classical.get_linestyle() == "--"
    assert sorted(classical.get_ydata()) == sorted(p.published_vs_dense for p in sweep.series("classical-3"))
    assert left.get_legend() is not None and "dense" in " ".join(t.get_text() for t in left.get_legend().texts)


def test_plot_sweep_writes_png_and_svg(sweep, tmp_path) -> None:
    paths = plot_sweep(sweep, tmp_path / "sub" / "sweep_layer3.0.conv1")
    assert [p.name for p in paths] == ["sweep_layer3.0.conv1.png", "sweep_layer3.0.conv1.svg"]
    assert_png_svg(paths)


def test_files_are_reproducible(tmp_path) -> None:
    first = plot_admm(metrics(), tmp_path / "a")
    second = plot_admm(metrics(), tmp_path / "b")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_plan_figure_lists_the_steps_with_costs(tmp_path) -> None:
    result = plan_layer(LAYER3, make_format("hodec", LAYER3, tt_shapes=(4, 8, 8, 9, 4, 4, 8), rank=16))
    fig = plan_figure(result.best)
    text = "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)
    for step in result.best.steps:
        assert f"{step.number:>2}. {step.left_name} × {step.right_name}" in text
        assert f"{step.macs:,} MACs" in text
    assert "at 28x28" in text and "conv, at 14x14" in text
    assert f"total {result.best.macs:,} MACs" in text
    names = {t.get_text() for t in fig.axes[0].texts}
    assert {"X", "C", "A1", "B3"} <= names
    assert_png_svg(plot_plan(result.best, tmp_path / "plan"))


def test_arch_figure(tmp_path) -> None:
    fig = arch_figure(arch())
    macs, params = fig.axes[:2]
    assert [t.get_text() for t in params.get_xticklabels()] == ["conv1", "layer1.0.conv1", "layer2.0.conv1"]
    heights = [round(b.get_height()) for b in macs.patches if b.get_height() == b.get_height()]  # NaN: no bar
    assert 442_368 in heights and 600_000 in heights and 900_000 in heights and 1_500_000 in heights
    assert any(t.get_text() == "TT > dense" for t in macs.texts)
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(arch()))
    assert_png_svg(plot_arch(read_arch(path), tmp_path / "arch"))


def test_admm_figure(tmp_path) -> None:
    fig = admm_figure(metrics())
    loss, acc, dist = fig.axes[:3]
    assert [round(y, 6) for y in loss.lines[0].get_ydata()] == [round(2.0 / (e + 1), 6) for e in range(7)]
    assert {ln.get_label() for ln in dist.lines} == {"layer1.0.conv1", "layer2.0.conv1"}
    assert all(len(ln.get_xdata()) == 3 for ln in dist.lines)  # only the admm epochs carry distances
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(metrics()))
    assert_png_svg(plot_admm(read_metrics(run), run / "admm"))


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "has no metrics.json"),
        ("", "is empty"),
        ('{"epochs": [', "not valid JSON"),
        ('{"config": {}}', "no list 'epochs'"),
        ('{"config": {}, "epochs": []}', "no epochs yet"),
        ('{"epochs": [{"epoch": 0, "phase": "admm", "accuracy": 0.5}]}', "lacks loss"),
        ('{"epochs": [{"epoch": 0, "phase": "admm", "loss": "high", "accuracy": 0.5}]}', "loss='high'"),
        ('{"epochs": [{"epoch": 0, "phase": "admm", "loss": 1, "accuracy": 0.5, "distances": [1]}]}',
         "distances is not an object"),
    ],
)
def test_bad_run_folders(tmp_path, content, message) -> None:
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "metrics.json").write_text(content)
    with pytest.raises(TTPlanError, match=message) as info:
        read_metrics(run)
    assert "\n" not in str(info.value) and "expected" in str(info.value)


def test_missing_run_folder(tmp_path) -> None:
    with pytest.raises(TTPlanError, match="does not exist"):
        read_metrics(tmp_path / "nope")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"totals": {}}, "no list 'layers'"),
        ({"layers": []}, "holds no layers"),
        ({"layers": [{"name": "a", "baseline": {"macs": 1, "params": 1}}]}, "lacks 'best'"),
        ({"layers": [{"name": "a", "baseline": {"macs": 1}, "best": {"macs": 1, "params": 1}}]},
         "baseline.params=None"),
        ({"layers": [{"name": "a", "baseline": {"macs": 1, "params": 1}, "best": {"macs": -1, "params": 1}}]},
         "best.macs=-1"),
    ],
)
def test_bad_arch_plans(data, message) -> None:
    with pytest.raises(TTPlanError, match=message) as info:
        check_arch(data)
    assert "expected" in str(info.value)
