"""A fake Fashion-MNIST folder (four idx files of random pixels), shared by the data, training and CLI tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ttplan.training.idx import write_idx


def write_fake_fashion(folder: Path, n_train: int = 120, n_test: int = 30, gz: bool = True, skip: str | None = None):
    """Four idx files like Fashion-MNIST's, with random pixels; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        if name != skip:
            write_idx(array, folder / (name + (".gz" if gz else "")))
    return arrays
