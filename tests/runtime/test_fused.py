"""The fused lowering: where a plan's feature-map steps are a mixing, the conv and a mixing, one
`ttplan::tucker_conv2d` call computes the layer (against conv2d with the rebuilt kernel), counts exactly the
planned FLOPs, and hands over to the stock ops wherever the kernel may not run (gradients, float64, no compiler)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.runtime_cases import assert_close, load_source, plans_for, random_case, reference
from ttplan.core.formats import make_format
from ttplan.core.fusion import fused_form
from ttplan.core.network import build_network
from ttplan.core.schemes import merged as merged_order
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.runtime.codegen import emit_layer
from ttplan.runtime.kernels import build, kernel_status, tucker_conv2d
from ttplan.runtime.layers import TTConv2d
from ttplan.runtime.lowering import Fused, Lowering, fold, lower, run_feature_steps

pytestmark = pytest.mark.requires_cc
FUSED = Lowering(fused=True)


class OpLog(TorchDispatchMode):
    """The names of the aten/ttplan ops a block runs."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def stock(x, wa, g, wc, stride, padding, dilation):
    t = F.conv2d(x, wa[:, :, None, None]) if wa is not None else x
    t = F.conv2d(t, g, stride=stride, padding=padding, dilation=dilation)
    return F.conv2d(t, wc[:, :, None, None]) if wc is not None else t


def test_kernel_equals_stock_ops_and_counts_their_flops():
    """Odd sizes on every axis (tails of the 8 x 32 register tiles), strides, padding, dilation, no mixing on a side."""
    rng, gen = random.Random(5), torch.Generator().manual_seed(5)
    for _ in range(40):
        batch, channels = rng.randint(1, 5), rng.randint(1, 40)
        size = (rng.randint(1, 37), rng.randint(1, 37))
        kernel = (rng.choice([1, 2, 3, 5]), rng.choice([1, 3]))
        stride, padding, dilation = ([rng.choice([1, 2, 3]) for _ in "hw"], [rng.randint(0, 2) for _ in "hw"],
                                     [rng.choice([1, 2]) for _ in "hw"])
        if any(size[a] + 2 * padding[a] < dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1)):
            continue
        r1, r2, out = rng.choice([0, 1, 3, 8, 17]), rng.randint(1, 19), rng.choice([0, 1, 9, 33])
        x = torch.randn(batch, channels, *size, generator=gen)
        wa = torch.randn(r1, channels, generator=gen) if r1 else None
        g = torch.randn(r2, r1 or channels, *kernel, generator=gen)
        wc = torch.randn(out, r2, generator=gen) if out else None
        expected = stock(x, wa, g, wc, stride, padding, dilation)
        with FlopCounterMode(display=False) as fused_count:
            got = tucker_conv2d(x, wa, g, wc, stride, padding, dilation)
        with FlopCounterMode(display=False) as stock_count:
            stock(x, wa, g, wc, stride, padding, dilation)
        assert_close(got, expected, rel=1e-5)
        assert fused_count.get_total_flops() == stock_count.get_total_flops()


@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_adds_a_bias_and_applies_a_relu_as_it_stores_the_last_product(threads, keep_threads):
    """The epilogue of a layer with a folded BatchNorm (and ReLU): on the last product's tiles, with or without the
    second mixing, whole images or shared columns per thread; NaN passes the ReLU as torch.relu passes it; the count
    stays the products'."""
    rng, gen = random.Random(7), torch.Generator().manual_seed(7)
    torch.set_num_threads(threads)
    for n in range(16):
        batch, channels, size = rng.randint(1, 3), rng.randint(1, 20), (rng.randint(3, 19), rng.randint(3, 40))
        r1, r2, out = rng.choice([0, 5]), rng.randint(1, 19), rng.choice([0, 1, 9, 33])
        x = torch.randn(batch, channels, *size, generator=gen)
        wa = torch.randn(r1, channels, generator=gen) if r1 else None
        g = torch.randn(r2, r1 or channels, 3, 3, generator=gen)
        wc = torch.randn(out, r2, generator=gen) if out else None
        if n == 0:
            x[0, 0, 1, 1] = float("nan")
        bias = torch.randn(out or r2, generator=gen) if n % 3 else None
        relu = n % 2 == 0
        expected = stock(x, wa, g, wc, [1, 2], [1, 1], [1, 1]) + (0 if bias is None else bias.view(1, -1, 1, 1))
        expected = torch.relu(expected) if relu else expected
        with FlopCounterMode(display=False) as counter:
            got = tucker_conv2d(x, wa, g, wc, [1, 2], [1, 1], [1, 1], bias=bias, relu=relu)
        assert torch.equal(got.isnan(), expected.isnan())
        assert_close(got.nan_to_num(), expected.nan_to_num(), rel=1e-5)
        assert counter.get_total_flops() == 2 * (batch * got.shape[2] * got.shape[3] * r2 * g.shape[1] * 9
                                                 + batch * size[0] * size[1] * r1 * channels
                                                 + batch * got.shape[2] * got.shape[3] * out * r2)
    with pytest.raises(TTPlanError, match=r"bias is torch.float32 on cpu of shape \[4\]; expected a CPU float32 tensor "
                                          r"\[9\], one entry per output channel"):
        tucker_conv2d(torch.randn(1, 3, 5, 5), None, torch.randn(9, 3, 3, 3), None, [1, 1], [1, 1], [1, 1],
                      bias=torch.randn(4))


def test_a_fused_layer_runs_its_bias_and_relu_in_the_kernel_and_nothing_after_it():
    spec = ConvSpec.make(16, 16, 3, padding=1, input_size=8)
    fmt = make_format("hodec", spec, in_modes=(4, 4), out_modes=(4, 4), rank=4)
    layer = TTConv2d(spec, fmt, merged_order(build_network(spec, fmt, 2), fold_weights=True), True,
                     lowering=FUSED).eval()
    stock_layer = TTConv2d(spec, fmt, layer.plan, True).eval()
    stock_layer.load_state_dict(layer.state_dict())
    scale, bias = torch.linspace(-1, 1, 16), torch.randn(16)
    for model in (layer, stock_layer):  # what a folded BatchNorm and ReLU leave
        model.out_scale, model.bias, model.apply_relu = scale.clone(), torch.nn.Parameter(bias.clone()), True
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad(), OpLog() as log:
        got = layer(x)
    assert "ttplan.tucker_conv2d" in log.ops
    assert not {"aten.add_", "aten.add", "aten.addcmul", "aten.relu_", "aten.relu", "aten.mul_"} & set(log.ops)
    with torch.no_grad():
        assert_close(got, stock_layer(x), rel=1e-5)

def test_kernel_shape_on_fake_tensors_and_under_compile():
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, wa, g, wc = torch.randn(2, 6, 9, 7), torch.randn(4, 6), torch.randn(5, 4, 3, 3), torch.randn(8, 5)
    with FakeTensorMode() as mode:
        fake = tucker_conv2d(mode.from_tensor(x), mode.from_tensor(wa), mode.from_tensor(g), mode.from_tensor(wc),
                             [2, 1], [1, 1], [1, 1])
    assert tuple(fake.shape) == (2, 8, 5, 7)


def candidates(spec, fmt, batch):
    """Every fixed scheme, the searched best order and the merged order, weights folded."""
    plans = [*plans_for(spec, fmt, batch, fold_weights=True).values()]
    merged = merged_order(build_network(spec, fmt, batch), fold_weights=True)
    return [plan for plan in plans + ([merged] if merged is not None else []) if plan.executable]


def fusable_plans(count: int, seed: int):
    """(spec, fmt, batch, plan) for random layers with an order the fused kernel runs (`fused_form`)."""
    rng = random.Random(seed)
    found = 0
    while found < count:
        spec, fmt, batch = random_case(rng)
        for plan in candidates(spec, fmt, batch):
            if fused_form(plan) is not None and plan.name != "dense":
                found += 1
                yield spec, fmt, batch, plan
                break


def test_the_lowering_fuses_exactly_the_plans_the_planner_calls_fusable():
    """`fuse` (runtime) and `fused_form` (torch-free core) agree on every order of 300 random layers, both mixes."""
    rng = random.Random(1)
    fusable = 0
    for _ in range(300):
        spec, fmt, batch = random_case(rng)
        for plan in candidates(spec, fmt, batch):
            form = fused_form(plan)
            fusable += form is not None
            for mix in ("bmm", "conv"):
                program = lower(plan, Lowering(mix, fused=True))
                assert isinstance(program.feature[0], Fused) == (form is not None), (plan.name, spec.describe())
            if form is not None:
                assert form.macs == plan.feature_macs
    assert fusable > 100


@pytest.mark.parametrize("threads", [1, 2])
def test_wide_rows_at_stride_two_run_whole_vectors_and_equal_stock_ops(threads, keep_threads):
    """Stride 2 along the width copies 16 outputs per shuffle where its loads and store stay in the buffers: rows
    wide enough for several vectors and a tail, every padding and dilation, the last row of the last plane, and
    a batch smaller than the threads (each image's channels split among them)."""
    rng, gen = random.Random(11), torch.Generator().manual_seed(11)
    torch.set_num_threads(threads)
    for _ in range(12):
        batch, channels, width = rng.randint(1, 3), rng.randint(1, 9), rng.randint(31, 90)
        padding, dilation = [rng.randint(0, 2), rng.randint(0, 2)], [1, rng.choice([1, 2])]
        x = torch.randn(batch, channels, rng.randint(3, 9), width, generator=gen)
        wa = torch.randn(5, channels, generator=gen) if rng.random() < 0.5 else None
        g = torch.randn(6, 5 if wa is not None else channels, 3, 3, generator=gen)
        stride = [rng.choice([1, 2]), 2]
        got = tucker_conv2d(x, wa, g, None, stride, padding, dilation)
        assert_close(got, stock(x, wa, g, None, stride, padding, dilation), rel=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 3])
def test_both_ways_of_sharing_the_work_among_threads(threads, batch, keep_threads):
    """Fewer images than threads: each thread takes a band of each image's rows; else whole images are shared."""
    gen = torch.Generator().manual_seed(batch)
    x, wa = torch.randn(batch, 24, 13, 11, generator=gen), torch.randn(9, 24, generator=gen)
    g, wc = torch.randn(7, 9, 3, 3, generator=gen), torch.randn(40, 7, generator=gen)
    torch.set_num_threads(threads)
    got = tucker_conv2d(x, wa, g, wc, [1, 2], [1, 1], [1, 1])
    assert_close(got, stock(x, wa, g, wc, [1, 2], [1, 1], [1, 1]), rel=1e-5)


def direct_form(size, kernel, stride, padding, dilation) -> bool:
    """Whether the built kernel reads this geometry's map in place (the direct form) rather than unfolding it."""
    library, _ = build.load()
    return bool(library.ttplan_direct_form(*size, *kernel, *stride, *padding, *dilation))


@pytest.mark.parametrize("threads", [1, 2])
def test_stride_one_convs_read_the_padded_map_in_place_and_equal_stock_ops(threads, keep_threads):
    """The direct form (stride 1, padding within the dilated window's reach): every window up to 5x5, each padding
    it allows, dilation, maps of 1 to 40 columns (wide rows past and short of a tile), with and without either
    mixing, a bias, a residual and a ReLU, batches below and above the threads; the geometries it does not take
    (stride 2, a padding wider than the window) are im2col's, and compute the same."""
    rng, gen = random.Random(13), torch.Generator().manual_seed(13)
    torch.set_num_threads(threads)
    seen = {True: 0, False: 0}
    for n in range(48):
        kernel = (rng.choice([1, 3, 5]), rng.choice([1, 3, 5]))
        dilation = [rng.choice([1, 2]), rng.choice([1, 2])]
        reach = [dilation[a] * (kernel[a] - 1) for a in (0, 1)]
        padding = [rng.randint(0, reach[0] // 2 + 1), rng.randint(0, reach[1] // 2 + 1)]
        stride = [1, 1] if n % 6 else [rng.choice([1, 2]), 2]
        size = (rng.randint(max(1, reach[0] + 1 - 2 * padding[0]), 20),
                rng.randint(max(1, reach[1] + 1 - 2 * padding[1]), 40))
        batch, channels = rng.choice([1, 3]), rng.randint(1, 20)
        r1, r2, out = rng.choice([0, 6]), rng.randint(1, 17), rng.choice([0, 9, 33])
        x = torch.randn(batch, channels, *size, generator=gen)
        wa = torch.randn(r1, channels, generator=gen) if r1 else None
        g = torch.randn(r2, r1 or channels, *kernel, generator=gen)
        wc = torch.randn(out, r2, generator=gen) if out else None
        expected = stock(x, wa, g, wc, stride, padding, dilation)
        bias = torch.randn(expected.shape[1], generator=gen) if n % 2 else None
        residual = torch.randn(expected.shape, generator=gen) if n % 3 else None
        relu = n % 4 < 2
        if bias is not None:
            expected = expected + bias.view(1, -1, 1, 1)
        if residual is not None:
            expected = expected + residual
        expected = torch.relu(expected) if relu else expected
        got = tucker_conv2d(x, wa, g, wc, stride, padding, dilation, bias=bias, relu=relu, residual=residual)
        assert_close(got, expected, rel=1e-5)
        direct = direct_form(size, kernel, stride, padding, dilation)
        if direct:  # never at stride 2, nor where a row's padding is wider than the window reaches
            assert stride == [1, 1] and padding[1] <= reach[1]
        elif stride == [1, 1] and padding[1] <= reach[1]:  # else only where the wide rows would double the tiles
            rows = expected.shape[2]
            assert -(-rows * (size[1] + padding[1]) // 32) > 2 * -(-rows * expected.shape[3] // 32)
        seen[direct] += 1
    assert seen[True] > 20 and seen[False] > 5


def drawn_epilogue(expected: torch.Tensor, n: int, gen: torch.Generator):
    """Draw `n`'s epilogue (a per-channel scale, a bias and a residual, each on some draws, and a ReLU on others) and
    `expected` with it applied: (scale, bias, residual, relu, want)."""
    scale = torch.randn(expected.shape[1], generator=gen) if n % 2 else None
    bias = torch.randn(expected.shape[1], generator=gen) if n % 3 else None
    residual = torch.randn(expected.shape, generator=gen) if n % 4 else None
    relu = n % 5 < 3
    want = expected * (1 if scale is None else scale.view(1, -1, 1, 1))
    want = want + (0 if bias is None else bias.view(1, -1, 1, 1)) + (0 if residual is None else residual)
    return scale, bias, residual, relu, torch.relu(want) if relu else want


def grouped_stock(x, wa, g, wc, stride, padding, dilation, in_groups, out_groups):
    """The grouped kernel's products as stock ops: a grouped 1x1 conv with `wa` in every group, the conv, `wc` along the
    first axis of the conv result viewed as [R2 / J, J, H', W']."""
    t = F.conv2d(x, wa[:, :, None, None].repeat(in_groups, 1, 1, 1), groups=in_groups) if wa is not None else x
    t = F.conv2d(t, g, stride=stride, padding=padding, dilation=dilation)
    if wc is None:
        return t
    batch, _, height, width = t.shape
    t = torch.einsum("or,brjhw->bojhw", wc, t.reshape(batch, wc.shape[1], out_groups, height, width))
    return t.reshape(batch, -1, height, width)


@pytest.mark.parametrize("threads", [2, 3])
def test_a_batch_smaller_than_the_threads_is_split_into_row_bands_that_equal_stock_ops(threads, keep_threads):
    """Fewer images than threads: each thread computes a band of every image's output rows from the input rows it
    reads (zero rows where they fall in the padding), both conv forms, strides, dilations, paddings up to the window,
    grouped mixings or none, and the whole epilogue; an output with fewer rows than threads shares columns instead."""
    rng, gen = random.Random(23), torch.Generator().manual_seed(23)
    torch.set_num_threads(threads)
    for n in range(60):
        in_groups, out_groups = rng.choice([1, 1, 2, 4]), rng.choice([1, 1, 2])
        inner, r1 = rng.randint(1, 4), rng.choice([0, 1, 3])
        r2, out = rng.randint(1, 3) * out_groups, rng.choice([0, 2, 5])
        in_groups = in_groups if r1 else 1
        out_groups = out_groups if out else 1
        kernel = (rng.choice([1, 3, 5]), rng.choice([1, 3]))
        stride, dilation = [rng.choice([1, 2]) for _ in "hw"], [rng.choice([1, 2]) for _ in "hw"]
        padding = [rng.randint(0, dilation[a] * (kernel[a] - 1)) for a in (0, 1)]
        size = (rng.choice([1, 2, 3, 5, 8, 13]), rng.randint(1, 21))
        if any(size[a] + 2 * padding[a] < dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1)):
            continue
        x = torch.randn(rng.randint(1, threads - 1), inner * in_groups, *size, generator=gen)
        wa = torch.randn(r1, inner, generator=gen) if r1 else None
        g = torch.randn(r2, r1 * in_groups if r1 else x.shape[1], *kernel, generator=gen)
        wc = torch.randn(out, r2 // out_groups, generator=gen) if out else None
        expected = grouped_stock(x, wa, g, wc, stride, padding, dilation, in_groups, out_groups)
        scale, bias, residual, relu, want = drawn_epilogue(expected, n, gen)
        got = tucker_conv2d(x, wa, g, wc, stride, padding, dilation, scale=scale, bias=bias, residual=residual,
                            relu=relu, in_groups=in_groups, out_groups=out_groups)
        assert_close(got, want, rel=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_grouped_mixings_and_a_scale_equal_stock_ops_and_count_their_flops(threads, keep_threads):
    """hodec's merged orders mix a trailing input mode in every block of the others (in_groups) and a leading rank
    before the kept output modes (out_groups); with a per-channel scale (a folded BatchNorm no weight can hold), a
    bias, a residual and a ReLU, in both forms of the conv and both ways of sharing the work."""
    rng, gen = random.Random(17), torch.Generator().manual_seed(17)
    torch.set_num_threads(threads)
    for n in range(24):
        in_groups, out_groups = rng.choice([1, 2, 4, 16]), rng.choice([1, 2, 8])
        inner, r1 = rng.randint(1, 4), rng.randint(1, 3)
        r2, out = rng.randint(1, 3) * out_groups, rng.randint(1, 5)
        size, stride = (rng.randint(3, 17), rng.randint(3, 35)), rng.choice([[1, 1], [2, 2], [1, 2]])
        x = torch.randn(rng.choice([1, 3]), inner * in_groups, *size, generator=gen)
        wa = torch.randn(r1, inner, generator=gen)
        g = torch.randn(r2, r1 * in_groups, 3, 3, generator=gen)
        wc = torch.randn(out, r2 // out_groups, generator=gen)
        expected = grouped_stock(x, wa, g, wc, stride, [1, 1], [1, 1], in_groups, out_groups)
        scale, bias, residual, relu, want = drawn_epilogue(expected, n, gen)
        with FlopCounterMode(display=False) as counter:
            got = tucker_conv2d(x, wa, g, wc, stride, [1, 1], [1, 1], scale=scale, bias=bias, residual=residual,
                                relu=relu, in_groups=in_groups, out_groups=out_groups)
        assert_close(got, want, rel=1e-5)
        with FlopCounterMode(display=False) as stock_count:
            grouped_stock(x, wa, g, None, stride, [1, 1], [1, 1], in_groups, out_groups)
        pixels = expected.shape[0] * expected.shape[2] * expected.shape[3]
        assert counter.get_total_flops() == stock_count.get_total_flops() + 2 * pixels * out * r2
    with pytest.raises(TTPlanError, match=r"in_groups=3 does not divide x's 8 channels"):
        tucker_conv2d(torch.randn(1, 8, 5, 5), torch.randn(2, 2), torch.randn(4, 6, 3, 3), None, [1, 1], [1, 1],
                      [1, 1], in_groups=3)
    with pytest.raises(TTPlanError, match=r"wc of shape \[3, 4\] mixes 4 channels, but g of shape \[4, 8, 3, 3\] gives "
                                          r"2 per group \(2 groups\): expected wc \[O, 2\]"):
        tucker_conv2d(torch.randn(1, 8, 5, 5), None, torch.randn(4, 8, 3, 3), torch.randn(3, 4), [1, 1], [1, 1],
                      [1, 1], out_groups=2)
    with pytest.raises(TTPlanError, match=r"scale is torch.float32 on cpu of shape \[5\]; expected a CPU float32 "
                                          r"tensor \[4\]"):
        tucker_conv2d(torch.randn(1, 8, 5, 5), None, torch.randn(4, 8, 3, 3), None, [1, 1], [1, 1], [1, 1],
                      scale=torch.randn(5))


@pytest.mark.parametrize("threads", [1, 2])
def test_thin_mixings_run_row_by_row_and_equal_stock_ops_either_side_of_the_bound(threads, keep_threads):
    """A mixing that sums at most THIN channels per result channel runs thin (each result row in one pass, the output
    mixing straight into y with the epilogue); one more channel runs register tiles. Both, on both sides, in both
    conv forms, batches below and above the threads, and a map wider than a thin pass (summed in pieces)."""
    from ttplan.core.fusion import THIN
    from ttplan.runtime.kernels.build import load
    assert load()[0].ttplan_thin_channels() == THIN
    gen = torch.Generator().manual_seed(29)
    torch.set_num_threads(threads)
    cases = [(inner, r2_per, stride, batch, (9, 23)) for inner in (THIN, THIN + 1) for r2_per in (THIN, THIN + 1)
             for stride in ([1, 1], [2, 1]) for batch in (1, 3)] + [(2, 3, [1, 1], 1, (1, 4500))]
    for n, (inner, r2_per, stride, batch, size) in enumerate(cases):
        in_groups, out_groups = 2, 3
        x = torch.randn(batch, inner * in_groups, *size, generator=gen)
        wa, wc = torch.randn(3, inner, generator=gen), torch.randn(5, r2_per, generator=gen)
        window = (3, 3) if size[0] > 1 else (1, 3)
        g = torch.randn(r2_per * out_groups, 3 * in_groups, *window, generator=gen)
        padding = [window[0] // 2, 1]
        expected = grouped_stock(x, wa, g, wc, stride, padding, [1, 1], in_groups, out_groups)
        scale, bias, residual, relu, want = drawn_epilogue(expected, n, gen)
        got = tucker_conv2d(x, wa, g, wc, stride, padding, [1, 1], scale=scale, bias=bias, residual=residual,
                            relu=relu, in_groups=in_groups, out_groups=out_groups)
        assert_close(got, want, rel=1e-5)


def test_a_build_without_openmp_computes_the_same(monkeypatch, tmp_path, keep_threads):
    monkeypatch.setattr(build, "FLAG_SETS", (("-O2",),))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    build.load.cache_clear()
    try:
        status = kernel_status()
        assert status.available and not status.threaded and str(tmp_path) in status.detail
        gen = torch.Generator().manual_seed(2)
        x, g, wc = torch.randn(2, 5, 9, 9, generator=gen), torch.randn(4, 5, 3, 3, generator=gen), torch.randn(6, 4)
        assert_close(tucker_conv2d(x, None, g, wc, [1, 1], [0, 0], [2, 2]),
                     stock(x, None, g, wc, [1, 1], [0, 0], [2, 2]), rel=1e-5)
        # without -march=native the vectors are the portable 8-float ones, in 4 x 2 register blocks: both forms of
        # the conv, grouped mixings, odd tails
        for stride, size in (([1, 1], (7, 13)), ([2, 2], (9, 33)), ([1, 1], (16, 16))):
            x, wa = torch.randn(3, 8, *size, generator=gen), torch.randn(3, 2, generator=gen)
            g, wc = torch.randn(6, 12, 3, 3, generator=gen), torch.randn(5, 3, generator=gen)
            assert_close(tucker_conv2d(x, wa, g, wc, stride, [1, 1], [1, 1], in_groups=4, out_groups=2),
                         grouped_stock(x, wa, g, wc, stride, [1, 1], [1, 1], 4, 2), rel=1e-5)
        # a batch below torch's threads: the row-band path, one band (the whole image) without OpenMP
        torch.set_num_threads(2)
        assert_close(tucker_conv2d(x[:1], wa, g, wc, [1, 1], [1, 1], [1, 1], in_groups=4, out_groups=2),
                     grouped_stock(x[:1], wa, g, wc, [1, 1], [1, 1], [1, 1], 4, 2), rel=1e-5)
    finally:
        build.load.cache_clear()


def test_fused_layers_equal_conv2d_with_the_rebuilt_kernel_and_count_the_planned_flops():
    gen = torch.Generator().manual_seed(11)
    for spec, fmt, batch, plan in fusable_plans(40, seed=3):
        program = lower(plan, FUSED)
        x = torch.randn(batch, spec.in_channels, *spec.input_size, generator=gen)
        cores = [torch.randn(c.shape, generator=gen) for c in fmt.cores(spec)]
        with torch.no_grad():
            expected = reference(x.double(), [c.double() for c in cores], spec, fmt)
            folded = fold(program, cores)
            with OpLog() as log, FlopCounterMode(display=False) as counter:
                out = run_feature_steps(program, x, folded)
        assert "ttplan.tucker_conv2d" in log.ops
        assert not {"aten.bmm", "aten.mm", "aten.convolution"} & set(log.ops)
        assert_close(out.double(), expected, rel=1e-4)
        assert counter.get_total_flops() == 2 * plan.feature_macs


def test_the_fused_lowering_hands_over_to_stock_ops_for_gradients_and_float64():
    spec, fmt, batch, plan = next(fusable_plans(1, seed=8))
    layer = TTConv2d(spec, fmt, plan, batch=batch, lowering=FUSED)
    x = torch.randn(batch, spec.in_channels, *spec.input_size, requires_grad=True)
    with OpLog() as log:
        out = layer(x)
    assert "ttplan.tucker_conv2d" not in log.ops
    out.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in layer.parameters())
    with torch.no_grad(), OpLog() as log:
        layer.double()(x.double())
    assert "ttplan.tucker_conv2d" not in log.ops


def test_plans_that_are_not_a_mixing_conv_mixing_are_left_alone():
    """A classical order (a product per mode on the map) keeps its stock instructions under the fused lowering."""
    spec = ConvSpec.make(16, 16, 3, 1, 1, input_size=8)
    fmt = make_format("classical", spec, rank=4, order=2)
    plan = plans_for(spec, fmt, 2)["classical"]
    assert lower(plan, FUSED).feature == lower(plan).feature


def test_layer3_0_conv1_fast_order_is_one_fused_call_in_library_and_generated_code():
    spec = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)
    fmt = make_format("hodec", spec, tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(1, 16, 16, 16, 16, 16, 16, 1))
    plan = plans_for(spec, fmt, 4, fold_weights=True)["best"]
    assert isinstance(lower(plan, FUSED).feature[0], Fused)
    namespace = load_source(emit_layer(plan, "Layer", FUSED))
    generated = namespace["Layer"]().eval()
    library = TTConv2d(spec, fmt, plan, fold_weights=True, batch=4, lowering=FUSED).eval()
    library.load_state_dict({f"cores.{n}": core for n, core in enumerate(generated.cores())})
    x = torch.randn(4, 128, 28, 28)
    with torch.no_grad():
        expected = F.conv2d(x.double(), generated.to_dense().double(), stride=2, padding=1)
        for layer in (generated, library):
            layer(x)  # fold once
            with OpLog() as log, FlopCounterMode(display=False) as counter:
                out = layer(x)
            assert "ttplan.tucker_conv2d" in log.ops
            assert counter.get_total_flops() == plan.flops
            assert_close(out.double(), expected, rel=1e-4)


def test_hodec_best_order_with_small_boundary_ranks_is_one_grouped_fused_call_with_its_whole_epilogue():
    """ResNet-56's layer2 plan: its best order mixes the last input mode in every block of the others and the first
    output rank before the kept output modes, so no weight holds every output channel; folded with a BatchNorm, a
    residual and a ReLU it is one grouped kernel call with scale, bias, residual and ReLU, and nothing after it, in
    the library and the generated code; it equals conv2d with the rebuilt kernel and counts the planned FLOPs."""
    spec = ConvSpec.make(32, 32, 3, padding=1, input_size=16)
    fmt = make_format("hodec", spec, in_modes=(4, 4, 2), out_modes=(4, 4, 2), ranks=(1, 2, 8, 16, 16, 4, 1, 1))
    plan = plans_for(spec, fmt, 4, fold_weights=True)["best"]
    fused = lower(plan, FUSED).feature[0]
    assert isinstance(fused, Fused) and (fused.in_groups, fused.out_groups) == (16, 8)
    assert fused_form(plan).macs == plan.feature_macs
    namespace = load_source(emit_layer(plan, "Layer", FUSED))
    generated = namespace["Layer"]().eval()
    library = TTConv2d(spec, fmt, plan, fold_weights=True, batch=4, lowering=FUSED).eval()
    library.load_state_dict({f"cores.{n}": core for n, core in enumerate(generated.cores())})
    scale, bias = torch.linspace(-1, 1, 32), torch.randn(32)
    x, residual = torch.randn(4, 32, 16, 16), torch.randn(4, 32, 16, 16)
    with torch.no_grad():
        kernel = library.to_dense().double()
        expected = F.conv2d(x.double(), kernel, padding=1) * scale.double().view(1, -1, 1, 1)
        expected = torch.relu(expected + bias.double().view(1, -1, 1, 1) + residual.double())
        for layer in (generated, library):  # what a folded BatchNorm, the block's add and its ReLU leave
            layer.out_scale, layer.bias, layer.apply_relu = scale.clone(), torch.nn.Parameter(bias.clone()), True
            layer(x, residual)  # fold once
            with OpLog() as log, FlopCounterMode(display=False) as counter:
                out = layer(x, residual)
            assert "ttplan.tucker_conv2d" in log.ops
            assert not {"aten.add_", "aten.add", "aten.addcmul", "aten.relu_", "aten.relu", "aten.mul_",
                        "aten.mul", "aten.bmm", "aten.convolution"} & set(log.ops)
            assert counter.get_total_flops() == plan.flops
            assert_close(out.double(), expected, rel=1e-4)


def test_without_a_compiler_the_kernel_is_reported_unavailable_and_stock_ops_run(monkeypatch, tmp_path):
    monkeypatch.setattr(build, "find_compiler", lambda: None)
    build.load.cache_clear()
    try:
        status = kernel_status()
        assert not status.available and "no C compiler" in status.detail
        spec, fmt, batch, plan = next(fusable_plans(1, seed=8))
        layer = TTConv2d(spec, fmt, plan, batch=batch, lowering=FUSED).eval()
        x = torch.randn(batch, spec.in_channels, *spec.input_size)
        with torch.no_grad(), OpLog() as log:
            out = layer(x)
        assert "ttplan.tucker_conv2d" not in log.ops
        plain = TTConv2d(spec, fmt, plan, batch=batch).eval()
        plain.load_state_dict(layer.state_dict())
        with torch.no_grad():
            assert_close(out, plain(x), rel=0)
    finally:
        build.load.cache_clear()


def test_a_broken_compiler_is_reported_not_raised(monkeypatch, tmp_path):
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(build, "find_compiler", lambda: str(fake))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    build.load.cache_clear()
    try:
        status = kernel_status()
        assert not status.available and "could not build" in status.detail
        assert not list((tmp_path / "cache").rglob("*.so"))
    finally:
        build.load.cache_clear()


def test_fused_with_channels_last_is_one_line_error():
    with pytest.raises(TTPlanError, match="fused=True with channels_last=True"):
        Lowering(fused=True, channels_last=True)


def test_packed_weights_follow_in_place_changes_and_data_writes_and_go_with_their_tensor():
    from ttplan.runtime.kernels import tucker

    gen = torch.Generator().manual_seed(3)
    x, wa = torch.randn(2, 6, 7, 7, generator=gen), torch.randn(5, 6, generator=gen)
    g, wc = torch.randn(4, 5, 3, 3, generator=gen), torch.randn(9, 4, generator=gen)
    first = tucker_conv2d(x, wa, g, wc, [1, 1], [1, 1], [1, 1])
    assert tucker.pack(wa) is tucker.pack(wa)  # packed once while unchanged
    with torch.no_grad():
        wa.mul_(2.0)
        g[0].zero_()
    again = tucker_conv2d(x, wa, g, wc, [1, 1], [1, 1], [1, 1])
    assert_close(again, stock(x, wa, g, wc, [1, 1], [1, 1], [1, 1]), rel=1e-5)
    assert not torch.allclose(first, again)
    wa.data.mul_(-3.0)  # a .data write counts no version and keeps the storage: the values are compared
    g.data.copy_(torch.randn(g.shape, generator=gen))
    assert_close(tucker_conv2d(x, wa, g, wc, [1, 1], [1, 1], [1, 1]), stock(x, wa, g, wc, [1, 1], [1, 1], [1, 1]),
                 rel=1e-5)
    key = id(wa)
    del wa
    assert key not in tucker._PACKED


def test_a_fused_forward_under_inference_mode_equals_the_stock_forward(monkeypatch):
    """Packs were kept by version counter, which inference tensors lack ("Inference tensors do not track version
    counter"); now by values, so library and generated layers run the kernel under `torch.inference_mode()`."""
    from ttplan.runtime.kernels import tucker

    calls = []
    kernel = tucker._kernel
    monkeypatch.setattr(tucker, "_kernel", lambda *args, **kwargs: calls.append(1) or kernel(*args, **kwargs))
    spec = ConvSpec.make(16, 16, 3, padding=1, input_size=8)
    fmt = make_format("hodec", spec, in_modes=(4, 4), out_modes=(4, 4), rank=8)
    plan = merged_order(build_network(spec, fmt, 2), fold_weights=True)
    library = TTConv2d(spec, fmt, plan, fold_weights=True, batch=2, lowering=FUSED).eval()
    generated = load_source(emit_layer(plan, "Layer", FUSED))["Layer"]().eval()
    generated.load_state_dict({name: core for (name, _), core in zip(generated.cores_spec, library.cores)})
    stock_layer = TTConv2d(spec, fmt, plan, fold_weights=True, batch=2).eval()
    stock_layer.load_state_dict(library.state_dict())
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        expected = stock_layer(x)
    for layer in (library, generated):
        for _ in range(2):  # packs, then reuses the packs
            with torch.inference_mode():
                out = layer(x)
            assert out.is_inference()
            assert_close(out, expected, rel=1e-5)
    assert len(calls) == 4


def test_owned_weights_keep_packs_by_identity_and_others_by_values():
    """`owned_weights`: a layer's folded operands are new tensors whenever their values change (its fold cache
    compares the cores), so their packs are kept without a copy to compare; other callers' weights are compared."""
    from ttplan.runtime.kernels import tucker

    gen = torch.Generator().manual_seed(4)
    x, wa = torch.randn(2, 6, 7, 7, generator=gen), torch.randn(5, 6, generator=gen)
    g, wc = torch.randn(4, 5, 3, 3, generator=gen), torch.randn(9, 4, generator=gen)
    first = tucker_conv2d(x, wa, g, wc, [1, 1], [1, 1], [1, 1], owned_weights=True)
    assert tucker._PACKED[id(wa)][1] is None and tucker.pack(wa, owned=True) is tucker._PACKED[id(wa)][2]
    again = tucker_conv2d(x, wa, g, wc, [1, 1], [1, 1], [1, 1])  # not owned: no copy to compare, so packed anew
    assert torch.equal(first, again) and torch.equal(tucker._PACKED[id(wa)][1], wa)


def _generated_layers(plan, count: int) -> list[torch.nn.Module]:
    """`count` layers of the class `emit_layer` writes for `plan` (fused), from a module registered in sys.modules
    as `bench model` registers the generated file (dynamo looks a function's globals up there)."""
    import sys
    import types

    module = types.ModuleType("ttplan_test_generated_fused")
    exec(compile(emit_layer(plan, "Layer", FUSED), "generated.py", "exec"), module.__dict__)
    sys.modules[module.__name__] = module
    return [module.Layer() for _ in range(count)]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["library", "generated"])
def test_a_compiled_model_of_fused_layers_is_one_graph_and_equals_eager(source):
    # dynamo takes the kernel's availability as a constant (no graph break per layer, no recompiles past its limit),
    # and the compiled kernel packs its weights each call: inductor writes the buffers it reuses without counting
    # versions, so packs kept by tensor identity would be stale (a kept pack made this 0.54 off)
    import torch._dynamo

    torch.manual_seed(0)
    spec = ConvSpec.make(16, 16, 3, padding=1, input_size=8)
    fmt = make_format("hodec", spec, in_modes=(4, 4), out_modes=(4, 4), rank=8)
    plan = merged_order(build_network(spec, fmt, 2), fold_weights=True)
    layers = ([TTConv2d(spec, fmt, plan, fold_weights=True, batch=2, lowering=FUSED) for _ in range(3)]
              if source == "library" else _generated_layers(plan, 3))
    model = torch.nn.Sequential(*layers).eval()
    cores = model[1].cores if source == "library" else list(model[1].cores())
    x = torch.randn(2, 16, 8, 8)
    torch._dynamo.reset()
    with torch.no_grad():
        with OpLog() as log:
            model(x)
        assert log.ops.count("ttplan.tucker_conv2d") == 3  # every layer runs fused
        explained = torch._dynamo.explain(model)(x)
        assert explained.graph_count == 1 and explained.graph_break_count == 0
        compiled = torch.compile(model, dynamic=False)
        assert_close(compiled(x), model(x), rel=1e-5)
        cores[0].mul_(-2.0)  # the weight-only steps are in the graph: a changed core is seen
        assert_close(compiled(x), model(x), rel=1e-5)
    torch._dynamo.reset()
