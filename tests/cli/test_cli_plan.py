"""`ttplan plan` as a new user meets it: the default run, outputs, configs, budgets and one-line errors."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest

from tests.helpers.cli import one_line_error, run


def test_no_argument_plans_resnet18() -> None:
    result = run(["plan"])
    assert result.exit_code == 0, result.output
    assert "model resnet18, input 3x224x224" in result.output
    assert "layer3.0.conv1" in result.output and "TOTAL" in result.output
    assert "1,814,073,344" in result.output  # dense MACs of the model
    assert "FLOPs↓" in result.output and "MACs" in result.output


def test_json_has_the_documented_keys() -> None:
    result = run(["plan", "resnet20", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    first = next(row for row in data["layers"] if row["decomposed"])
    assert first["name"] == "layer1.0.conv1"
    assert first["schemes"]["hodec"]["macs"] >= first["best"]["macs"]
    for key in ("baseline", "best"):
        assert {"macs", "params"} <= set(first[key])
    assert "worse_than_dense" in first
    assert data["totals"]["baseline"]["macs"] == 40_551_040
    assert data["totals"]["tt"]["macs"] == sum(row["best"]["macs"] for row in data["layers"])


def test_csv_and_markdown_out(tmp_path) -> None:
    result = run(["plan", "resnet20", "--csv"])
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert len(rows) == 21 and rows[-1]["layer"] == "TOTAL"
    assert int(rows[-1]["dense_macs"]) == sum(int(r["dense_macs"]) for r in rows[:-1])
    out = tmp_path / "reports" / "r20.md"
    result = run(["plan", "resnet20", "--out", str(out)])
    assert result.exit_code == 0 and f"wrote {out}" in result.output
    text = out.read_text()
    assert text.startswith("# ttplan plan resnet20") and "| layer1.0.conv1 |" in text and "**TOTAL**" in text


def test_typo_suggests_the_closest_preset() -> None:
    one_line_error(run(["plan", "resnet-56"]), "did you mean 'resnet56'?")


def test_config_naming_a_missing_layer_lists_the_conv_layers(tmp_path) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"layer4.0.conv1.weight": {"rank": 4}}))
    result = run(["plan", "resnet20", "--config", str(path)])
    one_line_error(result, "'layer4.0.conv1'", "conv layers: conv1, layer1.0.conv1", "layer3.2.conv2")


@pytest.mark.parametrize("args, needle", [
    (("--rank", "4", "--rank-fraction", "0.3"), "--rank 4 and --rank-fraction 0.3 both given"),
    (("--rank", "4", "--target-params-reduction", "0.5"), "--target-params-reduction 0.5 and --rank 4"),
    # a budget names the targets given, whichever they are, and refuses what it cannot apply (issue #25, item 19)
    (("--rank", "4", "--target-speedup", "1.5"), "--target-speedup 1.5 and --rank 4 both given"),
    (("--rank-fraction", "0.3", "--target-macs-reduction", "0.5"),
     "--target-macs-reduction 0.5 and --rank-fraction 0.3 both given"),
    (("--autotune", "--target-params-reduction", "0.5"), "--target-params-reduction 0.5 and --autotune cpu"),
    (("--fuse", "--target-speedup", "1.5"), "--target-speedup 1.5 and --fuse both given"),
    (("--search-format",), "--target-speedup"),
    (("--json", "--csv"), "--json and --csv both given"),
    (("--out", "."), "is a folder"),
    (("--arch", "resnet32"), "two models given"),
    (("--search-format",), "needs a budget"),
    (("--input-size", "1,2,3,4"), "expected N, H,W or C,H,W"),
    (("--config", "no/such/file.json"), "cannot read"),
    (("--format", "classical", "--order", "5", "--wide"), ""),
])
def test_bad_options_exit_2(args, needle) -> None:
    result = run(["plan", "resnet20", *args])
    if needle:
        one_line_error(result, needle)
    else:  # 16 channels cannot be split into 5 modes: every layer stays dense, with the reason
        assert result.exit_code == 0 and "cannot be split" in result.output


def test_budget_saves_a_config_that_replays(tmp_path) -> None:
    config = tmp_path / "configs" / "r20.json"
    result = run(["plan", "resnet20", "--target-macs-reduction", "0.6", "--target-params-reduction", "0.6",
                 "--save-config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["budget"]["met"] is True
    assert data["totals"]["macs_reduction"] >= 0.6 and data["totals"]["params_reduction"] >= 0.6
    saved = json.loads(config.read_text())
    assert saved["conv1"] == {"format": "dense"} and saved["layer2.0.conv1"]["format"] == "hodec"
    replay = run(["plan", "resnet20", "--config", str(config), "--json"])
    assert replay.exit_code == 0
    assert json.loads(replay.stdout)["totals"] == data["totals"]


def test_unreachable_budget_says_so() -> None:
    result = run(["plan", "resnet20", "--target-params-reduction", "0.9999"])
    assert result.exit_code == 0
    assert "targets cannot be met" in result.output and "closest point" in result.output


def test_module_callable(tmp_path, monkeypatch) -> None:
    (tmp_path / "tiny_nets.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1),\n"
        "                         nn.Flatten(), nn.Linear(16 * 8 * 8, 10))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tiny_nets", raising=False)
    result = run(["plan", "tiny_nets:build", "--input-size", "3,8,8", "--order", "2", "--linear",
                  "--wide"])
    assert result.exit_code == 0, result.output
    assert "model tiny_nets:build, input 3x8x8" in result.output
    names = [line.split()[0] for line in result.output.splitlines() if line[:1].isdigit()]
    assert names == ["0", "1", "3"]  # nn.Sequential's own names; the Flatten (2) has no weight
    assert "ttm in 32·32 out 2·5" in result.output and "worse than dense (ttm order)" in result.output
    one_line_error(run(["plan", "tiny_nets:build"]), "needs an input size")


def test_default_table_fits_120_columns_and_wide_has_every_column() -> None:
    result = run(["plan", "resnet18"])
    assert result.exit_code == 0
    assert max(len(line) for line in result.stdout.splitlines()) <= 120
    wide = run(["plan", "resnet18", "--wide"])
    assert max(len(line) for line in wide.stdout.splitlines()) > 120
    assert "published-order MACs" in wide.stdout and "dense params" in wide.stdout
    header = next(line for line in result.stdout.splitlines() if line.startswith("layer "))
    assert header.split() == ["layer", "format", "rank≤", "MACs", "ms", "MACs↓", "params", "params↓", "note"]


def test_the_architecture_is_the_same_argument_positional_or_option() -> None:
    assert run(["plan", "--arch", "resnet20", "--json"]).stdout == run(["plan", "resnet20", "--json"]).stdout


def test_input_size_h_w_takes_the_presets_channels() -> None:
    both = [json.loads(run(["plan", "resnet20", "--input-size", size, "--json"]).stdout)["totals"]
            for size in ("3,16,16", "16,16", "16")]
    assert both[0] == both[1] == both[2]


def test_config_naming_a_layer_twice_is_refused(tmp_path) -> None:
    path = tmp_path / "twice.json"
    path.write_text('{"layer1.0.conv1": {"rank": 4}, "layer1.0.conv1": {"rank": 8}}')
    one_line_error(run(["plan", "resnet20", "--config", str(path)]), "'layer1.0.conv1' appears twice")
    yaml_path = tmp_path / "twice.yaml"
    yaml_path.write_text("layer1.0.conv1: {rank: 4}\nlayer1.0.conv1: {rank: 8}\n")
    one_line_error(run(["plan", "resnet20", "--config", str(yaml_path)]), "appears twice")


def test_out_says_replaced_on_stderr_and_leaves_no_temporary(tmp_path) -> None:
    out = tmp_path / "r20.csv"
    first = run(["plan", "resnet20", "--out", str(out)])
    second = run(["plan", "resnet20", "--out", str(out)])
    assert first.stdout == second.stdout == ""
    assert first.stderr.strip() == f"wrote {out}" and second.stderr.strip() == f"replaced {out}"
    assert [p.name for p in tmp_path.iterdir()] == ["r20.csv"]


@pytest.mark.parametrize("where, needle", [
    ("folder", "is a folder"),
    ("under_a_file", "is a file, not a folder"),
    ("system", "cannot create files in"),
])
def test_unwritable_out_is_refused_before_any_work(tmp_path, where, needle) -> None:
    (tmp_path / "plain.txt").write_text("x")
    path = {"folder": tmp_path, "under_a_file": tmp_path / "plain.txt" / "r.md", "system": "/proc/ttplan/r.md"}[where]
    for option in ("--out", "--save-config"):
        one_line_error(run(["plan", "resnet20", option, str(path)]), option, needle)


def test_layers_planned_by_the_bounded_search_are_noted_and_warned() -> None:
    """`plan resnet18 --format cp --order 6` took 182 s, silently (issue #25, item 18): its 64-channel CP layers
    are past the exact search's bound. The plan's notes and one stderr warning name them."""
    result = run(["plan", "resnet20", "--format", "cp", "--order", "6", "--json"])
    assert result.exit_code == 0, result.output
    notes = [note for note in json.loads(result.stdout)["notes"] if "bounded search" in note]
    assert len(notes) == 1 and "layer3.1.conv1" in notes[0] and "layer1.0.conv1" not in notes[0]
    assert result.stderr.strip() == f"warning: {notes[0]}"
