"""Configs: JSON/YAML loading, '.weight' keys, checks against the traced model, and save/load round trips."""

from __future__ import annotations

import json

import pytest

from ttplan.arch.config import LayerConfig, load_config, resolve_formats, save_config
from ttplan.core.formats import get_format
from ttplan.errors import TTPlanError
from ttplan.models import load_model, trace_layers


@pytest.fixture(scope="module")
def resnet20_layers():
    model, size = load_model("resnet20")
    return trace_layers(model, size)


def _write(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_published_hp_dict_with_weight_suffix(tmp_path, resnet20_layers) -> None:
    path = _write(tmp_path / "c.json", {
        "layer3.0.conv2.weight": {"tt_shapes": [8, 8, 9, 8, 8], "ranks": [1, 8, 20, 20, 8, 1]},
        "layer2.1.conv1": {"format": "hodec", "in_modes": [8, 4], "out_modes": [4, 8], "rank": 40},
    })
    config = load_config(path)
    assert set(config) == {"layer3.0.conv2", "layer2.1.conv1"}
    formats = resolve_formats(config, resnet20_layers)
    # tt_shapes = out_modes + [K] + in_modes
    assert formats["layer3.0.conv2"] == get_format("hodec")((8, 8), (8, 8), (1, 8, 20, 20, 8, 1))
    # tt_shapes (4, 8, 9, 8, 4): a uniform rank clipped to the larger of the exact rank and the product of
    # the two modes a rank joins: 4*8 = 32 at both ends, 8*9 = 72 > 40 in the middle
    assert formats["layer2.1.conv1"] == get_format("hodec")((8, 4), (4, 8), (1, 32, 40, 40, 32, 1))


def test_yaml_and_dense_entries(tmp_path, resnet20_layers) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("layer1.0.conv1:\n  format: classical\n  in_modes: [4, 4]\n  out_modes: [4, 4]\n"
                    "  ranks: [3, 5, 1]\nlinear: dense\n")
    config = load_config(path)
    assert config["linear"] == LayerConfig(format="dense")
    formats = resolve_formats(config, resnet20_layers)
    assert list(formats) == ["layer1.0.conv1"]
    assert formats["layer1.0.conv1"] == get_format("classical")((4, 4), (4, 4), (3, 5, 1))


def test_unknown_layer_lists_the_conv_layers(tmp_path, resnet20_layers) -> None:
    config = load_config(_write(tmp_path / "c.json", {"layer4.0.conv1": {"rank": 4}}))
    with pytest.raises(TTPlanError) as info:
        resolve_formats(config, resnet20_layers)
    message = str(info.value)
    assert "'layer4.0.conv1'" in message and "\n" not in message
    for layer in resnet20_layers:
        assert layer.name in message


def test_shape_mismatch_names_layer_and_geometry(tmp_path, resnet20_layers) -> None:
    config = load_config(_write(tmp_path / "c.json",
                                {"layer1.0.conv1": {"tt_shapes": [8, 8, 9, 4, 4], "ranks": [1, 4, 4, 4, 4, 1]}}))
    with pytest.raises(TTPlanError, match=r"layer1\.0\.conv1.*16->16 3x3.*products 16 and 16"):
        resolve_formats(config, resnet20_layers)
    config = load_config(_write(tmp_path / "d.json", {"layer1.0.conv1": {"in_modes": [4, 4], "out_modes": [4, 4],
                                                                         "ranks": [1, 4, 99, 99, 4, 1]}}))
    with pytest.raises(TTPlanError, match="exceeds its bound"):
        resolve_formats(config, resnet20_layers)


@pytest.mark.parametrize("entry, match", [
    ({"rank": 4, "ranx": 3}, "unknown key.*ranx.*accepted keys"),
    ({"format": "tt", "rank": 4}, "format='tt'.*hodec"),
    ({"in_modes": [4, 4]}, "no ranks"),
    ({"rank": 0}, "positive int"),
    ({"tt_shapes": [4, 4, 9, 4, 4], "in_modes": [4, 4], "rank": 2}, "not both"),
    ([1, 2], "expected a mapping"),
])
def test_entry_spelling_errors(tmp_path, entry, match) -> None:
    with pytest.raises(TTPlanError, match=match):
        load_config(_write(tmp_path / "c.json", {"layer1.0.conv1": entry}))


def test_file_errors(tmp_path) -> None:
    with pytest.raises(TTPlanError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TTPlanError, match="not valid JSON"):
        load_config(bad)
    with pytest.raises(TTPlanError, match="appears twice"):
        load_config(_write(tmp_path / "twice.json", {"conv1": {"rank": 2}, "conv1.weight": {"rank": 2}}))


def test_linear_needs_ttm(tmp_path, resnet20_layers) -> None:
    config = load_config(_write(tmp_path / "c.json", {"linear": {"format": "hodec", "rank": 2}}))
    with pytest.raises(TTPlanError, match="nn.Linear.*ttm"):
        resolve_formats(config, resnet20_layers)
    config = load_config(_write(tmp_path / "d.json", {"linear": {"format": "ttm", "in_modes": [8, 8],
                                                                 "out_modes": [2, 5], "rank": 3}}))
    assert resolve_formats(config, resnet20_layers)["linear"] == get_format("ttm")((8, 8), (2, 5), (1, 3, 1))


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_save_then_load_replays_the_formats(tmp_path, resnet20_layers, suffix) -> None:
    specs = {layer.name: layer.spec for layer in resnet20_layers}
    formats = {
        "conv1": None,
        "layer1.0.conv1": get_format("hodec")((4, 4), (2, 8), (1, 2, 7, 9, 4, 1)),
        "layer2.0.conv1": get_format("hodec")((16,), (32,), (1, 5, 6, 1)),  # tucker2
        "layer3.1.conv2": get_format("classical")((8, 8), (8, 8), (9, 12, 1)),
    }
    path = save_config(formats, specs, tmp_path / f"cfg{suffix}")
    config = load_config(path)
    assert config["conv1"].dense
    assert config["layer2.0.conv1"].format == "tucker2"
    assert config["layer1.0.conv1"].tt_shapes == (2, 8, 9, 4, 4)
    assert resolve_formats(config, resnet20_layers) == {k: v for k, v in formats.items() if v is not None}


def test_a_plans_json_is_a_config(tmp_path, resnet20_layers) -> None:
    """`ttplan plan --json` writes formats as `kind` beside MACs and the rest: its layers read as entries, each
    decomposed one in its format, each other one (a layer `--skip-worse` rejected too) dense."""
    fmt = get_format("hodec")((4, 4), (4, 4), (1, 4, 4, 4, 4, 1))
    spec = next(layer.spec for layer in resnet20_layers if layer.name == "layer1.0.conv1")
    rows = [{"name": "layer1.0.conv1", "decomposed": True, "best": {"macs": 1},
             "format": {**fmt.to_dict(), "tt_shapes": list(fmt.tt_shapes(spec))}},
            {"name": "layer1.0.conv2", "decomposed": False, "format": fmt.to_dict(), "dense_reason": "--skip-worse"},
            {"name": "conv1", "decomposed": False, "format": None}]
    config = load_config(_write(tmp_path / "plan.json", {"model": "resnet20", "layers": rows, "totals": {}}))
    assert config["layer1.0.conv2"].dense and config["conv1"].dense
    assert resolve_formats(config, resnet20_layers) == {"layer1.0.conv1": fmt}
    assert load_config(_write(tmp_path / "kind.json", {"layer1.0.conv1": {"kind": "tucker2", "rank": 4}})) == {
        "layer1.0.conv1": LayerConfig("tucker2", rank=4)}
    with pytest.raises(TTPlanError, match="'layer1.0.conv1' appears twice in its layers"):
        load_config(_write(tmp_path / "twice.json", {"layers": rows[:1] * 2}))
