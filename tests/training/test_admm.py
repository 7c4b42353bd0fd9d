"""ADMM: Z, U and the penalty against a direct NumPy evaluation; schedules; state round trip; layer lookup."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from torch import nn

from ttplan.core.formats import make_format
from ttplan.core.spec import ConvSpec
from ttplan.errors import TTPlanError
from ttplan.training.admm import ADMM, ADMMLayer

SPEC = ConvSpec.make(4, 6, 3, padding=1, input_size=5)
FMT = make_format("classical", SPEC, in_modes=(2, 2), out_modes=(2, 3), ranks=(3, 2, 1))
LIN = ConvSpec.make_linear(150, 3)
LIN_FMT = make_format("ttm", LIN, in_modes=(15, 10), out_modes=(3, 1), ranks=(1, 2, 1))


def np_project_classical(w: np.ndarray, in_modes, out_modes, ranks) -> np.ndarray:
    """Classical TT-SVD and rebuild in NumPy, written from the conventions: tensor [K, I1·O1, I2·O2]."""
    o, i = out_modes, in_modes
    kh, kw = w.shape[2:]
    t = w.reshape(o[0], o[1], i[0], i[1], kh, kw).transpose(4, 5, 2, 0, 3, 1)  # kh kw i1 o1 i2 o2
    sizes = [kh * kw, i[0] * o[0], i[1] * o[1]]
    rest, r_prev, cores = t.reshape(1, -1), 1, []
    for n, r in zip(sizes[:-1], ranks[:-1]):
        u, s, vt = np.linalg.svd(rest.reshape(r_prev * n, -1), full_matrices=False)
        r = min(r, s.size)
        cores.append(u[:, :r].reshape(r_prev, n, r))
        rest, r_prev = s[:r, None] * vt[:r], r
    cores.append(rest.reshape(r_prev, sizes[-1], 1))
    full = np.einsum("xka,aPb,bQy->kPQ", *cores).reshape(kh, kw, i[0], o[0], i[1], o[1])
    return full.transpose(3, 5, 2, 4, 0, 1).reshape(w.shape)


def np_project_ttm(w: np.ndarray, in_modes, out_modes, rank: int) -> np.ndarray:
    """TT-matrix with two cores in NumPy: one truncated SVD of W reordered to [I1·O1, I2·O2]."""
    (i1, i2), (o1, o2) = in_modes, out_modes
    t = w.reshape(o1, o2, i1, i2).transpose(2, 0, 3, 1).reshape(i1 * o1, i2 * o2)
    u, s, vt = np.linalg.svd(t, full_matrices=False)
    low = (u[:, :rank] * s[:rank]) @ vt[:rank]
    return low.reshape(i1, o1, i2, o2).transpose(1, 3, 0, 2).reshape(w.shape)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(150, 3, bias=False)
    ).double()


def layers() -> list[ADMMLayer]:
    return [ADMMLayer("0", FMT, SPEC), ADMMLayer("3.weight", LIN_FMT, LIN)]


def np_projections(model: nn.Module, u: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    w0 = model[0].weight.detach().numpy()
    w3 = model[3].weight.detach().numpy()
    return {
        "0": np_project_classical(w0 + u["0"], FMT.in_modes, FMT.out_modes, FMT.ranks),
        "3": np_project_ttm(w3 + u["3"], LIN_FMT.in_modes, LIN_FMT.out_modes, LIN_FMT.ranks[1]),
    }


def train_epoch(model: nn.Module, admm: ADMM, opt: torch.optim.Optimizer, steps: int = 3, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 4, 5, 5, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (8,), generator=g)
        loss = nn.functional.cross_entropy(model(x), y) + admm.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_updates_match_numpy():
    model = make_model()
    rho = 0.5
    admm = ADMM(model, layers(), rho=rho)
    assert set(admm.Z) == {"0", "3"}
    weights = {"0": model[0].weight, "3": model[3].weight}
    u_np = {n: np.zeros_like(w.detach().numpy()) for n, w in weights.items()}
    z_np = np_projections(model, u_np)
    for n in weights:
        np.testing.assert_allclose(admm.Z[n].numpy(), z_np[n], atol=1e-10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(3):
        train_epoch(model, admm, opt, seed=epoch)
        w_np = {n: w.detach().numpy().copy() for n, w in weights.items()}
        pen_np = sum(rho / 2 * np.sum((w_np[n] - z_np[n] + u_np[n]) ** 2) for n in weights)
        pen = admm.penalty()
        assert pen.item() == pytest.approx(pen_np, rel=1e-10)
        # the penalty's gradient is rho * (W - Z + U)
        model.zero_grad()
        pen.backward()
        np.testing.assert_allclose(weights["0"].grad.numpy(), rho * (w_np["0"] - z_np["0"] + u_np["0"]), atol=1e-12)
        dist_np = {n: np.linalg.norm(w_np[n] - z_np[n]) / np.linalg.norm(w_np[n]) for n in weights}
        assert admm.distances() == pytest.approx(dist_np, rel=1e-9)

        admm.update(epoch)
        z_np = np_projections(model, u_np)
        u_np = {n: u_np[n] + w_np[n] - z_np[n] for n in weights}
        for n in weights:
            np.testing.assert_allclose(admm.Z[n].numpy(), z_np[n], atol=1e-10)
            np.testing.assert_allclose(admm.U[n].numpy(), u_np[n], atol=1e-10)
        assert admm.epoch == epoch + 1
    assert all(np.abs(u).sum() > 0 for u in u_np.values())


def test_rho_schedule_and_counter():
    model = make_model()
    admm = ADMM(model, layers(), rho=lambda e: 1e-3 * 2**e)
    assert admm.rho == pytest.approx(1e-3)
    admm.update()
    assert (admm.epoch, admm.rho) == (1, pytest.approx(2e-3))
    admm.update(4)
    assert (admm.epoch, admm.rho) == (5, pytest.approx(32e-3))
    with pytest.raises(TTPlanError, match="rho"):
        ADMM(model, layers(), rho=-1.0)


def test_state_dict_round_trip_resumes_exactly():
    model = make_model()
    admm = ADMM(model, layers(), rho=lambda e: 0.1 * (e + 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_epoch(model, admm, opt)
    admm.update(0)
    train_epoch(model, admm, opt, seed=1)
    buf = io.BytesIO()
    torch.save(admm.state_dict(), buf)

    model2 = copy.deepcopy(model)
    resumed = ADMM(model2, layers(), rho=lambda e: 0.1 * (e + 1))
    buf.seek(0)
    resumed.load_state_dict(torch.load(buf))
    assert (resumed.epoch, resumed.rho) == (admm.epoch, admm.rho)
    assert resumed.penalty().item() == admm.penalty().item()
    admm.update(1)
    resumed.update(1)
    for n in admm.Z:
        assert torch.equal(admm.Z[n], resumed.Z[n]) and torch.equal(admm.U[n], resumed.U[n])
    assert resumed.rho == admm.rho

    state = admm.state_dict()
    del state["U"]["3"]
    with pytest.raises(TTPlanError, match="U holds layers"):
        resumed.load_state_dict(state)


def test_layer_lookup_errors():
    model = make_model()
    with pytest.raises(TTPlanError, match=r"'conv9' is not in the model; its conv/linear layers are: 0, 3") as err:
        ADMM(model, [ADMMLayer("conv9", FMT, SPEC)])
    assert "\n" not in str(err.value)
    with pytest.raises(TTPlanError, match=r"layer '3'.*weight of shape"):
        ADMM(model, [ADMMLayer("3", FMT, SPEC)])
    with pytest.raises(TTPlanError, match="listed twice"):
        ADMM(model, [ADMMLayer("0", FMT, SPEC), ADMMLayer("0.weight", FMT, SPEC)])


def test_cores_and_float32_device_follow_weight():
    model = make_model().float()
    admm = ADMM(model, layers())
    assert all(z.dtype == torch.float32 for z in admm.Z.values())
    cores = admm.cores()
    assert [tuple(c.shape) for c in cores["0"]] == [c.shape for c in FMT.cores(SPEC)]
    model.double()  # cast after construction: Z and U follow
    assert admm.penalty().dtype == torch.float64
