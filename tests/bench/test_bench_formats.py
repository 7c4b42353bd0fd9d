"""`ttplan bench formats`: the rank nearest a parameter target, the planned counts in each row, and the report."""

from __future__ import annotations

import pytest

from tests.helpers.cli import one_line_error, run
from ttplan.bench.formats import compare_formats, nearest_rank_format, render_markdown
from ttplan.core.formats import make_format
from ttplan.core.layer import plan_layer
from ttplan.core.spec import ConvSpec

SPEC = ConvSpec.make(16, 32, 3, 2, 1, input_size=8)


#: commands here set torch's thread count for the process (`--threads`): put it back after each test
pytestmark = pytest.mark.usefixtures("keep_threads")


@pytest.mark.parametrize("kind, order", [("hodec", 2), ("tr", 2), ("cp", 1), ("cp-separable", 1)])
def test_nearest_rank_is_nearest(kind, order):
    fmt = nearest_rank_format(SPEC, kind, order, 0.8)
    gap = abs(1 - fmt.params(SPEC) / SPEC.dense_params() - 0.8)
    for rank in range(1, 40):
        other = make_format(kind, SPEC, rank=rank, order=order)
        assert gap <= abs(1 - other.params(SPEC) / SPEC.dense_params() - 0.8) + 1e-12


def test_rows_carry_the_planned_counts_and_render():
    rows, dense_ms = compare_formats(SPEC, (0.8,), batch=2, repeats=1, formats=(("hodec", 2), ("tr", 2), ("cp", 1)))
    assert [r.label for r in rows] == ["hodec-2", "tr-2", "cp-1"] and dense_ms > 0
    for r in rows:
        plan = plan_layer(SPEC, r.fmt, batch=2)
        assert (r.published_macs, r.best_macs, r.params) == (plan.published.macs, plan.best.macs, r.fmt.params(SPEC))
        assert r.best_macs <= r.published_macs and r.published_ms > 0 and r.best_ms > 0
    text = render_markdown(rows, SPEC, "toy", 2, dense_ms, 1, 1, "ttplan bench formats", "1.00 1.00 1.00")
    assert "## about 80% fewer parameters" in text and text.count("| tr-2 |") == 1


def test_bad_targets_are_one_line_errors(tmp_path):
    one_line_error(run(["bench", "formats", "--targets", "0.9,2", "--out", str(tmp_path / "f.md")]), "--targets 0.9,2")
