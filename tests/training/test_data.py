"""Datasets without downloads: the bundled digits split, a fake CIFAR-10 folder, and the error messages."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ttplan.errors import TTPlanError
from ttplan.training.data import CIFAR_MEAN, CIFAR_STD, load_cifar10_folder, load_dataset, load_digits_dataset


def test_digits_shapes_deterministic_stratified():
    train, test = load_digits_dataset()
    xtr, ytr = train.tensors
    xte, yte = test.tensors
    assert xtr.shape == (1437, 3, 32, 32) and xte.shape == (360, 3, 32, 32)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert torch.equal(xtr[:, 0], xtr[:, 2])  # channels replicated
    assert abs(xtr.mean().item()) < 1e-4 and abs(xtr.std().item() - 1) < 1e-4
    again_train, again_test = load_digits_dataset()
    assert torch.equal(again_train.tensors[0], xtr) and torch.equal(again_test.tensors[1], yte)
    counts_all = torch.bincount(torch.cat([ytr, yte]), minlength=10).double()
    counts_test = torch.bincount(yte, minlength=10).double()
    assert torch.all((counts_test - 0.2 * counts_all).abs() <= 1)
    other = load_digits_dataset(seed=1)[1].tensors[1]
    assert not torch.equal(other, yte)


def test_digits_size_and_channels():
    train, test = load_digits_dataset(image_size=8, channels=1)
    assert train.tensors[0].shape == (1437, 1, 8, 8) and test.tensors[0].shape == (360, 1, 8, 8)
    with pytest.raises(TTPlanError, match="image_size=0"):
        load_digits_dataset(image_size=0)


def _write_fake_cifar(folder: Path, n: int = 4, skip: str | None = None) -> dict[str, dict]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        batches[name] = batch
        if name != skip:
            with open(folder / name, "wb") as fh:
                pickle.dump(batch, fh)
    return batches


@pytest.mark.parametrize("via_parent", [True, False])
def test_fake_cifar_folder_loads(tmp_path, via_parent):
    batches = _write_fake_cifar(tmp_path / "cifar-10-batches-py")
    train, test = load_cifar10_folder(tmp_path if via_parent else tmp_path / "cifar-10-batches-py")
    x, y = train.tensors
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.float32 and test.tensors[0].shape == (4, 3, 32, 32)
    assert y.tolist() == [int(v) for i in range(1, 6) for v in batches[f"data_batch_{i}"][b"labels"]]
    raw = batches["data_batch_2"][b"data"][1].reshape(3, 32, 32)  # row-major: R plane, G plane, B plane
    expected = (raw[2, 5, 7] / 255.0 - CIFAR_MEAN[2]) / CIFAR_STD[2]
    assert x[5, 2, 5, 7].item() == pytest.approx(expected, rel=1e-5)
    small = load_dataset("cifar10", str(tmp_path), image_size=16)[1]
    assert small.tensors[0].shape == (4, 3, 16, 16)


def test_missing_cifar_folder_and_batch(tmp_path):
    with pytest.raises(TTPlanError) as err:
        load_cifar10_folder(tmp_path / "nowhere")
    msg = str(err.value)
    assert "nowhere" in msg and "data_batch_1" in msg and "test_batch" in msg and "\n" not in msg
    _write_fake_cifar(tmp_path / "cifar-10-batches-py", skip="data_batch_3")
    with pytest.raises(TTPlanError, match=r"lacks data_batch_3: expected") as err:
        load_cifar10_folder(tmp_path)
    assert "cifar-10-batches-py" in str(err.value)


def test_load_dataset_dispatch():
    train, _ = load_dataset("digits", None, image_size=16)
    assert train.tensors[0].shape == (1437, 3, 16, 16)
    with pytest.raises(TTPlanError, match="expected one of digits, cifar10"):
        load_dataset("mnist", None, 32)
    with pytest.raises(TTPlanError, match="needs the path"):
        load_dataset("cifar10", None, 32)
