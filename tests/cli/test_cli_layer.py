"""`ttplan layer` as a user meets it: the report, --json, --compare and one-line errors."""

import json

import pytest

from tests.helpers.cli import GEOMETRY, one_line_error, run

HODEC = ["--format", "hodec", "--tt-shapes", "4,8,8,9,4,4,8", "--ranks", "1,16,16,16,16,16,16,1"]
CLASSICAL = ["--format", "classical", "--in-modes", "4,4,8", "--out-modes", "4,8,8", "--rank", "16"]


def test_hodec_json_has_the_issue_keys_and_numbers():
    result = run(["layer", *GEOMETRY, *HODEC, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    baseline = {key: data["baseline"][key] for key in ("macs", "flops", "params")}
    assert baseline == {"macs": 57_802_752, "flops": 115_605_504, "params": 294_912}
    assert data["baseline"]["predicted_ms"] > data["best"]["predicted_ms"] > 0
    assert data["schemes"]["hodec"]["macs"] == 10_486_784
    assert data["schemes"]["hodec"]["params"] == 8_640
    assert data["best"]["macs"] * 3 < data["schemes"]["hodec"]["macs"]
    for key in ("macs", "params", "largest_intermediate", "steps"):
        assert key in data["best"]
    assert {"macs", "params", "largest_intermediate"} <= set(data["schemes"]["dense"])
    assert [s["kind"] for s in data["best"]["steps"]].count("conv") == 1


def test_classical_report_flags_the_order_above_dense():
    result = run(["layer", *GEOMETRY, *CLASSICAL])
    assert result.exit_code == 0
    line = next(x for x in result.output.splitlines() if x.startswith("classical"))
    assert "87,105,536" in line and "1.507" in line and "13,456" in line and "> dense" in line
    best = next(x for x in result.output.splitlines() if x.startswith("best"))
    assert "> dense" not in best


def test_compare_lists_the_peers():
    result = run(["layer", *GEOMETRY, *HODEC, "--compare", "--json"])
    peers = {p["name"]: p for p in json.loads(result.output)["peers"]}
    assert {"opt_einsum-optimal", "opt_einsum-dp"} <= set(peers)
    best = json.loads(result.output)["best"]["macs"]
    assert all(p["ttplan_macs"] >= best for p in peers.values())
    einsum = json.loads(result.output)["im2col_einsum"]
    assert einsum["expression"].startswith("X_unf[b,s',k,i1,i2,i3]")
    assert einsum["shapes"][0] == [1, 196, 9, 4, 4, 8]  # unfolded: H'W' x K per channel


def test_batch_and_fold_weights():
    one = json.loads(run(["layer", *GEOMETRY, *HODEC, "--json"]).output)
    many = json.loads(run(["layer", *GEOMETRY, *HODEC, "--json", "--batch", "8"]).output)
    assert many["schemes"]["hodec"]["macs"] == 8 * one["schemes"]["hodec"]["macs"]
    folded = json.loads(run(["layer", *GEOMETRY, *HODEC, "--json", "--fold-weights"]).output)
    assert folded["best"]["weight_macs"] >= 0 and folded["best"]["macs"] == folded["best"]["feature_macs"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--in-channels", "0", "--out-channels", "8", "--rank", "2"], "0"),
        ([*GEOMETRY, "--format", "hodec", "--tt-shapes", "4,8,8,9,4,4,8", "--ranks", "1,16,1"], "ranks=[1, 16, 1]"),
        ([*GEOMETRY, "--format", "hodec", "--in-modes", "4,4,4", "--rank", "8"], "in_modes=[4, 4, 4]"),
        ([*GEOMETRY, "--format", "banana", "--rank", "8"], "banana"),
        ([*GEOMETRY, "--tt-shapes", "4,x", "--rank", "8"], "4,x"),
        ([*GEOMETRY, "--format", "hodec"], "--rank"),
        ([*GEOMETRY, "--rank", "8", "--memory-limit", "5"], "memory_limit=5"),
        (["--in-channels", "8", "--out-channels", "8", "--kernel-size", "9", "--input-size", "4", "--rank", "2"],
         "kernel_size=(9, 9)"),
        ([*GEOMETRY, "--kernel-size", "3,3,3", "--rank", "4"], "3,3,3"),
        ([*GEOMETRY, "--rank", "8", "--order", "9"], "order=9"),
        ([*GEOMETRY, "--rank", "8", "--ranks", "1,8,8,8,8,8,8,1"], "--ranks 1,8,8,8,8,8,8,1 and --rank 8 both given"),
        ([*GEOMETRY[:-1], "3,28,28", "--rank", "8"], "C=3 differs from --in-channels 128"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, fragment):
    one_line_error(run(["layer", *args]), fragment)


def test_help_explains_every_option_with_an_example():
    result = run(["layer", "--help"])
    assert result.exit_code == 0
    for option in ("--in-channels", "--tt-shapes", "--ranks", "--rank", "--in-modes", "--out-modes", "--order",
                   "--batch", "--fold-weights", "--memory-limit", "--compare", "--json", "--stride", "--dilation"):
        assert option in result.output
    assert "ttplan layer --in-channels 128" in result.output


@pytest.mark.parametrize("extra", [HODEC, ["--format", "hodec", "--rank", "16", "--order", "7", "--compare"],
                                   ["--format", "classical", "--rank", "16", "--order", "5", "--fold-weights"]])
def test_report_fits_120_columns(extra):
    result = run(["layer", *GEOMETRY, *extra])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 120
    wide = run(["layer", *GEOMETRY, *extra, "--wide"]).stdout
    assert len(wide.splitlines()) <= len(result.stdout.splitlines())


def test_input_size_spellings_mean_the_same_layer():
    sizes = [json.loads(run(["layer", *GEOMETRY[:-1], size, *HODEC, "--json"]).stdout)["best"]["macs"]
             for size in ("28", "28,28", "28x28", "128,28,28")]
    assert len(set(sizes)) == 1


def test_cp_with_seven_modes_a_side_is_planned_at_once_and_says_the_search_was_bounded():
    """This took 269 s with nothing on stderr (issue #25, item 18): the exact search would price 1.5 * 3^15 steps.
    Now the bounded search plans it, the report and the JSON say so, and stderr has one warning."""
    args = ["layer", "-i", "128", "-o", "128", "-p", "1", "--input-size", "8", "--format", "cp", "--order", "7",
            "--rank", "8"]
    text = run(args)
    assert text.exit_code == 0 and "note: " in text.stdout and "bounded search" in text.stdout
    data = json.loads(run([*args, "--json"]).stdout)
    assert data["best"]["bounded"] and data["schemes"]["dense"]["bounded"] and not data["schemes"]["cp"]["bounded"]
    assert data["best"]["macs"] <= data["schemes"]["cp"]["macs"]
    warnings = text.stderr.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "may not be the optimum" in warnings[0]
