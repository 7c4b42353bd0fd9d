"""`ttplan sweep` as a user meets it: table, --json, --csv, --out, and one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.helpers.cli import GEOMETRY, one_line_error, run
from ttplan.analysis.sweep import load_sweep, sweep_layer
from ttplan.core.spec import ConvSpec
from ttplan.latency.profiles import default_profile


def test_json_matches_the_library() -> None:
    result = run(["sweep", *GEOMETRY, "--ranks", "2,16,64", "--name", "layer3.0.conv1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    expected = sweep_layer(ConvSpec.make(128, 256, 3, 2, 1, input_size=28), [2, 16, 64], name="layer3.0.conv1",
                           profile=default_profile())  # by MACs the command prices the ms with the committed one
    assert data == json.loads(expected.to_json())
    assert data["dense"] == {"macs": 57_802_752, "params": 294_912}
    assert len(data["points"]) == 18  # six formats at three ranks


def test_table_flags_published_orders_above_dense() -> None:
    result = run(["sweep", *GEOMETRY, "--ranks-range", "16:16"])
    assert result.exit_code == 0
    labels = ("classical-3", "tucker2", "hodec-2", "hodec-3")
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith(labels)}
    assert set(rows) == set(labels)
    assert "1.007" in rows["classical-3"] and "published > dense" in rows["classical-3"]
    assert "published > dense" not in rows["tucker2"]


def test_markdown_page_summarises_each_format_and_shows_the_figure_beside_it(tmp_path) -> None:
    out = tmp_path / "sweep_l.md"
    result = run(["sweep", *GEOMETRY, "--ranks", "2,16", "--name", "layer3.0.conv1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("# Rank sweep: layer3.0.conv1") and "](sweep_l.png)" in text
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ") and "–" in line}
    assert set(rows) == {"classical-3", "tucker2", "hodec-2", "hodec-3", "tr-3", "cp-1"}
    assert "| 1 of 2 |" in rows["classical-3"]  # rank 16's published order costs 1.007x dense, rank 2's does not
    assert "never costlier" in text
    assert "![" not in run(["sweep", *GEOMETRY, "--ranks", "2", "--markdown"]).stdout  # no page path, no figure


@pytest.mark.parametrize("flag, suffix", [("--csv", "csv"), ("--json", "json"), (None, "csv")])
def test_out_writes_a_file_that_loads_back(tmp_path, flag, suffix) -> None:
    out = tmp_path / "deep" / f"sweep.{suffix}"
    args = ["sweep", *GEOMETRY, "--ranks-range", "2:8:3", "--out", str(out)] + ([flag] if flag else [])
    result = run(args)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    sweep = load_sweep(out)
    assert sorted({p.rank for p in sweep.points}) == [2, 5, 8]
    assert "wrote" in result.stderr


def test_skipped_formats_are_reported() -> None:
    result = run(["sweep", "-i", "3", "-o", "64", "--ranks", "2", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["points"][0]["format"] == "tucker2"
    assert result.stderr.count("skipped") == 4  # classical-3, hodec-2, hodec-3, tr-3


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ranks-range", "8:2"], "'8:2'"),
        (["--ranks-range", "x"], "START:STOP"),
        (["--ranks-range", "2:8", "--ranks", "2,4"], "not both"),
        (["--ranks", "2,0"], "positive"),
        (["--out", "sweep.txt"], "--json, --csv or --markdown"),
        (["--kernel-size", "40"], "kernel_size"),
    ],
)
def test_bad_input_is_one_line(tmp_path, monkeypatch, extra, message) -> None:
    monkeypatch.chdir(tmp_path)
    line = one_line_error(run(["sweep", *GEOMETRY, *extra]))
    assert message in line


def test_a_huge_range_is_clipped_to_the_bound_first_and_says_so() -> None:
    result = run(["sweep", "-i", "8", "-o", "8", "-p", "1", "--input-size", "8", "--ranks-range", "1:100000000",
                  "--json"])
    assert result.exit_code == 0, result.output
    assert "sweeping up to" in result.stderr
    bound = int(result.stderr.split("sweeping up to ")[1].split()[0])
    points = json.loads(result.stdout)["points"]
    assert max(p["rank"] for p in points) <= bound < 1000
    for label in {p["format"] for p in points}:  # each distinct format planned once
        ranks = [tuple(p["ranks"]) for p in points if p["format"] == label]
        assert len(ranks) == len(set(ranks))


def test_json_and_csv_together_are_refused() -> None:
    one_line_error(run(["sweep", *GEOMETRY, "--ranks", "4", "--json", "--csv"]), "--json and --csv both given")
