"""Datasets without downloads: the bundled digits split, a fake CIFAR-10 folder, and the error messages."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.fashion import write_fake_fashion
from ttplan.errors import TTPlanError
from ttplan.training.augment import Augmented
from ttplan.training.data import (
    CIFAR_MEAN,
    CIFAR_STD,
    load_cifar10_folder,
    load_dataset,
    load_digits_dataset,
    load_fashion_mnist,
    split_indices,
)
from ttplan.training.datasets import FASHION_DIR
from ttplan.training.idx import write_idx


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
    with pytest.raises(TTPlanError, match="expected one of digits, fashion-mnist, cifar10"):
        load_dataset("mnist", None, 32)
    with pytest.raises(TTPlanError, match="needs the path"):
        load_dataset("cifar10", None, 32)


@pytest.mark.parametrize("gz", [True, False])
def test_fake_fashion_folder(tmp_path, gz):
    arrays = write_fake_fashion(tmp_path, gz=gz)
    train, test = load_fashion_mnist(tmp_path)
    x, y = train.tensors
    assert x.shape == (120, 1, 28, 28) and x.dtype == torch.float32 and test.tensors[0].shape == (30, 1, 28, 28)
    assert y.tolist() == arrays["train-labels-idx1-ubyte"].tolist() and y.dtype == torch.int64
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3  # the training images' statistics
    raw = arrays["t10k-images-idx3-ubyte"].astype(np.float64) / 255
    pixels = arrays["train-images-idx3-ubyte"].astype(np.float64) / 255
    expected = (raw[3, 10, 20] - pixels.mean()) / pixels.std(ddof=1)
    assert test.tensors[0][3, 0, 10, 20].item() == pytest.approx(expected, rel=1e-4)
    assert load_fashion_mnist(tmp_path, image_size=32)[1].tensors[0].shape == (30, 1, 32, 32)


def test_fashion_missing_files_say_how_to_install(tmp_path):
    for folder in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(TTPlanError, match="apt-get install dataset-fashion-mnist") as err:
            load_fashion_mnist(folder)
        assert "\n" not in str(err.value)
    write_fake_fashion(tmp_path, skip="t10k-labels-idx1-ubyte")
    with pytest.raises(TTPlanError, match="t10k-labels-idx1-ubyte'\\[.gz\\] not found"):
        load_fashion_mnist(tmp_path)


def test_fashion_inconsistent_files(tmp_path):
    write_fake_fashion(tmp_path)
    write_idx(np.zeros(119, dtype=np.uint8), tmp_path / "train-labels-idx1-ubyte.gz")
    with pytest.raises(TTPlanError, match="120 images but 119 labels"):
        load_fashion_mnist(tmp_path)
    write_idx(np.full(120, 10, dtype=np.uint8), tmp_path / "train-labels-idx1-ubyte.gz")
    with pytest.raises(TTPlanError, match="go up to 10"):
        load_fashion_mnist(tmp_path)
    write_idx(np.zeros((120, 28, 28), dtype=np.uint8), tmp_path / "train-labels-idx1-ubyte.gz")
    with pytest.raises(TTPlanError, match="magic number 0x00000803"):
        load_fashion_mnist(tmp_path)


def test_validation_split_and_subset(tmp_path):
    write_fake_fashion(tmp_path, n_train=200)
    validation, rest = split_indices(200)
    assert len(validation) == 20 and len(rest) == 180
    assert sorted(torch.cat([validation, rest]).tolist()) == list(range(200))
    assert torch.equal(split_indices(200)[0], validation)  # fixed, whatever the global seed
    full, test = load_dataset("fashion-mnist", tmp_path)
    train, val = load_dataset("fashion-mnist", tmp_path, eval_split="validation")
    assert len(test) == 30 and len(val) == 20 and len(train) == 180
    images = full.tensors[0]
    assert torch.equal(val.tensors[0], images[validation])
    sub_test, _ = load_dataset("fashion-mnist", tmp_path, train_subset=50)
    sub_val, _ = load_dataset("fashion-mnist", tmp_path, train_subset=50, eval_split="validation")
    assert len(sub_test) == 50 and torch.equal(sub_test.tensors[0], sub_val.tensors[0])  # same images either way
    held_out = {tuple(v.flatten()[:20].tolist()) for v in val.tensors[0]}
    assert not held_out & {tuple(v.flatten()[:20].tolist()) for v in sub_test.tensors[0]}
    with pytest.raises(TTPlanError, match="train_subset=181: only 180"):
        load_dataset("fashion-mnist", tmp_path, train_subset=181)
    with pytest.raises(TTPlanError, match="eval_split='dev'"):
        load_dataset("fashion-mnist", tmp_path, eval_split="dev")


def test_augmentation_on_training_sets_only(tmp_path):
    write_fake_fashion(tmp_path)
    train, test = load_dataset("fashion-mnist", tmp_path, augment=True)
    assert isinstance(train, Augmented) and not isinstance(test, Augmented)
    black = train.base.tensors[0].amin()
    assert train.fill.tolist() == [pytest.approx(float(black))]
    _write_fake_cifar(tmp_path / "cifar")
    ctrain, ctest = load_dataset("cifar10", tmp_path / "cifar", augment=True)
    assert isinstance(ctrain, Augmented) and not isinstance(ctest, Augmented)
    expected = [-m / s for m, s in zip(CIFAR_MEAN, CIFAR_STD)]
    assert ctrain.fill.tolist() == pytest.approx(expected)
    digits, _ = load_dataset("digits", None, 8, augment=True)
    assert not isinstance(digits, Augmented)  # a mirrored digit is another symbol


@pytest.mark.skipif(not Path(FASHION_DIR, "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_files():
    train, test = load_fashion_mnist()
    assert train.tensors[0].shape == (60000, 1, 28, 28) and test.tensors[0].shape == (10000, 1, 28, 28)
    assert torch.bincount(train.tensors[1]).tolist() == [6000] * 10
    assert torch.bincount(test.tensors[1]).tolist() == [1000] * 10
