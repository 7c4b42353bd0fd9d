"""The format registry: each format class under its name, and the entry points that dispatch through it.

A new format is one module with one `TTFormat` subclass, passed to `register` once in
`ttplan/core/formats/__init__.py`; everything else (the CLI's `--format` choices, configs, schemes,
policies, saving and loading) asks the registry and the format object.
"""

from __future__ import annotations

from ttplan.core.formats.base import TTFormat, check_ints
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

#: name -> format class, in registration order (the order `--format` lists them)
_FORMATS: dict[str, type[TTFormat]] = {}


def register(cls: type[TTFormat]) -> type[TTFormat]:
    """Class decorator: make a format known by its `name` (a second class under one name is an error)."""
    if not cls.name:
        raise TTPlanError(f"format class {cls.__name__} has no name")
    known = _FORMATS.get(cls.name)
    if known is not None and known is not cls:
        raise TTPlanError(f"format={cls.name!r} is registered twice ({known.__name__} and {cls.__name__})")
    _FORMATS[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Forget a format (for tests that register a toy one)."""
    _FORMATS.pop(name, None)


def format_names(*, linear: bool | None = None) -> tuple[str, ...]:
    """Registered names in registration order; `linear=True/False` keeps the nn.Linear / conv formats."""
    return tuple(n for n, cls in _FORMATS.items() if linear is None or cls.linear == linear)


def get_format(name: str) -> type[TTFormat]:
    """The format class of a name, or a one-line error listing the accepted names."""
    cls = _FORMATS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise TTPlanError(f"format={name!r}: expected one of {', '.join(_FORMATS)}")
    return cls


def published_schemes() -> tuple[str, ...]:
    """The published scheme names of the registered formats, each once, in registration order."""
    return tuple(dict.fromkeys(cls.published_scheme for cls in _FORMATS.values()))


SPATIAL = ("joint", "separable")


def spatial_variant(kind: str, spatial: str | None) -> str:
    """The registered format of `kind`'s family whose window is `spatial` (`None` keeps `kind`)."""
    cls = get_format(kind)
    if spatial is None or spatial == cls.spatial:
        return kind
    if spatial not in SPATIAL:
        raise TTPlanError(f"spatial={spatial!r}: expected one of {', '.join(SPATIAL)}")
    family = cls.family or cls.name
    for name, other in _FORMATS.items():
        if (other.family or other.name) == family and other.spatial == spatial:
            return name
    having = [n for n, c in _FORMATS.items() if c.spatial == spatial and (c.family or n) != n]
    families = sorted({(_FORMATS[n].family or n) for n in having})
    raise TTPlanError(f"spatial={spatial!r} with format={kind!r}: only {', '.join(families) or 'no format'} "
                      f"{'has' if len(families) == 1 else 'have'} a {spatial} window")


def linear_format() -> str:
    """The format nn.Linear layers get (the one registered with `linear = True`)."""
    names = format_names(linear=True)
    if not names:
        raise TTPlanError("no format for nn.Linear layers is registered")
    return names[0]


def make_format(
    kind: str,
    spec: ConvSpec,
    *,
    in_modes: tuple[int, ...] | None = None,
    out_modes: tuple[int, ...] | None = None,
    ranks: tuple[int, ...] | None = None,
    rank: int | None = None,
    order: int | None = None,
    tt_shapes: tuple[int, ...] | None = None,
) -> TTFormat:
    """Build and validate a format from any of the accepted spellings (see `ttplan layer --help`)."""
    return get_format(kind).build(spec, in_modes=in_modes, out_modes=out_modes, ranks=ranks, rank=rank,
                                  order=order, tt_shapes=tt_shapes)


def max_rank_format(kind: str, spec: ConvSpec, in_modes: tuple[int, ...], out_modes: tuple[int, ...]) -> TTFormat:
    """The format at the exact ranks `max_ranks`: TT-SVD reproduces any kernel."""
    probe = get_format(kind)(tuple(in_modes), tuple(out_modes), ())
    return make_format(kind, spec, in_modes=in_modes, out_modes=out_modes, ranks=probe.max_ranks(spec))


def format_from_dict(data: object) -> TTFormat:
    """A format from the plain data of `TTFormat.to_dict` (`kind`, `in_modes`, `out_modes`, `ranks`)."""
    keys = ("kind", "in_modes", "out_modes", "ranks")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise TTPlanError(f"format data {data!r}: expected a mapping with {', '.join(keys)}")
    cls = get_format(data["kind"])
    return cls(check_ints("in_modes", data["in_modes"]), check_ints("out_modes", data["out_modes"]),
               check_ints("ranks", data["ranks"]))


__all__ = ["SPATIAL", "format_from_dict", "format_names", "get_format", "linear_format", "make_format",
           "max_rank_format", "published_schemes", "register", "spatial_variant", "unregister"]
