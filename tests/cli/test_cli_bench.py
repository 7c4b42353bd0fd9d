"""`ttplan bench model --best` and `--json` as a user meets them: the JSON holds best against best, bad values are one
line and exit 2."""

from __future__ import annotations

import json

import pytest

import ttplan.bench.model.measure as measure
from tests.helpers.cli import one_line_error, run
from ttplan.bench.model.forms import FORMS

#: a tiny run: resnet20 on 8x8 inputs, one round, MACs objective (no profile decides what is decomposed)
TINY = ["bench", "model", "resnet20", "--input-size", "8,8", "--batch", "1", "--threads", "1", "--rounds", "1",
        "--objective", "macs"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def no_compile_no_export(monkeypatch):
    """The compiled and ONNX Runtime forms as unavailable: compiling takes a minute here, and their own tests run
    them (tests/bench/test_bench_model_forms.py)."""
    monkeypatch.setattr(measure, "compiled_runner", lambda model, x, layout: "not compiled in this test")
    monkeypatch.setattr(measure, "onnx_runtime_runner", lambda model, x, threads: "not exported in this test")


def test_json_holds_best_against_best_and_the_planned_macs_reduction(no_compile_no_export):
    result = run([*TINY, "--best", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    (one,) = data["runs"]
    assert one["arch"] == "resnet20" and one["batch"] == 1 and one["command"].endswith(" --best")
    assert one["macs_reduction"] > 0.6 and one["dense_ms"] > 0 and one["tt_ms"] > 0
    best = one["best"]
    assert [row["form"] for row in best["forms"]] == list(FORMS)
    eager = ("eager NCHW", "eager NCHW, frozen", "eager channels-last")
    assert best["best_dense"]["form"] in eager and best["best_tt"]["form"] in eager
    assert best["best_vs_best"] == pytest.approx(best["best_dense"]["ms"] / best["best_tt"]["ms"])
    assert best["best_tt"]["macs_reduction"] is not None
    compiled = best["forms"][3]
    assert compiled["dense_ms"] is None and compiled["tt_unavailable"] == "not compiled in this test"
    # the summary on stderr leads with best against best
    summary = [line for line in result.stderr.splitlines() if line.startswith("resnet20 batch 1")]
    assert summary and "best TT (" in summary[0] and summary[0].index("best TT") < summary[0].index("eager NCHW:")


def test_json_goes_to_out_when_given_and_without_best_has_no_best(tmp_path):
    out = tmp_path / "runs.json"
    result = run([*TINY, "--json", "--out", out])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    (one,) = json.loads(out.read_text())["runs"]
    assert one["best"] is None and one["speedup"] == pytest.approx(one["dense_ms"] / one["tt_ms"])


def test_markdown_report_leads_with_best_against_best(tmp_path, no_compile_no_export):
    out = tmp_path / "models.md"
    result = run([*TINY, "--best", "--out", out])
    assert result.exit_code == 0, result.stderr
    text = out.read_text()
    assert text.index("| form | dense ms | TT ms | ratio | TT MACs↓ |") < text.index("| dense ms | TT ms | speedup |")
    assert "best TT (" in text and "against best dense (" in text


@pytest.mark.parametrize("args, needles", [
    (["--json", "--append"], ["--json and --append both given"]),
    (["--rounds", "0"], ["'--rounds'", "0 is not in the range"]),
    (["--best", "--device", "cuda"], ["--device cuda"]),
    (["--best", "--batch", "-1"], ["'--batch'", "-1 is not in the range"]),
])
def test_bad_values_are_one_line_errors(args, needles, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    one_line_error(run([*TINY, *args]), *needles)
