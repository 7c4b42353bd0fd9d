"""The decomposition algorithms have one source: the library runs `ttplan.runtime.algorithms` and a generated file
embeds the same functions' source (no hand copy to drift)."""

from __future__ import annotations

import ast
import inspect

import torch

from ttplan.core.formats import make_format
from ttplan.core.network import build_network
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.runtime import algorithms
from ttplan.runtime.codegen import emit_layer
from ttplan.runtime.decomposition import decompose


def _plan(kind: str, rank: int):
    spec = ConvSpec(16, 16, (3, 3), padding=(1, 1), input_size=(8, 8))
    return optimize(build_network(spec, make_format(kind, spec, rank=rank))), spec


def test_the_module_imports_torch_and_math_only():
    tree = ast.parse(inspect.getsource(algorithms))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported == {"__future__", "math", "torch"}


def test_a_generated_file_carries_the_library_functions_verbatim():
    chain_file = emit_layer(_plan("hodec", 4)[0])
    for function in algorithms.EMBEDDED_CHAIN:
        assert inspect.getsource(function) in chain_file
    assert "def cp_als" not in chain_file  # only where a layer needs it
    cp_file = emit_layer(_plan("cp", 6)[0])
    for function in algorithms.EMBEDDED_CP:
        assert inspect.getsource(function) in cp_file
    assert f"CP_ITERATIONS = {algorithms.CP_ITERATIONS}" in cp_file


def test_the_generated_decomposition_equals_the_library_one():
    for kind, rank in (("hodec", 4), ("cp", 6), ("tr", 3)):
        plan, spec = _plan(kind, rank)
        namespace: dict = {}
        exec(compile(emit_layer(plan, name="Layer"), "gen.py", "exec"), namespace)
        weight = torch.randn(16, 16, 3, 3, generator=torch.Generator().manual_seed(1))
        generated = [p.detach() for p in namespace["Layer"].from_dense(weight).cores()]
        library = decompose(weight, plan.network.fmt, spec)
        assert len(generated) == len(library)
        for mine, theirs in zip(generated, library):
            torch.testing.assert_close(mine.reshape(theirs.shape), theirs, rtol=0, atol=0)


def test_a_file_imports_what_its_layers_use_and_nothing_else():
    """Imports and helpers come from what the renderer made (`_Renderer.uses`), not from searching the text."""
    from ttplan.runtime.lowering import Lowering

    spec = ConvSpec(16, 16, (3, 3), padding=(1, 1), input_size=(8, 8))
    fmt = make_format("tucker2", spec, rank=4)
    plan = optimize(build_network(spec, fmt), fold_weights=True)
    stock = emit_layer(plan, lowering=Lowering(fused=False))
    fused = emit_layer(plan, lowering=Lowering(fused=True))
    assert "import torch.nn.functional as F" in stock and "F.conv2d(" in stock
    assert "tucker_conv2d" not in stock and "def fused_kernel" not in stock
    assert "from ttplan.runtime.kernels import tucker_conv2d" in fused and "def fused_kernel" in fused
    assert "(and ttplan's fused kernel where ttplan is installed)" in fused
    for source in (stock, fused):
        compile(source, "gen.py", "exec")
