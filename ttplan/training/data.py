"""Real image data without downloads: scikit-learn's bundled digits, or a CIFAR-10 folder already on disk."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ttplan.errors import TTPlanError

DATASETS = ("digits", "cifar10")
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
# per-channel mean and std of the CIFAR-10 training images (the std over pixels, not the often-copied
# 0.2023/0.1994/0.2010, which is a mean of per-image stds)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _check_size(name: str, value: int) -> int:
    """A positive int, or a one-line error."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TTPlanError(f"{name}={value!r}: expected a positive int")
    return value


def _resize(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """Bilinear resize of `[N, C, h, w]` to `image_size` square (a no-op at the same size)."""
    if tuple(x.shape[-2:]) == (image_size, image_size):
        return x
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)


def load_digits_dataset(
    image_size: int = 32, channels: int = 3, seed: int = 0
) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 8x8 digits as `(train, test)`: a fixed stratified 80/20 split, images resized and
    normalised with the train split's mean/std, replicated to `channels` so RGB models accept them.

    The statistics are taken after resizing, so the train images have mean 0 and std 1 exactly.
    """
    _check_size("image_size", image_size)
    _check_size("channels", channels)
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise TTPlanError("the digits dataset needs scikit-learn: pip install 'ttplan[data]'") from None
    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)

    def images(a: np.ndarray) -> torch.Tensor:
        return _resize(torch.from_numpy(a).reshape(-1, 1, 8, 8), image_size)

    train, test = images(x_train), images(x_test)
    mean, std = train.mean(), train.std()
    train, test = (train - mean) / std, (test - mean) / std
    train = train.expand(-1, channels, -1, -1).contiguous()
    test = test.expand(-1, channels, -1, -1).contiguous()
    return (
        TensorDataset(train, torch.from_numpy(y_train)),
        TensorDataset(test, torch.from_numpy(y_test)),
    )


def _cifar_folder(path: str | Path) -> Path:
    """The folder holding the batches: `path` itself or its `cifar-10-batches-py` child."""
    root = Path(path).expanduser()
    expected = ", ".join((*CIFAR_TRAIN, CIFAR_TEST))
    for folder in (root, root / CIFAR_DIR):
        if folder.is_dir() and all((folder / f).is_file() for f in (*CIFAR_TRAIN, CIFAR_TEST)):
            return folder
    if not root.is_dir():
        raise TTPlanError(
            f"CIFAR-10 folder {str(root)!r} does not exist or is not a folder: expected a folder "
            f"(or its parent holding {CIFAR_DIR}) with {expected}"
        )
    folder = root / CIFAR_DIR if (root / CIFAR_DIR).is_dir() else root
    missing = [f for f in (*CIFAR_TRAIN, CIFAR_TEST) if not (folder / f).is_file()]
    raise TTPlanError(
        f"CIFAR-10 folder {str(folder)!r} lacks {', '.join(missing)}: expected the python-pickle batches {expected}"
    )


def _read_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch: uint8 images `[N, 3, 32, 32]` and int64 labels (trusted local files only)."""
    with open(file, "rb") as fh:
        try:
            batch = pickle.load(fh, encoding="bytes")
        except Exception as err:  # a truncated or foreign file: say which one
            raise TTPlanError(f"CIFAR-10 batch {str(file)!r} is not a python pickle: {err}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise TTPlanError(f"CIFAR-10 batch {str(file)!r}: expected a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise TTPlanError(
            f"CIFAR-10 batch {str(file)!r}: data of shape {list(data.shape)} with {labels.shape[0]} labels, "
            "expected [N, 3072] uint8 and N labels"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_tensors(files: list[Path], image_size: int) -> TensorDataset:
    """Stack batches into a normalised float32 dataset."""
    parts = [_read_batch(f) for f in files]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts])).to(torch.float32) / 255.0
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    x = _resize((x - mean) / std, image_size)
    return TensorDataset(x, torch.from_numpy(np.concatenate([p[1] for p in parts])))


def load_cifar10_folder(path: str | Path, image_size: int = 32) -> tuple[TensorDataset, TensorDataset]:
    """CIFAR-10 `(train, test)` from the python-pickle batches in `path` (or `path/cifar-10-batches-py`),
    normalised with the usual per-channel mean/std; nothing is downloaded.
    """
    _check_size("image_size", image_size)
    folder = _cifar_folder(path)
    train = _cifar_tensors([folder / f for f in CIFAR_TRAIN], image_size)
    test = _cifar_tensors([folder / CIFAR_TEST], image_size)
    return train, test


def load_dataset(name: str, path: str | Path | None, image_size: int) -> tuple[TensorDataset, TensorDataset]:
    """`(train, test)` for `digits` (bundled; `path` unused) or `cifar10` (read from `path`)."""
    key = str(name).lower().replace("-", "")
    if key == "digits":
        return load_digits_dataset(image_size=image_size)
    if key == "cifar10":
        if path is None:
            raise TTPlanError(
                f"dataset 'cifar10' needs the path of a folder with {CIFAR_DIR} (nothing is downloaded)"
            )
        return load_cifar10_folder(path, image_size=image_size)
    raise TTPlanError(f"dataset={name!r}: expected one of {', '.join(DATASETS)}")


__all__ = ["DATASETS", "load_cifar10_folder", "load_dataset", "load_digits_dataset"]
