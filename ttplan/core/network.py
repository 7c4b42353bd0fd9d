"""A TT-conv layer as a tensor network: the input feature map and the cores, with named indices.

Index kinds: `batch` (b), `spatial` (s: H·W before the window is applied, H'·W' after), `window`
(k: the k_h·k_w window, shared by the input and the window core), `in` / `out` (channel modes) and
`rank`. The input `X[b, s, k, i_1…i_d]` carries `k` because convolving is contracting `k`: the
step where the feature map meets the tensor holding `k` is the conv step. A separable window is two indices,
`kh` and `kw`, each summed by its own conv step over one axis of the map. Ranks of size 1 at the
chain's ends carry no index; interior ranks do, even of size 1. A rank may be held by more than two tensors (a
hyperedge: CP's one rank shared by every factor); it stays open until the last tensor holding it is absorbed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import networkx as nx

from ttplan.core.formats import TTFormat
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

INDEX_KINDS = ("batch", "spatial", "window", "in", "out", "rank")

#: window indices and the map axes (height, width) their conv applies to: `k` both, `kh` / `kw` one each
WINDOW_AXES = {"k": (True, True), "kh": (True, False), "kw": (False, True)}
#: window indices and their sizes: the joint window `k` (k_h·k_w), or a separable window's `kh` and `kw`
WINDOW_SIZES: dict[str, Callable[[ConvSpec], int]] = {
    "k": lambda spec: spec.window,
    "kh": lambda spec: spec.kernel_size[0],
    "kw": lambda spec: spec.kernel_size[1],
}


def index_order(name: str) -> tuple[int, int]:
    """The one sort key of index names: b, s, k, i*, o*, r* (by kind), then by number (`o2` before `o10`)."""
    order = {"b": 0, "s": 1, "k": 2, "i": 3, "o": 4, "r": 5}
    return (order.get(name[0], 9), int(name[1:]) if name[1:].isdigit() else int(name == "kw"))


@dataclass(frozen=True)
class Index:
    """One index: its name, its size and what it stands for."""

    name: str
    size: int
    kind: str


@dataclass(frozen=True)
class Tensor:
    """One tensor of the network: the input feature map (`X`) or a core."""

    name: str
    indices: tuple[str, ...]
    is_input: bool = False


@dataclass(frozen=True)
class TensorNetwork:
    """The tensors of one layer, the sizes of their indices, and the output indices.

    `tensors[0]` is always the input feature map. The spatial index `s` is stored at the input
    resolution; the cost model (`ttplan.core.contraction`) switches it to the output resolution after the
    conv step.
    """

    spec: ConvSpec
    fmt: TTFormat
    batch: int
    indices: dict[str, Index]
    tensors: tuple[Tensor, ...]
    output: tuple[str, ...]

    @property
    def has_window(self) -> bool:
        """Whether a core carries a window index (false only for TT-matrix linear layers)."""
        return any(name in self.indices for name in WINDOW_SIZES)

    @property
    def window_core(self) -> int | None:
        """Position of the first core that carries a window index."""
        for n, tensor in enumerate(self.tensors[1:], start=1):
            if any(name in WINDOW_SIZES for name in tensor.indices):
                return n
        return None

    @cached_property
    def holders(self) -> dict[str, frozenset[int]]:
        """For each index, the positions of the tensors holding it (three or more for a hyperedge)."""
        out: dict[str, set[int]] = {}
        for n, tensor in enumerate(self.tensors):
            for name in tensor.indices:
                out.setdefault(name, set()).add(n)
        return {name: frozenset(nodes) for name, nodes in out.items()}

    @cached_property
    def windows(self) -> tuple[str, ...]:
        """The network's window indices: `k`, or a separable window's `kh` and `kw`, or none (linear layers)."""
        return tuple(name for name in WINDOW_SIZES if name in self.indices)

    @cached_property
    def resolutions(self) -> dict[tuple[str, ...], tuple[int, int]]:
        """(H, W) of a feature map by the window indices it still holds (in `windows` order): an axis is at the
        output size once a window over it has been summed."""
        (h, w), (h2, w2) = self.spec.input_size, self.spec.output_size
        out = {}
        for mask in range(1 << len(self.windows)):
            remaining = tuple(name for n, name in enumerate(self.windows) if mask >> n & 1)
            summed = [WINDOW_AXES[name] for name in self.windows if name not in remaining]
            out[remaining] = (h2 if any(a for a, _ in summed) else h, w2 if any(b for _, b in summed) else w)
        return out

    @cached_property
    def in_modes(self) -> tuple[str, ...]:
        """The input channel modes' indices in the input's order (`i1`, `i2`, ...: `mode_indices`)."""
        return mode_indices("i", len(self.fmt.in_modes))

    @cached_property
    def out_modes(self) -> tuple[str, ...]:
        """The output channel modes' indices in the output's order (`o1`, `o2`, ...)."""
        return mode_indices("o", len(self.fmt.out_modes))

    @cached_property
    def hyperedges(self) -> frozenset[str]:
        """Indices held by more than two tensors (a CP rank shared by all factors)."""
        return frozenset(name for name, nodes in self.holders.items() if len(nodes) > 2)

    def size(self, name: str) -> int:
        """Size of one index (the spatial one at input resolution)."""
        return self.indices[name].size

    def params(self) -> int:
        """Elements of all cores (the bias, if any, is not part of the network): `TTFormat.core_params`."""
        return self.fmt.core_params(self.spec)

    def graph(self) -> nx.MultiGraph:
        """A networkx view: tensors are nodes, each shared index an edge (a hyperedge: one between every two of
        its holders), output indices dangle."""
        g = nx.MultiGraph()
        for n, tensor in enumerate(self.tensors):
            g.add_node(n, name=tensor.name, indices=tensor.indices, is_input=tensor.is_input)
        owners: dict[str, list[int]] = {}
        for n, tensor in enumerate(self.tensors):
            for name in tensor.indices:
                owners.setdefault(name, []).append(n)
        for name, nodes in owners.items():
            idx = self.indices[name]
            for n, first in enumerate(nodes):
                for second in nodes[n + 1:]:
                    g.add_edge(first, second, key=name, size=idx.size, kind=idx.kind)
        return g


def mode_indices(prefix: str, count: int) -> tuple[str, ...]:
    """The names of `count` channel modes on one side: `i1`, `i2`, ... (input) or `o1`, ... (output)."""
    return tuple(f"{prefix}{j}" for j in range(1, count + 1))


def build_network(spec: ConvSpec, fmt: TTFormat, batch: int = 1) -> TensorNetwork:
    """The network of `fmt` applied to an input of `spec`'s geometry, at batch size `batch`."""
    if not isinstance(batch, int) or batch < 1:
        raise TTPlanError(f"batch={batch!r}: expected a positive int")
    fmt.validate(spec)
    cores = fmt.cores(spec)
    windows = tuple(name for name in WINDOW_SIZES if any(name in core.indices for core in cores))
    indices: dict[str, Index] = {
        "b": Index("b", batch, "batch"),
        "s": Index("s", spec.in_pixels, "spatial"),
    }
    for name in windows:
        indices[name] = Index(name, WINDOW_SIZES[name](spec), "window")
    ins, outs = mode_indices("i", len(fmt.in_modes)), mode_indices("o", len(fmt.out_modes))
    for name, size in zip(ins, fmt.in_modes):
        indices[name] = Index(name, size, "in")
    for name, size in zip(outs, fmt.out_modes):
        indices[name] = Index(name, size, "out")
    for core in cores:
        for name in core.indices:
            if name.startswith("r"):
                indices[name] = Index(name, fmt.rank_size(name), "rank")
    tensors = (Tensor("X", ("b", "s", *windows, *ins), is_input=True),
               *(Tensor(core.name, core.indices) for core in cores))
    output = ("b", "s", *outs)
    return TensorNetwork(spec, fmt, batch, indices, tensors, output)

