"""A format added from a test runs like a shipped one: TTConv2d, TT-SVD and generated code equal conv2d."""

import random

import torch
import torch.nn.functional as F

from tests.helpers.runtime_cases import assert_close, assert_same_values_and_gradients, load_source
from ttplan.core.formats import make_format, max_rank_format
from ttplan.core.network import build_network
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.runtime.codegen import emit_layer
from ttplan.runtime.decomposition import decompose, rebuild
from ttplan.runtime.layers import TTConv2d

SPEC = ConvSpec.make(12, 8, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), input_size=(7, 6))


def _kernel(cores: list[torch.Tensor], fmt) -> torch.Tensor:
    """`W[o…, i…, k_h, k_w]` from the spatial-last cores as one einsum, independent of the chain code."""
    e, d = len(fmt.out_modes), len(fmt.in_modes)
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    r = [next(letters) for _ in range(e + d + 2)]
    modes = [next(letters) for _ in range(e + d)]
    kh, kw = next(letters), next(letters)
    terms = [r[j] + modes[j] + r[j + 1] for j in range(e + d)] + [r[e + d] + kh + kw + r[e + d + 1]]
    dense = torch.einsum(",".join(terms) + "->" + "".join(modes) + kh + kw, *cores)
    return dense.reshape(SPEC.out_channels, SPEC.in_channels, *SPEC.kernel_size)


def test_toy_format_layer_equals_conv2d_with_its_kernel(toy_format):
    gen = torch.Generator().manual_seed(0)
    rng = random.Random(0)
    for in_modes, out_modes in [((3, 4), (2, 4)), ((12,), (2, 2, 2)), ((2, 3, 2), (8,))]:
        fmt = make_format("spatial-last", SPEC, in_modes=in_modes, out_modes=out_modes, rank=rng.randint(2, 4))
        for plan in ("best", "published", "dense"):
            layer = TTConv2d(SPEC, fmt, plan=plan, dtype=torch.float64, batch=2)
            x = torch.randn(2, 12, 7, 6, dtype=torch.float64, generator=gen, requires_grad=True)
            cores = list(layer.cores)
            expected = F.conv2d(x, _kernel(cores, fmt), stride=SPEC.stride, padding=SPEC.padding,
                                dilation=SPEC.dilation)
            assert_same_values_and_gradients(layer(x), expected, [x, *cores], gen)
            assert_close(rebuild(cores, fmt, SPEC), _kernel(cores, fmt))


def test_toy_format_tt_svd_and_generated_code_are_exact_at_maximal_ranks(toy_format):
    fmt = max_rank_format("spatial-last", SPEC, (3, 4), (2, 4))
    weight = torch.randn(8, 12, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert_close(_kernel(decompose(weight, fmt, SPEC), fmt), weight)
    source = emit_layer(optimize(build_network(SPEC, fmt, 2)))
    namespace = load_source(source)
    cls = namespace[namespace["__all__"][0]]
    assert cls.__name__.startswith("TTSpatialLastConv12to8")
    layer = cls.from_dense(weight)
    x = torch.randn(2, 12, 7, 6, dtype=torch.float64)
    assert_close(layer(x), F.conv2d(x, weight, stride=SPEC.stride, padding=SPEC.padding, dilation=SPEC.dilation))
