"""Per-layer TT configs: a JSON or YAML file mapping layer names to a format, read and written.

One entry per layer, keyed by its qualified name (`layer3.0.conv1`; the published hp-dict spelling
`layer3.0.conv1.weight` is accepted too):

    {"layer3.0.conv1": {"format": "hodec", "tt_shapes": [16, 16, 9, 8, 16], "ranks": [1, 15, 160, 80, 15, 1]},
     "layer3.0.conv2": {"format": "hodec", "in_modes": [4, 4, 4], "out_modes": [4, 4, 4], "rank": 16},
     "fc":             {"format": "dense"}}

`format` defaults to hodec (`kind`, as a plan's JSON spells it, is accepted in its place); `"dense"` keeps a layer
dense (so a saved config replays exactly). The JSON `ttplan plan --json` writes is a config too: each of its
`layers` is an entry, dense where it was not decomposed, else its `format` (every other key of the plan, such as
its MACs, is ignored). Entries are checked against the model only in `resolve_formats`, where the layer geometry
is known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from ttplan.core.formats import KINDS, TTFormat, format_names, make_format
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.files import atomic_write_text

if TYPE_CHECKING:  # tracing needs torch; planning from a config does not
    from ttplan.models.trace import TracedLayer

DENSE = "dense"
FORMATS = (*KINDS, DENSE)
KEYS = ("format", "tt_shapes", "in_modes", "out_modes", "ranks", "rank", "order")
#: another spelling of `format` in an entry: the key a plan's JSON (`TTFormat.to_dict`) names the format by
KIND = "kind"
#: the keys of a planned format (`ttplan plan --json`, `layers[i].format`) an entry takes; `tt_shapes` follows
PLANNED_KEYS = ("in_modes", "out_modes", "ranks")


@dataclass(frozen=True)
class LayerConfig:
    """One config entry as written (not yet checked against the layer); `format='dense'` keeps it dense."""

    format: str = "hodec"
    tt_shapes: tuple[int, ...] | None = None
    in_modes: tuple[int, ...] | None = None
    out_modes: tuple[int, ...] | None = None
    ranks: tuple[int, ...] | None = None
    rank: int | None = None
    order: int | None = None

    @property
    def dense(self) -> bool:
        """Whether the entry keeps the layer dense."""
        return self.format == DENSE

    def to_format(self, spec: ConvSpec) -> TTFormat:
        """The validated format for a layer of geometry `spec` (`make_format`'s checks and errors)."""
        return make_format(
            self.format, spec, in_modes=self.in_modes, out_modes=self.out_modes, ranks=self.ranks,
            rank=self.rank, order=self.order, tt_shapes=self.tt_shapes,
        )


def layer_key(name: str) -> str:
    """A config key as a module name: the published `.weight` suffix dropped."""
    return name[: -len(".weight")] if name.endswith(".weight") else name


def _ints(value: object, where: str) -> tuple[int, ...]:
    """A list of positive ints, or a one-line error naming the entry."""
    if not isinstance(value, (list, tuple)) or not value or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        raise TTPlanError(f"{where}={value!r}: expected a non-empty list of positive ints, e.g. [4, 4, 8]")
    return tuple(int(v) for v in value)


def _positive(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TTPlanError(f"{where}={value!r}: expected a positive int")
    return int(value)


def parse_entry(name: str, entry: object) -> LayerConfig:
    """Check one entry's spelling (keys, types, format name); geometry is checked in `resolve_formats`."""
    if isinstance(entry, str) and entry == DENSE:
        return LayerConfig(format=DENSE)
    if not isinstance(entry, dict):
        raise TTPlanError(
            f"config entry {name!r}: expected a mapping like {{format, tt_shapes, ranks}} or "
            f"{{format, in_modes, out_modes, rank}}, got {type(entry).__name__}"
        )
    unknown = sorted(set(entry) - {*KEYS, KIND})
    if unknown:
        raise TTPlanError(f"config entry {name!r}: unknown key(s) {', '.join(map(str, unknown))}; "
                          f"accepted keys: {', '.join(KEYS)} ({KIND!r} for format)")
    if "format" in entry and KIND in entry and entry["format"] != entry[KIND]:
        raise TTPlanError(f"config entry {name!r}: format={entry['format']!r} and kind={entry[KIND]!r} differ; "
                          "give one (kind is another spelling of format)")
    kind = entry.get("format", entry.get(KIND, "hodec"))
    if kind not in FORMATS:
        raise TTPlanError(f"config entry {name!r}: format={kind!r}; expected one of {', '.join(FORMATS)}")
    if kind == DENSE:
        return LayerConfig(format=DENSE)
    lists = {key: _ints(entry[key], f"{name}.{key}") if entry.get(key) is not None else None
             for key in ("tt_shapes", "in_modes", "out_modes", "ranks")}
    rank = _positive(entry["rank"], f"{name}.rank") if entry.get("rank") is not None else None
    order = _positive(entry["order"], f"{name}.order") if entry.get("order") is not None else None
    if lists["ranks"] is None and rank is None:
        raise TTPlanError(f"config entry {name!r}: no ranks; add 'ranks' (a list) or a uniform 'rank'")
    if lists["tt_shapes"] is not None and (lists["in_modes"] is not None or lists["out_modes"] is not None):
        raise TTPlanError(f"config entry {name!r}: give either tt_shapes or in_modes/out_modes, not both")
    return LayerConfig(kind, lists["tt_shapes"], lists["in_modes"], lists["out_modes"], lists["ranks"], rank, order)


def _unique(pairs: list[tuple[object, object]], path: Path) -> dict:
    """A JSON object's pairs as a dict; a key given twice (a layer named twice) is a one-line error."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise TTPlanError(f"config {str(path)!r}: key {key!r} appears twice; give each layer (and each of "
                              "its keys) once")
        out[key] = value
    return out


def _unique_key_loader(path: Path) -> type:
    """A YAML SafeLoader that refuses a mapping key given twice, as `_unique` does for JSON."""

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            pairs = [(self.construct_object(key, deep=deep), value) for key, value in node.value]
            _unique([(key, None) for key, _ in pairs], path)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def load_config(path: str | Path) -> dict[str, LayerConfig]:
    """Read a JSON (.json) or YAML (.yaml/.yml, or anything else) config into entries keyed by module name."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise TTPlanError(f"config {str(path)!r}: cannot read it ({error.strerror or error})") from error
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=lambda pairs: _unique(pairs, path))
        else:
            data = yaml.load(text, Loader=_unique_key_loader(path))  # noqa: S506 - a SafeLoader subclass
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        detail = " ".join(str(error).split())
        raise TTPlanError(f"config {str(path)!r}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} "
                          f"({detail})") from error
    if isinstance(data, dict) and isinstance(data.get("layers"), list):
        data = planned_entries(data["layers"], path)
    if not isinstance(data, dict) or not data:
        raise TTPlanError(f"config {str(path)!r}: expected a non-empty mapping of layer names to entries, "
                          'e.g. {"layer1.0.conv1": {"format": "hodec", "rank": 8}}, or the JSON of `ttplan plan '
                          "--json`")
    out: dict[str, LayerConfig] = {}
    for raw, entry in data.items():
        name = layer_key(str(raw))
        if name in out:
            raise TTPlanError(f"config {str(path)!r}: layer {name!r} appears twice (with and without '.weight')")
        out[name] = parse_entry(str(raw), entry)
    return out


def planned_entries(rows: list, path: Path) -> dict[str, object]:
    """The entries of a plan's `layers` (`ttplan plan --json`): a decomposed layer's format, else dense."""
    out: dict[str, object] = {}
    for number, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise TTPlanError(f"config {str(path)!r}: layers[{number}] has no name; expected the rows "
                              "`ttplan plan --json` writes, each with name, decomposed and format")
        fmt = row.get("format")
        if not row.get("decomposed"):
            entry: object = DENSE
        elif isinstance(fmt, dict):
            entry = {"format": fmt.get(KIND), **{key: fmt.get(key) for key in PLANNED_KEYS}}
        else:
            raise TTPlanError(f"config {str(path)!r}: layer {row['name']!r} is decomposed but has no format; "
                              "expected a format like {\"kind\": \"hodec\", \"in_modes\": [...], ...}")
        if row["name"] in out:
            raise TTPlanError(f"config {str(path)!r}: layer {row['name']!r} appears twice in its layers")
        out[row["name"]] = entry
    return out


def accepted_names(layers: list[TracedLayer]) -> str:
    """The names a config may use, for error messages: conv layers, then linear layers."""
    convs = [layer.name for layer in layers if layer.kind == "conv"]
    linears = [layer.name for layer in layers if layer.kind == "linear"]
    text = f"conv layers: {', '.join(convs) or '(none)'}"
    return text + (f"; linear layers: {', '.join(linears)}" if linears else "")


def resolve_formats(config: dict[str, LayerConfig], layers: list[TracedLayer]) -> dict[str, TTFormat]:
    """The validated TT format of every config entry that is not `dense`, keyed by layer name.

    Unknown names and entries that do not fit the layer are one-line TTPlanErrors naming the layer,
    its geometry and what would be accepted.
    """
    by_name = {layer.name: layer for layer in layers}
    out: dict[str, TTFormat] = {}
    for name, entry in config.items():
        layer = by_name.get(name)
        if layer is None:
            raise TTPlanError(f"config names layer {name!r}, which the model does not have; {accepted_names(layers)}")
        if entry.dense:
            continue
        if not layer.plannable:
            raise TTPlanError(f"config layer {name!r} is a grouped conv (groups={layer.spec.groups}); "
                              "only groups=1 convs can be TT-decomposed: use format 'dense' or drop the entry")
        linear = format_names(linear=True)
        if layer.kind == "linear" and entry.format not in linear:
            raise TTPlanError(f"config layer {name!r} is an nn.Linear ({layer.spec.describe()}); "
                              f"use format {' or '.join(map(repr, linear))} (or 'dense') for it")
        try:
            out[name] = entry.to_format(layer.spec)
        except TTPlanError as error:
            raise TTPlanError(f"config layer {name!r} ({layer.spec.describe()}): {error}") from error
    return out


def format_entry(fmt: TTFormat | None, spec: ConvSpec) -> dict:
    """One entry as written by `save_config` (`TTFormat.to_config`: hodec in the published tt_shapes+ranks style)."""
    if fmt is None:
        return {"format": DENSE}
    return fmt.to_config(spec)


def save_config(formats: dict[str, TTFormat | None], spec_by_name: dict[str, ConvSpec], path: str | Path) -> Path:
    """Write a reusable config (JSON, or YAML for .yaml/.yml); `None` is written as `{"format": "dense"}`."""
    path = Path(path)
    missing = sorted(set(formats) - set(spec_by_name))
    if missing:
        raise TTPlanError(f"save_config: no layer geometry for {', '.join(missing)}")
    data = {name: format_entry(fmt, spec_by_name[name]) for name, fmt in formats.items()}
    if path.suffix.lower() in (".yaml", ".yml"):
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    else:
        lines = [f"  {json.dumps(name)}: {json.dumps(entry)}" for name, entry in data.items()]
        atomic_write_text(path, "{\n" + ",\n".join(lines) + "\n}\n")
    return path
