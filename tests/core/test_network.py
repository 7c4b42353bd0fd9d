"""The tensor network: indices, kinds, and the networkx view."""

from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.spec import ConvSpec

SPEC = ConvSpec.make(128, 256, 3, 2, 1, input_size=28)


def test_hodec_network_is_a_chain_with_the_input_on_its_in_side():
    fmt = make_format("hodec", SPEC, tt_shapes=(4, 8, 8, 9, 4, 4, 8), ranks=(1, 16, 16, 16, 16, 16, 16, 1))
    net = build_network(SPEC, fmt, batch=4)
    assert net.tensors[0].indices == ("b", "s", "k", "i1", "i2", "i3")
    assert net.indices["b"].size == 4 and net.indices["s"].size == 28 * 28 and net.indices["k"].size == 9
    g = net.graph()
    edges = {key for _, _, key in g.edges(keys=True)}
    assert edges == {"k", "i1", "i2", "i3", "r1", "r2", "r3", "r4", "r5", "r6"}
    assert set(g.neighbors(0)) == {4, 5, 6, 7}  # X meets C (window) and the input cores
    assert net.params() == fmt.params(SPEC) == 8640


def test_every_index_is_shared_by_at_most_two_tensors(make_random_layer):
    import random

    rng = random.Random(3)
    for _ in range(30):
        spec, fmt = make_random_layer(rng)
        net = build_network(spec, fmt)
        count: dict[str, int] = {}
        for t in net.tensors:
            for i in t.indices:
                count[i] = count.get(i, 0) + 1
        assert max(count.values()) <= 2
        assert all(count[o] == 1 for o in net.output)


def test_classical_input_meets_spatial_core_through_the_window():
    fmt = make_format("classical", SPEC, in_modes=(4, 4, 8), out_modes=(4, 8, 8), rank=16)
    net = build_network(SPEC, fmt)
    g = net.graph()
    assert g.has_edge(0, 1, key="k")  # X -- S
    assert [t.name for t in net.tensors] == ["X", "S", "G1", "G2", "G3"]
