"""`ttplan bench latency` on one small layer: rows, ratios to dense, the report and --append."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from ttplan.bench.latency import bench_formats, resnet18_3x3_groups, run_latency, select_groups
from ttplan.cli.main import cli
from ttplan.errors import TTPlanError
from ttplan.latency.profiles import default_profile


def test_groups_and_formats_follow_the_issue():
    groups = resnet18_3x3_groups()
    assert sum(len(g.names) for g in groups) == 16 and len(groups) == 7
    (focus,) = select_groups(groups, ["layer3.0.conv1"])
    formats = bench_formats(focus.spec)
    assert formats["hodec"].tt_shapes(focus.spec) == (4, 8, 8, 9, 4, 4, 8)
    assert formats["hodec"].ranks == (1, 16, 16, 16, 16, 16, 16, 1)
    assert formats["classical"].in_modes == (4, 4, 8) and formats["classical"].ranks == (16, 16, 16, 1)
    with pytest.raises(TTPlanError, match="not a 3x3 conv"):
        select_groups(groups, ["fc"])


def test_rows_time_every_variant_against_dense():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        groups = select_groups(resnet18_3x3_groups(), ["layer4.0.conv2"])
        (row,) = run_latency(groups, (1,), repeats=1, profile=default_profile())
    finally:
        torch.set_num_threads(threads)
    assert all(row.ms[v] > 0 for v in ("dense", "classical", "hodec", "best"))
    assert row.ratio("dense") == 1.0
    assert row.macs["best"] <= row.macs["hodec"] < row.macs["dense"]
    assert row.ms["floor"] > 0  # the memory floor is timed in the same rounds
    assert row.ms["dense-cl"] > 0 and row.ms["fast-cl"] > 0  # and the channels-last pair
    assert row.macs["dense-cl"] == row.macs["dense"] and row.macs["fast-cl"] == row.macs["fast"]


def test_channels_last_variants_get_a_channels_last_input_and_compute_the_same():
    from ttplan.bench.latency import CHANNELS_LAST, build_variants, time_interleaved

    (group,) = select_groups(resnet18_3x3_groups(), ["layer4.0.conv2"])
    modules, _ = build_variants(group.spec, bench_formats(group.spec, 4), 1, 4, torch.device("cpu"),
                                with_tltorch=False, profile=default_profile())
    x = torch.randn(1, group.spec.in_channels, *group.spec.input_size)
    last = x.contiguous(memory_format=torch.channels_last)
    assert modules["dense-cl"] is modules["dense"]  # the same conv, only its input differs
    seen: dict[str, set[int]] = {"dense": set(), "fast-cl": set()}
    for name in seen:
        modules[name].register_forward_pre_hook(lambda m, args, name=name: seen[name].add(id(args[0])))
    time_interleaved({n: modules[n] for n in ("dense", *CHANNELS_LAST)}, x, 1, warmup=1, block_ms=0.0,
                     inputs=dict.fromkeys(CHANNELS_LAST, last))
    assert seen == {"dense": {id(x), id(last)}, "fast-cl": {id(last)}}
    with torch.no_grad():
        assert modules["fast-cl"](last).is_contiguous(memory_format=torch.channels_last)


def test_the_memory_floor_reads_the_input_and_writes_an_output_of_the_layers_shape():
    from torch.utils.flop_counter import FlopCounterMode

    from ttplan.bench.latency import MemoryFloor
    from ttplan.core.spec import ConvSpec

    spec = ConvSpec.make(8, 16, 3, stride=2, padding=1, input_size=10)
    x = torch.randn(3, 8, 10, 10)
    with FlopCounterMode(display=False) as counter:
        y = MemoryFloor(spec)(x)
    assert y.shape == torch.nn.functional.conv2d(x, torch.zeros(16, 8, 3, 3), stride=2, padding=1).shape
    assert counter.get_total_flops() == 0


@pytest.fixture
def restore_threads():
    """The command fixes torch's thread count; give the test process its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_cli_writes_and_appends(tmp_path, restore_threads):
    out = tmp_path / "latency.md"
    args = ["bench", "latency", "--layers", "layer4.0.conv1", "--batch", "1", "--repeats", "1", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    first = out.read_text()
    assert first.startswith("# Latency") and "| layer4.0.conv1 |" in first
    result = CliRunner().invoke(cli, [*args, "--append"])
    assert result.exit_code == 0, result.output
    assert out.read_text().count("| layer4.0.conv1 |") == 2
    result = CliRunner().invoke(cli, ["bench", "latency", "--layers", "nope", "--out", str(out)])
    assert result.exit_code == 2 and "--layers nope" in result.output


def test_cuda_graphs_need_the_cuda_device(tmp_path):
    result = CliRunner().invoke(cli, ["bench", "latency", "--cuda-graphs", "--out", str(tmp_path / "l.md")])
    assert result.exit_code == 2
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert lines == ["Error: --cuda-graphs needs --device cuda, got --device cpu"]
    assert not (tmp_path / "l.md").exists()
