"""The rank sweep: its points checked against closed-form counts, its shape on layer3.0.conv1, and its files."""

from __future__ import annotations

import json
import math

import pytest

from ttplan.analysis.sweep import (
    CSV_COLUMNS,
    Sweep,
    format_label,
    load_sweep,
    parse_rank_range,
    rank_bound,
    sweep_from_csv,
    sweep_from_json,
    sweep_layer,
)
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

LAYER3 = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)  # ResNet-18 layer3.0.conv1


@pytest.fixture(scope="module")
def layer3_sweep() -> Sweep:
    return sweep_layer(LAYER3, range(2, 65), name="layer3.0.conv1")


def _params(spec: ConvSpec, kind: str, in_modes, out_modes, ranks) -> int:
    """Core elements from the conventions' shapes, written out independently of TTFormat.cores."""
    kh, kw = spec.kernel_size
    if kind == "cp":
        return ranks[0] * (sum(out_modes) + kh * kw + sum(in_modes))
    if kind == "classical":
        return kh * kw * ranks[0] + sum(ranks[j] * in_modes[j] * out_modes[j] * ranks[j + 1]
                                        for j in range(len(in_modes)))
    e = len(out_modes)
    outs = sum(ranks[j] * out_modes[j] * ranks[j + 1] for j in range(e))
    ins = sum(ranks[e + 1 + j] * in_modes[j] * ranks[e + 2 + j] for j in range(len(in_modes)))
    return outs + ranks[e] * kh * kw * ranks[e + 1] + ins


def _published_macs(spec: ConvSpec, kind: str, in_modes, out_modes, ranks, batch: int = 1) -> int:
    """docs/cost-model.md's step costs of the published orders, summed (batch B, H·W before the window, H'·W' after)."""
    hw, ohw, k = spec.in_pixels, spec.out_pixels, spec.window
    e, d = len(out_modes), len(in_modes)
    if kind == "classical":
        total = ohw * spec.in_channels * ranks[0] * k
        for j in range(1, d + 1):
            total += ohw * ranks[j - 1] * ranks[j] * math.prod(in_modes[j - 1:]) * math.prod(out_modes[:j])
        return batch * total
    if kind == "cp":  # Lebedev et al.: merged input factors, 1x1 to R, depthwise conv, merged outputs, 1x1 to O
        rank = ranks[0]
        weight = sum(math.prod(m[:j]) * rank for m in (in_modes, out_modes) for j in range(2, len(m) + 1))
        return weight + batch * rank * (hw * spec.in_channels + ohw * k + ohw * spec.out_channels)
    if kind == "tr":  # Wang et al.: merged input cores at H·W, the conv, merged output cores; r_0 carried
        r, c = ranks, ranks[0]
        weight = sum(r[e + 1] * math.prod(in_modes[:j]) * r[e + j] * r[e + j + 1] for j in range(2, d + 1))
        weight += sum(c * math.prod(out_modes[:j]) * r[j - 1] * r[j] for j in range(2, e + 1))
        feature = hw * spec.in_channels * r[e + 1] * c + ohw * k * r[e] * r[e + 1] * c
        return weight + batch * (feature + ohw * spec.out_channels * r[e] * c)
    total = 0
    for j in range(d, 0, -1):  # A_d … A_1 at H·W; A_j joins ranks[e+j] and ranks[e+j+1]
        total += hw * math.prod(in_modes[:j]) * ranks[e + j] * ranks[e + j + 1]
    total += ohw * k * ranks[e] * ranks[e + 1]  # the conv with C
    for j in range(e, 0, -1):  # B_e … B_1 at H'·W'
        total += ohw * ranks[j - 1] * ranks[j] * math.prod(out_modes[j - 1:])
    return batch * total


def test_best_order_never_worse_than_published(layer3_sweep: Sweep) -> None:
    assert len(layer3_sweep.points) > 200
    for p in layer3_sweep.points:
        assert p.best_macs <= p.published_macs, p
        assert p.best_vs_dense <= p.published_vs_dense


def test_classical_published_above_dense_over_most_of_the_range(layer3_sweep: Sweep) -> None:
    classical = layer3_sweep.series("classical-3")
    above = [p for p in classical if p.published_vs_dense > 1.0]
    assert len(above) > len(classical) / 2
    # and over most of the parameter-reduction axis the figure spans (10%..99.9%)
    lo = min(p.param_reduction for p in classical)
    hi = max(p.param_reduction for p in classical)
    assert (max(p.param_reduction for p in above) - lo) > 0.5 * (hi - lo)
    # the searched order of hodec cores stays below dense at every rank
    for label in ("tucker2", "hodec-2", "hodec-3"):
        assert all(p.best_vs_dense < 1.0 for p in layer3_sweep.series(label))


def test_points_match_independent_counts(layer3_sweep: Sweep) -> None:
    for p in layer3_sweep.points:
        params = _params(LAYER3, p.kind, p.in_modes, p.out_modes, p.ranks)
        assert p.params == params
        assert p.param_reduction == pytest.approx(1 - params / 294_912)
        assert p.published_macs == _published_macs(LAYER3, p.kind, p.in_modes, p.out_modes, p.ranks)
        assert p.published_vs_dense == pytest.approx(p.published_macs / 57_802_752)
        assert p.best_vs_dense == pytest.approx(p.best_macs / 57_802_752)
    assert layer3_sweep.dense_macs == 57_802_752 and layer3_sweep.dense_params == 294_912


def test_series_are_distinct_formats_growing_with_rank(layer3_sweep: Sweep) -> None:
    assert layer3_sweep.formats == ["classical-3", "tucker2", "hodec-2", "hodec-3", "tr-3", "cp-1"]
    for label in layer3_sweep.formats:
        series = layer3_sweep.series(label)
        assert len({p.ranks for p in series}) == len(series)
        params = [p.params for p in series]
        assert params == sorted(params) and len(set(params)) == len(params)
        kinds = {(p.kind, p.order) for p in series}
        assert len(kinds) == 1 and format_label(*kinds.pop()) == label


def test_clipped_ranks_are_not_repeated() -> None:
    spec = ConvSpec.make(8, 8, 3, input_size=6)
    sweep = sweep_layer(spec, range(1, 200), [("hodec", 1)])
    ranks = [p.ranks for p in sweep.points]
    assert len(ranks) == len(set(ranks))
    assert max(p.ranks[1] for p in sweep.points) == max(8 * 9, 8)  # tucker2's rank bound after an 8-channel mode


def test_batch_scales_feature_steps() -> None:
    spec = ConvSpec.make(16, 32, 3, input_size=8)
    one = sweep_layer(spec, [4], [("classical", 2)], batch=1).points[0]
    four = sweep_layer(spec, [4], [("classical", 2)], batch=4).points[0]
    assert four.published_macs == 4 * one.published_macs  # the classical order has no weight-only step


def test_format_that_does_not_fit_is_skipped_with_reason() -> None:
    spec = ConvSpec.make(3, 64, 3, input_size=8)
    sweep = sweep_layer(spec, [2, 3])
    assert sweep.formats == ["tucker2", "cp-1"]
    assert len(sweep.skipped) == 4 and all("cannot be split" in s for s in sweep.skipped)


def test_no_ranks_is_an_error() -> None:
    with pytest.raises(TTPlanError, match="at least one rank"):
        sweep_layer(LAYER3, [])
    with pytest.raises(TTPlanError, match="positive int"):
        sweep_layer(LAYER3, [0, 2])


@pytest.mark.parametrize("text, ranks", [("2:5", (2, 3, 4, 5)), ("2:64:31", (2, 33, 64)), (" 4:4 ", (4,))])
def test_parse_rank_range(text: str, ranks: tuple[int, ...]) -> None:
    assert parse_rank_range(text) == ranks


@pytest.mark.parametrize("text", ["", "5", "5:2", "0:4", "a:b", "2:8:0", "1:2:3:4"])
def test_parse_rank_range_rejects(text: str) -> None:
    with pytest.raises(TTPlanError, match="START:STOP"):
        parse_rank_range(text)


def test_json_and_csv_round_trip(layer3_sweep: Sweep, tmp_path) -> None:
    assert sweep_from_json(layer3_sweep.to_json()) == layer3_sweep
    from_csv = sweep_from_csv(layer3_sweep.to_csv())
    assert from_csv.points == layer3_sweep.points
    assert (from_csv.layer, from_csv.name, from_csv.dense_macs) == (layer3_sweep.layer, "layer3.0.conv1", 57_802_752)
    (tmp_path / "s.json").write_text(layer3_sweep.to_json())
    (tmp_path / "s.csv").write_text(layer3_sweep.to_csv())
    assert load_sweep(tmp_path / "s.json") == layer3_sweep
    assert load_sweep(tmp_path / "s.csv").points == layer3_sweep.points
    header = layer3_sweep.to_csv().splitlines()[0].split(",")
    assert tuple(header) == CSV_COLUMNS


def _small() -> Sweep:
    return sweep_layer(ConvSpec.make(16, 32, 3, input_size=8), [2, 4])


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("empty.json", "", "is empty"),
        ("blank.csv", "\n  \n", "is empty"),
        ("cut.json", None, "not valid JSON"),
        ("list.json", "[1, 2]", "not a sweep"),
        ("other.json", json.dumps({"layers": []}), "not a sweep"),
        ("nopoints.json", None, "holds no points"),
        ("badpoint.json", None, "lacks best_macs"),
        ("badvalue.json", None, "bad value"),
        ("header.csv", ",".join(CSV_COLUMNS) + "\n", "header but no points"),
        ("columns.csv", "a,b,c\n1,2,3\n", "has no column"),
        ("short.csv", None, "fields"),
        ("binary.csv", b"\x89PNG\r\n\x1a\n\xff\xfe", "not UTF-8"),
    ],
)
def test_corrupted_files_say_what_was_expected(tmp_path, name: str, text, message: str) -> None:
    good = _small()
    if text is None:
        raw = good.to_dict()
        if name == "cut.json":
            text = good.to_json()[: len(good.to_json()) // 2]
        elif name == "nopoints.json":
            text = json.dumps({**raw, "points": []})
        elif name == "badpoint.json":
            del raw["points"][1]["best_macs"]
            text = json.dumps(raw)
        elif name == "badvalue.json":
            raw["points"][0]["params"] = "many"
            text = json.dumps(raw)
        elif name == "short.csv":
            lines = good.to_csv().splitlines()
            text = "\n".join([*lines[:2], lines[2].rsplit(",", 3)[0]]) + "\n"
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(TTPlanError, match=message) as info:
        load_sweep(path)
    assert "\n" not in str(info.value)
    assert "expected" in str(info.value) or "one sweep" in str(info.value)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(TTPlanError, match="does not exist"):
        load_sweep(tmp_path / "nope.json")


def test_rank_range_is_clipped_to_the_bound_before_listing() -> None:
    spec = ConvSpec.make(8, 8, 3, padding=1, input_size=8)
    bound = rank_bound(spec)
    assert parse_rank_range("1:100000000000", bound) == tuple(range(1, bound + 1))
    assert parse_rank_range(f"{bound + 5}:{bound + 9}", bound) == (bound,)
    above = sweep_layer(spec, [bound, bound + 1, 10**9])
    assert {p.rank for p in above.points} == {bound}  # one point per format: larger ranks are the same format
