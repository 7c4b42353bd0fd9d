"""Figures people decide from: the rank sweep, a planned architecture, one plan as a drawing, ADMM curves.

Every figure is a `matplotlib.figure.Figure` drawn on an Agg canvas (no pyplot, no global backend switch, so a
notebook can show the same object), and `save_figure` writes it as PNG and SVG. Each `*_figure` function
takes plain data; the `read_*` helpers load the files the CLI writes and say what they expected when a file
is missing, empty or corrupted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import networkx as nx
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from ttplan.analysis.sweep import Sweep
from ttplan.core.contraction import ContractionPlan
from ttplan.errors import TTPlanError
from ttplan.files import read_user_json, save_figure_atomic

#: one colour per swept format, fixed so that figures are comparable
FORMAT_COLOURS = {"classical": "#d62728", "tucker2": "#1f77b4", "hodec-2": "#2ca02c", "hodec-3": "#9467bd",
                  "tr-3": "#ff7f0e", "cp-1": "#8c564b"}
FALLBACK_COLOURS = ("#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#98df8a")
PHASE_COLOURS = {"pretrain": "#e8e8e8", "admm": "#fdf1d6", "finetune": "#e3f1e3"}
ARCH_EXPECTED = "the JSON that `ttplan plan ARCH --json` writes (layers with name, baseline, best, schemes)"
METRICS_EXPECTED = (
    'a metrics.json with {"config": {...}, "epochs": [{"epoch", "phase", "loss", "accuracy", "rho", '
    '"distances"}, ...]}, as `ttplan train` writes'
)


def new_figure(width: float, height: float) -> Figure:
    """A figure with its own Agg canvas (pyplot's global state is never touched)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_paths(prefix: str | Path) -> tuple[Path, Path]:
    """`PREFIX.png` and `PREFIX.svg` (a `.png`/`.svg` suffix on the prefix is dropped)."""
    prefix = Path(prefix)
    if prefix.suffix.lower() in (".png", ".svg"):
        prefix = prefix.with_suffix("")
    return prefix.parent / f"{prefix.name}.png", prefix.parent / f"{prefix.name}.svg"


def save_figure(fig: Figure, prefix: str | Path) -> tuple[Path, Path]:
    """Write `PREFIX.png` (150 dpi) and `PREFIX.svg`, each atomically, parent folders created; returns both paths."""
    png, svg = figure_paths(prefix)
    # fixed ids and no timestamp, so regenerating unchanged data gives byte-identical files
    with rc_context({"svg.hashsalt": "ttplan"}):
        save_figure_atomic(fig, png, dpi=150, metadata={"Software": None})
        save_figure_atomic(fig, svg, metadata={"Date": None, "Creator": None})
    return png, svg


def _colour(label: str, n: int) -> str:
    """The fixed colour of a format label (`classical-3` counts as classical), else a fallback."""
    base = "classical" if label.startswith("classical") else label
    return FORMAT_COLOURS.get(base, FALLBACK_COLOURS[n % len(FALLBACK_COLOURS)])


def _needs_log(values: Sequence[float], span: float = 20.0) -> bool:
    """Whether positive values spread over more than `span`x (then a log axis reads better)."""
    positive = [v for v in values if v > 0]
    return bool(positive) and max(positive) / min(positive) > span


def _plain_log(axis) -> None:
    """Log-axis tick labels as plain numbers (0.2, 0.4, 1) instead of 2×10⁻¹."""
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain)


def _pretty_format(label: str) -> str:
    """Legend text for a format label: `classical-3` -> `classical (3 modes)`."""
    kind, _, order = label.partition("-")
    return f"{kind} ({order} modes/side)" if order else f"{kind} (1 mode/side)"


def _sweep_curves(ax, sweep: Sweep, x_of) -> list[float]:
    """Draw every format's published (dashed) and best (solid) curve against `x_of(point)`; returns the y values.

    Where the best order is the published order at every rank, one solid curve says so.
    """
    values: list[float] = []
    for n, label in enumerate(sweep.formats):
        points = sorted(sweep.series(label), key=x_of)
        x = [x_of(p) for p in points]
        colour = _colour(label, n)
        pub = [p.published_vs_dense for p in points]
        best = [p.best_vs_dense for p in points]
        values += pub + best
        if pub == best:
            ax.plot(x, best, linestyle="-", color=colour, marker="o", markersize=2.5, linewidth=1.8,
                    label=f"{_pretty_format(label)}, published order = best order")
            continue
        ax.plot(x, pub, linestyle="--", color=colour, marker="o", markersize=2.5, linewidth=1.4,
                label=f"{_pretty_format(label)}, published order")
        ax.plot(x, best, linestyle="-", color=colour, marker="o", markersize=2.5, linewidth=1.8,
                label=f"{_pretty_format(label)}, best order")
    ax.axhline(1.0, color="black", linewidth=1.2, label="dense conv (1.0×)")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    return values


def sweep_figure(sweep: Sweep) -> Figure:
    """MACs relative to dense against parameter reduction (left, linear %) and against the compression ratio
    (right, log, which spreads out the high-compression end); published order dashed, best order solid."""
    fig = new_figure(15.0, 6.5)
    ax, ax_ratio = fig.subplots(1, 2, sharey=True)
    values = _sweep_curves(ax, sweep, lambda p: 100.0 * p.param_reduction)
    _sweep_curves(ax_ratio, sweep, lambda p: sweep.dense_params / p.params)
    if _needs_log(values):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2f}×"))
    ax.xaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.set_xlabel("parameter reduction, 1 − params / dense params")
    ax.set_ylabel(f"MACs relative to the dense conv (batch {sweep.batch})")
    ax_ratio.set_xscale("log")
    ax_ratio.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    ax_ratio.set_xlabel("compression, dense params / params (log)")
    ax_ratio.tick_params(labelleft=True)
    ax.legend(fontsize=8, loc="lower left")
    ranks = sorted({p.rank for p in sweep.points})
    title = f"{sweep.name + ': ' if sweep.name else ''}{sweep.layer}"
    fig.suptitle(f"{title}; uniform ranks {ranks[0]}–{ranks[-1]}; dense = {sweep.dense_macs:,} MACs, "
                 f"{sweep.dense_params:,} params. Dashed: published order, solid: best order", fontsize=11)
    return fig


def plot_sweep(sweep: Sweep, prefix: str | Path) -> tuple[Path, Path]:
    """`sweep_figure` saved as PREFIX.png and PREFIX.svg."""
    return save_figure(sweep_figure(sweep), prefix)


# --- architectures -------------------------------------------------------------------------------------


def _number(value, where: str, expected: str) -> float:
    """A finite non-negative number, else a one-line error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise TTPlanError(f"{where}={value!r}: expected a non-negative number in {expected}")
    return float(value)


def check_arch(data: object, source: str = "architecture plan") -> list[dict]:
    """The validated `layers` of a `ttplan plan --json` output: name, dense and best MACs/params, schemes."""
    if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
        raise TTPlanError(f"{source} has no list 'layers': expected {ARCH_EXPECTED}")
    if not data["layers"]:
        raise TTPlanError(f"{source} holds no layers: expected {ARCH_EXPECTED}")
    out = []
    for n, layer in enumerate(data["layers"]):
        where = f"{source} layer {n}"
        if not isinstance(layer, dict):
            raise TTPlanError(f"{where} is not an object: expected {ARCH_EXPECTED}")
        for key in ("name", "baseline", "best"):
            if key not in layer:
                raise TTPlanError(f"{where} lacks '{key}': expected {ARCH_EXPECTED}")
        base, best = layer["baseline"], layer["best"]
        if not isinstance(base, dict) or not isinstance(best, dict):
            raise TTPlanError(f"{where}: baseline and best must be objects; expected {ARCH_EXPECTED}")
        schemes = layer.get("schemes") or {}
        if not isinstance(schemes, dict):
            raise TTPlanError(f"{where}: schemes must be an object; expected {ARCH_EXPECTED}")
        out.append({
            "name": str(layer["name"]),
            "dense_macs": _number(base.get("macs"), f"{where} baseline.macs", ARCH_EXPECTED),
            "dense_params": _number(base.get("params"), f"{where} baseline.params", ARCH_EXPECTED),
            "best_macs": _number(best.get("macs"), f"{where} best.macs", ARCH_EXPECTED),
            "best_params": _number(best.get("params"), f"{where} best.params", ARCH_EXPECTED),
            "published": {
                name: _number(s.get("macs") if isinstance(s, dict) else None, f"{where} schemes.{name}.macs",
                              ARCH_EXPECTED)
                for name, s in schemes.items() if name != "dense"  # `dense` there is rebuild-then-conv
            },
            "worse_than_dense": bool(layer.get("worse_than_dense", False)),
        })
    return out


def read_arch(path: str | Path) -> dict:
    """A `ttplan plan ARCH --json` output, with its layers checked (`check_arch`)."""
    data = read_user_json(path, "architecture plan", ARCH_EXPECTED)
    check_arch(data, f"architecture plan {str(path)!r}")
    return data  # type: ignore[return-value]


def arch_figure(data: dict, title: str | None = None) -> Figure:
    """Per-layer MACs and parameters, dense against TT (best order, and the published order when given)."""
    layers = check_arch(data)
    names = [layer["name"] for layer in layers]
    fig = new_figure(max(8.0, 0.45 * len(layers) + 3.0), 8.0)
    ax_macs, ax_params = fig.subplots(2, 1, sharex=True)
    xs = list(range(len(layers)))
    nan = float("nan")  # a layer left dense has no published TT order: no bar
    groups = [
        ("dense", [layer["dense_macs"] for layer in layers], "#555555"),
        ("TT, published order", [min(layer["published"].values(), default=nan) for layer in layers], "#d62728"),
        ("TT, best order", [layer["best_macs"] for layer in layers], "#2ca02c"),
    ]
    width = 0.8 / len(groups)
    for g, (label, values, colour) in enumerate(groups):
        offset = (g - (len(groups) - 1) / 2) * width
        ax_macs.bar([x + offset for x in xs], values, width, label=label, color=colour)
    for x, layer in zip(xs, layers):
        if layer["worse_than_dense"]:
            top = max(layer["dense_macs"], layer["best_macs"], *layer["published"].values())  # above all bars
            ax_macs.annotate("TT > dense", (x, top), textcoords="offset points", xytext=(0, 4),
                             ha="center", fontsize=7, color="#d62728")
    ax_macs.set_ylabel("MACs per forward")
    ax_macs.set_yscale("log" if _needs_log([v for _, vs, _ in groups for v in vs if v == v]) else "linear")
    ax_macs.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    dense_total = sum(layer["dense_macs"] for layer in layers)
    best_total = sum(layer["best_macs"] for layer in layers)
    ax_macs.set_title(f"MACs: dense {dense_total:,.0f}, TT best {best_total:,.0f} "
                      f"({best_total / dense_total:.2f}× dense)", fontsize=10)
    width = 0.4
    dense_p, best_p = [layer["dense_params"] for layer in layers], [layer["best_params"] for layer in layers]
    ax_params.bar([x - width / 2 for x in xs], dense_p, width, label="dense", color="#555555")
    ax_params.bar([x + width / 2 for x in xs], best_p, width, label="TT", color="#1f77b4")
    ax_params.set_ylabel("parameters")
    ax_params.set_yscale("log" if _needs_log(dense_p + best_p) else "linear")
    ax_params.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    ax_params.set_title(f"parameters: dense {sum(dense_p):,.0f}, TT {sum(best_p):,.0f} "
                        f"({sum(best_p) / max(sum(dense_p), 1):.2f}× dense)", fontsize=10)
    ax_params.set_xticks(xs, names, rotation=60, ha="right", fontsize=8)
    for ax in (ax_macs, ax_params):
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title or str(data.get("model") or data.get("arch") or "planned architecture"))
    return fig


def plot_arch(data: dict, prefix: str | Path, title: str | None = None) -> tuple[Path, Path]:
    """`arch_figure` saved as PREFIX.png and PREFIX.svg."""
    return save_figure(arch_figure(data, title), prefix)


# --- one plan -----------------------------------------------------------------------------------------------


def _layout(plan: ContractionPlan) -> dict[int, tuple[float, float]]:
    """Cores on a line in chain order, the input X below their middle."""
    n = len(plan.network.tensors) - 1
    pos: dict[int, tuple[float, float]] = {0: ((n - 1) / 2, -1.8)}
    for v in range(1, n + 1):
        pos[v] = (float(v - 1), 0.0)
    return pos


def _where(plan: ContractionPlan, step) -> str:
    """`weights`, or where a feature-map step runs: `at 28x28` before the conv, `conv, at 14x14` and after."""
    if step.kind == "weight":
        return "weights" + (", folded at load" if plan.fold_weights else "")
    h, w = step.map_size
    return f"{'conv, ' if step.kind == 'conv' else ''}at {h}x{w}"


def plan_figure(plan: ContractionPlan, title: str | None = None) -> Figure:
    """The network (tensors as nodes, shared indices as edges tagged with the step that sums them, output
    indices dangling) beside the steps in order with their MACs and resolutions."""
    net = plan.network
    graph = net.graph()
    pos = _layout(plan)
    steps_of = plan.contracted_at()
    cores = len(net.tensors) - 1
    net_width = max(7.5, 1.25 * cores)  # about an inch and a quarter per core keeps the rank labels apart
    fig = new_figure(net_width + 6.5, max(6.0, 0.5 * len(plan.steps) + 2.0))
    ax_net, ax_steps = fig.subplots(1, 2, width_ratios=[net_width, 6.0])
    simple = nx.Graph()
    simple.add_nodes_from(graph.nodes(data=True))
    labels: dict[tuple[int, int], str] = {}
    for u, v, key, data in graph.edges(keys=True, data=True):
        simple.add_edge(u, v)
        text = f"{key}={data['size']}  [{steps_of.get(key, '?')}]"
        labels[(u, v)] = f"{labels[(u, v)]}\n{text}" if (u, v) in labels else text
    # output indices dangle from their owners
    for name in net.output:
        holder = next(n for n, t in enumerate(net.tensors) if name in t.indices)
        stub = f"out:{name}"
        x, y = pos[holder]
        dx = {"b": -0.45, "s": 0.45}.get(name, 0.0)
        pos[stub] = (x + dx, y + (0.9 if holder else -0.9))
        simple.add_node(stub)
        simple.add_edge(holder, stub)
        size = net.spec.out_pixels if name == "s" else net.size(name)
        labels[(holder, stub)] = f"{name}={size}"
    tensors = list(range(len(net.tensors)))
    windows = set(net.windows)
    colours = ["#f4a582" if net.tensors[n].is_input else ("#92c5de" if windows & set(net.tensors[n].indices)
                                                           else "#d1e5f0") for n in tensors]
    stubs = [n for n in simple.nodes if isinstance(n, str)]
    nx.draw_networkx_edges(simple, pos, ax=ax_net, edgelist=[e for e in simple.edges if not any(
        isinstance(v, str) for v in e)], width=1.6, edge_color="#444444")
    nx.draw_networkx_edges(simple, pos, ax=ax_net, edgelist=[e for e in simple.edges if any(
        isinstance(v, str) for v in e)], width=1.0, style="dotted", edge_color="#888888")
    nx.draw_networkx_nodes(simple, pos, ax=ax_net, nodelist=tensors, node_color=colours, node_size=1100,
                           edgecolors="#333333")
    nx.draw_networkx_nodes(simple, pos, ax=ax_net, nodelist=stubs, node_size=0)
    nx.draw_networkx_labels(simple, pos, ax=ax_net, labels={n: net.tensors[n].name for n in tensors},
                            font_size=11, font_weight="bold")
    box = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.9}
    fan = 0  # edges of X, in drawing order: their labels alternate between two heights
    for (u, v), text in labels.items():
        (x0, y0), (x1, y1) = pos[u], pos[v]
        if y0 == y1 == 0.0:  # a rank between neighbouring cores: above the edge, clear of the nodes
            x, y, va = (x0 + x1) / 2, 0.12, "bottom"
        elif isinstance(v, str):  # a dangling output index: at its free end
            x, y, va = x1, y1, "bottom" if y1 > y0 else "top"
        else:  # an edge of the input X: part of the way to the core, staggered, so a fan of labels stays apart
            t = 0.55 if fan % 2 == 0 else 0.75
            fan += 1
            x, y, va = x0 + t * (x1 - x0), y0 + t * (y1 - y0), "center"
        ax_net.text(x, y, text, fontsize=7.5, ha="center", va=va, bbox=box, zorder=5)
    ax_net.set_title("tensor network: index=size [step that sums it]; dotted: output indices\n"
                     "orange: the input X; dark blue: the core that holds the window k (the conv)", fontsize=9)
    ax_net.margins(0.12)
    ax_net.set_axis_off()
    # the steps, numbered, as a text table
    dense = net.spec.dense_macs(net.batch)
    rows = []
    for step in plan.steps:
        rows.append(f"{step.number:>2}. {step.left_name} × {step.right_name}\n"
                    f"    → [{','.join(step.indices)}]  {_where(plan, step)}\n"
                    f"    {step.macs:>13,} MACs   {step.elements:>11,} elements")
    rows.append(f"total {plan.macs:,} MACs = {plan.macs / dense:.3f}× dense ({dense:,})"
                + ("\n(weight steps folded at load time)" if plan.fold_weights else ""))
    rows.append(f"params {plan.params:,}; largest intermediate {plan.largest_intermediate:,}")
    ax_steps.text(0.0, 1.0, "\n".join(rows), family="monospace", fontsize=8.5, va="top", ha="left",
                  transform=ax_steps.transAxes)
    ax_steps.set_title(f"contraction steps of the {plan.name!r} order, in order", fontsize=9)
    ax_steps.set_axis_off()
    fmt = net.fmt
    fig.suptitle(title or f"{net.spec.describe()}, {fmt.label} in_modes={list(fmt.in_modes)} "
                          f"out_modes={list(fmt.out_modes)} ranks={list(fmt.ranks)}, batch {net.batch}",
                 fontsize=10)
    return fig


def plot_plan(plan: ContractionPlan, prefix: str | Path, title: str | None = None) -> tuple[Path, Path]:
    """`plan_figure` saved as PREFIX.png and PREFIX.svg."""
    return save_figure(plan_figure(plan, title), prefix)


# --- ADMM runs ----------------------------------------------------------------------------------------------


def check_metrics(data: object, source: str = "metrics") -> list[dict]:
    """The validated epochs of a run's metrics.json (`METRICS_EXPECTED`)."""
    if not isinstance(data, dict) or not isinstance(data.get("epochs"), list):
        raise TTPlanError(f"{source} has no list 'epochs': expected {METRICS_EXPECTED}")
    if not data["epochs"]:
        raise TTPlanError(f"{source} holds no epochs yet: expected {METRICS_EXPECTED}")
    out = []
    for n, row in enumerate(data["epochs"]):
        where = f"{source} epochs[{n}]"
        if not isinstance(row, dict):
            raise TTPlanError(f"{where} is not an object: expected {METRICS_EXPECTED}")
        missing = [k for k in ("epoch", "phase", "loss", "accuracy") if k not in row]
        if missing:
            raise TTPlanError(f"{where} lacks {', '.join(missing)}: expected {METRICS_EXPECTED}")
        distances = row.get("distances") or {}
        if not isinstance(distances, dict):
            raise TTPlanError(f"{where}.distances is not an object of layer -> number: expected {METRICS_EXPECTED}")
        out.append({
            "epoch": _number(row["epoch"], f"{where}.epoch", METRICS_EXPECTED),
            "phase": str(row["phase"]),
            "loss": _number(row["loss"], f"{where}.loss", METRICS_EXPECTED),
            "accuracy": _number(row["accuracy"], f"{where}.accuracy", METRICS_EXPECTED),
            "rho": None if row.get("rho") is None else _number(row["rho"], f"{where}.rho", METRICS_EXPECTED),
            "distances": {str(k): _number(v, f"{where}.distances[{k!r}]", METRICS_EXPECTED)
                          for k, v in distances.items()},
        })
    return out


def read_metrics(run_dir: str | Path) -> dict:
    """A run folder's metrics.json, with its epochs checked (`check_metrics`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TTPlanError(f"run folder {str(run_dir)!r} does not exist or is not a folder: expected {METRICS_EXPECTED}")
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise TTPlanError(f"run folder {str(run_dir)!r} has no metrics.json: expected {METRICS_EXPECTED}")
    data = read_user_json(path, "metrics file", METRICS_EXPECTED)
    check_metrics(data, f"metrics file {str(path)!r}")
    return data  # type: ignore[return-value]


def admm_figure(metrics: dict, title: str | None = None) -> Figure:
    """Loss, accuracy and each layer's relative distance ‖W−Z‖/‖W‖ against epoch, phases shaded."""
    epochs = check_metrics(metrics)
    fig = new_figure(9.0, 9.0)
    ax_loss, ax_acc, ax_dist = fig.subplots(3, 1, sharex=True)
    xs = [e["epoch"] for e in epochs]
    # shade contiguous phases
    spans: list[tuple[str, float, float]] = []
    for e in epochs:
        if spans and spans[-1][0] == e["phase"]:
            spans[-1] = (e["phase"], spans[-1][1], e["epoch"])
        else:
            spans.append((e["phase"], e["epoch"], e["epoch"]))
    shaded: set[str] = set()
    for ax in (ax_loss, ax_acc, ax_dist):
        for phase, start, stop in spans:
            ax.axvspan(start - 0.5, stop + 0.5, color=PHASE_COLOURS.get(phase, "#eeeeee"), alpha=0.8, linewidth=0,
                       label=phase if ax is ax_loss and phase not in shaded else None)
            if ax is ax_loss:
                shaded.add(phase)
        ax.grid(True, alpha=0.3)
    ax_loss.plot(xs, [e["loss"] for e in epochs], marker="o", color="#1f77b4", label="loss")
    ax_loss.set_ylabel("training loss")
    if _needs_log([e["loss"] for e in epochs]):
        ax_loss.set_yscale("log")
        ax_loss.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax_loss.legend(fontsize=8, loc="upper right")
    acc = [e["accuracy"] for e in epochs]
    ax_acc.plot(xs, acc, marker="o", color="#2ca02c")
    ax_acc.set_ylabel("accuracy")
    if max(acc) <= 1.0:
        ax_acc.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    layers = sorted({name for e in epochs for name in e["distances"]})
    drawn = []
    for n, name in enumerate(layers):
        pts = [(e["epoch"], e["distances"][name]) for e in epochs if name in e["distances"]]
        ax_dist.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=name,
                     color=FALLBACK_COLOURS[n % len(FALLBACK_COLOURS)] if n >= 4 else list(FORMAT_COLOURS.values())[n])
        drawn += [p[1] for p in pts]
    ax_dist.set_ylabel("‖W − Z‖ / ‖W‖")
    ax_dist.set_xlabel("epoch")
    if drawn and min(drawn) > 0:
        ax_dist.set_yscale("log")
        if max(drawn) / min(drawn) < 100:  # few decades: label the minor ticks too, as plain numbers
            _plain_log(ax_dist.yaxis)
        else:
            ax_dist.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if layers:
        ax_dist.legend(fontsize=7, ncol=2 if len(layers) > 6 else 1, loc="upper right")
    else:
        ax_dist.text(0.5, 0.5, "no ADMM epochs: no approximation error recorded", ha="center", va="center",
                     transform=ax_dist.transAxes)
    config = metrics.get("config") if isinstance(metrics.get("config"), dict) else {}
    summary = ", ".join(f"{k}={config[k]}" for k in ("model", "dataset", "format", "rank", "rho") if k in config)
    fig.suptitle(title or ("ADMM run" + (f": {summary}" if summary else "")), fontsize=11)
    return fig


def plot_admm(metrics: dict, prefix: str | Path, title: str | None = None) -> tuple[Path, Path]:
    """`admm_figure` saved as PREFIX.png and PREFIX.svg."""
    return save_figure(admm_figure(metrics, title), prefix)


__all__ = [
    "admm_figure",
    "arch_figure",
    "check_arch",
    "check_metrics",
    "new_figure",
    "plan_figure",
    "plot_admm",
    "plot_arch",
    "plot_plan",
    "plot_sweep",
    "read_arch",
    "read_metrics",
    "save_figure",
    "sweep_figure",
]
