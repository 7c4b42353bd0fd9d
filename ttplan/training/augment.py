"""Standard training augmentation with torch ops only: a random crop of the image padded by 4 pixels, then a
random horizontal flip. Applied per sample when the training set is read; the test set is never wrapped.

The random draws come from torch's global generator, which the training run seeds and saves in every
checkpoint (`ttplan.training.run.rng_state`), so a run is deterministic given its seed and resumes exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from ttplan.errors import TTPlanError

PAD = 4


def crop_flip(image: torch.Tensor, dy: int, dx: int, flip: bool, fill: torch.Tensor, pad: int = PAD) -> torch.Tensor:
    """The `[C, H, W]` window at offset `(dy, dx)` of `image` padded by `pad` pixels of `fill` (per channel),
    mirrored left-right when `flip`. `dy = dx = pad` is the image itself."""
    c, h, w = image.shape
    if not (0 <= dy <= 2 * pad and 0 <= dx <= 2 * pad):
        raise TTPlanError(f"crop offset ({dy}, {dx}): expected 0..{2 * pad} with pad={pad}")
    out = fill.to(image.dtype).view(c, 1, 1).expand(c, h, w).clone()
    sy, sx = dy - pad, dx - pad  # the window's top-left corner in image coordinates
    y0, y1 = max(0, sy), min(h, h + sy)
    x0, x1 = max(0, sx), min(w, w + sx)
    if y1 > y0 and x1 > x0:
        out[:, y0 - sy : y1 - sy, x0 - sx : x1 - sx] = image[:, y0:y1, x0:x1]
    return out.flip(-1) if flip else out


class Augmented(Dataset):
    """A `(image, label)` dataset read through `crop_flip` with a fresh random offset and flip for every read.

    `fill` is the per-channel value of the padding: a black pixel after normalisation, `-mean / std`.
    """

    def __init__(self, base: Dataset, fill: Sequence[float] | torch.Tensor, pad: int = PAD, flip: bool = True) -> None:
        if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
            raise TTPlanError(f"pad={pad!r}: expected an int >= 0")
        self.base = base
        self.fill = torch.as_tensor(fill, dtype=torch.float32).reshape(-1)
        self.pad = pad
        self.flip = flip

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.base[index]
        dy, dx, flip = torch.randint(0, 2 * self.pad + 1, (2,)).tolist() + [int(torch.randint(0, 2, ()))]
        return crop_flip(image, dy, dx, bool(flip) and self.flip, self.fill, self.pad), label


__all__ = ["PAD", "Augmented", "crop_flip"]
