"""Emit standalone PyTorch source for TT layers: one readable `nn.Module` class per distinct layer plan.

The source imports torch only. What every layer shares is written once per file: the TT-SVD helpers
and a base class `_TTLayer` (parameters, init, the folded-weight cache, the input check,
`from_dense` by TT-SVD, `to_dense`). Each layer class is small: its constants (geometry, the cores
and their axes), `weights()` (the weight-only steps) and `forward`, both rendered from the same
lowering (`ttplan.runtime.lowering.lower`) that `TTConv2d` interprets, so the two cannot drift apart;
comments give each step's MACs and resolution and each tensor's index groups with their sizes. A
file for an architecture adds `LAYERS` (layer name -> class) and `convert(model, weights=None)`, and, where
`ttplan emit --weights` wrote trained weights beside it, `WEIGHTS` and `load(model)`.

A generated layer's state_dict names its cores `cores.0`, `cores.1`, ... in chain order, as `TTConv2d` does
(the attributes keep the format's readable names, `cores_spec`), so a state_dict moves between ttplan's TT model
and the generated one unchanged.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass, replace

from ttplan import __version__
from ttplan.core.contraction import ContractionPlan, Step
from ttplan.core.formats import FactorLayout
from ttplan.runtime import algorithms
from ttplan.runtime.batchnorm import FOLD_SOURCE
from ttplan.runtime.epilogue import EPILOGUE_SOURCE, ScaleSite, scale_site
from ttplan.runtime.fold_cache import FROZEN_SOURCE, UNCHANGED_SOURCE
from ttplan.runtime.lowering import (
    RUNTIME,
    Fused,
    Instruction,
    Lowering,
    MatMul,
    Program,
    Reshape,
    conv_arguments,
    conv_pad,
    lower,
)
from ttplan.runtime.state_check import state_mismatch

#: how generated code spells the run-time sizes
_RUNTIME = dict(zip(RUNTIME, ("batch", "height", "width", "height * width")))

_HELPERS = '''

def dense_geometry(module: nn.Module) -> dict:
    """What a layer of this file must match in a dense model: an nn.Conv2d's channels, kernel, stride, padding
    (before and after each axis, 'same' as torch pads it), dilation, groups and padding mode; an nn.Linear's
    features. A subclass with a forward of its own may compute anything: it matches no layer."""
    kind = type(module)
    if isinstance(module, nn.Linear) and kind.forward is nn.Linear.forward:
        return {"layer": "nn.Linear", "in_features": module.in_features, "out_features": module.out_features}
    if not (isinstance(module, nn.Conv2d) and kind.forward is nn.Conv2d.forward
            and kind._conv_forward is nn.Conv2d._conv_forward):
        return {"layer": kind.__name__}
    if module.padding == "same":  # torch pads d*(k-1)//2 before an axis and the rest after it
        totals = [d * (k - 1) for k, d in zip(module.kernel_size, module.dilation)]
        padding = tuple((total // 2, total - total // 2) for total in totals)
    else:
        padding = tuple((p, p) for p in ((0, 0) if module.padding == "valid" else module.padding))
    return {"layer": "nn.Conv2d", "in_channels": module.in_channels, "out_channels": module.out_channels,
            "kernel_size": tuple(module.kernel_size), "stride": tuple(module.stride), "padding": padding,
            "dilation": tuple(module.dilation), "groups": module.groups, "padding_mode": module.padding_mode}
'''

def _embedded(functions: tuple, constants: tuple[str, ...] = ()) -> str:
    """The source of library functions a generated file carries (one implementation: `ttplan.runtime.algorithms`),
    after the module constants their defaults name."""
    lines = [f"{name} = {getattr(algorithms, name)!r}" for name in constants]
    return "\n\n" + "\n".join(lines) + ("\n" if lines else "") + "".join(
        "\n\n" + inspect.getsource(function) for function in functions)


#: TT-SVD and the chain product, for every file; CP-ALS and the Khatri-Rao product where a layer is CP
_CHAIN_HELPERS = _embedded(algorithms.EMBEDDED_CHAIN)
_CP_HELPERS = _embedded(algorithms.EMBEDDED_CP, ("CP_ITERATIONS", "CP_TOLERANCE"))


_BASE = '''


class _TTLayer(nn.Module):
    """What every TT layer of this file shares; a subclass sets the constants and defines weights() and forward()."""

    # the class attributes forward() reads, as constants for torch.jit.script
    __constants__ = ["in_channels", "out_channels", "stride", "padding", "dilation", "linear"]

    def __init__(self, bias: bool | None = None, fold_weights: bool | None = None, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        for name, shape in self.cores_spec:
            setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
        bias = self.default_bias if bias is None else bias
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        # what a folded BatchNorm leaves (fold_chains): a scale per output channel (None: none), multiplied into the
        # weights where one operand holds every output mode (weights()), else run after the products with the bias
        # (epilogue), then the ReLU with apply_relu
        self.register_buffer("out_scale", None)
        self.apply_relu = False
        self.fold_weights = self.default_fold_weights if fold_weights is None else fold_weights
        self._folded = None
        self._frozen = None  # what freeze() keeps: the tensors it read with their versions, the weights, the call
        self.reset_parameters()

    def cores(self) -> list[torch.Tensor]:
        """The cores in chain order."""
        return [getattr(self, name) for name, _ in self.cores_spec]

    def reset_parameters(self) -> None:
        """Gaussian cores scaled so the rebuilt kernel has the variance of nn.Conv2d's default init."""
        fan_in = self.kernel_shape[1] * math.prod(self.kernel_shape[2:])
        std = (1.0 / (3.0 * fan_in * self.chain_product)) ** (1.0 / (2 * len(self.cores_spec)))
        with torch.no_grad():
            for core in self.cores():
                core.normal_(0.0, std)
            if self.bias is not None:
                self.bias.uniform_(-1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))

    def folded_weights(self):
        """`weights()`, cached while fold_weights is set and no gradient is recorded (`cached_weights`); in
        TorchScript (torch.jit.script) the weight-only steps run in every forward."""
        if torch.jit.is_scripting():
            return self.weights()
        else:
            return self.cached_weights()

    @torch.jit.unused
    def cached_weights(self):
        """`weights()`, cached while fold_weights is set and no gradient is recorded; recomputed when a core or
        out_scale changes (dtype, device, shape or any value, `.data` writes included), so training and
        load_state_dict keep working. The cache is filled outside inference mode, so it serves autograd whichever
        mode filled it.
        Under torch.compile, torch.export and torch.jit.trace the weight-only steps are traced into the graph
        instead: a captured model never holds a stale cache as constants."""
        cores = self.cores()
        if self.out_scale is not None:
            cores = cores + [self.out_scale]
        recording = torch.is_grad_enabled() and any(core.requires_grad for core in cores)
        # torch.compiler.is_compiling exists from torch 2.3; on older torch a compiled graph breaks at the cache instead
        capturing = getattr(torch.compiler, "is_compiling", bool)() or torch.jit.is_tracing()
        if recording or capturing:
            return self.weights()
        if self._frozen is not None:
            return self.frozen_state()[2]
        if not self.fold_weights:
            return self.weights()
        cached = self._folded  # (copies of the cores, weights()): reused while the cores equal the copies
        if cached is None or not cores_unchanged(cached[0], cores):
            with torch.inference_mode(False), torch.no_grad():  # this order: inference_mode(False) turns grads on
                cached = self._folded = ([core.detach().clone() for core in cores], self.weights())
        return cached[1]

    def freeze(self, frozen: bool = True) -> None:
        """For inference: fold the weights once and keep them without cached_weights' value checks per forward,
        until a parameter or out_scale changes as torch counts changes (another tensor or storage, or an in-place
        op: an optimizer step, load_state_dict, .to()), which folds them again. A write through .data counts no
        change: freeze again after one. Where the layer runs ttplan's fused kernel, its call is bound as well
        (bind_kernel), so a forward spends a few µs outside the kernel instead of tens. torch.compile,
        torch.jit.trace and torch.export trace weights() as before. `frozen=False` undoes it."""
        if not frozen:
            self._frozen = None
            return
        watched = self.watched()
        with torch.inference_mode(False), torch.no_grad():  # this order: inference_mode(False) turns grads on
            weights = self.weights()
            call = self.bind_kernel(weights)
        self._frozen = (tensors_key(watched), self.apply_relu, weights, call)

    def watched(self) -> list[torch.Tensor]:
        """The tensors the weights and the epilogue come from: the parameters and out_scale."""
        return [t for t in (*self._parameters.values(), *self._buffers.values()) if t is not None]

    @torch.jit.unused
    def frozen_state(self):
        """What freeze() keeps (the tensors read, apply_relu, the weights, the bound call), frozen again first where
        a parameter, out_scale or apply_relu changed since."""
        if self._frozen[1] != self.apply_relu or not key_unchanged(self._frozen[0], self.watched()):
            self.freeze()
        return self._frozen

    def check_input(self, x: torch.Tensor) -> list[int]:
        """One-line error unless `x` is [B, I, H, W] ([..., I] for a linear layer); returns the leading shape."""
        if self.linear:
            if x.shape[-1] != self.in_channels:
                raise ValueError(f"input of shape {list(x.shape)}: expected [..., {self.in_channels}]")
            return list(x.shape[:-1])
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input of shape {list(x.shape)}: expected [B, {self.in_channels}, H, W]")
        return [x.shape[0]]

    @classmethod
    def check_dense(cls, name: str, dense: nn.Module) -> None:
        """ValueError unless `dense` is the layer this class was planned for (`dense_geometry`), naming what differs."""
        found = dense_geometry(dense)
        wrong = [f"{key} {found.get(key)!r}, planned {value!r}" for key, value in cls.geometry.items()
                 if found.get(key) != value]
        if wrong:
            raise ValueError(f"layer {name}: {'; '.join(wrong)}: this class would not compute that layer, so it is "
                             "not converted")

    @classmethod
    def from_dense(cls, weight: torch.Tensor, bias: torch.Tensor | None = None):
        """The layer whose cores are the TT-SVD of `weight` (exact at maximal ranks); bias kept."""
        layer = cls(bias=bias is not None, device=weight.device, dtype=weight.dtype)
        chain = weight.detach().reshape(cls.kernel_modes).permute(cls.chain_axes).reshape(cls.chain_sizes)
        with torch.no_grad():
            for param, core in zip(layer.cores(), tt_svd(chain, cls.chain_ranks)):
                param.copy_(core.reshape(param.shape))
            if bias is not None:
                layer.bias.copy_(bias.detach())
        return layer

    def to_dense(self) -> torch.Tensor:
        """The rebuilt kernel, shaped as the dense layer's weight (differentiable)."""
        ranks, sizes = self.chain_ranks, self.chain_sizes
        cores = [core.reshape(ranks[t], sizes[t], ranks[t + 1]) for t, core in enumerate(self.cores())]
        kernel = tt_chain(cores).reshape([self.kernel_modes[axis] for axis in self.chain_axes])
        inverse = [self.chain_axes.index(axis) for axis in range(len(self.chain_axes))]
        return kernel.permute(inverse).reshape(self.kernel_shape)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """The cores saved as `cores.0`, `cores.1`, ... in chain order (`cores_spec`), as ttplan's TTConv2d and
        TTLinear save theirs, so a state_dict moves between ttplan's TT model and this file's unchanged."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for n, (name, _) in enumerate(self.cores_spec):
            destination[f"{prefix}cores.{n}"] = destination.pop(prefix + name)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Reads the cores from `cores.0`, `cores.1`, ... (what `_save_to_state_dict` writes)."""
        for n, (name, _) in enumerate(self.cores_spec):
            if f"{prefix}cores.{n}" in state_dict:
                state_dict[prefix + name] = state_dict.pop(f"{prefix}cores.{n}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
'''

#: `_TTLayer`'s methods in files without a fused step: nothing for freeze() to bind
_UNFUSED_METHODS = '''
    def bind_kernel(self, weights):
        """No layer of this file runs a fused kernel: freeze() keeps the folded weights only."""
        return None
'''

#: the end of `_TTLayer`, after the fused methods where a class has a fused step
_BASE_END = '''
    def fused_operands(self, weights):
        """The fused kernel's wa, g and wc made from weights() (a class with a fused step says how); None here."""
        return None

    def weights(self) -> tuple:
        """The operands the forward reads besides the cores; a class whose products read only cores has none."""
        return ()

    def extra_repr(self) -> str:
        folded = ", folded batchnorm" if self.out_scale is not None else ""
        return (f"{self.description}, bias={self.bias is not None}, fold_weights={self.fold_weights}{folded}"
                + (", relu" if self.apply_relu else ""))
'''



#: the generated file's optional use of ttplan's fused kernel: the layers run on torch alone without it
_FUSED_IMPORT = '''
try:  # ttplan's fused CPU kernel (one pass per image) where ttplan is installed; stock torch ops otherwise
    from ttplan.runtime.kernels import FrozenTucker as _FrozenTucker
    from ttplan.runtime.kernels import fused_available as _fused_ok
    from ttplan.runtime.kernels import tucker_conv2d as _tucker_conv2d
except ImportError:
    def _fused_ok(*tensors):
        return False
try:  # freeze(): a residual block of two bound layers as one call, where ttplan has it
    from ttplan.runtime.frozen_blocks import bind_blocks as _bind_blocks
except ImportError:
    _bind_blocks = None
'''

#: `_TTLayer`'s methods for classes with a fused step, in files that import the kernel (`_FUSED_IMPORT`)
_FUSED_METHODS = '''
    @torch.jit.unused
    def fused_ok(self, x: torch.Tensor, wa: torch.Tensor | None, g: torch.Tensor, wc: torch.Tensor | None,
                 residual: torch.Tensor | None = None) -> bool:
        """Whether ttplan's fused kernel may run these operands: ttplan installed, a C compiler, CPU float32, no
        gradient needed. Not while torch.jit.trace or torch.export (so ONNX export) capture the layer, which then
        records the stock ops and runs without ttplan, unless the class sets export_fused (emit --fuse)."""
        exporting = getattr(torch.compiler, "is_exporting", bool)()  # torch >= 2.4
        if not self.export_fused and (torch.jit.is_tracing() or exporting):
            return False
        scale = self.out_scale if self.kernel_scales else None
        return _fused_ok(*(t for t in (x, wa, g, wc, scale, self.bias, residual) if t is not None))

    @torch.jit.unused
    def bind_kernel(self, weights):
        """The fused kernel's call for these weights with every argument but the map bound (ttplan's FrozenTucker),
        for freeze(); None for a class without a fused step and where the kernel would not run them."""
        operands = self.fused_operands(weights)
        if operands is None:  # a class of this file without a fused step
            return None
        scale = self.out_scale if self.kernel_scales else None
        if not _fused_ok(*(t for t in (*operands, scale, self.bias) if t is not None)):
            return None
        return _FrozenTucker(*operands, list(self.stride), list(self.padding), list(self.dilation), scale=scale,
                             bias=self.bias, relu=self.apply_relu, in_groups=self.fused_groups[0],
                             out_groups=self.fused_groups[1])

    @torch.jit.unused
    def frozen_forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor | None:
        """The frozen layer's output by its bound call (freeze), or None where that does not apply: not frozen, a
        gradient to record, a map or residual the bound call does not take, something watching ops."""
        # torch.compile traces the forward itself (the registered op, weights() in the graph)
        if self._frozen is None or getattr(torch.compiler, "is_compiling", bool)() or type(x) is not torch.Tensor:
            return None
        if torch.is_grad_enabled() and (x.requires_grad or (residual is not None and residual.requires_grad)
                                        or any(t.requires_grad for t in self.watched())):
            return None
        call = self.frozen_state()[3]
        return None if call is None else call(x, residual)

    @torch.jit.unused
    def fused_kernel(self, x: torch.Tensor, wa: torch.Tensor | None, g: torch.Tensor, wc: torch.Tensor | None,
                     residual: torch.Tensor | None = None) -> torch.Tensor:
        """y = conv1x1(conv2d(conv1x1(x, wa), g), wc) in one pass per image (ttplan.runtime.kernels.tucker_conv2d;
        its mixings grouped as fused_groups says), times a folded BatchNorm's scale where no weight holds it
        (kernel_scales), plus the bias, plus the residual, then the ReLU with apply_relu, in the last product's output
        pass: the layer's whole epilogue. The weights come from weights(), new tensors whenever the cores change, so
        their packs are kept by identity."""
        return _tucker_conv2d(x, wa, g, wc, list(self.stride), list(self.padding), list(self.dilation),
                              scale=self.out_scale if self.kernel_scales else None, bias=self.bias,
                              relu=self.apply_relu, residual=residual, in_groups=self.fused_groups[0],
                              out_groups=self.fused_groups[1], owned_weights=True)
'''

_CONVERT = '''

def convert(model: nn.Module, weights=None, fold_bn: bool | None = None) -> nn.Module:
    """A deep copy of `model` with each layer in `LAYERS` replaced by a TT layer: the TT-SVD of its weights (biases
    kept), or, given `weights`, the trained model those hold.

    `weights`: a state_dict of the converted model (cores as `cores.0`, `cores.1`, ... as ttplan saves them, biases,
    BatchNorm buffers, the dense layers' kernels), or the path of a file holding one (`ttplan emit --weights`
    writes it); every entry is loaded and every entry must fit, so nothing is decomposed. ValueError, before
    anything is replaced, where a layer's geometry is not the one planned (`dense_geometry`), and where the weights
    do not fit the converted model.

    `fold_bn`: fold each BatchNorm2d (and the ReLU module after it) that alone reads a TT layer's output into that
    layer for inference, nn.Identity in the copy (`fold_chains`, after the weights are loaded), and each residual add
    a TT conv feeds (and the ReLU after it) into that layer's epilogue, its block a torch.fx.GraphModule with the same
    children (`fuse_residuals`); by default (None) where `model` is in eval mode. A model in training mode keeps its
    BatchNorms."""
    for name, cls in LAYERS.items():
        cls.check_dense(name, model.get_submodule(name))
    if weights is not None and not isinstance(weights, dict):
        weights = torch.load(weights, map_location="cpu", weights_only=True)
    model = copy.deepcopy(model)
    for name, cls in LAYERS.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        dense = getattr(parent, attr)
        if weights is None:
            layer = cls.from_dense(dense.weight, dense.bias)
        else:  # random cores, replaced below by the trained ones
            layer = cls(bias=dense.bias is not None, device=dense.weight.device, dtype=dense.weight.dtype)
        layer.train(dense.training)
        setattr(parent, attr, layer)
    if weights is not None:
        load_weights(model, weights)
    if (fold_bn is None or fold_bn) and not model.training:
        fold_chains(model, _TTLayer)
        fuse_residuals(model, _TTLayer)
'''
#: `convert`'s last line: the copy as it is, or in torch.channels_last for layers planned on NHWC maps
_RETURN = "    return model\n"
_RETURN_CHANNELS_LAST = "    return model.to(memory_format=torch.channels_last)\n"

_LOAD_WEIGHTS = '''

def load_weights(model: nn.Module, state: dict) -> None:
    """`model.load_state_dict(state)`, every key of each side matched; a mismatch is one-line ValueError."""
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        raise ValueError(f"weights do not fit the converted model: {mismatch}; give the weights written for this "
                         "file (ttplan emit --weights)")
    model.load_state_dict(state)
''' + "\n\n" + inspect.getsource(state_mismatch)

_FREEZE = '''

def freeze(model: nn.Module, frozen: bool = True) -> nn.Module:
    """`model` (itself) with every TT layer frozen for inference (`_TTLayer.freeze`): the weights folded once and
    trusted until torch counts a change to a parameter, each fused layer's kernel call bound, so a small layer's
    forward costs a few µs besides its products instead of tens. A write through .data counts no change: freeze
    again after one. `frozen=False` undoes it."""
    for module in model.modules():
        if isinstance(module, _TTLayer):
            module.freeze(frozen)
'''
#: in files that import ttplan's kernel, `freeze` also binds the residual blocks of two bound layers (and runs of them)
_BIND_BLOCKS = '''    if _bind_blocks is not None:  # ttplan's: a block of two bound layers as one call
        _bind_blocks(model, frozen)
'''
_FREEZE_RETURN = '''    return model
'''


def _freeze_source(fused: bool) -> str:
    """The generated `freeze`: binding blocks too where the file imports ttplan's kernel (`fused`)."""
    return _FREEZE + (_BIND_BLOCKS if fused else "") + _FREEZE_RETURN


#: the file's own trained weights, when `ttplan emit --weights` wrote them beside it
_WEIGHTS_DOC = ("#: the trained weights `ttplan emit --weights` wrote beside this file: a state_dict of the "
                "converted model\n")
_LOAD = '''

def load(model: nn.Module, path=None) -> nn.Module:
    """`convert(model, weights)` with the trained weights: the file `path`, by default WEIGHTS beside this file."""
    if path is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), WEIGHTS)
    return convert(model, path)
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


def _show(groups: tuple[tuple[str, ...], ...], sizes: dict[str, int]) -> str:
    """`[b, (i1 i2)=32, s]`: the index groups of a tensor and, where known, their physical sizes."""
    shown = []
    for group in groups:
        label = group[0] if len(group) == 1 else f"({' '.join(group)})" if group else "1"
        if group and any(i not in _RUNTIME for i in group):
            label += "=" + _size(group, sizes).replace(" ", "")
        shown.append(label)
    return f"[{', '.join(shown)}]"


def _with_comment(indent: str, code: str, note: str) -> list[str]:
    """`code  # note` on one line if it fits in 120 columns, else the comment on the line above."""
    if not note:
        return [indent + code]
    one = f"{indent}{code}  # {note}"
    return [one] if len(one) <= 120 else [f"{indent}# {note}", indent + code]


def _literal(value: object) -> str:
    """A Python literal of a geometry value, strings in double quotes (the file's style)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _ascii(name: str) -> str:
    return name.replace("·", "*")


#: the comment on a permute that keeps a channels-last conv result as its NHWC view
NHWC_VIEW = "[B, H, W, C]: a view of the channels-last result"


class _Renderer:
    """Turns a program's instructions into lines of Python."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.cores = set(program.cores)
        #: what the rendered lines need from the file: `F` (torch.nn.functional), `fused` (the kernel import and
        #: `_TTLayer`'s fused methods); recorded as each line is made, never read back from the text
        self.uses: set[str] = set()

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
                            _show(tuple((i,) for i in order), sizes)))
                src = ins.out
            expr = f"{src}.reshape({_shape(ins.groups, sizes)})"
            if ins.after is not None:
                expr += f".permute({', '.join(map(str, ins.after))})"
            if ins.contiguous:
                expr += ".contiguous()"
            out.append((f"{ins.out} = {expr}", _show(ins.groups, sizes)))
            return out
        if isinstance(ins, MatMul):
            shown = f"-> {_show(tuple((i,) for i in ins.layout), sizes)}"
            if ins.shared:
                return [(f"{ins.out} = torch.bmm({ins.left}, {ins.right})", f"{shown}; batched over the shared rank")]
            if ins.conv1x1:
                self.uses.add("F")
                conv = [(f"{ins.out} = F.conv2d({ins.right}, {ins.left})", f"1x1 conv {shown}")]
                return conv + ([(f"{ins.out} = {ins.out}.permute(0, 2, 3, 1)", NHWC_VIEW)] if ins.nhwc else [])
            if ins.batch is None:
                return [(f"{ins.out} = torch.mm({ins.left}, {ins.right})", shown)]
            left = f"{ins.left}.expand({ins.right}.shape[0], -1, -1)"
            why = "expand is a view, so the FLOP counter sees the planned MACs"
            return [(f"{ins.out} = torch.bmm({left}, {ins.right})", f"{shown}; {why}")]
        self.uses.add("F")
        groups = f", groups={_size(ins.groups, sizes)}" if ins.groups else ""
        # a grouped or one-axis conv's weight is made contiguous: some CPU kernels' backward needs it
        contiguous = ".contiguous()" if ins.groups or ins.axes != (True, True) else ""
        weight = f"{ins.src}, {ins.weight}{contiguous}"
        pad = conv_pad(self.program, ins)
        if ins.axes == (True, True) and pad is None:
            args = "stride=self.stride, padding=self.padding, dilation=self.dilation"
        else:  # one axis of a separable window: the layer's stride, padding and dilation along it only
            stride, padding, dilation = conv_arguments(self.program, ins)
            args = f"stride={stride}, padding={padding}, dilation={dilation}"
        padded = [] if pad is None else [
            (f"{ins.src} = F.pad({ins.src}, {pad}, mode={self.program.pad_mode!r})",
             "(left, right, top, bottom) as the dense layer pads; not MACs")]
        return [
            *padded,
            (f"{ins.out} = F.conv2d({weight}, {args}{groups})", f"-> {_show(tuple((i,) for i in ins.layout), sizes)}"),
            (f"height, width = {ins.out}.shape[-2:]", ""),
            *([(f"{ins.out} = {ins.out}.permute(0, 2, 3, 1)", NHWC_VIEW)] if ins.nhwc else []),
        ]

    def comment(self, step: Step, batch: int, weights: bool = False) -> str:
        what = f"step {step.number}: {_ascii(step.left_name)} x {_ascii(step.right_name)}"
        if weights and step.kind != "weight":
            return f"# {what}: its weight operand, laid out for the feature-map product"
        if step.kind == "weight":
            return f"# {what}, weight-only: {step.macs:,} MACs"
        h, w = step.map_size
        kind = "conv2d" if step.kind == "conv" else "feature map"
        return f"# {what}, {kind} at {h}x{w}: {step.macs:,} MACs at batch {batch}"

    def fused(self, ins: Fused, indent: str) -> list[str]:
        """The fused kernel where it may run, else the stock instructions it stands for (`ttplan.runtime.kernels`)."""
        steps = sorted({part.step for part in ins.parts})
        self.uses.add("fused")
        if self.program.lowering.export_fused:
            self.uses.add("export_fused")

        linear = self.program.plan.network.spec.linear
        operands = ", ".join([ins.src, *self.kernel_operands(ins)] + ([] if linear else ["residual"]))
        residual = "" if linear else ", the residual"
        inner = indent + "    "
        return [
            f"{indent}# steps {', '.join(map(str, steps))} in one pass per image: ttplan's fused CPU kernel where it",
            f"{indent}# can run (ttplan installed, a C compiler, CPU float32, no gradient needed; see fused_ok), else",
            f"{indent}# the stock ops (always in TorchScript, and by default in torch.jit.trace and torch.export)",
            f"{indent}finished = False  # whether the kernel applied the epilogue: scale, bias{residual}, ReLU",
            f"{indent}if not torch.jit.is_scripting() and self.fused_ok({operands}):",
            f"{inner}# -> {_show(tuple((i,) for i in ins.layout), self.program.sizes)}, plus the bias, then the ReLU",
            f"{inner}{ins.out} = self.fused_kernel({operands})",
            f"{inner}height, width = {ins.out}.shape[-2:]",
            f"{inner}finished = True",
            f"{indent}else:",
            *self.block(ins.parts, indent + "    "),
        ]

    def kernel_operands(self, ins: Fused) -> list[str]:
        """The fused kernel's wa, g and wc as Python expressions: each mixing's weight as [N, K] (a 1x1 conv's is
        [N, K, 1, 1]), "None" where there is no mixing."""
        def matrix(name: str | None) -> str:
            if name is None:
                return "None"
            conv1x1 = any(isinstance(p, MatMul) and p.left == name and p.conv1x1 for p in ins.parts)
            name = self.source(name)
            return f"{name}.reshape({name}.shape[0], -1)" if conv1x1 else name

        return [matrix(ins.mix_in), self.source(ins.weight), matrix(ins.mix_out)]

    def block(self, instructions: tuple[Instruction, ...], indent: str, weights: bool = False) -> list[str]:
        plan = self.program.plan
        steps = {s.number: s for s in plan.steps}
        lines: list[str] = []
        current = None
        for ins in instructions:
            if isinstance(ins, Fused):
                lines += self.fused(ins, indent)
                current = None
                continue
            if ins.step != current:
                current = ins.step
                if ins.step in steps:
                    lines.append(indent + self.comment(steps[ins.step], plan.network.batch, weights))
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
    mode = "" if spec.padding_mode == "zeros" else spec.padding_mode.capitalize()
    return (f"TT{label}Conv{spec.in_channels}to{spec.out_channels}{kernel}"
            f"{pair('S', sh, sw, 1)}{pair('P', ph, pw, 0)}{pair('E', *spec.extra_padding, 0)}{mode}"
            f"{pair('D', dh, dw, 1)}")


@dataclass(frozen=True)
class _Class:
    """One rendered layer class and what it needs from its file (`_Renderer.uses`, plus `cp` for CP-ALS)."""

    name: str
    source: str
    uses: frozenset[str]


def emit_class(plan: ContractionPlan, name: str | None = None, bias: bool | None = None,
               lowering: Lowering | None = None) -> str:
    """The source of one layer class that runs `plan`: a subclass of the file's `_TTLayer` (see `_BASE`) with the
    layer's constants, its weight-only steps (`weights`) and its feature-map steps (`forward`)."""
    return _render_class(plan, name, bias, lowering).source


def _render_class(plan: ContractionPlan, name: str | None = None, bias: bool | None = None,
                  lowering: Lowering | None = None) -> _Class:
    program = lower(plan, lowering)
    net = plan.network
    spec = net.spec
    name = name or class_name(plan)
    bias = spec.bias if bias is None else bias
    render = _Renderer(program)
    lines = [f"class {name}(_TTLayer):", *_doc(plan, program), "", *_constants(plan, bias)]
    fused = [ins for ins in program.feature if isinstance(ins, Fused)]
    if fused:
        keep = program.lowering.export_fused
        lines.append(f"    export_fused = {keep}  # torch.jit.trace / torch.export capture "
                     + ("the fused op: they need ttplan to run" if keep else "stock ops: they run without ttplan"))
        lines.append(f"    fused_groups = ({fused[0].in_groups}, {fused[0].out_groups})  # the kernel's in_groups, "
                     "out_groups: the mixings' groups (1: plain)")
        lines.append(f"    kernel_scales = {scale_site(program) is None}  # whether the kernel multiplies by a folded "
                     "BatchNorm's scale (no weight holds every output channel)")
    lines.append("")
    lines += _weights_method(program, render)
    if fused:
        lines += _fused_operands_method(program, fused[0], render)
    lines += _forward_method(program, render)
    uses = set(render.uses)
    if isinstance(plan.network.fmt.kernel_layout(spec), FactorLayout):
        lines += _cp_methods(plan)
        uses.add("cp")
    return _Class(name, "\n".join(lines) + "\n", frozenset(uses))


def _doc(plan: ContractionPlan, program: Program) -> list[str]:
    """The class docstring: geometry, format, order, parameters and planned MACs."""
    net = plan.network
    spec, fmt = net.spec, net.fmt
    what = "nn.Linear" if spec.linear else "nn.Conv2d"
    geometry = spec.describe() if spec.linear else f"{spec.describe()} (planned size)"
    return [
        f'    """{geometry} as TT cores, {fmt.label} format, {plan.name!r} order.',
        "",
        f"    in_modes {list(fmt.in_modes)}, out_modes {list(fmt.out_modes)}, ranks {list(fmt.ranks)}; "
        f"{net.params():,} core parameters",
        f"    (dense kernel: {spec.kernel_elements:,}). Planned at batch "
        f"{net.batch}: {plan.feature_macs:,} MACs on the feature map",
        f"    + {plan.weight_macs:,} weight-only MACs per forward (FLOPs = 2 x MACs); the dense {what}: "
        f"{spec.dense_macs(net.batch):,} MACs.",
        f"    Channel mixings run as {'1x1 conv2d' if program.lowering.mix == 'conv' else 'bmm/mm'}"
        f"{' on channels-last maps' if program.lowering.channels_last else ''}.",
        '    """',
    ]


def _chain_attributes(layout) -> list[str]:
    """Class attributes of a chain (or ring) of 3-way cores: what `tt_svd` and `tt_chain` follow."""
    return [
        "    # TT-SVD view of the kernel: W reshaped to kernel_modes (o..., i..., kh, kw), permuted by chain_axes",
        "    # into core order and reshaped to chain_sizes, one axis per core, joined by chain_ranks",
        f"    kernel_modes = {layout.kernel_modes}",
        f"    chain_axes = {layout.chain_axes}",
        f"    chain_sizes = {layout.chain_sizes}",
        f"    chain_ranks = {layout.chain_ranks}",
    ]


def _factor_attributes(layout: FactorLayout) -> list[str]:
    """Class attributes of factors on one shared rank (CP): what `cp_als` and `khatri_rao` follow."""
    return [
        "    # CP view of the kernel: W reshaped to kernel_modes (o..., i..., kh, kw), permuted by chain_axes",
        "    # into factor order and reshaped to chain_sizes, one axis per factor, all joined by the one rank cp_rank",
        f"    kernel_modes = {layout.kernel_modes}",
        f"    chain_axes = {layout.axes}",
        f"    chain_sizes = {layout.factor_sizes}",
        f"    cp_rank = {layout.rank}",
    ]


def _cp_methods(plan: ContractionPlan) -> list[str]:
    """`from_dense` and `to_dense` of a CP layer, overriding `_TTLayer`'s TT-SVD ones (CP-ALS is not exact)."""
    kernel_doc = "[O, I]" if plan.network.spec.linear else "[O, I, k_h, k_w]"
    return [
        "",
        "    @classmethod",
        "    def from_dense(cls, weight: torch.Tensor, bias: torch.Tensor | None = None):",
        f'        """The layer whose factors are the CP-ALS fit of `weight` {kernel_doc} (not exact); bias kept."""',
        "        layer = cls(bias=bias is not None, device=weight.device, dtype=weight.dtype)",
        "        chain = weight.detach().reshape(cls.kernel_modes).permute(cls.chain_axes).reshape(cls.chain_sizes)",
        "        with torch.no_grad():",
        "            for param, core in zip(layer.cores(), cp_als(chain, cls.cp_rank)[0]):",
        "                param.copy_(core.reshape(param.shape))",
        "            if bias is not None:",
        "                layer.bias.copy_(bias.detach())",
        "        return layer",
        "",
        "    def to_dense(self) -> torch.Tensor:",
        f'        """The rebuilt kernel {kernel_doc} (differentiable)."""',
        "        factors = [core.reshape(size, self.cp_rank) for core, size in zip(self.cores(), self.chain_sizes)]",
        "        kernel = khatri_rao(factors).sum(-1).reshape([self.kernel_modes[axis] for axis in self.chain_axes])",
        "        inverse = [self.chain_axes.index(axis) for axis in range(len(self.chain_axes))]",
        "        return kernel.permute(inverse).reshape(self.kernel_shape)",
    ]


def _constants(plan: ContractionPlan, bias: bool) -> list[str]:
    """Class attributes `_TTLayer` reads: geometry, the TT-SVD view of the kernel, the cores and their axes."""
    net = plan.network
    spec, fmt = net.spec, net.fmt
    layout = fmt.kernel_layout(spec)
    factored = isinstance(layout, FactorLayout)
    kernel_shape = (spec.out_channels, spec.in_channels) if spec.linear else \
        (spec.out_channels, spec.in_channels, *spec.kernel_size)
    if spec.linear:
        geometry = {"layer": "nn.Linear", "in_features": spec.in_channels, "out_features": spec.out_channels}
    else:
        after = tuple(p + e for p, e in zip(spec.padding, spec.extra_padding))
        geometry = {"layer": "nn.Conv2d", "in_channels": spec.in_channels, "out_channels": spec.out_channels,
                    "kernel_size": spec.kernel_size, "stride": spec.stride,
                    "padding": tuple(zip(spec.padding, after)), "dilation": spec.dilation, "groups": spec.groups,
                    "padding_mode": spec.padding_mode}
    chain = math.prod(idx.size for idx in net.indices.values() if idx.kind == "rank")
    lines = [
        f"    in_channels = {spec.in_channels}",
        f"    out_channels = {spec.out_channels}",
        f"    kernel_size = {spec.kernel_size}",
        f"    stride = {spec.stride}",
        f"    padding = {spec.padding}",
        f"    dilation = {spec.dilation}",
        f"    linear = {spec.linear}",
        f"    kernel_shape = {kernel_shape}",
        "    # the dense layer this class computes exactly (`dense_geometry`; padding before and after each axis)",
        "    geometry = {",
        *(f"        {json.dumps(key)}: {_literal(value)}," for key, value in geometry.items()),
        "    }",
        *(_factor_attributes(layout) if factored else _chain_attributes(layout)),
        f"    chain_product = {chain}  # products of one entry per core summed into a kernel entry",
        "    # the cores, in chain order: parameter name, shape and what each axis is",
        "    cores_spec = (",
    ]
    for core in fmt.cores(spec):
        lines.append(f'        ("{core.name}", {tuple(core.shape)}),  # [{", ".join(core.axes)}]')
    lines += [
        "    )",
        f"    default_bias = {bias}",
        f"    default_fold_weights = {plan.fold_weights}",
        f'    description = "{spec.describe()}, {fmt.label}, ranks={list(fmt.ranks)}, order={plan.name}"',
    ]
    return lines


def _weights_method(program: Program, render: _Renderer) -> list[str]:
    """`weights()`: the weight-only steps, the layouts the feature-map products read and, where one of them holds
    every output mode, a folded BatchNorm's scale multiplied into it."""
    folded = [n for n in program.folded if n not in program.cores]
    if not folded:
        return []
    site = scale_site(program)
    return [
        f"    def weights(self) -> tuple[{', '.join(['torch.Tensor'] * len(folded))}]:",
        '        """The weight-only steps (cores with cores) and each product\'s weight laid out for it; with',
        '        fold_weights set, run once and cached (see _TTLayer.folded_weights)."""',
        *render.block(program.weight, "        ", weights=True),
        *(_scale_lines(site) if site is not None else []),
        f"        return {folded[0]}," if len(folded) == 1 else f"        return {', '.join(folded)}",
        "",
    ]


def _fused_operands_method(program: Program, ins: Fused, render: _Renderer) -> list[str]:
    """`fused_operands(weights)`: the fused kernel's wa, g and wc from what `weights()` returns, as the forward passes
    them (what `freeze()` binds)."""
    folded = [n for n in program.folded if n not in program.cores]
    unpack = [f"        {folded[0]}, = weights" if len(folded) == 1 else f"        {', '.join(folded)} = weights"]
    return [
        "    @torch.jit.unused",
        "    def fused_operands(self, weights):",
        '        """The fused kernel\'s wa, g and wc from weights(), as forward passes them (freeze binds them)."""',
        *(unpack if folded else []),
        f"        return {', '.join(render.kernel_operands(ins))}",
        "",
    ]


def _scale_lines(site: ScaleSite) -> list[str]:
    """A folded BatchNorm's scale multiplied into the operand holding every output mode (`scale_operand`)."""
    name = site.operand
    factor = "scale"
    if site.perm is not None:  # the output modes in the order the operand holds them
        factor += f".reshape({', '.join(map(str, site.modes))}).permute({', '.join(map(str, site.perm))})"
    factor += f".reshape({', '.join(map(str, site.broadcast))})"
    return [
        "        scale = self.out_scale",
        f"        if scale is not None:  # a folded BatchNorm's scale per output channel, into {name} (holds them all)",
        f"            {name} = ({name}.reshape({', '.join(map(str, site.view))}) * {factor}).reshape({name}.shape)",
    ]


def _forward_method(program: Program, render: _Renderer) -> list[str]:
    """`forward(x)`: the input check, the feature-map steps, the epilogue (the scale where the weights do not hold it,
    the bias, the ReLU)."""
    spec = program.plan.network.spec
    folded = [n for n in program.folded if n not in program.cores]
    lines = ["    def forward(self, x: torch.Tensor) -> torch.Tensor:" if spec.linear else
             "    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:"]
    # a conv's residual: a map of its output's shape added after the bias, before the ReLU (fuse_residuals)
    extra, passed = ("", "") if spec.linear else (" or residual is not None", ", residual")
    if not spec.linear and any(isinstance(ins, Fused) for ins in program.feature):  # forward: the kernel's call
        lines += ["        if not torch.jit.is_scripting():  # a frozen layer's bound call (freeze), where it applies",
                  "            y = self.frozen_forward(x, residual)",
                  "            if y is not None:",
                  "                return y"]
    if spec.linear:
        lines += ["        lead = self.check_input(x)", f"        x = x.reshape(-1, {spec.in_channels}, 1, 1)"]
    else:
        lines.append("        self.check_input(x)")
    if folded:
        target = f"{folded[0]}," if len(folded) == 1 else ", ".join(folded)
        lines.append(f"        {target} = self.folded_weights()")
    lines.append("        batch, _, height, width = x.shape")
    if program.lowering.channels_last:
        lines.append("        x = x.permute(0, 2, 3, 1)  # [B, H, W, I]: a view of a channels-last input")
    lines += render.block(program.feature, "        ")
    # where the fused kernel ran (a fused class), it ran the whole epilogue; else the scale where no weight holds it
    fused = any(isinstance(ins, Fused) for ins in program.feature)
    scale = "self.out_scale" if scale_site(program) is None else "None"
    test = ("self.out_scale is not None or " if scale != "None" else "") + \
        f"self.bias is not None or self.apply_relu{extra}"
    lines += [f"        if {f'not finished and ({test})' if fused else test}:",
              f"            y = epilogue(y, {scale}, self.bias, self.apply_relu{passed})"]
    lines.append(f"        return y.reshape(lead + [{spec.out_channels}])" if spec.linear else "        return y")
    return lines


#: how the generated layers meet torch.compile, said in each file's docstring
_COMPILE_NOTE = ("Under torch.compile a model of these layers is one graph that recomputes the weight-only steps "
                 "every forward;\nfor inference, torch._inductor.config.freezing = True folds them once at compile "
                 "time (a core changed later\nis then not seen: compile again).")


def _header(title: str, lines: list[str]) -> str:
    body = "\n".join(lines)
    return f'"""{title}\n\n{body}\n"""\n' if body else f'"""{title}"""\n'


#: the first line of a file's docstring, by whether a class has a fused step and whether captures keep it
_STANDALONE = "Standalone: imports torch only. Costs are MACs (one multiply-accumulate); FLOPs = 2 x MACs."
_STANDALONE_FUSED = ("Standalone: imports torch only (and ttplan's fused kernel where ttplan is installed);\n"
                     "torch.jit.trace, torch.export and ONNX export {captured}\n"
                     "Costs are MACs (one multiply-accumulate); FLOPs = 2 x MACs.")
_CAPTURED = {True: "keep the fused op `ttplan::tucker_conv2d` (emitted with --fuse):\nthe captured model needs "
                   "ttplan at run time.",
             False: "capture stock torch ops (no ttplan needed to run them)."}


def _file(title: str, lines: list[str], classes: list[_Class], names: list[str], tail: str = "",
          model: bool = False, weights: bool = False) -> str:
    """A whole file: docstring (`title`, what the classes use, `lines`), imports and helpers the classes and the
    model-level code need (`model`: `convert`, which copies and folds; `weights`: `load`, which finds its file),
    `__all__`, `_TTLayer`, the classes, then `tail`."""
    uses = frozenset().union(*(c.uses for c in classes))
    standalone = (_STANDALONE_FUSED.format(captured=_CAPTURED["export_fused" in uses]) if "fused" in uses
                  else _STANDALONE)
    doc = _header(title, [standalone, *lines])
    imports = ["import copy"] if model else []
    imports += ["import math", *(["import os"] if weights else []), "", "import torch"]
    if "F" in uses:
        imports.append("import torch.nn.functional as F")
    imports.append("from torch import nn")
    base = _BASE + (_FUSED_METHODS if "fused" in uses else _UNFUSED_METHODS) + _BASE_END
    if "fused" in uses:
        imports += ["", _FUSED_IMPORT.rstrip("\n")]
    exported = f"__all__ = [{', '.join(json.dumps(n) for n in names)}]"
    if len(exported) > 120:
        exported = "__all__ = [\n" + "".join(f'    "{n}",\n' for n in names) + "]"
    helpers = (_CHAIN_HELPERS + _HELPERS + (_CP_HELPERS if "cp" in uses else "") + UNCHANGED_SOURCE + FROZEN_SOURCE
               + EPILOGUE_SOURCE
               + (FOLD_SOURCE if model else ""))
    parts = [doc, "\n".join(imports), "", exported, helpers.rstrip("\n"), base.rstrip("\n"), ""]
    for cls in classes:
        parts += ["", cls.source]
    return ("\n".join(parts) + tail).rstrip("\n") + "\n"


def emit_layer(plan: ContractionPlan, name: str | None = None, lowering: Lowering | None = None) -> str:
    """A standalone module with one class that runs `plan`; its `__all__` names exactly that class."""
    name = name or class_name(plan)
    spec, fmt = plan.network.spec, plan.network.fmt
    return _file(
        f"TT layer generated by ttplan {__version__}: {spec.describe()}, {fmt.label} format, {plan.name!r} order.",
        [f"From a dense kernel: `{name}.from_dense(weight, bias)`;", f"with random cores: `{name}()`.", _COMPILE_NOTE],
        [_render_class(plan, name, lowering=lowering)], [name])


def emit_model(layers: list[tuple[str, ContractionPlan]], title: str = "a model",
               lowerings: dict[str, Lowering] | None = None, channels_last: bool = False,
               weights: str | None = None) -> str:
    """A standalone module with one class per distinct layer plan, `LAYERS` (layer name -> class) and `convert`.

    `lowerings` gives a layer's ops and layout by name (default: bmm on NCHW maps). `channels_last`: the layers
    were planned for a channels-last model, and `convert` returns the copy in `torch.channels_last`. `weights`:
    the file name of trained weights kept beside the file (`ttplan emit --weights`); the file then adds `WEIGHTS`
    and `load(model)`, the converted model with those weights."""
    lowerings = lowerings or {}
    classes: list[_Class] = []
    names: dict[tuple, str] = {}
    taken: set[str] = set()
    table: list[tuple[str, str]] = []
    for layer, plan in layers:
        lowering = lowerings.get(layer, Lowering())
        key = (replace(plan.network.spec, bias=False), plan.network.fmt, plan.pairs, plan.name, plan.fold_weights,
               lowering)
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
            classes.append(_render_class(plan, candidate, bias=False, lowering=lowering))
        table.append((layer, names[key]))
    lines = [
         "`convert(model)` returns a copy of the dense model with every layer in `LAYERS` replaced by its TT-SVD"
         + (", in torch.channels_last:\nthe layers keep NHWC maps, so feed it channels-last inputs "
            "(x.contiguous(memory_format=torch.channels_last))." if channels_last else "."),
         "`convert(model, weights)` loads trained weights instead (a state_dict, or a file holding one; the cores "
         "as\n`cores.0`, `cores.1`, ... as ttplan's TTConv2d saves them)."
         "\n`freeze(model)` readies a converted model for inference: weights folded once, kernel calls bound."
         + (f"\n`load(model)` is `convert(model, {weights!r})`, the trained weights written beside this file."
            if weights is not None else ""),
         _COMPILE_NOTE]
    entries = "\n".join(f'    "{layer}": {cls},' for layer, cls in table)
    tail = (f"\n\nLAYERS = {{\n{entries}\n}}\n" + _CONVERT
            + (_RETURN_CHANNELS_LAST if channels_last else _RETURN) + _LOAD_WEIGHTS
            + _freeze_source(any("fused" in cls.uses for cls in classes)))
    exported = [*dict.fromkeys(n for _, n in table), "LAYERS", "convert", "freeze"]
    if weights is not None:
        tail += "\n\n" + _WEIGHTS_DOC + f"WEIGHTS = {json.dumps(weights)}\n" + _LOAD
        exported += ["WEIGHTS", "load"]
    title = f"TT layers generated by ttplan {__version__} for {title}: {len(classes)} classes for {len(table)} layers."
    return _file(title, lines, classes, exported, tail, model=True, weights=weights is not None)


__all__ = ["class_name", "emit_class", "emit_layer", "emit_model"]
