"""Emit standalone PyTorch source for TT layers: one readable `nn.Module` class per distinct layer plan.

The source imports torch only. Each class holds the cores as parameters in the plan's format; its
`forward` performs the plan's steps in order, rendered from the same lowering (`ttplan.runtime.lowering.lower`)
that `TTConv2d` interprets, so the two cannot drift apart; comments give each step's MACs and
resolution. `from_dense` decomposes a dense kernel by a TT-SVD helper written into the file and
`to_dense` rebuilds it. A file for an architecture adds `LAYERS` (layer name -> class) and
`convert(model)`.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ttplan import __version__
from ttplan.core.contraction import ContractionPlan, Step
from ttplan.runtime.fold_cache import fold_key_source
from ttplan.runtime.lowering import RUNTIME, Instruction, MatMul, Program, Reshape, lower

#: how generated code spells the run-time sizes
_RUNTIME = dict(zip(RUNTIME, ("batch", "height", "width", "height * width")))

_HELPERS = '''

def tt_svd(chain: torch.Tensor, ranks: tuple[int, ...]) -> list[torch.Tensor]:
    """Sequential truncated SVD of `chain` (one axis per core) into cores `[r_t, n_t, r_t+1]`.

    The SVDs run in float64 (float32 on MPS) and the cores come back in the input's dtype. Ranks
    above what an SVD can give are padded with zeros, which leaves the chain's product unchanged.
    """
    work = chain.detach().to(torch.float32 if chain.device.type == "mps" else torch.float64)
    sizes = tuple(work.shape)
    cores = []
    rest = work.reshape(1, -1)
    for t, size in enumerate(sizes[:-1]):
        u, s, vh = torch.linalg.svd(rest.reshape(rest.shape[0] * size, -1), full_matrices=False)
        r = min(ranks[t + 1], s.numel())
        cores.append(u[:, :r].reshape(rest.shape[0], size, r))
        rest = s[:r, None] * vh[:r]
    cores.append(rest.reshape(rest.shape[0], sizes[-1], 1))
    padded = []
    for t, core in enumerate(cores):
        full = core.new_zeros(ranks[t], core.shape[1], ranks[t + 1])
        full[: core.shape[0], :, : core.shape[2]] = core
        padded.append(full.to(chain.dtype))
    return padded


def tt_chain(cores: list[torch.Tensor]) -> torch.Tensor:
    """Contract cores `[r_t, n_t, r_t+1]` left to right into the tensor of shape `(n_1, ..., n_m)`."""
    full = cores[0].reshape(-1, cores[0].shape[-1])
    for core in cores[1:]:
        full = (full @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[-1])
    return full.reshape([core.shape[1] for core in cores])
'''

_CONVERT = '''

def convert(model: nn.Module) -> nn.Module:
    """A deep copy of `model` with each layer in `LAYERS` replaced by the TT-SVD of its weights (biases kept)."""
    model = copy.deepcopy(model)
    for name, cls in LAYERS.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        dense = getattr(parent, attr)
        if dense.weight.numel() != math.prod(cls.kernel_shape):
            raise ValueError(f"layer {name}: weight of shape {list(dense.weight.shape)}, "
                             f"expected {list(cls.kernel_shape)}")
        layer = cls.from_dense(dense.weight, dense.bias)
        layer.train(dense.training)
        setattr(parent, attr, layer)
    return model
'''


def _size(group: tuple[str, ...], sizes: dict[str, int]) -> str:
    """A Python expression for the size of a group of indices: constants folded, run-time sizes by name."""
    const = math.prod(sizes[i] for i in group if i not in _RUNTIME)
    parts = [_RUNTIME[i] for i in group if i in _RUNTIME]
    if const != 1 or not parts:
        parts.append(str(const))
    return " * ".join(parts)


def _shape(groups: tuple[tuple[str, ...], ...], sizes: dict[str, int]) -> str:
    return ", ".join(_size(g, sizes) for g in groups)


def _show(groups: tuple[tuple[str, ...], ...]) -> str:
    """`[b, (i1 i2), s]`: the index groups of a reshaped tensor."""
    shown = [g[0] if len(g) == 1 else f"({' '.join(g)})" if g else "1" for g in groups]
    return f"[{', '.join(shown)}]"


def _with_comment(indent: str, code: str, note: str) -> list[str]:
    """`code  # note` on one line if it fits in 120 columns, else the comment on the line above."""
    if not note:
        return [indent + code]
    one = f"{indent}{code}  # {note}"
    return [one] if len(one) <= 120 else [f"{indent}# {note}", indent + code]


def _ascii(name: str) -> str:
    return name.replace("·", "*")


class _Renderer:
    """Turns a program's instructions into lines of Python."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.cores = set(program.cores)

    def source(self, name: str) -> str:
        return f"self.{name}" if name in self.cores else name

    def line(self, ins: Instruction) -> list[tuple[str, str]]:
        """(code, comment) pairs for one instruction."""
        sizes = self.program.sizes
        if isinstance(ins, Reshape):
            out: list[tuple[str, str]] = []
            src = self.source(ins.src)
            if ins.perm is not None:
                full = ", ".join(_size((i,), sizes) for i in ins.src_layout)
                order = [ins.src_layout[p] for p in ins.perm]
                out.append((f"{ins.out} = {src}.reshape({full}).permute({', '.join(map(str, ins.perm))})",
                            f"[{', '.join(order)}]"))
                src = ins.out
            expr = f"{src}.reshape({_shape(ins.groups, sizes)})"
            if ins.after is not None:
                expr += f".permute({', '.join(map(str, ins.after))})"
            out.append((f"{ins.out} = {expr}", _show(ins.groups)))
            return out
        if isinstance(ins, MatMul):
            shown = f"-> [{', '.join(ins.layout)}]"
            if ins.batch is None:
                return [(f"{ins.out} = torch.mm({ins.left}, {ins.right})", shown)]
            left = f"{ins.left}.expand({ins.right}.shape[0], -1, -1)"
            return [(f"{ins.out} = torch.bmm({left}, {ins.right})", shown)]
        return [
            (f"{ins.out} = F.conv2d({ins.src}, {ins.weight}, stride=self.stride, padding=self.padding, "
             "dilation=self.dilation)", f"-> [{', '.join(ins.layout)}]"),
            (f"height, width = {ins.out}.shape[-2:]", ""),
        ]

    def comment(self, step: Step, batch: int) -> str:
        what = f"step {step.number}: {_ascii(step.left_name)} x {_ascii(step.right_name)}"
        if step.kind == "weight":
            return f"# {what}, weight-only: {step.macs:,} MACs"
        h, w = step.map_size
        kind = "conv2d" if step.kind == "conv" else "feature map"
        return f"# {what}, {kind} at {h}x{w}: {step.macs:,} MACs at batch {batch}"

    def block(self, instructions: tuple[Instruction, ...], indent: str) -> list[str]:
        plan = self.program.plan
        steps = {s.number: s for s in plan.steps}
        lines: list[str] = []
        current = None
        for ins in instructions:
            if ins.step != current:
                current = ins.step
                if ins.step in steps:
                    lines.append(indent + self.comment(steps[ins.step], plan.network.batch))
                else:
                    lines.append(indent + "# the result as [B, O, H', W']")
            for code, note in self.line(ins):
                lines += _with_comment(indent, code, note)
        return lines


def class_name(plan: ContractionPlan) -> str:
    """A readable class name from the layer geometry and format, e.g. `TTHodecConv128to256K3S2P1`."""
    spec, fmt = plan.network.spec, plan.network.fmt
    label = "".join(part.capitalize() for part in fmt.label.replace("_", "-").split("-"))
    if spec.linear:
        return f"TT{label}Linear{spec.in_channels}to{spec.out_channels}"
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = spec.kernel_size, spec.stride, spec.padding, spec.dilation

    def pair(tag: str, a: int, b: int, default: int) -> str:
        if (a, b) == (default, default):
            return ""
        return f"{tag}{a}" if a == b else f"{tag}{a}x{b}"

    kernel = f"K{kh}" if kh == kw else f"K{kh}x{kw}"
    return (f"TT{label}Conv{spec.in_channels}to{spec.out_channels}{kernel}"
            f"{pair('S', sh, sw, 1)}{pair('P', ph, pw, 0)}{pair('D', dh, dw, 1)}")


def emit_class(plan: ContractionPlan, name: str | None = None, bias: bool | None = None) -> str:
    """The source of one `nn.Module` class that runs `plan` (see the module docstring)."""
    program = lower(plan)
    net = plan.network
    spec, fmt = net.spec, net.fmt
    name = name or class_name(plan)
    bias = spec.bias if bias is None else bias
    layout = fmt.chain_layout(spec)
    render = _Renderer(program)
    cores = fmt.cores(spec)
    kernel_shape = (spec.out_channels, spec.in_channels) if spec.linear else \
        (spec.out_channels, spec.in_channels, *spec.kernel_size)
    chain = math.prod(idx.size for idx in net.indices.values() if idx.kind == "rank")
    dense_macs = spec.dense_macs(net.batch)
    what = "nn.Linear" if spec.linear else "nn.Conv2d"
    geometry = spec.describe() if spec.linear else f"{spec.describe()} (planned size)"
    doc = [
        f'    """{geometry} as TT cores, {fmt.label} format, {plan.name!r} order.',
        "",
        f"    in_modes {list(fmt.in_modes)}, out_modes {list(fmt.out_modes)}, ranks {list(fmt.ranks)}; "
        f"{net.params():,} core parameters",
        f"    (dense kernel: {spec.kernel_elements:,}). Planned at batch "
        f"{net.batch}: {plan.feature_macs:,} MACs on the feature map",
        f"    + {plan.weight_macs:,} weight-only MACs per forward (FLOPs = 2 x MACs); the dense {what}: "
        f"{dense_macs:,} MACs.",
        '    """',
    ]
    lines = [f"class {name}(nn.Module):", *doc, ""]
    lines += [
        f"    in_channels = {spec.in_channels}",
        f"    out_channels = {spec.out_channels}",
        f"    kernel_size = {spec.kernel_size}",
        f"    stride = {spec.stride}",
        f"    padding = {spec.padding}",
        f"    dilation = {spec.dilation}",
        f"    kernel_shape = {kernel_shape}",
        "    # TT-SVD view of the kernel: W reshaped to kernel_modes (o..., i..., kh, kw), permuted by chain_axes",
        "    # into core order and reshaped to chain_sizes, one axis per core, joined by chain_ranks",
        f"    kernel_modes = {layout.kernel_modes}",
        f"    chain_axes = {layout.chain_axes}",
        f"    chain_sizes = {layout.chain_sizes}",
        f"    chain_ranks = {layout.chain_ranks}",
        "",
        f"    def __init__(self, bias: bool = {bias}, fold_weights: bool = {plan.fold_weights}, device=None, "
        "dtype=None) -> None:",
        "        super().__init__()",
        "        factory = {\"device\": device, \"dtype\": dtype}",
    ]
    for core in cores:
        shape = ", ".join(map(str, core.shape))
        axes = "[" + ", ".join(core.axes) + "]"
        lines.append(f"        self.{core.name} = nn.Parameter(torch.empty({shape}, **factory))  # {axes}")
    lines += [
        "        if bias:",
        "            self.bias = nn.Parameter(torch.empty(self.out_channels, **factory))",
        "        else:",
        "            self.register_parameter(\"bias\", None)",
        "        self.fold_weights = fold_weights",
        "        self._folded = None",
        "        self.reset_parameters()",
        "",
        "    def cores(self) -> list[torch.Tensor]:",
        '        """The cores in chain order."""',
        f"        return [{', '.join(f'self.{c.name}' for c in cores)}]",
        "",
        "    def reset_parameters(self) -> None:",
        '        """Gaussian cores scaled so the rebuilt kernel has the variance of nn.Conv2d\'s default init."""',
        "        fan_in = self.kernel_shape[1] * math.prod(self.kernel_shape[2:])",
        f"        # a kernel entry sums {chain:,} products of one entry per core",
        f"        std = (1.0 / (3.0 * fan_in * {chain})) ** (1.0 / {2 * len(cores)})",
        "        with torch.no_grad():",
        "            for core in self.cores():",
        "                core.normal_(0.0, std)",
        "            if self.bias is not None:",
        "                self.bias.uniform_(-1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))",
        "",
    ]
    folded = [n for n in program.folded if n not in program.cores]
    if folded:
        lines += [
            "    def weights(self) -> tuple[torch.Tensor, ...]:",
            '        """The weight-only steps (cores with cores): the merged cores the feature-map steps read."""',
            *render.block(program.weight, "        "),
            f"        return {folded[0]}," if len(folded) == 1 else f"        return {', '.join(folded)}",
            "",
            "    def folded_weights(self) -> tuple[torch.Tensor, ...]:",
            '        """`weights()`, cached while fold_weights is set and no gradient is recorded; recomputed when a',
            '        core changes (version, storage, dtype, device), so training and load_state_dict keep working."""',
            "        recording = torch.is_grad_enabled() and any(core.requires_grad for core in self.cores())",
            "        if not self.fold_weights or recording:",
            "            return self.weights()",
            f"        key = {fold_key_source('self.cores()')}",
            "        if self._folded is None or self._folded[0] != key:",
            "            with torch.no_grad():",
            "                self._folded = (key, self.weights())",
            "        return self._folded[1]",
            "",
        ]
    lines += ["    def forward(self, x: torch.Tensor) -> torch.Tensor:"]
    if spec.linear:
        lines += ["        lead = x.shape[:-1]", f"        x = x.reshape(-1, {spec.in_channels}, 1, 1)"]
    if folded:
        target = f"{folded[0]}," if len(folded) == 1 else ", ".join(folded)
        lines.append(f"        {target} = self.folded_weights()")
    lines.append("        batch, _, height, width = x.shape")
    lines += render.block(program.feature, "        ")
    lines += ["        if self.bias is not None:", "            y = y + self.bias.view(1, -1, 1, 1)"]
    lines.append(f"        return y.reshape(*lead, {spec.out_channels})" if spec.linear else "        return y")
    kernel_doc = "[O, I]" if spec.linear else "[O, I, k_h, k_w]"
    lines += [
        "",
        "    @classmethod",
        f"    def from_dense(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> \"{name}\":",
        f'        """The layer whose cores are the TT-SVD of `weight` {kernel_doc} (exact at maximal ranks); '
        'bias kept."""',
        "        layer = cls(bias=bias is not None, device=weight.device, dtype=weight.dtype)",
        "        chain = weight.detach().reshape(cls.kernel_modes).permute(cls.chain_axes).reshape(cls.chain_sizes)",
        "        with torch.no_grad():",
        "            for param, core in zip(layer.cores(), tt_svd(chain, cls.chain_ranks)):",
        "                param.copy_(core.reshape(param.shape))",
        "            if bias is not None:",
        "                layer.bias.copy_(bias.detach())",
        "        return layer",
        "",
        "    def to_dense(self) -> torch.Tensor:",
        f'        """The rebuilt kernel {kernel_doc} (differentiable)."""',
        "        ranks, sizes = self.chain_ranks, self.chain_sizes",
        "        cores = [core.reshape(ranks[t], sizes[t], ranks[t + 1]) for t, core in enumerate(self.cores())]",
        "        kernel = tt_chain(cores).reshape([self.kernel_modes[axis] for axis in self.chain_axes])",
        "        inverse = [self.chain_axes.index(axis) for axis in range(len(self.chain_axes))]",
        "        return kernel.permute(inverse).reshape(self.kernel_shape)",
        "",
        "    def extra_repr(self) -> str:",
        f"        text = \"{spec.describe()}, {fmt.label}, ranks={list(fmt.ranks)}, order={plan.name}\"",
        "        return f\"{text}, bias={self.bias is not None}, fold_weights={self.fold_weights}\"",
    ]
    return "\n".join(lines) + "\n"


def _header(title: str, lines: list[str]) -> str:
    body = "\n".join(lines)
    return f'"""{title}\n\n{body}\n"""\n' if body else f'"""{title}"""\n'


def _file(doc: str, classes: list[str], names: list[str], extra: str = "", copy: bool = False) -> str:
    imports = ["import copy"] if copy else []
    imports += ["import math", "", "import torch"]
    if any("F.conv2d(" in source for source in classes):
        imports.append("import torch.nn.functional as F")
    imports.append("from torch import nn")
    exported = f"__all__ = [{', '.join(repr(n) for n in names)}]".replace("'", '"')
    if len(exported) > 120:
        exported = "__all__ = [\n" + "".join(f'    "{n}",\n' for n in names) + "]"
    parts = [doc, "\n".join(imports), "", exported, _HELPERS.rstrip("\n"), ""]
    for source in classes:
        parts += ["", source]
    text = "\n".join(parts)
    if extra:
        text += extra
    return text.rstrip("\n") + "\n"


def emit_layer(plan: ContractionPlan, name: str | None = None) -> str:
    """A standalone module with one class that runs `plan`; its `__all__` names exactly that class."""
    name = name or class_name(plan)
    spec, fmt = plan.network.spec, plan.network.fmt
    doc = _header(
        f"TT layer generated by ttplan {__version__}: {spec.describe()}, {fmt.label} format, {plan.name!r} order.",
        ["Standalone: imports torch only. Costs are MACs (one multiply-accumulate); FLOPs = 2 x MACs.",
         f"From a dense kernel: `{name}.from_dense(weight, bias)`;",
         f"with random cores: `{name}()`."],
    )
    return _file(doc, [emit_class(plan, name)], [name])


def emit_model(layers: list[tuple[str, ContractionPlan]], title: str = "a model") -> str:
    """A standalone module with one class per distinct layer plan, `LAYERS` (layer name -> class) and `convert`."""
    classes: list[str] = []
    names: dict[tuple, str] = {}
    taken: set[str] = set()
    table: list[tuple[str, str]] = []
    for layer, plan in layers:
        key = (replace(plan.network.spec, bias=False), plan.network.fmt, plan.pairs, plan.name, plan.fold_weights)
        if key not in names:
            base = class_name(plan)
            if base in taken:
                h, w = plan.network.spec.input_size
                base = f"{base}At{h}x{w}"
            candidate, n = base, 2
            while candidate in taken:
                candidate, n = f"{base}V{n}", n + 1
            taken.add(candidate)
            names[key] = candidate
            classes.append(emit_class(plan, candidate, bias=False))
        table.append((layer, names[key]))
    doc = _header(
        f"TT layers generated by ttplan {__version__} for {title}: {len(classes)} classes for {len(table)} layers.",
        ["Standalone: imports torch only. Costs are MACs (one multiply-accumulate); FLOPs = 2 x MACs.",
         "`convert(model)` returns a copy of the dense model with every layer in `LAYERS` replaced by its TT-SVD."],
    )
    entries = "\n".join(f'    "{layer}": {cls},' for layer, cls in table)
    extra = f"\n\nLAYERS = {{\n{entries}\n}}\n" + _CONVERT
    return _file(doc, classes, [*dict.fromkeys(n for _, n in table), "LAYERS", "convert"], extra, copy=True)


__all__ = ["class_name", "emit_class", "emit_layer", "emit_model"]
