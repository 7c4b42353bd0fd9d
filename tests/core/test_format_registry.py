"""The format registry: a format added from outside plans like the shipped ones; saved forms round-trip."""

import pytest

from ttplan.core.contraction import ContractionPlan
from ttplan.core.formats import (
    KINDS,
    TTFormat,
    format_names,
    get_format,
    make_format,
    max_rank_format,
    published_schemes,
    register,
)
from ttplan.core.layer import plan_layer
from ttplan.core.network import build_network
from ttplan.core.schemes import scheme, scheme_names
from ttplan.core.search import BruteForce
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

SPEC = ConvSpec.make(12, 8, (3, 2), stride=(2, 1), padding=1, input_size=(7, 6))


def test_shipped_formats_in_their_order():
    assert KINDS == format_names() == ("classical", "hodec", "tucker2", "tr", "cp", "cp-separable", "ttm")
    assert format_names(linear=True) == ("ttm",)
    assert published_schemes() == ("classical", "hodec", "tr", "cp", "ttm")
    assert scheme_names() == ("classical", "hodec", "tr", "cp", "ttm", "dense")


def test_a_registered_format_plans_like_the_shipped_ones(toy_format):
    fmt = make_format("spatial-last", SPEC, in_modes=(3, 4), out_modes=(2, 4), rank=3)
    assert isinstance(fmt, toy_format) and "spatial-last" in format_names()
    assert fmt.ranks == (1, *(min(3, b) for b in fmt.rank_bounds(SPEC)[1:-1]), 1)
    result = plan_layer(SPEC, fmt, batch=2)
    assert list(result.schemes) == ["spatial-last", "dense"]
    assert result.published is result.schemes["spatial-last"]
    # the published order absorbs C first, then the input cores, then the output cores
    assert [s.right_name for s in result.published.steps] == ["C", "A2", "A1", "B2", "B1"]
    brute = BruteForce()(build_network(SPEC, fmt, 2))
    assert result.best.macs == brute.macs <= result.published.macs
    assert scheme("spatial-last", result.network).macs == result.published.macs
    assert result.to_dict()["format"]["kind"] == "spatial-last"
    assert TTFormat.from_dict(fmt.to_dict()) == fmt
    assert fmt.params(SPEC) == result.best.params


def test_an_unregistered_format_is_unknown_again(toy_format):
    from ttplan.core.formats.registry import unregister

    unregister("spatial-last")
    expected = "format='spatial-last': expected one of classical, hodec, tucker2, tr, cp, cp-separable, ttm"
    with pytest.raises(TTPlanError, match=expected):
        make_format("spatial-last", SPEC, rank=3)
    register(toy_format)  # the fixture forgets it again


def test_a_name_cannot_be_taken_twice(toy_format):
    class Other(toy_format):
        pass

    with pytest.raises(TTPlanError, match="registered twice"):
        register(Other)


def test_a_scheme_of_another_format_is_refused():
    net = build_network(SPEC, make_format("classical", SPEC, rank=2))
    with pytest.raises(TTPlanError, match="scheme='hodec' needs a hodec or tucker2 format, got 'classical'"):
        scheme("hodec", net)
    with pytest.raises(TTPlanError, match="scheme='nope': expected one of classical, hodec, tr, cp, ttm, dense"):
        scheme("nope", net)
    assert isinstance(scheme("dense", net), ContractionPlan)


@pytest.mark.parametrize("kind, in_modes, out_modes", [
    ("classical", (4, 3), (2, 4)), ("hodec", (3, 4), (2, 2, 2)), ("tucker2", (12,), (8,)),
])
def test_to_dict_round_trips(kind, in_modes, out_modes):
    fmt = max_rank_format(kind, SPEC, in_modes, out_modes)
    data = fmt.to_dict()
    assert data == {"kind": fmt.label, "in_modes": list(in_modes), "out_modes": list(out_modes),
                    "ranks": list(fmt.ranks)}
    back = TTFormat.from_dict(data)
    assert back == fmt and type(back) is type(fmt)
    back.validate(SPEC)


def test_hodec_with_one_mode_a_side_is_tucker2():
    hodec = make_format("hodec", SPEC, order=1, rank=5)
    tucker = make_format("tucker2", SPEC, rank=5)
    assert hodec == tucker and hash(hodec) == hash(tucker) and hodec.label == "tucker2"
    assert type(hodec).name == "hodec" and type(tucker).name == "tucker2"
    # older saved runs wrote `kind: hodec` for it; both spellings read back to the same format
    old = {"kind": "hodec", "in_modes": [12], "out_modes": [8], "ranks": list(tucker.ranks)}
    assert TTFormat.from_dict(old) == tucker == TTFormat.from_dict(tucker.to_dict())
    assert tucker.to_dict()["kind"] == "tucker2"
    with pytest.raises(TTPlanError, match="order=2: tucker2 has exactly one mode a side"):
        make_format("tucker2", SPEC, order=2, rank=5)
    with pytest.raises(TTPlanError, match="takes one input and one output mode"):
        make_format("tucker2", SPEC, in_modes=(4, 3), rank=5)


@pytest.mark.parametrize("data, fragment", [
    ({"kind": "hodec"}, "expected a mapping with kind, in_modes, out_modes, ranks"),
    ({"kind": "nope", "in_modes": [12], "out_modes": [8], "ranks": [1, 1]}, "format='nope'"),
    ({"kind": "hodec", "in_modes": [12.0], "out_modes": [8], "ranks": [1, 2, 2, 1]}, "in_modes=[12.0]"),
    ([1, 2], "format data [1, 2]"),
])
def test_bad_saved_formats_are_one_line(data, fragment):
    with pytest.raises(TTPlanError) as err:
        TTFormat.from_dict(data)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_config_entries_use_each_formats_spelling():
    hodec = make_format("hodec", SPEC, in_modes=(3, 4), out_modes=(2, 4), rank=3)
    assert hodec.to_config(SPEC) == {"format": "hodec", "tt_shapes": [2, 4, 6, 3, 4], "ranks": list(hodec.ranks)}
    classical = make_format("classical", SPEC, rank=3)
    assert classical.to_config(SPEC) == {"format": "classical", "in_modes": list(classical.in_modes),
                                         "out_modes": list(classical.out_modes), "ranks": list(classical.ranks)}
    for fmt in (hodec, classical):
        entry = fmt.to_config(SPEC)
        assert make_format(entry.pop("format"), SPEC, **{k: tuple(v) for k, v in entry.items()}) == fmt


def test_core_axes_name_every_parameter_axis():
    hodec = make_format("hodec", SPEC, in_modes=(3, 4), out_modes=(8,), rank=2)
    assert [c.axes for c in hodec.cores(SPEC)] == [("1", "o1", "r1"), ("r1", "kh", "kw", "r2"),
                                                   ("r2", "i1", "r3"), ("r3", "i2", "1")]
    classical = make_format("classical", SPEC, in_modes=(4, 3), out_modes=(2, 4), rank=2)
    assert [c.axes for c in classical.cores(SPEC)] == [("kh", "kw", "r0"), ("r0", "i1", "o1", "r1"),
                                                       ("r1", "i2", "o2", "1")]
    for fmt in (hodec, classical):
        assert all(len(c.axes) == len(c.shape) for c in fmt.cores(SPEC))


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(rank=2.5), "rank=2.5: expected a positive int"),
    (dict(rank=True), "rank=True: expected a positive int"),
    (dict(rank=0), "rank=0: expected a positive int"),
    (dict(rank=2, order=1.5), "order=1.5: expected a positive int"),
    (dict(ranks=(1, 2.0, 2, 2, 1)), "ranks=[1, 2.0, 2, 2, 1]"),
    (dict(in_modes=(3, 4.0), rank=2), "in_modes=[3, 4.0]"),
    (dict(tt_shapes=(8, 6, "3", 4), rank=2), "tt_shapes=[8, 6, '3', 4]"),
])
def test_arguments_of_the_wrong_type_are_named(kwargs, fragment):
    with pytest.raises(TTPlanError) as err:
        make_format("hodec", SPEC, **kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_every_format_class_is_a_ttformat():
    for name in format_names():
        assert issubclass(get_format(name), TTFormat) and get_format(name).name == name
