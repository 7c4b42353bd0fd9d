"""A latency model of one machine: predicted microseconds of each contraction step, fitted by `ttplan calibrate`.

Each op the lowering emits is one of four kinds: a feature-map matrix product (`feature`), the
convolution with the window (`conv`), a core-with-core product (`weight`) and the dense conv the layer
replaces (`dense`). Its time is modelled as

    overhead + bytes moved / bandwidth + MACs / throughput

with the three coefficients fitted per kind and shape class (the smaller of the contracted size K and
the produced size N: `thin` < 4 <= `narrow` < 16 <= `medium` < 64 <= `wide`), since thin products run
far below peak (a profile without a `thin` fit uses its `narrow` one). A profile is plain data (`to_dict`,
`from_dict`: its JSON form, every field checked); which file a command reads, and the writing of one, belong to
`ttplan.latency.profiles`, the one owner of profile files. Nothing here reads or writes a file.
Torch-free: the planner uses it to search by predicted time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ttplan.core.contraction import (
    GEOMETRY,
    ContractionPlan,
    Operand,
    PairCost,
    channel_product,
    leaf_operands,
    operand_elements,
    pair_cost,
)
from ttplan.core.fusion import FusedForm, fused_form
from ttplan.core.network import TensorNetwork
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

KINDS = ("feature", "conv", "weight", "dense", "fused")
WIDTHS = ("thin", "narrow", "medium", "wide")
#: bytes per element of the float32 tensors the model is fitted for
ELEMENT_BYTES = 4


@dataclass(frozen=True)
class OpShape:
    """One op as the model sees it: kind, `[M, K] @ [K, N]` sizes, and bytes read and written."""

    kind: str
    m: int
    k: int
    n: int
    bytes: int
    #: a fused op's MACs (its three products, as its register tiles run them); None: the product's own `m * k * n`
    total_macs: int | None = None

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n if self.total_macs is None else self.total_macs

    @property
    def key(self) -> str:
        """`kind:width`, the shape class a coefficient set is fitted for."""
        small = min(self.k, self.n)
        width = "thin" if small < 4 else "narrow" if small < 16 else "medium" if small < 64 else "wide"
        return f"{self.kind}:{width}"


@dataclass(frozen=True)
class OpModel:
    """Coefficients of one shape class: µs per call, per MB moved, per million MACs (all >= 0)."""

    overhead_us: float
    us_per_mb: float
    us_per_mmac: float
    samples: int = 0

    def predict(self, shape: OpShape) -> float:
        return self.overhead_us + self.us_per_mb * shape.bytes / 1e6 + self.us_per_mmac * shape.macs / 1e6


@dataclass(frozen=True)
class LatencyProfile:
    """A fitted model of one device at one thread count; `default` marks the committed fallback profile."""

    label: str
    device: str
    threads: int
    torch: str
    ops: dict[str, OpModel]
    layer_overhead_us: float = 0.0
    default: bool = False
    source: str = ""
    check: dict = field(default_factory=dict)
    #: the machine it was calibrated on (`ttplan.latency.machine.identity`); "" where unknown (before 0.3)
    machine: str = ""

    def op(self, key: str) -> OpModel:
        """The coefficients for a shape class (`thin` falls back to `narrow`, fitted before `thin` existed), else
        the kind's pooled fit (`kind:any`)."""
        if key in self.ops:
            return self.ops[key]
        if key.endswith(":thin") and key.replace(":thin", ":narrow") in self.ops:
            return self.ops[key.replace(":thin", ":narrow")]
        pooled = f"{key.split(':')[0]}:any"
        if pooled in self.ops:
            return self.ops[pooled]
        raise TTPlanError(f"latency profile {self.label!r} has no model for {key}; rerun `ttplan calibrate`")

    def covers(self, key: str) -> bool:
        """Whether `op(key)` has coefficients (its class, the `narrow` fallback of `thin`, or the pooled fit)."""
        try:
            self.op(key)
        except TTPlanError:
            return False
        return True

    def predict(self, shape: OpShape) -> float:
        """Predicted microseconds of one op."""
        return self.op(shape.key).predict(shape)

    def to_dict(self) -> dict:
        return {
            "label": self.label, "default": self.default, "device": self.device, "threads": self.threads,
            "torch": self.torch, "layer_overhead_us": self.layer_overhead_us,
            "ops": {key: {"overhead_us": m.overhead_us, "us_per_mb": m.us_per_mb, "us_per_mmac": m.us_per_mmac,
                          "samples": m.samples} for key, m in sorted(self.ops.items())},
            "check": self.check,
        } | ({"machine": self.machine} if self.machine else {})

    @classmethod
    def from_dict(cls, data: object, source: str = "", *, what: str = "latency profile",
                  hint: str = "") -> LatencyProfile:
        """A profile from its JSON form, every field checked (types; coefficients finite and >= 0); a bad one is a
        one-line error: `what`, the `source` file and the bad field, then `hint` (how to get a good profile)."""
        try:
            return cls._parse(data, source)
        except _Invalid as problem:
            raise TTPlanError(f"{what} {source or '(given)'!r}: not a ttplan profile: {problem}{hint}") from None

    @classmethod
    def _parse(cls, data: object, source: str) -> LatencyProfile:
        """`from_dict` without the message: raises `_Invalid` naming the first bad field."""
        data = _mapping(data, "the top level")
        ops = {}
        for key, entry in _mapping(_field(data, "ops"), "ops").items():
            where = f"ops[{key!r}]"
            entry = _mapping(entry, where)
            ops[key] = OpModel(*(_number(_field(entry, name, where), f"{where}.{name}")
                                 for name in ("overhead_us", "us_per_mb", "us_per_mmac")),
                               samples=_integer(entry.get("samples", 0), f"{where}.samples", 0))
        return cls(_text(_field(data, "label"), "label"), _text(_field(data, "device"), "device"),
                   _integer(_field(data, "threads"), "threads", 1), _text(_field(data, "torch"), "torch"), ops,
                   _number(data.get("layer_overhead_us", 0.0), "layer_overhead_us"),
                   _flag(data.get("default", False), "default"), source,
                   dict(_mapping(data.get("check", {}), "check")), _text(data.get("machine", ""), "machine"))


class _Invalid(ValueError):
    """One bad field of a profile's JSON form (`LatencyProfile.from_dict` names the file)."""


def _field(data: dict, name: str, where: str = "") -> object:
    if name not in data:
        raise _Invalid(f"{where or 'the top level'} has no {name!r}")
    return data[name]


def _mapping(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise _Invalid(f"{where} is {type(value).__name__} {_shown(value)}: expected a JSON object")
    return value


def _number(value: object, where: str) -> float:
    """A coefficient: times and rates are finite and never negative (a negative one made absurd plans win)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"{where} is {_shown(value)}: expected a number")
    if not math.isfinite(value) or value < 0:
        raise _Invalid(f"{where} is {value!r}: expected a finite number >= 0")
    return float(value)


def _integer(value: object, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _Invalid(f"{where} is {_shown(value)}: expected a whole number >= {minimum}")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{where} is {_shown(value)}: expected a string")
    return value


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"{where} is {_shown(value)}: expected true or false")
    return value


def _shown(value: object) -> str:
    """A value for a one-line message, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def step_shape(network: TensorNetwork, a: Operand, b: Operand, cost: PairCost) -> OpShape:
    """The op one contraction step lowers to: `[M, K] @ [K, N]` (K includes the window for the conv)."""
    shared = a.indices & b.indices
    k = channel_product(network, shared)
    if cost.kind == "weight":
        m = math.prod(network.indices[i].size for i in a.indices - shared)
        n = math.prod(network.indices[i].size for i in b.indices - shared)
        if m < n:
            m, n = n, m
        size_a, size_b = operand_elements(network, a), operand_elements(network, b)
        return OpShape("weight", m, k, n, ELEMENT_BYTES * (size_a + size_b + cost.elements))
    fm, other = (a, b) if a.feature else (b, a)
    n = channel_product(network, other.indices - shared - GEOMETRY)
    if cost.kind == "conv":  # the window indices the conv sums (`k`, or one axis `kh`/`kw` of a separable window)
        k *= math.prod(network.indices[w].size for w in network.windows if w in fm.indices and w in other.indices)
    m = max(1, cost.macs // max(1, k * n))
    moved = operand_elements(network, fm) + operand_elements(network, other) + cost.elements
    return OpShape(cost.kind, m, k, n, ELEMENT_BYTES * moved)


def dense_shape(spec: ConvSpec, batch: int) -> OpShape:
    """The dense conv as an op: `[B·H'W', I·k·k] @ [I·k·k, O]` (grouped convs count their per-group K)."""
    k = spec.in_channels // spec.groups * spec.window
    m = batch * spec.out_pixels
    moved = batch * (spec.in_channels * spec.in_pixels + spec.out_channels * spec.out_pixels)
    moved += spec.out_channels * k
    return OpShape("dense", m, k, spec.out_channels, ELEMENT_BYTES * moved)


def fused_shape(form: FusedForm) -> OpShape:
    """A fused layer as one op (`fused`): its conv's `[B·H'W', K] @ [K, R2]` sizes for the shape class, the MACs its
    register tiles run (`FusedForm.tile_macs`), and the bytes it moves: input, output and weights once, and per image
    the intermediates the kernel writes and reads back in cache (the first mixing's output, its im2col, the conv's
    output)."""
    k = (form.r1 or form.c) * form.window
    moved = form.batch * (form.c * form.in_pixels + form.out_channels * form.out_pixels) + form.weight_elements
    inner = form.r1 * form.in_pixels + 2 * k * form.out_pixels + (form.r2 * form.out_pixels if form.o else 0)
    return OpShape("fused", form.batch * form.out_pixels, k, form.r2, ELEMENT_BYTES * (moved + form.batch * inner),
                   form.tile_macs)


def step_shapes(plan: ContractionPlan) -> dict[int, OpShape]:
    """The op of every step of `plan`, by step number (weight-only steps included)."""
    net = plan.network
    ops = dict(enumerate(leaf_operands(net)))
    shapes: dict[int, OpShape] = {}
    for step in plan.steps:
        a, b = ops.pop(step.left), ops.pop(step.right)
        cost = pair_cost(net, a, b)
        ops[step.result] = cost.result
        shapes[step.number] = step_shape(net, a, b, cost)
    return shapes


def plan_shapes(plan: ContractionPlan) -> list[OpShape]:
    """The ops one forward of `plan` runs (weight-only steps only when not folded)."""
    return [shape for shape in step_shapes(plan).values() if not (shape.kind == "weight" and plan.fold_weights)]


def predict_plan_us(plan: ContractionPlan, profile: LatencyProfile) -> float:
    """Predicted microseconds of one forward of `plan` at its batch: its ops plus the per-layer overhead."""
    return profile.layer_overhead_us + sum(profile.predict(shape) for shape in plan_shapes(plan))


def predict_fused_us(plan: ContractionPlan, profile: LatencyProfile) -> float | None:
    """Predicted microseconds of `plan` run by the fused kernel (weight-only steps as in `predict_plan_us`), or None
    where the kernel cannot run it or the profile was fitted without fused samples. The fused fit is of whole
    layers, so its overhead replaces the per-layer overhead of stock ops."""
    form = fused_form(plan)
    if form is None:
        return None
    shape = fused_shape(form)
    if not profile.covers(shape.key):
        return None
    weights = [shape for shape in step_shapes(plan).values() if shape.kind == "weight" and not plan.fold_weights]
    return profile.predict(shape) + sum(profile.predict(w) for w in weights)


def predict_dense_us(spec: ConvSpec, batch: int, profile: LatencyProfile) -> float:
    """Predicted microseconds of the dense conv the layer replaces."""
    return profile.predict(dense_shape(spec, batch))


@dataclass(frozen=True)
class Sample:
    """One measured op: its shape and median microseconds."""

    shape: OpShape
    us: float


def fit_op(samples: list[Sample]) -> OpModel:
    """Non-negative coefficients minimising the squared relative error over `samples`.

    Every subset of the three terms is solved by weighted least squares (weights 1/t²) and the best
    fit whose coefficients are all >= 0 is kept: an exact non-negative least squares for three terms.
    """
    rows = [((1.0, s.shape.bytes / 1e6, s.shape.macs / 1e6), s.us) for s in samples if s.us > 0]
    if not rows:
        raise TTPlanError("no samples to fit")
    best: tuple[float, tuple[float, float, float]] | None = None
    for mask in range(1, 8):
        terms = [j for j in range(3) if mask >> j & 1]
        coef = _weighted_lstsq(rows, terms)
        if coef is None or min(coef) < 0:
            continue
        full = [0.0, 0.0, 0.0]
        for j, c in zip(terms, coef):
            full[j] = c
        err = sum(((sum(f * c for f, c in zip(x, full)) - t) / t) ** 2 for x, t in rows)
        if best is None or err < best[0]:
            best = (err, (full[0], full[1], full[2]))
    assert best is not None  # the overhead-only fit is always >= 0
    return OpModel(*best[1], samples=len(rows))


def _weighted_lstsq(rows: list[tuple[tuple[float, ...], float]], terms: list[int]) -> list[float] | None:
    """Solve min Σ ((x·c − t)/t)² over the chosen terms by the normal equations; None if singular."""
    n = len(terms)
    a = [[0.0] * n for _ in range(n)]
    y = [0.0] * n
    for x, t in rows:
        w = 1.0 / (t * t)
        for p in range(n):
            y[p] += w * x[terms[p]] * t
            for q in range(n):
                a[p][q] += w * x[terms[p]] * x[terms[q]]
    return _solve(a, y)


def _solve(a: list[list[float]], y: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting on a small dense system."""
    n = len(y)
    m = [row[:] + [y[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-300:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [vr - f * vc for vr, vc in zip(m[r], m[col])]
    return [m[i][n] / m[i][i] for i in range(n)]


def fit_profile(samples: list[Sample], *, label: str, device: str, threads: int, torch_version: str,
                layer_overhead_us: float = 0.0, min_samples: int = 4) -> LatencyProfile:
    """Fit one `OpModel` per shape class with enough samples, and a pooled `kind:any` per kind."""
    by_key: dict[str, list[Sample]] = {}
    for s in samples:
        by_key.setdefault(s.shape.key, []).append(s)
        by_key.setdefault(f"{s.shape.kind}:any", []).append(s)
    ops = {key: fit_op(group) for key, group in by_key.items() if len(group) >= min_samples}
    return LatencyProfile(label, device, threads, torch_version, ops, layer_overhead_us)


def relative_errors(predicted: list[float], measured: list[float]) -> list[float]:
    """|predicted − measured| / measured, per pair."""
    return [abs(p - m) / m for p, m in zip(predicted, measured) if m > 0]


#: names that lived here once -> what to use now (files and cache folders moved out: the core reads no file)
_MOVED = {"cache_dir": "ttplan.files.cache_dir", "default_profile": "ttplan.latency.profiles.default_profile",
          "load_profile": "ttplan.latency.profiles.load_profile",
          "profile_for": "ttplan.latency.profiles.load_profile(path, by_time=...)",
          "user_profile_path": "ttplan.latency.profiles.user_profile_path"}


def __getattr__(name: str) -> object:
    """A one-line pointer for a name that moved out (PEP 562); nothing is imported."""
    if name in _MOVED:
        raise AttributeError(f"ttplan.core.latency.{name} moved: use {_MOVED[name]}")
    raise AttributeError(f"module 'ttplan.core.latency' has no attribute {name!r}")


__all__ = [
    "KINDS", "LatencyProfile", "OpModel", "OpShape", "Sample", "dense_shape", "fit_op", "fit_profile", "fused_shape",
    "plan_shapes", "predict_dense_us", "predict_fused_us", "predict_plan_us", "relative_errors", "step_shape",
    "step_shapes",
]
