"""The data sets `ttplan train` knows by name, and their canonical spelling; torch-free, so `--help` stays fast."""

from __future__ import annotations

from ttplan.errors import TTPlanError

DATASETS = ("digits", "fashion-mnist", "cifar10")
EVAL_SPLITS = ("test", "validation")
#: where Debian's `dataset-fashion-mnist` package puts the idx files
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def is_user_dataset(name: str) -> bool:
    """Whether `name` is a user's `module:callable` rather than a built-in data set's name."""
    return ":" in str(name)


def dataset_key(name: str) -> str:
    """The canonical dataset name (`fashion_mnist`, `FashionMNIST`, `cifar-10` ... accepted), a user's
    `module:callable` as given, or a one-line error."""
    if is_user_dataset(name):
        module, _, attr = str(name).partition(":")
        if not module or not attr:
            raise TTPlanError(f"dataset={name!r}: expected 'module:callable', e.g. 'mydata:load'")
        return str(name)
    key = str(name).lower().replace("-", "").replace("_", "")
    canonical = {d.replace("-", ""): d for d in DATASETS}
    if key not in canonical:
        raise TTPlanError(f"dataset={name!r}: expected one of {', '.join(DATASETS)}, or module:callable "
                          "returning (train, test) datasets")
    return canonical[key]


__all__ = ["DATASETS", "EVAL_SPLITS", "FASHION_DIR", "dataset_key", "is_user_dataset"]
