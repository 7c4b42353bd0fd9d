"""The markdown of `ttplan bench model`: one section per run (end to end, where the time goes, per layer), and the
report around the sections."""

from __future__ import annotations

from ttplan.bench.model.breakdown import render_breakdown
from ttplan.bench.model.compiled import best_of_each
from ttplan.bench.model.forms import BLOCK_MS, SIDES, BestForms, FormTiming
from ttplan.bench.model.measure import LAYER_BLOCK_MS, ModelBench
from ttplan.bench.model.memory_formats import MODELS
from ttplan.bench.model.processes import median_speedup
from ttplan.latency.machine import describe


def render_section(result: ModelBench, command: str) -> str:
    """Markdown for one run: the end-to-end row, then the per-layer breakdown."""
    totals = result.plan.totals
    fused = sum(1 for layer in result.plan.layers if layer.fused)
    lines = [
        f"## {result.arch}{' (' + result.config + ')' if result.config else ''}, batch {result.batch}, "
        f"{result.threads} thread{'s' if result.threads > 1 else ''}, {result.device}"
        + (f", --malloc {result.malloc}" if result.malloc != "default" else "")
        + (", --compile" if result.compiled else "") + (", --channels-last" if result.channels_last else "")
        + (", --best" if result.best is not None else "")
        + (f", {fused} layers fused" if fused else ", stock ops only"),
        "",
        f"Command: `{command}`. Objective `{result.objective}`, weights folded, TT model built by "
        f"{'the generated code (`ttplan emit --arch`)' if result.runtime == 'emitted' else 'ttplan.runtime.convert'};"
        f" median of {result.rounds} interleaved rounds. Allocator: {_malloc_words(result.malloc)}."
        + (" Memory format: both models and the input channels-last (`torch.channels_last`), the TT layers on NHWC "
           "maps from input to output." if result.channels_last else ""),
        "",
        *(best_lines(result.best, result.channels_last) if result.best is not None else []),
        "| dense ms | TT ms | speedup | MACs↓ | params↓ | predicted speedup (conv/linear layers) | "
        "decomposed / dense layers | page faults per forward (dense / TT) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {result.dense_ms:.2f} | {result.tt_ms:.2f} | **{result.speedup:.2f}x** | {totals.macs_reduction:.1%} | "
        f"{totals.params_reduction:.1%} | {totals.predicted_speedup:.2f}x | {totals.decomposed} / {totals.dense} | "
        f"{_faults(result.dense_faults)} / {_faults(result.tt_faults)} |",
        "",
        *_ceiling_lines(result),
        *(render_breakdown(result.breakdown) if result.breakdown is not None else []),
        *_process_lines(result),
        *_compiled_lines(result),
        *_format_lines(result),
        "Per layer (each distinct geometry and plan once; its layers in the first column; each visit a block of "
        f"back-to-back calls lasting about {LAYER_BLOCK_MS:.0f} ms): measured ms (dense, TT; a TT layer with folded "
        "weights frozen, as deployed for inference and as autotune times it), "
        "predicted ms by the latency profile, and the TT layer's MACs over dense.",
        "",
        "| layers | geometry | dense ms | TT ms | speedup | pred dense | pred TT | MACs x dense | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in result.layers:
        names = row.names[0] + (f" (+{len(row.names) - 1})" if len(row.names) > 1 else "")
        tt = "dense" if row.tt_ms is None else f"{row.tt_ms:.3f}"
        speed = "" if row.speedup is None else f"{row.speedup:.2f}x"
        pred = "" if row.tt_predicted_ms is None else f"{row.tt_predicted_ms:.3f}"
        note = row.note + ("; TT slower than dense" if row.speedup is not None and row.speedup < 1 else "")
        lines.append(f"| {names} | {row.geometry} | {row.dense_ms:.3f} | {tt} | {speed} | {row.dense_predicted_ms:.3f} "
                     f"| {pred} | {row.macs_ratio:.3f} | {note.strip('; ')} |")
    return "\n".join(lines + _objective_lines(result)) + "\n"


def best_lines(best: BestForms, channels_last: bool = False) -> list[str]:
    """Best against best (`--best`): the table `form | dense ms | TT ms | ratio | TT MACs↓` (each side's best in
    bold), the headline, and why a form could not run; then a line that introduces the run's own eager table
    (`channels_last`: the run's memory format)."""
    dense, tt = best.best_dense, best.best_tt
    lines = ["Best against best (`--best`): each model in every form a user deploys, all timed interleaved in one set "
             f"of {best.rounds} rounds (medians; each visit a block of back-to-back calls lasting about "
             f"{BLOCK_MS:.0f} ms, their mean, as a deployed model serves one request after another): eager NCHW; "
             "eager NCHW frozen (each prepared for inference without a "
             "compiler: the dense model's BatchNorms folded into its convs by "
             "`torch.fx.experimental.optimization.fuse`, the TT model frozen by `ttplan.freeze`, weights folded once "
             "and kernel calls bound); eager channels-last (the TT model "
             "planned for NHWC "
             "maps, with the channels-last latency profile); `torch.compile` (inductor, freezing: parameters folded "
             "as constants) with inductor's layout optimization on and off; the channels-last models compiled "
             "the same way (layout optimization on); ONNX Runtime (the exported ONNX model, "
             "the TT one planned without the fused kernel where the run's plan fuses layers, since ONNX carries no "
             "ttplan op; CPU "
             f"session, {best.threads} intra-op thread{'s' if best.threads != 1 else ''}, 1 inter-op thread, all "
             "graph optimizations, idle threads not spinning, which would slow the next model timed). Ratio: dense "
             "ms over TT ms in the same form (above 1: TT faster); TT MACs↓: the planned MACs reduction of the TT "
             "model that form runs.", "",
             "| form | dense ms | TT ms | ratio | TT MACs↓ |", "| --- | ---: | ---: | ---: | ---: |"]
    for timing in best.forms:
        cells = []
        for side, winner in zip(SIDES, (dense, tt)):
            ms = timing.ms(side)
            text = "n/a" if ms is None else f"{ms:.2f}"
            cells.append(f"**{text}**" if winner is timing else text)
        ratio = "" if timing.ratio is None else f"{timing.ratio:.2f}×"
        macs = "" if timing.tt_macs_reduction is None else f"{timing.tt_macs_reduction:.1%}"
        lines.append(f"| {timing.form} | {cells[0]} | {cells[1]} | {ratio} | {macs} |")
    headline = f"**{best.headline}**"
    if best.ratio is not None:
        macs = "" if tt.tt_macs_reduction is None else f"; that TT model plans {tt.tt_macs_reduction:.1%} fewer MACs"
        headline += f" (dense {dense.dense_ms:.2f} ms, TT {tt.tt_ms:.2f} ms{macs})"
    lines += ["", headline + ".", ""]
    missing = [f"- {timing.form}, {' and '.join(sides)}: {reason}" for timing in best.forms
               for reason, sides in _reasons(timing).items()]
    if missing:
        lines += ["Unavailable:", "", *missing, ""]
    own = "channels-last" if channels_last else "NCHW"
    lines += [f"The run's own end-to-end comparison, eager {own}, as without `--best` (the same models as the table's "
              f"eager {own} row, in rounds of their own):", ""]
    return lines


def _reasons(timing: FormTiming) -> dict[str, list[str]]:
    """Why each side of a form could not run, one entry per distinct reason (`dense and TT` where both share it)."""
    out: dict[str, list[str]] = {}
    for side in SIDES:
        if timing.ms(side) is None:
            out.setdefault(timing.reason(side) or "not run", []).append(side)
    return out


def _objective_lines(result: ModelBench) -> list[str]:
    """How many layers run something other than the MAC objective's choice, and how many of those measured no
    slower than it (in the same rounds)."""
    compared = [no_slower for row in result.layers if (no_slower := row.no_slower_than_macs_plan) is not None]
    if not compared:
        return ["", "Every TT layer runs the MAC objective's order on stock ops: nothing to compare."]
    return ["", f"Where this run differs from what the MAC objective runs (another order, or the fused kernel): "
                f"{sum(compared)} of {len(compared)} distinct layers measured no slower than the MAC objective's "
                "order on stock ops, in the same rounds (`note` column)."]


def _process_lines(result: ModelBench) -> list[str]:
    """The `--processes` table: the same end-to-end timing in each fresh process, and the median speedup."""
    if not result.processes:
        return []
    lines = [f"The same end-to-end timing in {len(result.processes)} fresh processes, one after another "
             "(`--processes`; the allocator's state, and so the page faults, belong to a process):", "",
             "| process | dense ms | TT ms | speedup | page faults per forward (dense / TT) |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for number, t in enumerate(result.processes, start=1):
        lines.append(f"| {number} | {t.dense_ms:.2f} | {t.tt_ms:.2f} | {t.speedup:.2f}x | "
                     f"{_faults(t.dense_faults)} / {_faults(t.tt_faults)} |")
    speedups = [t.speedup for t in result.processes]
    lines += ["", f"Median over the fresh processes: **{median_speedup(result.processes):.2f}x** "
                  f"(from {min(speedups):.2f}x to {max(speedups):.2f}x).", ""]
    return lines


def _ceiling_lines(result: ModelBench) -> list[str]:
    """Amdahl's bound from the per-layer times: what the layers TT leaves alone cost."""
    if result.replaced_ms <= 0:
        return []
    if result.ceiling is None:
        return [f"The replaced layers' per-layer dense times sum to {result.replaced_ms:.2f} ms, more than the whole "
                f"dense model's {result.dense_ms:.2f} ms: timed apart, at other moments, they ran slower than inside "
                "the model, so no bound is given.", ""]
    return [f"The replaced layers take about {result.replaced_ms:.2f} ms of the dense model's {result.dense_ms:.2f} "
            f"ms (their per-layer dense times summed); the rest (dense layers, pooling, batch norm, adds) about "
            f"{result.dense_ms - result.replaced_ms:.2f} ms, so even free TT layers would give at most "
            f"{result.ceiling:.2f}x, and TT layers running their MACs at their dense convs' measured time per MAC "
            f"{result.at_dense_rate:.2f}x.", ""]


def _format_lines(result: ModelBench) -> list[str]:
    """The four models of `--channels-last` (both memory formats, one set of rounds) and the best of each."""
    if result.formats is None:
        return []
    ms = result.formats.ms
    dense, tt = result.formats.best("dense"), result.formats.best("TT")
    return ["Both memory formats in one process, the four models timed interleaved on the same input values (the "
            "NCHW TT model planned as for an NCHW model: this objective, the NCHW profile"
            + (", autotuned on NCHW inputs" if result.plan.layers and any(layer.tuned for layer in result.plan.layers)
               else "") + "):", "",
            "| " + " | ".join(f"{name} ms" for name in MODELS) + " |", "|" + " ---: |" * len(MODELS),
            "| " + " | ".join(f"{ms[name]:.2f}" for name in MODELS) + " |", "",
            f"Best of each: {dense} {ms[dense]:.2f} ms, {tt} {ms[tt]:.2f} ms: **{result.formats.speedup:.2f}x**; "
            f"the best TT model against the dense model as loaded (NCHW): {ms['dense NCHW'] / ms[tt]:.2f}x.", ""]


def _compiled_lines(result: ModelBench) -> list[str]:
    """The `--compile` table: each inductor setting, then the best of each model."""
    if not result.compiled:
        return []
    lines = ["Under `torch.compile` (inductor, `dynamic=False`; both models compiled with each setting, each pair "
             "timed interleaved; freezing takes parameters as constants, so the TT layers' weight-only steps are "
             "folded once, and the convs' weights prepacked, in both models):", "",
             "| inductor layout optimization | freezing | dense ms | TT ms | speedup |",
             "| --- | --- | ---: | ---: | ---: |"]
    for t in result.compiled:
        lines.append(f"| {'on' if t.layout_optimization else 'off'} | {'on' if t.freezing else 'off'} | "
                     f"{t.dense_ms:.2f} | {t.tt_ms:.2f} | {t.speedup:.2f}x |")
    dense, tt = best_of_each(result.compiled)
    lines += ["", f"Best of each: dense {dense.dense_ms:.2f} ms ({dense.setting}), TT {tt.tt_ms:.2f} ms "
                  f"({tt.setting}): **{dense.dense_ms / tt.tt_ms:.2f}x**; compiled TT against the eager dense "
                  f"model: {result.dense_ms / tt.tt_ms:.2f}x; against the eager TT model: "
                  f"{result.tt_ms / tt.tt_ms:.2f}x faster.", ""]
    return lines


def _malloc_words(mode: str) -> str:
    return ("glibc's defaults (`--malloc default`)" if mode == "default"
            else "freed memory retained for reuse (`--malloc retain`, `ttplan.retain_freed_memory()`)")


def _faults(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def render_report(sections: list[str]) -> str:
    """The whole report: what it measures, where, then each run."""
    head = [
        "# Latency of whole models: dense against TT",
        "",
        "Written by `ttplan bench model` (regenerate all with `bash scripts/latency_reports.sh`). Each run plans "
        "the architecture, builds the TT model as a user would (the generated code's `convert(model)`, which folds "
        "each BatchNorm after a TT layer into it, the models being in eval mode), and times "
        "dense and TT end to end in one process, interleaved, float32, `torch.no_grad()`; then each distinct layer "
        "on its real input. Predicted times come from the latency profile named in the command (`ttplan calibrate`). "
        "A section run with `--best` leads with best against best: each model in every form a user deploys (eager "
        "NCHW and channels-last, `torch.compile` with freezing, ONNX Runtime), all timed interleaved, the fastest "
        "TT form against the fastest dense form.",
        "",
        f"Machine: {describe()}.",
        "",
    ]
    return "\n".join(head) + "\n" + "\n".join(sections)


__all__ = ["best_lines", "render_report", "render_section"]
