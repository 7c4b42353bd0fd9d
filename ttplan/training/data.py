"""Real image data without downloads: scikit-learn's bundled digits, Fashion-MNIST's idx files (Debian package
`dataset-fashion-mnist`, or any folder), or a CIFAR-10 folder already on disk; with a fixed validation split,
a fixed training subset and the standard crop + flip augmentation (fashion-mnist and cifar10, training only)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from ttplan.errors import TTPlanError
from ttplan.training.augment import Augmented
from ttplan.training.datasets import EVAL_SPLITS, FASHION_DIR, dataset_key, is_user_dataset
from ttplan.training.idx import read_idx
from ttplan.user_code import load_callable, one_line

#: the fixed validation split: this many training images (at most a tenth of them), drawn with this seed
VALIDATION_SIZE = 5000
SPLIT_SEED = 0
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_INSTALL = "as root: apt-get update && apt-get install dataset-fashion-mnist"
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


def _fashion_file(folder: Path, name: str) -> Path:
    """`name.gz` or plain `name` in `folder`, or a one-line error saying how to get the files."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    every = ", ".join(f"{n}[.gz]" for pair in FASHION_FILES.values() for n in pair)
    raise TTPlanError(f"Fashion-MNIST: {str(folder / name)!r}[.gz] not found; install the data ({FASHION_INSTALL}) "
                      f"or give --data-dir a folder with {every}")


def _fashion_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images `[N, 28, 28]` and int64 labels of one split, checked against each other."""
    image_name, label_name = FASHION_FILES[split]
    images = read_idx(_fashion_file(folder, image_name), ndim=3)
    labels = read_idx(_fashion_file(folder, label_name), ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise TTPlanError(f"Fashion-MNIST {split} split in {str(folder)!r}: {images.shape[0]} images but "
                          f"{labels.shape[0]} labels; expected as many of each")
    if labels.size and int(labels.max()) > 9:
        raise TTPlanError(f"Fashion-MNIST {split} labels in {str(folder)!r} go up to {int(labels.max())}: "
                          "expected classes 0..9")
    return images, labels.astype(np.int64)


def load_fashion_mnist(path: str | Path | None = None, image_size: int = 28) -> tuple[TensorDataset, TensorDataset]:
    """Fashion-MNIST `(train, test)` (60,000 / 10,000 grey images, one channel) from the idx files in `path`
    (default: where Debian's dataset-fashion-mnist puts them), normalised with the training images' mean/std.
    """
    _check_size("image_size", image_size)
    folder = Path(path if path is not None else FASHION_DIR).expanduser()
    if not folder.is_dir():
        raise TTPlanError(f"Fashion-MNIST folder {str(folder)!r} does not exist; install the data "
                          f"({FASHION_INSTALL}) or give --data-dir a folder with the four idx files")
    parts = {split: _fashion_split(folder, split) for split in FASHION_FILES}
    train_x = torch.from_numpy(parts["train"][0]).to(torch.float32).div_(255.0).unsqueeze(1)
    mean, std = (float(train_x.mean()), float(train_x.std())) if train_x.numel() else (0.0, 1.0)
    if len(train_x) > 1 and not std > 0:
        raise TTPlanError(f"Fashion-MNIST training images in {str(folder)!r} are all the same value ({mean:.3g}): "
                          "they cannot be normalised (std 0); check the idx files")

    def images(raw: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(raw).to(torch.float32).div_(255.0).unsqueeze(1)
        return _resize((x - mean) / std, image_size)

    return tuple(TensorDataset(images(x), torch.from_numpy(y)) for x, y in parts.values())  # type: ignore[return-value]


def split_indices(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed `(validation, rest)` index split of `n` training images: `min(5000, n // 10)` of them, drawn with
    a seed of its own, so every run (whatever its --seed) holds out the same images; `rest` keeps that order."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    size = min(VALIDATION_SIZE, n // 10)
    return order[:size], order[size:]


def _take(dataset: Dataset, index: torch.Tensor) -> Dataset:
    """The items at `index`: a smaller TensorDataset for a TensorDataset, else a `Subset`."""
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[index] for t in dataset.tensors))
    return Subset(dataset, index.tolist())


def load_user_dataset(target: str) -> tuple[Dataset, Dataset, Dataset | None]:
    """`(train, test, validation or None)` from a user's `module:callable` returning `(train, test)` or a dict with
    `train`, `test` and optionally `validation`; each a map-style torch Dataset of `(image [C, H, W], label)`.

    ttplan neither normalises nor augments them: the user's datasets do whatever their own training does.
    """
    load = load_callable(target, "dataset", "mydata:load")
    try:
        value = load()
    except Exception as error:
        raise TTPlanError(f"dataset {target!r}: calling it failed ({one_line(error)})") from error
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"train", "test", "validation"})
        if unknown or "train" not in value or "test" not in value:
            raise TTPlanError(f"dataset {target!r} returned a dict with keys {sorted(value)}: expected 'train', "
                              "'test' and optionally 'validation'")
        parts = (value["train"], value["test"], value.get("validation"))
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        parts = (value[0], value[1], None)
    else:
        raise TTPlanError(f"dataset {target!r} returned a {type(value).__name__}: expected (train, test) datasets "
                          "or a dict with 'train', 'test' and optionally 'validation'")
    for role, part in zip(("train", "test", "validation"), parts):
        if part is not None:
            _check_items(target, role, part)
    return parts


def _check_items(target: str, role: str, dataset: object) -> None:
    """A map-style dataset whose first item is `(float image [C, H, W], integer label)`, or one line saying not."""
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TTPlanError(f"dataset {target!r}: its {role} set is a {type(dataset).__name__}, expected a map-style "
                          "torch Dataset (with __len__ and __getitem__)")
    if len(dataset) == 0:  # type: ignore[arg-type]
        return  # said by the caller, the same for every source
    item = dataset[0]  # type: ignore[index]
    ok = isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], torch.Tensor)
    if ok:
        image, label = item
        ok = image.dim() == 3 and image.is_floating_point() and (
            isinstance(label, int) or (isinstance(label, torch.Tensor) and label.numel() == 1
                                       and not label.is_floating_point()))
    if not ok:
        raise TTPlanError(f"dataset {target!r}: the first item of its {role} set is {_describe(item)}; expected "
                          "(a float tensor [C, H, W], an integer class label)")


def _describe(item: object) -> str:
    if isinstance(item, (tuple, list)):
        inner = ", ".join(f"tensor {list(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor)
                          else type(x).__name__ for x in item)
        return f"({inner})"
    return f"a {type(item).__name__}"


def _check_not_empty(name: str, train: Dataset, evaluation: Dataset, eval_split: str) -> None:
    """A data set with no training or no evaluation images is one line, before any model is built."""
    if len(train) == 0:  # type: ignore[arg-type]
        raise TTPlanError(f"dataset {name!r} has no training images: expected at least one")
    if len(evaluation) == 0:  # type: ignore[arg-type]
        raise TTPlanError(f"dataset {name!r} has no {eval_split} images to evaluate on: expected at least one")


def default_image_size(name: str) -> int:
    """The image size a dataset is trained at unless asked otherwise: 28 for fashion-mnist, 32 for the others."""
    return 28 if dataset_key(name) == "fashion-mnist" else 32


def load_dataset(name: str, path: str | Path | None, image_size: int | None = None, *, augment: bool = False,
                 train_subset: int | None = None, eval_split: str = "test") -> tuple[Dataset, Dataset]:
    """`(train, eval)` for `digits` (bundled; `path` unused), `fashion-mnist` (idx files in `path`, default the
    Debian package's folder) or `cifar10` (read from `path`).

    `eval_split="validation"` evaluates on the fixed validation split of the training images (`split_indices`)
    and trains on the rest; `"test"` trains on every training image and evaluates on the test set.
    `train_subset` keeps that many training images, always from outside the validation split, the same ones
    for every run. `augment` wraps the training set in the random crop (4-pixel padding) + flip for
    fashion-mnist and cifar10 (digits have no augmentation: a flipped digit is another symbol).
    """
    key = dataset_key(name)
    if eval_split not in EVAL_SPLITS:
        raise TTPlanError(f"eval_split={eval_split!r}: expected one of {', '.join(EVAL_SPLITS)}")
    if is_user_dataset(key):
        return _user_splits(key, train_subset, eval_split)
    size = default_image_size(key) if image_size is None else _check_size("image_size", image_size)
    if key == "digits":
        train, test = load_digits_dataset(image_size=size)
        black_fill = None  # digits are not augmented
    elif key == "fashion-mnist":
        train, test = load_fashion_mnist(path, image_size=size)
        _check_not_empty(key, train, test, "test")
        black_fill = train.tensors[0].amin().reshape(1)  # the normalised value of pixel 0 (black)
    else:
        if path is None:
            raise TTPlanError(
                f"dataset 'cifar10' needs the path of a folder with {CIFAR_DIR} (nothing is downloaded)"
            )
        train, test = load_cifar10_folder(path, image_size=size)
        black_fill = -torch.tensor(CIFAR_MEAN) / torch.tensor(CIFAR_STD)
    validation, rest = split_indices(len(train))
    evaluation: Dataset = test
    keep = rest if eval_split == "validation" else None
    if eval_split == "validation":
        evaluation = _take(train, validation)
    if train_subset is not None:
        keep = _subset(rest, train_subset, key)
    if keep is not None:
        train = _take(train, torch.sort(keep).values)
    _check_not_empty(key, train, evaluation, eval_split)
    if augment and black_fill is not None:
        return Augmented(train, black_fill), evaluation
    return train, evaluation


def _subset(rest: torch.Tensor, train_subset: int, name: str) -> torch.Tensor:
    """The first `train_subset` of the training indices outside the validation split, or one line if too many."""
    _check_size("train_subset", train_subset)
    if train_subset > len(rest):
        raise TTPlanError(f"train_subset={train_subset}: only {len(rest)} training images lie outside the "
                          f"validation split of {name}; give at most {len(rest)} (or none for all)")
    return rest[:train_subset]


def _user_splits(target: str, train_subset: int | None, eval_split: str) -> tuple[Dataset, Dataset]:
    """A user's data set split as the built-ins are: its own validation set if it has one, else the fixed split."""
    train, test, validation = load_user_dataset(target)
    evaluation = test
    rest = torch.arange(len(train))
    if validation is None:
        held_out, rest = split_indices(len(train))
        if eval_split == "validation":
            evaluation = _take(train, held_out)
    elif eval_split == "validation":
        evaluation = validation
    if train_subset is not None:
        rest = _subset(rest, train_subset, target)
    if eval_split == "validation" or train_subset is not None:
        train = _take(train, torch.sort(rest).values)
    _check_not_empty(target, train, evaluation, eval_split)
    return train, evaluation


__all__ = ["default_image_size", "load_cifar10_folder", "load_dataset", "load_digits_dataset", "load_fashion_mnist",
           "load_user_dataset", "split_indices"]
