"""TT formats: core shapes, parameter counts, rank bounds, factorisation and the published spelling."""

import math

import pytest

from ttplan.core.formats import balanced_factors, hodec_from_tt_shapes, make_format, max_rank_format
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

SPEC = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)


def test_classical_rank16_params():
    fmt = make_format("classical", SPEC, in_modes=(4, 4, 8), out_modes=(4, 8, 8), rank=16)
    assert fmt.ranks == (16, 16, 16, 1)
    # S[3,3,16] + G1[16,4,4,16] + G2[16,4,8,16] + G3[16,8,8,1]
    assert fmt.params(SPEC) == 9 * 16 + 16 * 4 * 4 * 16 + 16 * 4 * 8 * 16 + 16 * 8 * 8 == 13_456


def test_hodec_published_spelling_params():
    fmt = make_format("hodec", SPEC, tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(1, 16, 16, 16, 16, 16, 16, 1))
    assert fmt.out_modes == (4, 8, 8) and fmt.in_modes == (4, 4, 8)
    assert [c.name for c in fmt.cores(SPEC)] == ["B1", "B2", "B3", "C", "A1", "A2", "A3"]
    assert fmt.cores(SPEC)[3].shape == (16, 3, 3, 16)
    assert fmt.params(SPEC) == 8_640


def test_published_128_256_config_is_read():
    fmt = hodec_from_tt_shapes(SPEC, (16, 16, 9, 8, 16), (1, 15, 160, 80, 15, 1))
    assert fmt.out_modes == (16, 16) and fmt.in_modes == (8, 16)
    fmt.validate(SPEC)


def test_tucker2_is_hodec_with_one_mode_a_side():
    fmt = make_format("tucker2", SPEC, rank=32)
    assert fmt.name == "tucker2" and fmt.label == "tucker2" and fmt.published_scheme == "hodec"
    assert fmt == make_format("hodec", SPEC, order=1, rank=32)
    assert fmt.in_modes == (128,) and fmt.out_modes == (256,)
    assert fmt.params(SPEC) == 256 * 32 + 32 * 9 * 32 + 32 * 128


def test_max_ranks_are_the_cut_products():
    fmt = max_rank_format("hodec", SPEC, (4, 4, 8), (4, 8, 8))
    shapes = (4, 8, 8, 9, 4, 4, 8)
    assert fmt.ranks == (1, *(min(math.prod(shapes[:t]), math.prod(shapes[t:])) for t in range(1, 7)), 1)


@pytest.mark.parametrize("n, d", [(128, 3), (256, 3), (64, 2), (96, 3), (1000, 3), (17, 1)])
def test_balanced_factors_multiply_back(n, d):
    factors = balanced_factors(n, d)
    assert math.prod(factors) == n and len(factors) == d
    assert all(f > 1 for f in factors) or d == 1


def test_balanced_factors_prefers_even_splits():
    assert sorted(balanced_factors(256, 2)) == [16, 16]
    assert sorted(balanced_factors(64, 3)) == [4, 4, 4]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(kind="hodec", in_modes=(4, 4, 4), out_modes=(4, 8, 8), rank=4), "in_modes=[4, 4, 4]"),
        (dict(kind="classical", in_modes=(16, 8), out_modes=(4, 8, 8), rank=4), "same count"),
        (dict(kind="hodec", tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(1, 16, 16, 1)), "needs 8 ranks"),
        (dict(kind="hodec", tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(1, 16, 16, 999, 16, 16, 16, 1)), "bound"),
        (dict(kind="hodec", tt_shapes=(4, 8, 8, 5, 4, 4, 8), ranks=(1,) * 8), "tt_shapes=[4, 8, 8, 5"),
        (dict(kind="hodec", tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(2, 16, 16, 16, 16, 16, 16, 1)), "boundary"),
        (dict(kind="nope", rank=4), "format='nope'"),
        (dict(kind="hodec", order=9, rank=4), "order=9"),
        (dict(kind="hodec"), "give ranks"),
    ],
)
def test_bad_formats_are_one_line(kwargs, fragment):
    kind = kwargs.pop("kind")
    with pytest.raises(TTPlanError) as err:
        make_format(kind, SPEC, **kwargs)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)
