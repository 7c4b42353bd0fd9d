"""`ttplan bench lowerings` on ResNet-20 at batch 1: every lowering timed once per program, checked, rendered."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from ttplan.bench import lowerings as bench_lowerings
from ttplan.bench.lowerings import DENSE, DENSE_CL, layer_groups, render_section, run_lowerings, time_group
from ttplan.cli.main import cli
from ttplan.core.search import optimize
from ttplan.errors import TTPlanError
from ttplan.runtime.lowering import LOWERINGS, lower


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_groups_are_the_distinct_decomposed_layers_with_their_fewest_macs_order():
    groups = layer_groups("resnet20", 1)
    assert sum(len(g.names) for g in groups) == 18  # resnet20's 3x3 convs past the first
    assert len({(g.spec, g.fmt) for g in groups}) == len(groups)
    assert all(g.plan.fold_weights and g.plan.macs == optimize(g.plan.network, fold_weights=True).macs
               for g in groups)


def test_every_lowering_is_timed_once_per_program(one_thread):
    group = layer_groups("resnet20", 1)[0]
    row = time_group(group, 1, rounds=1)
    assert row.ms[DENSE] > 0 and row.ms[DENSE_CL] > 0
    for lowering in LOWERINGS:
        if lowering.fused and row.ms[lowering.label] is None:
            continue  # the kernel does not run this order here
        assert row.ms[lowering.label] > 0
        twin = row.same.get(lowering.label)
        if twin is not None:  # shared only where the instructions are the same
            other = next(low for low in LOWERINGS if low.label == twin)
            assert lower(group.plan, lowering).feature == lower(group.plan, other).feature
            assert row.ms[lowering.label] == row.ms[twin]
    assert row.fastest(False) in {low.label for low in LOWERINGS if not low.channels_last}
    assert row.fastest(True) in {low.label for low in LOWERINGS if low.channels_last}


def test_a_lowering_that_computes_another_layer_is_refused(one_thread, monkeypatch):
    group = layer_groups("resnet20", 1)[0]
    real = bench_lowerings.TTConv2d

    class Wrong(real):
        def forward(self, x):
            out = super().forward(x)
            return out + 1 if self.program.lowering.channels_last else out

    monkeypatch.setattr(bench_lowerings, "TTConv2d", Wrong)
    with pytest.raises(TTPlanError, match="nhwc lowering computed another layer"):
        time_group(group, 1, rounds=1)


def test_the_report_has_a_row_per_group_and_counts_the_defaults(one_thread):
    groups = layer_groups("resnet20", 1)[:2]
    rows = run_lowerings(groups, 1, rounds=1)
    text = render_section(rows, "resnet20", 1, 1, 1, "ttplan bench lowerings resnet20")
    assert sum(line.startswith(f"| {g.label} |") for g in groups for line in text.splitlines()) == 2
    assert "- NCHW maps: the default lowering (bmm)" in text and "- NHWC maps: the default lowering (conv+nhwc)" in text


def test_cli_writes_the_report_and_refuses_append_without_one(tmp_path):
    out = tmp_path / "lowerings.md"
    runner = CliRunner()
    result = runner.invoke(cli, ["bench", "lowerings", "resnet20", "--batch", "1", "--rounds", "1", "--threads", "1",
                                 "--append", "--out", str(out)])
    assert result.exit_code == 2 and "does not exist yet" in result.output and not out.exists()
    result = runner.invoke(cli, ["bench", "lowerings", "resnet20", "--batch", "1", "--rounds", "1", "--threads", "1",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("# Lowerings") and "## resnet20, batch 1, 1 thread" in out.read_text()
