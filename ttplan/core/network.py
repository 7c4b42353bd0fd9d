"""A TT-conv layer as a tensor network: the input feature map and the cores, with named indices.

Index kinds: `batch` (b), `spatial` (s: H·W before the window is applied, H'·W' after), `window`
(k: the k_h·k_w window, shared by the input and the window core), `in` / `out` (channel modes) and
`rank`. The input `X[b, s, k, i_1…i_d]` carries `k` because convolving is contracting `k`: the
step where the feature map meets the tensor holding `k` is the conv step. Ranks of size 1 at the
chain's ends carry no index; interior ranks do, even of size 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from ttplan.core.formats import TTFormat
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError

INDEX_KINDS = ("batch", "spatial", "window", "in", "out", "rank")


def index_order(name: str) -> tuple[int, int]:
    """The one sort key of index names: b, s, k, i*, o*, r* (by kind), then by number (`o2` before `o10`)."""
    order = {"b": 0, "s": 1, "k": 2, "i": 3, "o": 4, "r": 5}
    return (order.get(name[0], 9), int(name[1:]) if name[1:].isdigit() else 0)


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
        """Whether a core carries the window index (false only for TT-matrix linear layers)."""
        return "k" in self.indices

    @property
    def window_core(self) -> int | None:
        """Position of the core that carries the window index."""
        for n, tensor in enumerate(self.tensors[1:], start=1):
            if "k" in tensor.indices:
                return n
        return None

    def size(self, name: str) -> int:
        """Size of one index (the spatial one at input resolution)."""
        return self.indices[name].size

    def params(self) -> int:
        """Elements of all cores (the bias, if any, is not part of the network): `TTFormat.core_params`."""
        return self.fmt.core_params(self.spec)

    def graph(self) -> nx.MultiGraph:
        """A networkx view: tensors are nodes, each shared index an edge, output indices dangle."""
        g = nx.MultiGraph()
        for n, tensor in enumerate(self.tensors):
            g.add_node(n, name=tensor.name, indices=tensor.indices, is_input=tensor.is_input)
        owners: dict[str, list[int]] = {}
        for n, tensor in enumerate(self.tensors):
            for name in tensor.indices:
                owners.setdefault(name, []).append(n)
        for name, nodes in owners.items():
            idx = self.indices[name]
            if len(nodes) == 2:
                g.add_edge(nodes[0], nodes[1], key=name, size=idx.size, kind=idx.kind)
        return g


def build_network(spec: ConvSpec, fmt: TTFormat, batch: int = 1) -> TensorNetwork:
    """The network of `fmt` applied to an input of `spec`'s geometry, at batch size `batch`."""
    if not isinstance(batch, int) or batch < 1:
        raise TTPlanError(f"batch={batch!r}: expected a positive int")
    fmt.validate(spec)
    cores = fmt.cores(spec)
    has_window = any("k" in core.indices for core in cores)
    indices: dict[str, Index] = {
        "b": Index("b", batch, "batch"),
        "s": Index("s", spec.in_pixels, "spatial"),
    }
    if has_window:
        indices["k"] = Index("k", spec.window, "window")
    for j, size in enumerate(fmt.in_modes, start=1):
        indices[f"i{j}"] = Index(f"i{j}", size, "in")
    for j, size in enumerate(fmt.out_modes, start=1):
        indices[f"o{j}"] = Index(f"o{j}", size, "out")
    for core in cores:
        for name in core.indices:
            if name.startswith("r"):
                indices[name] = Index(name, fmt.rank_size(name), "rank")
    x_indices = ("b", "s", *(("k",) if has_window else ()), *(f"i{j}" for j in range(1, len(fmt.in_modes) + 1)))
    tensors = (Tensor("X", x_indices, is_input=True), *(Tensor(core.name, core.indices) for core in cores))
    output = ("b", "s", *(f"o{j}" for j in range(1, len(fmt.out_modes) + 1)))
    return TensorNetwork(spec, fmt, batch, indices, tensors, output)

