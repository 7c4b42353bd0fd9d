"""A user's own tiny CNN (with BatchNorm) and data set as `module:callable` sources, written to a test's folder.

`write_user_code(folder)` writes both under names unique to the folder (a module imported by one test is not the
one another test wrote) and returns them; the caller chdirs there (`ttplan` imports `module:callable` from the
current folder) and drops the modules from `sys.modules` afterwards (`forget`).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

#: input C,H,W of the net, as the command line spells it
INPUT_SIZE = "1,12,12"

NET = """
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )
"""

DATA = """
import torch
from torch.utils.data import Dataset


class Blobs(Dataset):
    \"\"\"Four classes of 1x12x12 images: noise around the class index.\"\"\"

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 4
        self.x = torch.randn(n, 1, 12, 12, generator=g) * 0.5 + self.y.view(-1, 1, 1, 1).float()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def load():
    return Blobs(48, 0), Blobs(16, 1)
"""

#: a layer config of the net: its two inner convs as hodec, its linear layer as TT-matrix (ttm)
CONFIG = """{
  "3": {"format": "hodec", "rank": 4},
  "6": {"format": "hodec", "rank": 4},
  "11": {"format": "ttm", "in_modes": [4, 4], "out_modes": [2, 2], "rank": 2}
}
"""


def write_user_code(folder: Path) -> tuple[str, str]:
    """Write the net and the data set into `folder`; returns their module names (`NET:build`, `DATA:load`)."""
    tag = abs(hash(str(folder))) % 10**8
    net, data = f"usernet_{tag}", f"userdata_{tag}"
    (folder / f"{net}.py").write_text(textwrap.dedent(NET))
    (folder / f"{data}.py").write_text(textwrap.dedent(DATA))
    return net, data


def forget(*modules: str) -> None:
    """Drop imported modules from `sys.modules`."""
    for name in modules:
        sys.modules.pop(name, None)
