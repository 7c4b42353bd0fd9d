"""`ttplan::tucker_conv2d`: a 1x1 mixing, a k_h x k_w conv and a 1x1 mixing as one torch op, run by the fused C kernel.

`y = conv1x1(conv2d(conv1x1(x, wa), g, stride, padding, dilation), wc)`, with `wa` or `wc` None for no mixing on
that side; optionally times a `scale` and plus a `bias` per output channel, plus a `residual` map of the output's
shape, and then a ReLU, in the last product's output pass (what a folded BatchNorm, a ResNet block's add and the ReLU
after it leave a layer: `ttplan.runtime.epilogue`), which count no FLOP. The mixings may be grouped, as hodec's
merged orders leave them (`in_groups`, `out_groups`: `tucker_conv2d`). It
is a registered custom op, so `FlopCounterMode` counts it (2 x the three products' MACs, exactly what the kernel
computes), `torch.compile` traces it, and a fake tensor gives its shape. It is an inference op: it has no autograd
formula, and `fused_available` says when a caller may use it (CPU, float32, no gradient needed, the kernel built);
otherwise callers run the same products as stock ops.
"""

from __future__ import annotations

import ctypes
import weakref

import torch
from torch.utils.flop_counter import register_flop_formula

from ttplan.core.fusion import TILE
from ttplan.errors import TTPlanError
from ttplan.runtime.kernels.build import load

#: packed weights by the id of the tensor they were packed from: a weak reference to it, a copy of its values when
#: packed (None for an owned tensor, see `pack`), and the pack. Folded weights are the same tensors every forward,
#: so each is packed once; a pack is reused while its tensor holds the copied values, so no change is missed,
#: `.data` writes included (which count no version and keep the storage). An entry goes when its tensor does
#: (tensors compare elementwise, so they cannot be the keys of a WeakKeyDictionary).
_PACKED: dict[int, tuple[weakref.ref, torch.Tensor | None, torch.Tensor]] = {}


def pack(weight: torch.Tensor, cache: bool = True, owned: bool = False) -> torch.Tensor:
    """A weight `[M, ...]` as the kernel reads it: its `[M, K]` matrix in blocks of the tile's rows, `[M/8, K, 8]`
    (rows past M zero). With `cache`, kept per tensor while its values stay the same (one `torch.equal` a call);
    `owned`: the caller makes a new tensor whenever the values change (a layer's folded operands, which its fold
    cache checks), so the pack is kept by identity alone."""
    key = id(weight)
    hit = _PACKED.get(key) if cache else None
    if hit is not None and hit[0]() is weight and (owned or (hit[1] is not None and hit[1].dtype is weight.dtype
                                                             and torch.equal(hit[1], weight))):
        return hit[2]
    rows = TILE[0]
    matrix = weight.detach().reshape(weight.shape[0], -1)
    blocks = -(-matrix.shape[0] // rows)
    padded = matrix.new_zeros(blocks * rows, matrix.shape[1])
    padded[: matrix.shape[0]] = matrix
    packed = padded.view(blocks, rows, -1).transpose(1, 2).contiguous()
    if not cache:
        return packed
    copy = None if owned else weight.detach().clone()
    _PACKED[key] = (weakref.ref(weight, lambda _, key=key: _PACKED.pop(key, None)), copy, packed)
    return packed


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _pair(name: str, value: object, least: int) -> None:
    """One-line error unless `value` is two ints of at least `least` (stride, padding or dilation)."""
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= least for v in value)):
        raise TTPlanError(f"tucker_conv2d: {name}={value!r}, expected a list of two ints >= {least} (height, width)")


def _fast_shape(x: torch.Tensor, wa: torch.Tensor | None, g: torch.Tensor, wc: torch.Tensor | None,
                stride: list[int], padding: list[int], dilation: list[int], bias: torch.Tensor | None,
                residual: torch.Tensor | None, scale: torch.Tensor | None, in_groups: int, out_groups: int
                ) -> list[int] | None:
    """The output shape where every argument is as the kernel takes it (what `check_operands`, `check_bias` and
    `check_residual` accept, in one pass of few steps: it runs on every call, a few µs of a small layer's tens), else
    None."""
    f32, tensor = torch.float32, torch.Tensor
    if not (isinstance(x, tensor) and isinstance(g, tensor) and x.dtype is f32 and g.dtype is f32 and x.is_cpu
            and g.is_cpu and x.dim() == 4 and g.dim() == 4 and type(in_groups) is int and type(out_groups) is int
            and in_groups >= 1 and out_groups >= 1):
        return None
    batch, channels, height, width = x.shape
    rows, into, kh, kw = g.shape
    if min(channels, height, width, rows, kh, kw) < 1 or channels % in_groups or rows % out_groups:
        return None
    if wa is None:
        if into != channels:
            return None
    elif not (isinstance(wa, tensor) and wa.dtype is f32 and wa.is_cpu and wa.dim() == 2 and wa.shape[0] >= 1
              and wa.shape[1] * in_groups == channels and wa.shape[0] * in_groups == into):
        return None
    out = rows
    if wc is not None:
        if not (isinstance(wc, tensor) and wc.dtype is f32 and wc.is_cpu and wc.dim() == 2 and wc.shape[0] >= 1
                and wc.shape[1] * out_groups == rows):
            return None
        out = wc.shape[0] * out_groups
    for pair in (stride, padding, dilation):
        if type(pair) not in (list, tuple) or len(pair) != 2 or type(pair[0]) is not int or type(pair[1]) is not int:
            return None
    if min(stride) < 1 or min(padding) < 0 or min(dilation) < 1:
        return None
    out_h = _output_size(height, kh, stride[0], padding[0], dilation[0])
    out_w = _output_size(width, kw, stride[1], padding[1], dilation[1])
    if out_h < 1 or out_w < 1:
        return None
    for vector in (bias, scale):
        if vector is not None and not (isinstance(vector, tensor) and vector.dtype is f32 and vector.is_cpu
                                       and vector.shape == (out,)):
            return None
    if residual is not None and not (isinstance(residual, tensor) and residual.dtype is f32 and residual.is_cpu
                                     and residual.shape == (batch, out, out_h, out_w)):
        return None
    return [batch, out, out_h, out_w]


def check_operands(x: torch.Tensor, wa: torch.Tensor | None, g: torch.Tensor, wc: torch.Tensor | None,
                   stride: list[int], padding: list[int], dilation: list[int], in_groups: int = 1,
                   out_groups: int = 1) -> None:
    """One-line error naming the first argument the kernel cannot take: CPU float32 tensors, x [B, C, H, W],
    wa [R1, C / in_groups], g [R2, R1 in_groups (or C), k_h, k_w], wc [O, R2 / out_groups], an output of at least
    1 x 1. Layouts do not matter."""
    if _fast_shape(x, wa, g, wc, stride, padding, dilation, None, None, None, in_groups, out_groups) is not None:
        return
    for name, groups in (("in_groups", in_groups), ("out_groups", out_groups)):
        if type(groups) is not int or groups < 1:
            raise TTPlanError(f"tucker_conv2d: {name}={groups!r}, expected an int >= 1")
    named = {"x": x, "wa": wa, "g": g, "wc": wc}
    for name, tensor in named.items():
        if tensor is None and name in ("wa", "wc"):
            continue
        if not isinstance(tensor, torch.Tensor):
            raise TTPlanError(f"tucker_conv2d: {name} is a {type(tensor).__name__}, expected a torch.Tensor")
        if tensor.device.type != "cpu" or tensor.dtype != torch.float32:
            raise TTPlanError(f"tucker_conv2d: {name} is {tensor.dtype} on {tensor.device}; the fused kernel takes "
                              "CPU float32 tensors (run the stock ops, e.g. F.conv2d, for others)")
        want = 2 if name in ("wa", "wc") else 4
        if tensor.dim() != want or any(size < 1 for size in tensor.shape[1:]) or (name != "x" and not tensor.shape[0]):
            shape = {"x": "[B, C, H, W]", "wa": "[R1, C]", "g": "[R2, R1, k_h, k_w]", "wc": "[O, R2]"}[name]
            raise TTPlanError(f"tucker_conv2d: {name} of shape {list(tensor.shape)}, expected {shape} with "
                              "sizes of at least 1")
    channels = x.shape[1]
    if channels % in_groups:
        raise TTPlanError(f"tucker_conv2d: in_groups={in_groups} does not divide x's {channels} channels")
    if wa is not None and wa.shape[1] != channels // in_groups:
        raise TTPlanError(f"tucker_conv2d: wa of shape {list(wa.shape)} mixes {wa.shape[1]} channels, but x of "
                          f"shape {list(x.shape)} has {channels // in_groups} per group ({in_groups} groups): "
                          f"expected wa [R1, {channels // in_groups}]")
    into = wa.shape[0] * in_groups if wa is not None else channels
    if g.shape[1] != into:
        what = f"wa's {wa.shape[0]} rows in each of {in_groups} groups" if wa is not None else f"x's {into} channels"
        raise TTPlanError(f"tucker_conv2d: g of shape {list(g.shape)} reads {g.shape[1]} channels, but gets "
                          f"{what}: expected g [R2, {into}, k_h, k_w]")
    if g.shape[0] % out_groups:
        raise TTPlanError(f"tucker_conv2d: out_groups={out_groups} does not divide g's {g.shape[0]} output channels")
    if wc is not None and wc.shape[1] != g.shape[0] // out_groups:
        raise TTPlanError(f"tucker_conv2d: wc of shape {list(wc.shape)} mixes {wc.shape[1]} channels, but g of "
                          f"shape {list(g.shape)} gives {g.shape[0] // out_groups} per group ({out_groups} groups): "
                          f"expected wc [O, {g.shape[0] // out_groups}]")
    _pair("stride", stride, 1)
    _pair("padding", padding, 0)
    _pair("dilation", dilation, 1)
    if any(_output_size(x.shape[2 + a], g.shape[2 + a], stride[a], padding[a], dilation[a]) < 1 for a in (0, 1)):
        raise TTPlanError(f"tucker_conv2d: x's {x.shape[2]}x{x.shape[3]} map padded by {list(padding)} is smaller "
                          f"than g's {g.shape[2]}x{g.shape[3]} window dilated by {list(dilation)}")
    raise TTPlanError(f"tucker_conv2d: stride={stride!r}, padding={padding!r}, dilation={dilation!r}: expected "
                      "lists of two ints")  # what _fast_shape refused and no check above names


def check_bias(bias: torch.Tensor | None, g: torch.Tensor, wc: torch.Tensor | None, out_groups: int = 1,
               name: str = "bias") -> None:
    """One-line error unless `bias` (or the `scale`, by `name`) is None or a CPU float32 `[O]` tensor, one entry per
    output channel."""
    if bias is None:
        return
    channels = wc.shape[0] * out_groups if wc is not None else g.shape[0]
    if not isinstance(bias, torch.Tensor) or bias.dtype != torch.float32 or bias.device.type != "cpu" \
            or tuple(bias.shape) != (channels,):
        what = (f"{bias.dtype} on {bias.device} of shape {list(bias.shape)}" if isinstance(bias, torch.Tensor)
                else f"a {type(bias).__name__}")
        raise TTPlanError(f"tucker_conv2d: {name} is {what}; expected a CPU float32 tensor [{channels}], one entry per "
                          "output channel")


def check_residual(residual: torch.Tensor | None, shape: list[int]) -> None:
    """One-line error unless `residual` is None or a CPU float32 tensor of the output's shape `shape`."""
    if residual is None:
        return
    if not isinstance(residual, torch.Tensor) or residual.dtype != torch.float32 or residual.device.type != "cpu" \
            or list(residual.shape) != list(shape):
        what = (f"{residual.dtype} on {residual.device} of shape {list(residual.shape)}"
                if isinstance(residual, torch.Tensor) else f"a {type(residual).__name__}")
        raise TTPlanError(f"tucker_conv2d: residual is {what}; expected a CPU float32 tensor {list(shape)}, the "
                          "output's shape")


def _shape(x: torch.Tensor, g: torch.Tensor, wc: torch.Tensor | None, stride: list[int], padding: list[int],
           dilation: list[int], out_groups: int = 1) -> list[int]:
    height, width = (_output_size(x.shape[2 + a], g.shape[2 + a], stride[a], padding[a], dilation[a]) for a in (0, 1))
    return [x.shape[0], (wc.shape[0] * out_groups if wc is not None else g.shape[0]), height, width]


def _kernel(x: torch.Tensor, wa: torch.Tensor | None, g: torch.Tensor, wc: torch.Tensor | None,
            stride: list[int], padding: list[int], dilation: list[int], shape: list[int], cache: bool = False,
            owned: bool = False, bias: torch.Tensor | None = None, relu: bool = False,
            residual: torch.Tensor | None = None, scale: torch.Tensor | None = None, in_groups: int = 1,
            out_groups: int = 1) -> torch.Tensor:
    """Run the C kernel on real CPU float32 tensors checked by `_check_all`, which computed the output's `shape`;
    `cache`: keep the packed weights (`pack`, with `owned`); `scale`, `bias`, `residual` and `relu`: the last
    product's epilogue; `in_groups`, `out_groups`: the mixings' groups."""
    library, status = load()
    if library is None:
        raise RuntimeError(f"ttplan::tucker_conv2d: the fused kernel is not available ({status.detail})")
    x = x.contiguous()
    y = torch.empty(shape, dtype=x.dtype)
    # held in locals for the call: an uncached pack is freed as soon as nothing refers to it
    packs = tuple(None if w is None else pack(w, cache, owned) for w in (wa, g, wc))
    # read through their pointers (a gradient is never recorded here); copied only where not contiguous
    scale, bias, residual = (t if t is None or t.is_contiguous() else t.contiguous() for t in (scale, bias, residual))
    launch(library, x, (wa, g, wc), packs, stride, padding, dilation, y, scale, bias, residual, relu, in_groups,
           out_groups)
    return y


def _bind(library, channels: int, height: int, width: int, weights: tuple, packs: tuple, stride: list[int],
          padding: list[int], dilation: list[int], out_hw: tuple[int, int], scale: torch.Tensor | None,
          bias: torch.Tensor | None, relu: bool, in_groups: int, out_groups: int) -> int:
    """The C layer for maps of `channels` x `height` x `width` (`ttplan_tucker_bind`), from `weights` (wa, g, wc) and
    their `packs`, checked (`_check_all`), scale and bias contiguous: a handle for `ttplan_tucker_run`, which the
    caller frees (`ttplan_tucker_free`) and whose tensors it keeps alive meanwhile. The one place that spells the C
    function's arguments."""
    (wa, g, wc), (packed_a, packed_g, packed_c) = weights, packs
    handle = library.ttplan_tucker_bind(
        channels, height, width, wa.shape[0] * in_groups if wa is not None else 0,
        packed_a.data_ptr() if packed_a is not None else None, g.shape[0], g.shape[2], g.shape[3],
        packed_g.data_ptr(), wc.shape[0] * out_groups if wc is not None else 0,
        packed_c.data_ptr() if packed_c is not None else None, stride[0], stride[1], padding[0], padding[1],
        dilation[0], dilation[1], out_hw[0], out_hw[1], scale.data_ptr() if scale is not None else None,
        bias.data_ptr() if bias is not None else None, int(bool(relu)), in_groups, out_groups)
    if not handle:
        raise MemoryError("ttplan::tucker_conv2d: the fused kernel could not allocate its layer")
    return handle


def _run(run_c, handle: int, x: torch.Tensor, y: torch.Tensor, residual: torch.Tensor | None, threads: int) -> None:
    """y = the bound layer `handle` on `x` (+ `residual`), all contiguous CPU float32 of the bound shapes."""
    if run_c(handle, x.shape[0], x.data_ptr(), y.data_ptr(), residual.data_ptr() if residual is not None else None,
             threads):
        raise MemoryError("ttplan::tucker_conv2d: the fused kernel could not allocate its buffers")


def run_chain(library, handles: list[int], x: torch.Tensor, t: torch.Tensor, outs: list[torch.Tensor],
              threads: int) -> None:
    """A run of residual blocks in one kernel call (`ttplan_tucker_chain`): block i's two bound layers are
    `handles[2i]`, `handles[2i + 1]`; `t` takes each block's intermediate, `outs[i]` block i's output (never its input);
    all contiguous CPU float32 of the bound shapes."""
    count = len(outs)
    if library.ttplan_tucker_chain((ctypes.c_void_p * (2 * count))(*handles), count, x.shape[0], x.data_ptr(),
                                   t.data_ptr(), (ctypes.c_void_p * count)(*(o.data_ptr() for o in outs)), threads):
        raise MemoryError("ttplan::tucker_conv2d: the fused kernel could not allocate its buffers")


class Bound:
    """The C kernel's layer bound once for maps of one channel count and size (`_bind`), kept for many calls: a call
    passes only the batch, the maps and the thread count. Holds the packed weights, scale and bias it reads (the
    caller keeps their values), and frees the C side when it goes."""

    def __init__(self, library, channels: int, height: int, width: int, weights: tuple, packs: tuple,
                 stride: list[int], padding: list[int], dilation: list[int], out_hw: tuple[int, int],
                 scale: torch.Tensor | None, bias: torch.Tensor | None, relu: bool, in_groups: int,
                 out_groups: int) -> None:
        self.keep = (packs, scale, bias)  # the C side reads them through their pointers
        self.handle = _bind(library, channels, height, width, weights, packs, stride, padding, dilation, out_hw,
                            scale, bias, relu, in_groups, out_groups)
        self.run_c = library.ttplan_tucker_run
        self.finalizer = weakref.finalize(self, library.ttplan_tucker_free, self.handle)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, residual: torch.Tensor | None, threads: int) -> None:
        """y = the layer on `x` (+ `residual`), all contiguous CPU float32 and of the bound shapes."""
        _run(self.run_c, self.handle, x, y, residual, threads)


def launch(library, x: torch.Tensor, weights: tuple, packs: tuple, stride: list[int], padding: list[int],
           dilation: list[int], y: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None,
           residual: torch.Tensor | None, relu: bool, in_groups: int, out_groups: int) -> None:
    """One call of the C kernel: `x` and `residual` contiguous, `weights` (wa, g, wc) with their `packs`, `y` the
    output, all checked; the layer bound for this call alone and freed after it (no `Bound` object and finalizer on
    this path, which unfrozen and compiled models take for every fused layer)."""
    handle = _bind(library, x.shape[1], x.shape[2], x.shape[3], weights, packs, stride, padding, dilation,
                   (y.shape[2], y.shape[3]), scale, bias, relu, in_groups, out_groups)
    try:
        _run(library.ttplan_tucker_run, handle, x, y, residual, torch.get_num_threads())
    finally:
        library.ttplan_tucker_free(handle)


#: the op's schema; defined with `torch.library.Library` rather than `torch.library.custom_op`, whose Python wrapper
#: costs about 8 µs more per call: a tenth of a small layer's time where the op runs through the dispatcher (under
#: torch.compile, which calls it for every fused layer of a compiled model)
_SCHEMA = ("tucker_conv2d(Tensor x, Tensor? wa, Tensor g, Tensor? wc, int[] stride, int[] padding, int[] dilation, "
           "Tensor? bias=None, bool relu=False, Tensor? residual=None, Tensor? scale=None, int in_groups=1, "
           "int out_groups=1) -> Tensor")


def _op_impl(x: torch.Tensor, wa: torch.Tensor | None, g: torch.Tensor, wc: torch.Tensor | None,
             stride: list[int], padding: list[int], dilation: list[int], bias: torch.Tensor | None = None,
             relu: bool = False, residual: torch.Tensor | None = None, scale: torch.Tensor | None = None,
             in_groups: int = 1, out_groups: int = 1) -> torch.Tensor:
    """The op on real CPU tensors; the weights' packs are kept while their values stay the same (`pack`), since a
    compiled model hands the op the same frozen weights every call."""
    shape = _check_all(x, wa, g, wc, stride, padding, dilation, bias, residual, scale, in_groups, out_groups)
    return _kernel(x, wa, g, wc, stride, padding, dilation, shape, cache=True, bias=bias, relu=relu,
                   residual=residual, scale=scale, in_groups=in_groups, out_groups=out_groups)


def _op_fake(x, wa, g, wc, stride, padding, dilation, bias=None, relu=False, residual=None, scale=None, in_groups=1,
             out_groups=1):
    return x.new_empty(_check_all(x, wa, g, wc, stride, padding, dilation, bias, residual, scale, in_groups,
                                  out_groups))


def _register() -> torch.library.Library:
    """Define `ttplan::tucker_conv2d` with its CPU kernel and its fake (shape) function; the library object must live
    as long as the op (dropping it removes the registration), so the module keeps it."""
    library = torch.library.Library("ttplan", "DEF")
    library.define(_SCHEMA)
    library.impl("tucker_conv2d", _op_impl, "CPU")
    torch.library.register_fake("ttplan::tucker_conv2d", _op_fake, lib=library)
    return library


_LIBRARY = _register()
_op = torch.ops.ttplan.tucker_conv2d


def _check_all(x: torch.Tensor, wa: torch.Tensor | None, g: torch.Tensor, wc: torch.Tensor | None,
               stride: list[int], padding: list[int], dilation: list[int], bias: torch.Tensor | None,
               residual: torch.Tensor | None, scale: torch.Tensor | None, in_groups: int, out_groups: int
               ) -> list[int]:
    """The output shape; else one line for the first argument the kernel cannot take (also where the op is called by
    name): `_fast_shape`, and where it refuses, each check in turn."""
    shape = _fast_shape(x, wa, g, wc, stride, padding, dilation, bias, residual, scale, in_groups, out_groups)
    if shape is not None:
        return shape
    check_operands(x, wa, g, wc, stride, padding, dilation, in_groups, out_groups)
    check_bias(bias, g, wc, out_groups)
    check_bias(scale, g, wc, out_groups, name="scale")
    shape = _shape(x, g, wc, stride, padding, dilation, out_groups)
    check_residual(residual, shape)
    raise TTPlanError(f"tucker_conv2d: arguments the kernel cannot take (x of shape {list(x.shape)}, g of shape "
                      f"{list(g.shape)}, in_groups={in_groups!r}, out_groups={out_groups!r})")  # none named above


def _plain_eager(tensors: tuple[torch.Tensor | None, ...]) -> bool:
    """No dispatch mode (FLOP counter, fake tensors), tracer or compiler would see the op: plain eager tensors."""
    compiling = getattr(torch.compiler, "is_compiling", None)  # first: dynamo cannot trace the dispatch-stack query
    if compiling is not None and compiling():
        return False
    dispatch_stack = getattr(torch._C, "_len_torch_dispatch_stack", None)
    if dispatch_stack is None or dispatch_stack() or torch.jit.is_tracing():
        return False
    return all(t is None or type(t) is torch.Tensor for t in tensors)


def capturing() -> bool:
    """Whether torch.jit.trace or torch.export (which `torch.onnx.export` uses) is recording the running code into a
    graph that may run where ttplan is not installed. Layers then run their stock ops unless asked to keep the fused
    op (`Lowering.export_fused`); torch.compile, whose graph runs in this process, keeps it."""
    exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.4
    return torch.jit.is_tracing() or (exporting is not None and exporting())


def tucker_conv2d(x: torch.Tensor, wa: torch.Tensor | None, g: torch.Tensor, wc: torch.Tensor | None,
                  stride: list[int], padding: list[int], dilation: list[int], *, bias: torch.Tensor | None = None,
                  relu: bool = False, residual: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                  in_groups: int = 1, out_groups: int = 1, owned_weights: bool = False) -> torch.Tensor:
    """x [B, C, H, W] (NCHW), wa [R1, C] or None, g [R2, R1 or C, k_h, k_w], wc [O, R2] or None -> [B, O, H', W'];
    times `scale` [O] and plus `bias` [O], plus `residual` [B, O, H', W'] (any layout) and then ReLU where given
    (`relu`), in the last product's output pass: no pass of their own.

    Grouped mixings (as hodec's merged orders leave them): with `in_groups` G, `wa` [R1, C / G] mixes each of G
    consecutive blocks of C / G input channels into R1 channels, so the conv reads G R1 (`g` [R2, G R1, k_h, k_w]);
    with `out_groups` J, `wc` [O, R2 / J] mixes the conv result viewed as [R2 / J, J, H', W'] along its first axis,
    giving O J output channels (output channel o J + j from conv channels r J + j).

    The registered op `torch.ops.ttplan.tucker_conv2d` wherever something watches ops (a dispatch mode such as
    `FlopCounterMode`, fake tensors, tracing, `torch.compile`); in plain eager the kernel is called directly,
    which saves the dispatcher's 20-30 µs per call, a tenth of a small layer's time. Bad operands (`check_operands`)
    are one error naming the argument; any memory layout is taken (the kernel reads contiguous copies).

    The weights' packed forms are kept while they hold the same values. `owned_weights`: the caller makes new
    weight tensors whenever their values change (as TT layers do with their folded operands), so the packs are
    kept by identity alone, without comparing values (a `torch.equal` per weight and call)."""
    shape = _check_all(x, wa, g, wc, stride, padding, dilation, bias, residual, scale, in_groups, out_groups)
    if _plain_eager((x, wa, g, wc, bias, residual, scale)):
        return _kernel(x, wa, g, wc, stride, padding, dilation, shape, cache=True, owned=owned_weights, bias=bias,
                       relu=relu, residual=residual, scale=scale, in_groups=in_groups, out_groups=out_groups)
    return _op(x, wa, g, wc, stride, padding, dilation, bias, relu, residual, scale, in_groups, out_groups)


@register_flop_formula(torch.ops.ttplan.tucker_conv2d)
def _flops(x_shape, wa_shape, g_shape, wc_shape, stride, padding, dilation, bias_shape=None, relu=False,
           residual_shape=None, scale_shape=None, in_groups=1, out_groups=1, *args, out_shape=None, **kwargs) -> int:
    """2 x the MACs of the three products: the mixings per input and output pixel (each group's), the conv per output
    pixel (the scale, bias, residual and ReLU of the epilogue are no products)."""
    batch, channels, height, width = x_shape
    pixels = out_shape[2] * out_shape[3]
    macs = batch * pixels * g_shape[0] * g_shape[1] * g_shape[2] * g_shape[3]
    if wa_shape is not None:
        macs += batch * height * width * wa_shape[0] * wa_shape[1] * in_groups
    if wc_shape is not None:
        macs += batch * pixels * wc_shape[0] * wc_shape[1] * out_groups
    return 2 * macs


def _built() -> bool:
    """Whether the kernel library is built and loaded here (built on first use)."""
    return load()[0] is not None


# torch.compile evaluates it once, as a constant, instead of tracing the compiler search and the cached loader (a
# graph break in every TT layer, then recompiles past dynamo's limit: a compiled TT model slower than eager)
_built = getattr(torch.compiler, "assume_constant_result", lambda function: function)(_built)


def fused_available(*tensors: torch.Tensor) -> bool:
    """True where `tucker_conv2d` may replace the stock ops: CPU float32 tensors, none needing a gradient (the op
    has no backward), and the kernel built on this machine."""
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return _built()


__all__ = ["capturing", "check_operands", "check_residual", "fused_available", "pack", "run_chain", "tucker_conv2d"]
