"""`ttplan layer` with the tensor-ring and CP formats: the issue's commands, their numbers and one-line errors."""

import json

from tests.helpers.cli import GEOMETRY, one_line_error, run

TR = ["--format", "tr", "--tt-shapes", "4,8,8,9,4,4,8", "--ranks", "16,16,16,16,16,16,16,16"]


def _json(args: list[str]) -> dict:
    result = run(["layer", *GEOMETRY, *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_tr_reports_wang_order_best_params_and_steps():
    data = _json(TR)
    assert data["format"] == {"kind": "tr", "in_modes": [4, 4, 8], "out_modes": [4, 8, 8], "ranks": [16] * 8}
    assert data["schemes"]["tr"]["macs"] == 47_529_984
    assert data["schemes"]["tr"]["params"] == data["best"]["params"] == 11_520
    assert data["best"]["macs"] <= data["schemes"]["tr"]["macs"]
    assert [s["kind"] for s in data["best"]["steps"]].count("conv") == 1


def test_cp_joint_and_separable_report_lebedev_order():
    joint = _json(["--format", "cp", "--rank", "64"])
    assert joint["format"]["kind"] == "cp"
    assert joint["schemes"]["cp"]["macs"] == 28 * 28 * 128 * 64 + 14 * 14 * 9 * 64 + 14 * 14 * 64 * 256
    assert joint["schemes"]["cp"]["params"] == 64 * (256 + 9 + 128)
    separable = _json(["--format", "cp", "--rank", "64", "--spatial", "separable"])
    assert separable["format"]["kind"] == "cp-separable"
    steps = separable["best"]["steps"]
    assert [(s["kind"], s["resolution"], s["macs"]) for s in steps if s["kind"] == "conv"] == [
        ("conv", 14 * 28, 14 * 28 * 3 * 64), ("conv", 14 * 14, 14 * 14 * 3 * 64)]
    assert separable["schemes"]["cp"]["params"] == 64 * (256 + 3 + 3 + 128)


def test_ring_and_spatial_errors_are_one_line():
    one_line_error(run(["layer", *GEOMETRY, "--format", "tr", "--tt-shapes", "4,8,8,9,4,4,8",
                        "--ranks", "2,16,16,16,16,16,16,16"]), "r_0 (2) must equal r_N (16)")
    one_line_error(run(["layer", *GEOMETRY, "--format", "hodec", "--rank", "4", "--spatial", "separable"]),
                   "spatial='separable' with format='hodec': only cp has a separable window")
