"""Best against best: the dense and the TT model each in every form a user deploys, timed in one set of rounds.

A user runs the dense model in whichever form is fastest for it, and the TT model likewise; comparing both in eager
NCHW says little about what either would deploy. `bench model --best` therefore times each side in each form
(`FORMS`): eager NCHW; eager NCHW prepared for inference (`frozen_runner`: the dense model's BatchNorms folded
into its convs by `torch.fx.experimental.optimization.fuse`, the TT model frozen by `ttplan.freeze`); eager
channels-last (the TT model planned for channels-last, as `--channels-last` plans it);
`torch.compile` with inductor's freezing (`compiled.compile_model`), layout optimization on (inductor's default)
and off (which can suit a TT model's reshapes); the channels-last models compiled the same way (on NHWC maps the
TT layers' mixings are 1x1 convs, which inductor hands to oneDNN beside the core convs); and ONNX Runtime where it
is installed (the model exported by `ttplan.runtime.export.export_model`, a CPU session with torch's thread count,
its idle threads not spinning). All available (side, form) pairs are timed interleaved, round-robin, medians over rounds
(`ttplan.latency.timing.time_all`); each visit is a block of back-to-back calls lasting about `BLOCK_MS` (one call
for a model slower than that), its mean recorded, as a deployed model serves one request after another. With one
call per visit, a batch-1 model ran cold, after eleven other models had taken its caches, and the forms that run
many small Python calls (eager) paid the most. A form that cannot be built for a side (a compile or
export error, ONNX Runtime missing, output that differs from eager) is reported unavailable with its one-line
reason, and the other forms still count. `BestForms` answers the best dense form against the best TT form, and
each form's own dense-against-TT ratio.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ttplan.bench.model.compiled import compile_model, first_line
from ttplan.errors import TTPlanError

EAGER = "eager NCHW"
EAGER_FROZEN = "eager NCHW, frozen"
EAGER_LAST = "eager channels-last"
COMPILED = "compiled (frozen)"
COMPILED_NO_LAYOUT = "compiled (frozen, no layout opt.)"
COMPILED_LAST = "compiled channels-last (frozen)"
ORT = "ONNX Runtime"
#: the forms, in the order they are timed and reported; the compiled ones by inductor with freezing, layout
#: optimization on (`COMPILED`) and off (`COMPILED_NO_LAYOUT`), and the channels-last models compiled
#: (`COMPILED_LAST`: the TT one planned for NHWC maps, as eager channels-last runs it)
FORMS = (EAGER, EAGER_FROZEN, EAGER_LAST, COMPILED, COMPILED_NO_LAYOUT, COMPILED_LAST, ORT)
#: the two sides, as the tables name them
SIDES = ("dense", "TT")

#: how long one visit to a (form, side) lasts, in back-to-back calls (`time_forms`)
BLOCK_MS = 25.0

#: a form's output may differ from its eager model's by this much, relative to the largest eager output; more is a
#: wrong graph, and the form is reported unavailable instead of timed
TOLERANCE = 1e-3


@dataclass(frozen=True)
class FormTiming:
    """One form: the median ms of each side, or why a side could not run in it (`dense_ms`/`tt_ms` None)."""

    form: str
    dense_ms: float | None = None
    tt_ms: float | None = None
    dense_reason: str = ""
    tt_reason: str = ""
    tt_macs_reduction: float | None = None  # the planned MACs reduction of the TT model this form runs

    def ms(self, side: str) -> float | None:
        return self.dense_ms if side == "dense" else self.tt_ms

    def reason(self, side: str) -> str:
        return self.dense_reason if side == "dense" else self.tt_reason

    @property
    def ratio(self) -> float | None:
        """Dense ms over TT ms in this form (above 1: TT faster), or None where either side is unavailable."""
        return None if self.dense_ms is None or self.tt_ms is None else self.dense_ms / self.tt_ms

    def to_dict(self) -> dict:
        return {"form": self.form, "dense_ms": self.dense_ms, "tt_ms": self.tt_ms, "ratio": self.ratio,
                "dense_unavailable": self.dense_reason or None, "tt_unavailable": self.tt_reason or None,
                "tt_macs_reduction": self.tt_macs_reduction}


@dataclass(frozen=True)
class BestForms:
    """Every form's timing (the order of `FORMS`), and the best of each side."""

    forms: tuple[FormTiming, ...]
    rounds: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        names = [timing.form for timing in self.forms]
        if len(set(names)) != len(names):
            raise TTPlanError(f"best forms: a form is named twice in {names}")

    def form(self, name: str) -> FormTiming:
        """The timing of one form by name."""
        for timing in self.forms:
            if timing.form == name:
                return timing
        raise TTPlanError(f"best forms: no form {name!r}; expected one of {', '.join(t.form for t in self.forms)}")

    def best(self, side: str) -> FormTiming | None:
        """The form in which `side` (`dense` or `TT`) ran fastest (the first in `FORMS` order on a tie), or None where
        it ran in none."""
        if side not in SIDES:
            raise TTPlanError(f"best forms: side {side!r}; expected dense or TT")
        ran = [timing for timing in self.forms if timing.ms(side) is not None]
        return min(ran, key=lambda timing: timing.ms(side)) if ran else None

    @property
    def best_dense(self) -> FormTiming | None:
        return self.best("dense")

    @property
    def best_tt(self) -> FormTiming | None:
        return self.best("TT")

    @property
    def ratio(self) -> float | None:
        """The best dense form's ms over the best TT form's (above 1: the best TT model is faster than the best dense
        one), or None where a side ran in no form."""
        dense, tt = self.best_dense, self.best_tt
        return None if dense is None or tt is None else dense.dense_ms / tt.tt_ms

    @property
    def headline(self) -> str:
        """`best TT (form) against best dense (form): N.NN×`, or why there is no such comparison."""
        dense, tt = self.best_dense, self.best_tt
        if dense is None or tt is None:
            missing = " and ".join(side for side, best in (("dense", dense), ("TT", tt)) if best is None)
            return f"best against best: n/a ({missing} ran in no form)"
        return f"best TT ({tt.form}) against best dense ({dense.form}): {self.ratio:.2f}×"

    def to_dict(self) -> dict:
        dense, tt = self.best_dense, self.best_tt
        return {
            "forms": [timing.to_dict() for timing in self.forms],
            "best_dense": None if dense is None else {"form": dense.form, "ms": dense.dense_ms},
            "best_tt": None if tt is None else {"form": tt.form, "ms": tt.tt_ms,
                                                "macs_reduction": tt.tt_macs_reduction},
            "best_vs_best": self.ratio,
            "rounds": self.rounds,
            "threads": self.threads,
        }


#: a side in one form: what to time, or why it cannot run
Runner = Callable[[], object] | str


def time_forms(runners: dict[str, tuple[Runner, Runner]], rounds: int, sync: Callable[[], None] = lambda: None,
               macs_reduction: dict[str, float | None] | None = None, threads: int = 0) -> BestForms:
    """Time every runnable (form, side) of `runners` (form -> (dense, TT), each a callable or the reason it cannot
    run) interleaved over `rounds` (`time_all`: every round visits each in turn, a block of calls lasting about
    `BLOCK_MS`; medians), under `torch.no_grad()`.
    `macs_reduction`: per form, the planned MACs reduction of the TT model it runs."""
    from ttplan.latency.timing import block_calls, time_all

    calls = {(form, side): run for form, pair in runners.items() for side, run in zip(SIDES, pair)
             if callable(run)}
    with torch.no_grad():
        ms = time_all(calls, rounds, sync, block_calls(calls, BLOCK_MS, sync), warmup=False) if calls else {}
    reduction = macs_reduction or {}
    timings = []
    for form, (dense, tt) in runners.items():
        timings.append(FormTiming(form, ms.get((form, "dense")), ms.get((form, "TT")),
                                  "" if callable(dense) else dense, "" if callable(tt) else tt,
                                  reduction.get(form)))
    return BestForms(tuple(timings), rounds, threads)


def checked(run: Callable[[], object], reference: torch.Tensor, what: str) -> Runner:
    """`run` if its output matches `reference` (the eager model's, to `TOLERANCE` of its largest value), else the
    reason it does not."""
    with torch.no_grad():
        out = run()
    out = torch.as_tensor(out[0] if isinstance(out, list | tuple) else out).to(reference.device)
    if out.shape != reference.shape:
        return f"{what} output has shape {tuple(out.shape)}, eager {tuple(reference.shape)}"
    error = (out.float() - reference.float()).abs().max().item()
    scale = reference.abs().max().item()
    if not error <= TOLERANCE * max(scale, 1e-6):
        return f"{what} output differs from eager by {error:.3g} (largest eager output {scale:.3g})"
    return run


def compiled_runner(model: nn.Module, x: torch.Tensor, layout_optimization: bool) -> Runner:
    """`model` compiled by inductor with freezing (`compiled.compile_model`) and checked against eager, as a
    callable on `x`, or why it cannot run."""
    try:
        compiled = compile_model(model, x, freezing=True, layout_optimization=layout_optimization)
    except TTPlanError as error:
        return str(error)
    with torch.no_grad():
        reference = model(x)
    return checked(lambda: compiled(x), reference, "compiled")


def frozen_runner(model: nn.Module, x: torch.Tensor, side: str) -> Runner:
    """A copy of `model` prepared for inference in eager mode, checked against `model`, as a callable on `x`; or why
    it cannot run. The TT side is frozen (`ttplan.freeze`: each TT layer's weights folded once, its kernel call
    bound); on the dense side `torch.fx.experimental.optimization.fuse` folds each BatchNorm into the conv before it,
    as the compiled forms' freezing does."""
    try:
        if side == "TT":
            from ttplan.runtime.layers import freeze

            prepared = freeze(copy.deepcopy(model))
        else:
            from torch.fx.experimental.optimization import fuse

            prepared = fuse(model)  # traces and copies; the model itself is unchanged
    except TTPlanError as error:
        return str(error)
    except Exception as error:  # tracing a user's model can fail in many ways; the first line says how
        return f"could not be prepared ({first_line(error)})"
    with torch.no_grad():
        reference = model(x)
    return checked(lambda: prepared(x), reference, "prepared")


def onnx_runtime_missing() -> str | None:
    """Why ONNX Runtime cannot be used here (not installed), or None."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return 'onnxruntime is not installed (pip install "ttplan[deploy]")'
    return None


def onnx_runtime_runner(model: nn.Module, x: torch.Tensor, threads: int) -> Runner:
    """`model` exported to ONNX (`export_model`) and run by an ONNX Runtime CPU session (`threads` intra-op threads,
    one inter-op thread, every graph optimization), checked against eager, as a callable on `x`; or why it cannot
    run.

    The session's threads do not spin while idle (`session.intra_op.allow_spinning` 0): timed in turn with torch's
    forms, spinning threads keep the cores busy after each run, and on the development machine made the eager model
    timed next several times slower (and the session itself slower too, its threads competing with torch's)."""
    missing = onnx_runtime_missing()
    if missing is not None:
        return missing
    if x.device.type != "cpu":
        return f"timed on the CPU only (the models are on {x.device.type})"
    import onnxruntime

    from ttplan.runtime.export import export_model

    try:
        with tempfile.TemporaryDirectory(prefix="ttplan-ort-") as folder:
            path = Path(folder) / "model.onnx"
            export_model(model, x, "onnx", path)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            for pool in ("intra_op", "inter_op"):  # idle threads that spin would take the cores from the next model
                options.add_session_config_entry(f"session.{pool}.allow_spinning", "0")
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except TTPlanError as error:
        return f"export failed: {error}"
    except Exception as error:  # the exporter's and ONNX Runtime's errors are long; the first line says what failed
        return f"export or session failed ({first_line(error)})"
    feed = {session.get_inputs()[0].name: x.detach().contiguous().numpy()}
    with torch.no_grad():
        reference = model(x)
    try:
        return checked(lambda: session.run(None, feed), reference, "ONNX Runtime")
    except Exception as error:
        return f"session run failed ({first_line(error)})"


__all__ = ["BLOCK_MS", "COMPILED", "COMPILED_LAST", "COMPILED_NO_LAYOUT", "EAGER", "EAGER_FROZEN", "EAGER_LAST",
           "FORMS", "ORT", "SIDES", "TOLERANCE", "BestForms", "FormTiming", "checked", "compiled_runner",
           "frozen_runner", "onnx_runtime_missing", "onnx_runtime_runner", "time_forms"]
