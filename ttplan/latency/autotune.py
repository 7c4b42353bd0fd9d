"""Autotune one layer geometry: time the few best candidate orders in every lowering, and the dense conv; keep the
fastest.

Candidates are the orders that minimise predicted time, MACs and the largest intermediate, and the format's
published order, ranked by predicted time (the latency profile) and cut to `top`, plus the `merged` order. Each is
run as a `TTConv2d` (random cores; folded weights when planned so, and then frozen, as `ttplan.freeze` leaves a
layer for inference: no per-call checks of the cores) in each lowering, and the dense conv beside them; every
round visits every variant once, in turn, for a block of back-to-back calls lasting about `BLOCK_MS` and at least
`LEAST_CALLS` calls, so load drifts hit all alike, and the median over rounds is kept. Results are cached in the
user's cache directory (`~/.cache/ttplan/autotune.json`), keyed by geometry, format, batch, folding, device,
thread count, torch version, lowerings, input memory format, candidate set and (with the fused lowering) whether
the fused kernel builds, so a second run costs nothing. The cache is checked when read: a corrupt file, or a
malformed entry, is one warning on stderr naming the file, and is measured again and rewritten.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ttplan.core.contraction import ContractionPlan
from ttplan.core.formats import TTFormat
from ttplan.core.fusion import fused_form
from ttplan.core.latency import LatencyProfile, predict_dense_us, predict_fused_us, predict_plan_us
from ttplan.core.network import build_network
from ttplan.core.schemes import merged, schemes_for
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.files import atomic_write_text, cache_dir, read_user_json
from ttplan.latency.machine import identity
from ttplan.latency.timing import block_calls, time_all
from ttplan.runtime.kernels import kernel_status
from ttplan.runtime.layers import TTConv2d
from ttplan.runtime.lowering import NCHW_LOWERINGS, NHWC_LOWERINGS, Lowering

# The lowerings tried follow the model's memory format (`channels_last`): a channels-last layer inside an NCHW
# model hands its neighbours (batch norm, residual adds) NHWC tensors, which measured slower end to end although
# the layer alone was faster; so an NCHW model tries NCHW lowerings on an NCHW input, and a channels-last model
# NHWC lowerings on a channels-last input, with the dense conv on that same input.

DENSE = "dense conv"
#: what `candidate_plans` offers and how it is timed, in the cache key: entries measured otherwise are not reused
CANDIDATES = "candidates=objectives,published,merged|blocks|fused|frozen|calls>=5"
#: ms each variant runs per visit: a block of back-to-back calls, so one page fault or scheduler tick does not
#: decide between two orders (single calls picked differently from one run to the next)
BLOCK_MS = 5.0
#: calls each variant makes per visit at least: a layer of several ms gets a block of a few calls too, since one call
#: per visit, seven visits, picked the fused kernel or stock ops for ResNet-18's batch-8 layers differently from one
#: run to the next (their times lie within 10% of each other, and one slow call moved a median)
LEAST_CALLS = 5


@dataclass(frozen=True)
class Timing:
    """One measured variant: an order in one lowering (plan None: the dense conv)."""

    label: str
    plan: ContractionPlan | None
    lowering: Lowering
    ms: float
    predicted_ms: float | None

    def to_dict(self) -> dict:
        return {"label": self.label, "dense": self.plan is None, "lowering": self.lowering.label,
                "mix": self.lowering.mix, "channels_last": self.lowering.channels_last,
                "fused": self.lowering.fused, "ms": self.ms,
                "predicted_ms": self.predicted_ms, "macs": self.plan.macs if self.plan else None,
                "path": [list(p) for p in self.plan.pairs] if self.plan else None}


@dataclass
class TuneResult:
    """Every timed variant of one layer geometry and format, and the fastest."""

    spec: ConvSpec
    fmt: TTFormat
    batch: int
    device: str
    threads: int
    timings: list[Timing]
    rounds: int
    source: str = "measured"

    @property
    def best(self) -> Timing:
        return min(self.timings, key=lambda t: t.ms)

    @property
    def plan(self) -> ContractionPlan | None:
        """The fastest order, or None when the dense conv is fastest."""
        return self.best.plan

    @property
    def lowering(self) -> Lowering:
        return self.best.lowering

    @property
    def dense_ms(self) -> float:
        return next(t.ms for t in self.timings if t.plan is None)

    def to_dict(self) -> dict:
        for_json = [t.to_dict() for t in self.timings]
        for row in for_json:
            row["macs"] = row["macs"] if row["macs"] is not None else self.spec.dense_macs(self.batch)
        return {"device": self.device, "threads": self.threads, "rounds": self.rounds, "source": self.source,
                "dense_ms": self.dense_ms, "best": self.best.to_dict(), "timings": for_json}


def candidate_plans(spec: ConvSpec, fmt: TTFormat, batch: int, fold_weights: bool, profile: LatencyProfile,
                    top: int = 3) -> list[ContractionPlan]:
    """Distinct executable orders by objective and the published one, fastest predicted first, at most `top`; then
    the `merged` order (each side's cores merged: few wide products) if it is not among them, whatever its
    prediction, since the latency model prices thin products on channels-last maps poorly."""
    network = build_network(spec, fmt, batch)
    found: dict[tuple, ContractionPlan] = {}
    for objective in ("latency", "macs", "memory"):
        plan = optimize(network, fold_weights=fold_weights, objective=objective, profile=profile)
        found.setdefault(plan.pairs, ContractionPlan(network, plan.pairs, objective, fold_weights))
    for name, plan in schemes_for(network, fold_weights).items():
        if name != "dense" and plan.executable:
            found.setdefault(plan.pairs, plan)
    ranked = sorted((p for p in found.values() if p.executable), key=lambda p: predict_plan_us(p, profile))[:top]
    wide = merged(network, fold_weights)
    if wide is not None and wide.executable and all(p.pairs != wide.pairs for p in ranked):
        ranked.append(wide)
    return ranked


def _key(spec: ConvSpec, fmt: TTFormat, batch: int, fold_weights: bool, device: str, threads: int,
         lowerings: tuple[Lowering, ...], channels_last: bool = False, kernel: bool = False) -> str:
    """The cache key of one measurement; `kernel`: whether the fused kernel builds here, which decides whether the
    fused lowering was timed at all (said only when a fused lowering is asked for)."""
    return (f"{spec.describe()}|{spec.input_size}|{fmt.label}|{fmt.in_modes}|{fmt.out_modes}|{fmt.ranks}|b{batch}|"
            f"fold={fold_weights}|{device}|{identity(device)}|threads={threads}|torch={torch.__version__}|{CANDIDATES}|"
            f"{','.join(lowering.label for lowering in lowerings)}"
            # NHWC lowerings keep the map channels-last throughout since ttplan 0.1 measured them converting the
            # input only: entries from then must not be reused
            + ("|nhwc-throughout" if any(lowering.channels_last for lowering in lowerings) else "")
            + ("|input=channels-last" if channels_last else "")
            # the dense baseline of a layer conv2d cannot pad timed an unpadded conv before 0.3: not to be reused
            + ("|dense-padded" if spec.explicit_pad is not None else "")
            + ((f"|kernel={'built' if kernel else 'none'}") if any(lowering.fused for lowering in lowerings) else ""))


def cache_path() -> Path:
    """The autotune cache file in the user's cache directory."""
    return cache_dir() / "autotune.json"


def _warn(message: str) -> None:
    """One line on stderr: a bad cache is worth knowing about, never worth stopping for."""
    print(f"warning: {message}", file=sys.stderr)


def _load_cache(path: Path, quiet: bool = False) -> dict:
    """The cache's entries by key; a missing cache is empty, and a corrupt one (not UTF-8, not JSON, not an object)
    is one warning naming it (unless `quiet`), then empty: it is rebuilt on the next write."""
    if not os.path.lexists(path):
        return {}
    try:
        data = read_user_json(path, "autotune cache", "a JSON object written by ttplan")
        if not isinstance(data, dict):
            raise TTPlanError(f"autotune cache {str(path)!r} holds a JSON {type(data).__name__}, not an object")
    except TTPlanError as error:
        if not quiet:
            _warn(f"{error}; ignoring it and measuring again (the cache is rebuilt)")
        return {}
    return data


class _BadEntry(ValueError):
    """A cache entry that is not what `autotune_layer` writes."""


def _row_field(row: dict, name: str, kind: type | tuple[type, ...], default: object = None) -> object:
    """`row[name]`, which must be of `kind` (bool is not a number here); `default` when missing and given."""
    value = row.get(name, default)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _BadEntry(f"timing {name} is {value!r}")
    return value


def _from_cache(entry: object, spec: ConvSpec, fmt: TTFormat, batch: int, fold_weights: bool, device: str,
                threads: int, profile: LatencyProfile) -> TuneResult:
    """The cached result, every field checked; a malformed entry raises `_BadEntry` (or the plan's TTPlanError)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("timings"), list) or not entry["timings"]:
        raise _BadEntry("the entry has no list of timings")
    rounds = entry.get("rounds")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise _BadEntry(f"rounds is {rounds!r}")
    network = build_network(spec, fmt, batch)
    timings = []
    for row in entry["timings"]:
        if not isinstance(row, dict):
            raise _BadEntry(f"a timing is {row!r}")
        ms = _row_field(row, "ms", (int, float))
        if not math.isfinite(ms) or ms < 0:
            raise _BadEntry(f"timing ms is {ms!r}")
        label = _row_field(row, "label", str)
        plan = None
        if not _row_field(row, "dense", bool):
            path = _row_field(row, "path", list)
            if not all(isinstance(p, list) and len(p) == 2 and all(type(n) is int for n in p) for p in path):
                raise _BadEntry(f"timing path is {path!r}")
            plan = ContractionPlan(network, [tuple(p) for p in path], label, fold_weights)
        lowering = Lowering(_row_field(row, "mix", str), _row_field(row, "channels_last", bool),
                            _row_field(row, "fused", bool, False))
        timings.append(Timing(label, plan, lowering, float(ms), _predicted_ms(spec, batch, plan, lowering, profile)))
    if sum(t.plan is None for t in timings) != 1:
        raise _BadEntry("the entry has no single dense timing")
    return TuneResult(spec, fmt, batch, device, threads, timings, rounds, "cached")


def autotune_layer(spec: ConvSpec, fmt: TTFormat, batch: int, fold_weights: bool = True, *, profile: LatencyProfile,
                   device: str = "cpu", top: int = 3, rounds: int = 7,
                   lowerings: tuple[Lowering, ...] | None = None, use_cache: bool = True,
                   channels_last: bool = False, fused: bool = True) -> TuneResult:
    """Time the candidates (see the module docstring) and return all timings; the fastest is `.best`. `profile`
    ranks the candidates and predicts each timing (`ttplan.latency.profiles.load_profile` reads the machine's).

    `channels_last`: the input (and the dense conv's) is channels-last and the lowerings default to the NHWC ones,
    as in a model converted to `torch.channels_last`; else NCHW and the NCHW lowerings. `fused=False` (a plan
    without the fused kernel, `--no-fuse`) times stock lowerings only, so that no order is chosen by the kernel."""
    if lowerings is None:
        lowerings = NHWC_LOWERINGS if channels_last else NCHW_LOWERINGS
    lowerings = tuple(lowering for lowering in lowerings if fused or not lowering.fused)
    if device not in ("cpu", "cuda") or (device == "cuda" and not torch.cuda.is_available()):
        raise TTPlanError(f"device={device!r}: expected cpu, or cuda where a CUDA device is available")
    threads = torch.get_num_threads()
    kernel = any(lowering.fused for lowering in lowerings) and kernel_status().available
    key = _key(spec, fmt, batch, fold_weights, device, threads, lowerings, channels_last, kernel)
    path = cache_path()
    if use_cache:
        cached = _load_cache(path)
        if key in cached:
            try:
                return _from_cache(cached[key], spec, fmt, batch, fold_weights, device, threads, profile)
            except (_BadEntry, TTPlanError) as problem:
                _warn(f"autotune cache {str(path)!r}: the entry for {spec.describe()}, {fmt.label} is malformed "
                      f"({problem}); measuring it again")
    result = _measure(spec, fmt, batch, fold_weights, device, profile, top, rounds, lowerings, channels_last)
    if use_cache:
        data = _load_cache(path, quiet=True)  # entries other processes added meanwhile are kept
        data[key] = {"rounds": rounds, "timings": [t.to_dict() for t in result.timings]}
        try:
            atomic_write_text(path, json.dumps(data, indent=1) + "\n")
        except (OSError, TTPlanError):
            pass  # an unwritable cache only costs a re-measurement next time
    return result


def _predicted_ms(spec: ConvSpec, batch: int, plan: ContractionPlan | None, lowering: Lowering,
                  profile: LatencyProfile) -> float:
    """The profile's prediction for one timed variant: the dense conv, the fused kernel, or the plan's stock ops."""
    if plan is None:
        return predict_dense_us(spec, batch, profile) / 1000
    fused = predict_fused_us(plan, profile) if lowering.fused else None
    return (fused if fused is not None else predict_plan_us(plan, profile)) / 1000


def dense_conv(spec: ConvSpec, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The layer's dense conv as `nn.Conv2d` runs it, the baseline autotune times: where `conv2d` cannot pad as the
    layer does (a padding mode other than zeros, or `'same'`'s extra padding after an even window) one `F.pad` first,
    as the TT layer pads too; else `conv2d` pads."""
    pad = spec.explicit_pad
    if pad is None:
        return F.conv2d(x, weight, None, spec.stride, spec.padding, spec.dilation)
    return F.conv2d(F.pad(x, pad, mode=spec.pad_mode), weight, None, spec.stride, 0, spec.dilation)


def _measure(spec: ConvSpec, fmt: TTFormat, batch: int, fold_weights: bool, device: str, profile: LatencyProfile,
             top: int, rounds: int, lowerings: tuple[Lowering, ...], channels_last: bool = False) -> TuneResult:
    dev = torch.device(device)
    h, w = spec.input_size
    x = torch.randn(batch, spec.in_channels, h, w, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(spec.out_channels, spec.in_channels // spec.groups, *spec.kernel_size, device=dev)
    variants: list[tuple[str, ContractionPlan | None, Lowering, object]] = [
        (DENSE, None, Lowering(), lambda: dense_conv(spec, x, weight))]
    for plan in candidate_plans(spec, fmt, batch, fold_weights, profile, top):
        for lowering in lowerings:
            if lowering.fused and (fused_form(plan) is None or not kernel_status().available):
                continue  # the fused lowering would run the stock ops of another lowering: nothing new to time
            layer = TTConv2d(spec, fmt, plan, fold_weights, device=dev, lowering=lowering).eval()
            if fold_weights:  # timed as deployed for inference: the dense conv beside it is one F.conv2d call
                layer.freeze()
            variants.append((plan.name, plan, lowering, layer))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    calls = {n: (lambda fn=fn: fn(x)) if isinstance(fn, torch.nn.Module) else fn
             for n, (_, _, _, fn) in enumerate(variants)}
    with torch.no_grad():
        blocks = block_calls(calls, BLOCK_MS, sync, warmup=2, least=LEAST_CALLS)  # the first call warms up
        ms = time_all(calls, rounds, sync, blocks, warmup=False)
    timings = []
    for n, (label, plan, lowering, _) in enumerate(variants):
        timings.append(Timing(label, plan, lowering, ms[n], _predicted_ms(spec, batch, plan, lowering, profile)))
    return TuneResult(spec, fmt, batch, device, torch.get_num_threads(), timings, rounds)


__all__ = ["DENSE", "Timing", "TuneResult", "autotune_layer", "cache_path", "candidate_plans", "dense_conv"]
