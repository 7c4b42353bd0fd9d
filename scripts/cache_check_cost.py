"""What the value checks of the fold and pack caches cost per forward, against the forward they guard.

Against an identity key (each core's version counter and address, which missed `.data` writes). The layer is
ResNet-56's layer1 TT conv under the default policy (16->16 3x3 at 32x32, hodec 4.2.2.9.4.2.2, ranks
1,2,4,8,8,2,1,1: 7 cores, 734 values), folded, at batch 1 on one thread: the worst case, since the checks cost
the same at any batch. Each number is the median of 15 runs of 2,000 calls. Run on a quiet machine:

    PYTHONPATH=. python scripts/cache_check_cost.py
"""

from __future__ import annotations

import statistics
import timeit

import torch

from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.schemes import merged
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.runtime.fold_cache import cached_fold
from ttplan.runtime.kernels import kernel_status, tucker
from ttplan.runtime.layers import TTConv2d
from ttplan.runtime.lowering import Fused, Lowering, fused_operands


def median_us(call, number: int = 2000, runs: int = 15) -> float:
    """The median over `runs` of the mean µs of `number` calls."""
    return statistics.median(timeit.timeit(call, number=number) / number * 1e6 for _ in range(runs))


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    spec = ConvSpec.make(16, 16, 3, padding=1, input_size=32)
    fmt = make_format("hodec", spec, tt_shapes=(4, 2, 2, 9, 4, 2, 2), ranks=(1, 2, 4, 8, 8, 2, 1, 1))
    network = build_network(spec, fmt, 1)
    x = torch.randn(1, 16, 32, 32)
    layers = {"best order, stock ops": TTConv2d(spec, fmt, optimize(network, fold_weights=True), True)}
    if kernel_status().available:
        layers["merged order, fused kernel"] = TTConv2d(spec, fmt, merged(network, fold_weights=True), True,
                                                        lowering=Lowering(fused=True))
    with torch.no_grad():
        for name, layer in layers.items():
            layer.eval()(x)  # folds and packs
            cores, entry = tuple(layer.cores), layer._folded
            fold_us = median_us(lambda: cached_fold(entry, cores, None))  # noqa: B023 (used in this iteration)
            # the key the cache had before it compared values: each core's version, address, dtype and device
            old = tuple((c._version, c.data_ptr(), c.dtype, c.device) for c in cores)
            identity_us = median_us(lambda: tuple((c._version, c.data_ptr(), c.dtype, c.device)  # noqa: B023
                                                  for c in cores) == old)  # noqa: B023
            pack_us, packed = 0.0, ""
            fused = [ins for ins in layer.program.feature if isinstance(ins, Fused)]
            if fused:  # the layer's packs are kept by identity (its fold cache vouches for their values)
                weights = [w for w in fused_operands(fused[0], {"x": x, **layer.folded()})[1:] if w is not None]
                pack_us = median_us(lambda: [tucker.pack(w, owned=True) for w in weights])  # noqa: B023
                by_values = median_us(lambda: [tucker.pack(w) for w in weights])  # noqa: B023
                packed = (f", pack-cache lookup ({len(weights)} operands) {pack_us:.1f} µs (compared by values, as "
                          f"for tucker_conv2d's own callers: {by_values:.1f} µs)")
            forward_us = median_us(lambda: layer(x), number=200)  # noqa: B023
            checks = fold_us + pack_us
            print(f"{name}: forward {forward_us:.1f} µs; fold-cache check ({len(cores)} cores) {fold_us:.1f} µs "
                  f"(an identity key: {identity_us:.1f} µs){packed}: {checks:.1f} µs in all, {checks / forward_us:.1%} "
                  f"of the forward, {(fold_us - identity_us) / forward_us:.1%} more than an identity key")


if __name__ == "__main__":
    main()
