"""The folded-weight cache: one key (version, storage, dtype, device) for TTConv2d and the generated layers."""

import torch

from tests.helpers.runtime_cases import load_source
from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.runtime.codegen import emit_layer
from ttplan.runtime.fold_cache import fold_key, fold_key_source
from ttplan.runtime.layers import TTConv2d

SPEC = ConvSpec.make(8, 6, 3, padding=1, input_size=5)
FMT = make_format("hodec", SPEC, in_modes=(2, 4), out_modes=(2, 3), rank=3)


def test_the_key_names_each_cores_device_and_dtype():
    cores = [torch.zeros(2, 3), torch.zeros(4, dtype=torch.float64)]
    key = fold_key(cores)
    assert [k[2:] for k in key] == [(torch.float32, torch.device("cpu")), (torch.float64, torch.device("cpu"))]
    assert key[0][:2] == (cores[0]._version, cores[0].data_ptr())
    assert eval(fold_key_source("cores"), {"cores": cores}) == key


def test_library_and_generated_layers_cache_under_the_same_key():
    x = torch.randn(2, 8, 5, 5)
    library = TTConv2d(SPEC, FMT, fold_weights=True)
    source = emit_layer(optimize(build_network(SPEC, FMT), fold_weights=True))
    assert f"key = {fold_key_source('self.cores()')}" in source
    namespace = load_source(source)
    generated = namespace[namespace["__all__"][0]](fold_weights=True)
    with torch.no_grad():
        library(x)
        generated(x)
    assert library._folded[0] == fold_key(library.cores)
    assert generated._folded[0] == fold_key(generated.cores())
    # a move to another dtype refolds both
    with torch.no_grad():
        library.double()(x.double())
        generated.double()(x.double())
    assert library._folded[0][0][2] == generated._folded[0][0][2] == torch.float64


def test_wrong_cores_get_the_same_error_from_the_runtime_and_the_rebuild():
    import pytest

    from ttplan.errors import TTPlanError
    from ttplan.runtime.decomposition import rebuild
    from ttplan.runtime.lowering import fold

    plan = optimize(build_network(SPEC, FMT))
    good = [torch.zeros(c.shape) for c in FMT.cores(SPEC)]
    for cores in (good[:-1], [*good[:-1], torch.zeros(9, 9)]):
        with pytest.raises(TTPlanError) as from_fold:
            fold(plan, cores)
        with pytest.raises(TTPlanError) as from_rebuild:
            rebuild(cores, FMT, SPEC)
        assert str(from_fold.value) == str(from_rebuild.value)
        assert "\n" not in str(from_fold.value)
