"""A ResNet block's residual add and the ReLU after it fused into the TT conv that feeds them, for inference
(`fuse_residuals`, `fold_batchnorm(residual=True)`): the rewritten blocks equal the unfolded eval models (random BN
statistics) on stock ops in both memory formats and on the fused kernel, count exactly the planned MACs, keep their
state_dict keys and children, and only an add whose sum nothing else reads, in an eval model, is fused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers.batchnorm import randomize_batchnorms
from tests.helpers.runtime_cases import assert_close, assert_folded_model_deploys
from tests.runtime.test_batchnorm import FMT, converted, resnet, way_input
from tests.runtime.test_deploy import import_file
from ttplan.core.network import build_network
from ttplan.core.schemes import merged
from ttplan.core.search import optimize
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.runtime.batchnorm import fold_batchnorm, fuse_residuals
from ttplan.runtime.codegen import emit_model
from ttplan.runtime.layers import TTConv2d
from ttplan.runtime.lowering import Lowering


def residual_layers(model: nn.Module) -> list[str]:
    """The TT layers a rewritten block calls with a residual, by name."""
    names = []
    for name, module in model.named_modules():
        graph = getattr(module, "graph", None)
        if isinstance(module, torch.fx.GraphModule) and graph is not None:
            names += [f"{name}.{node.target}" for node in graph.nodes if "residual" in node.kwargs]
    return names


@pytest.mark.parametrize("way", [pytest.param(way, marks=pytest.mark.requires_cc) if "fused" in way else way
                                 for way in ("best-nchw", "best-nhwc", "merged-fused")])
@pytest.mark.parametrize("arch", ["resnet20", "resnet56"])
def test_fused_residuals_equal_the_unfolded_eval_models_and_count_the_planned_macs(arch, way):
    dense, size, plan = resnet(arch)
    unfolded = converted(arch, way, fold_bn=False)
    bn_only, fused = fold_batchnorm(unfolded, residual=False), fold_batchnorm(unfolded)
    blocks = [name for name, _ in dense.named_modules() if name.count(".") == 1 and name.startswith("layer")]
    assert residual_layers(fused) == [f"{block}.conv2" for block in blocks] and not residual_layers(bn_only)
    assert list(fused.state_dict()) == list(bn_only.state_dict())
    for block in blocks:  # the same children, in order, and the block's class name in its print
        rewritten, kept = fused.get_submodule(block), bn_only.get_submodule(block)
        assert [n for n, _ in rewritten.named_children()] == [n for n, _ in kept.named_children()]
        assert repr(rewritten).startswith(type(kept).__name__ + "(") and rewritten.conv2.apply_relu
        # the folded BatchNorms and ReLUs, and an identity shortcut, stay as children but are no longer called
        called = [type(rewritten.get_submodule(node.target)) for node in rewritten.graph.nodes
                  if node.op == "call_module"]
        assert nn.Identity not in called and any(isinstance(m, nn.Identity) for m in rewritten.children())
    x = way_input(way, size)
    with torch.no_grad():
        expected = unfolded(x)
        assert_close(fused(x), expected, rel=1e-4)
        assert_close(fused(x), expected, rel=1e-4)  # again, from the fold caches
        bn_only(x)  # its fold caches filled too: both count the feature-map steps alone
        with FlopCounterMode(display=False) as with_residual:
            fused(x)
        with FlopCounterMode(display=False) as without:
            bn_only(x)
    assert with_residual.get_total_flops() == without.get_total_flops()  # an add is no product
    if way == "best-nchw":  # the searched orders: exactly the plan's MACs
        assert with_residual.get_total_flops() == 2 * plan.totals.tt_macs


def test_fused_kernel_adds_the_residual_in_its_store():
    pytest.importorskip("ttplan.runtime.kernels.tucker")
    from ttplan.runtime.kernels import kernel_status, tucker_conv2d
    if not kernel_status().available:
        pytest.skip("no C compiler")
    torch.manual_seed(0)
    for batch in (1, 3):  # images shared among threads, and split by columns
        x, wa, g, wc, bias = (torch.randn(batch, 6, 9, 7), torch.randn(5, 6), torch.randn(4, 5, 3, 3),
                              torch.randn(11, 4), torch.randn(11))
        ref = F.conv2d(F.conv2d(F.conv2d(x, wa[:, :, None, None]), g, padding=1), wc[:, :, None, None])
        residual = torch.randn_like(ref).contiguous(memory_format=torch.channels_last)
        y = tucker_conv2d(x, wa, g, wc, [1, 1], [1, 1], [1, 1], bias=bias, relu=True, residual=residual)
        assert_close(y, torch.relu(ref + bias.view(1, -1, 1, 1) + residual), rel=1e-5)
        with pytest.raises(TTPlanError, match="residual"):
            tucker_conv2d(x, wa, g, wc, [1, 1], [1, 1], [1, 1], residual=residual[..., :-1])


def tt(conv: nn.Conv2d) -> TTConv2d:
    return TTConv2d.from_conv(conv, FMT, 8, fold_weights=True)


class Block(nn.Module):
    """conv, BN, ReLU, conv, BN, then the sum with the input and a ReLU, spelt as `how` says."""

    def __init__(self, how: str = "module") -> None:
        super().__init__()
        self.how = how
        self.conv1, self.bn1, self.relu1 = tt(nn.Conv2d(16, 16, 3, padding=1, bias=False)), nn.BatchNorm2d(16), \
            nn.ReLU()
        self.conv2, self.bn2, self.relu = tt(nn.Conv2d(16, 16, 3, padding=1, bias=False)), nn.BatchNorm2d(16), \
            nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.how == "module":
            return self.relu(out + x)
        if self.how == "functional":
            return F.relu(torch.add(x, out))
        if self.how == "inplace":
            out += x
            return out.relu()
        if self.how == "two-readers":  # the sum read by the ReLU and by the output
            total = out + x
            return self.relu(total) + total
        return out + x  # "no-relu": the add alone


def wrapped(how: str, training: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = randomize_batchnorms(nn.Sequential(Block(how), nn.Flatten()), seed=5)
    return model.train() if training else model.eval()


@pytest.mark.parametrize("how", ["module", "functional", "inplace", "no-relu", "two-readers"])
def test_which_adds_fuse(how):
    model = wrapped(how)
    folded = fold_batchnorm(model)
    fuses = how != "two-readers"
    assert residual_layers(folded) == (["0.conv2"] if fuses else [])
    assert isinstance(folded[0], torch.fx.GraphModule) == fuses and isinstance(folded[1], nn.Flatten)
    assert folded[0].conv2.apply_relu == (how not in ("no-relu", "two-readers"))
    assert list(folded.state_dict()) == list(fold_batchnorm(model, residual=False).state_dict())
    if fuses:  # the Identity modules the fold left are no longer called; one with a hook still is
        assert "bn1" not in [node.target for node in folded[0].graph.nodes]
        hooked = fold_batchnorm(model, residual=False)
        hooked[0].bn1.register_forward_hook(lambda module, args, out: None)
        hooked = fold_batchnorm(hooked)
        assert "bn1" in [node.target for node in hooked[0].graph.nodes]
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert_close(folded(x), model(x), rel=1e-5)


def test_training_models_and_untraceable_blocks_are_left_alone():
    model = wrapped("module", training=True)
    assert not residual_layers(fold_batchnorm(model)) and fuse_residuals(model, TTConv2d) == []
    assert type(model[0]) is Block

    class Branches(Block):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
            return self.relu(out + x) if x.sum() > 0 else out

    branching = nn.Sequential(Branches()).eval()
    assert fuse_residuals(branching, TTConv2d) == [] and type(branching[0]) is Branches


def test_a_residual_of_another_shape_is_one_line_error():
    layer = tt(nn.Conv2d(16, 16, 3, padding=1)).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert_close(layer(x, torch.ones(2, 16, 8, 8)), layer(x) + 1, rel=1e-5)
        with pytest.raises(TTPlanError, match=r"residual of shape \[2, 16, 1, 1\]: expected .*\[2, 16, 8, 8\]"):
            layer(x, torch.ones(2, 16, 1, 1))


@pytest.mark.parametrize("fuse", [False, pytest.param(True, marks=pytest.mark.requires_cc)])
def test_a_generated_model_fuses_residuals_and_scripts_traces_and_exports(tmp_path, fuse):
    """The generated `convert` rewrites the block; TorchScript, torch.jit.trace and torch.export capture it."""
    spec = ConvSpec.make(16, 16, 3, padding=1, input_size=8)
    plan = merged(build_network(spec, FMT, 2), fold_weights=True) if fuse else \
        optimize(build_network(spec, FMT, 2), fold_weights=True)
    dense = nn.Sequential(Block("module"), nn.Flatten())
    for name in ("conv1", "conv2"):  # the dense block: the convs the TT layers came from
        setattr(dense[0], name, nn.Conv2d(16, 16, 3, padding=1, bias=False))
    randomize_batchnorms(dense, seed=5).eval()
    lowering = Lowering(fused=True) if fuse else Lowering()
    source = emit_model([("0.conv1", plan), ("0.conv2", plan)], "a test", dict.fromkeys(("0.conv1", "0.conv2"),
                                                                                    lowering))
    module = import_file(source, tmp_path, f"deploy_residual_{int(fuse)}")
    folded, unfolded = module.convert(dense), module.convert(dense, fold_bn=False)
    assert residual_layers(folded) == ["0.conv2"] and not residual_layers(unfolded)
    assert_folded_model_deploys(folded, unfolded, torch.randn(2, 16, 8, 8))
