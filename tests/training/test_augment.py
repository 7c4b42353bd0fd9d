"""Random crop (4-pixel padding) + horizontal flip: exact windows, per-channel fill, determinism, eval untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ttplan.errors import TTPlanError
from ttplan.training.augment import Augmented, crop_flip


def test_every_offset_is_a_window_of_the_padded_image():
    """Checked against F.pad with a constant per channel, for every offset and both flips."""
    x = torch.randn(2, 5, 6)
    fill = torch.tensor([-1.5, 2.0])
    padded = torch.stack([F.pad(x[c], (4, 4, 4, 4), value=float(fill[c])) for c in range(2)])
    for dy in range(9):
        for dx in range(9):
            for flip in (False, True):
                want = padded[:, dy : dy + 5, dx : dx + 6]
                want = want.flip(-1) if flip else want
                assert torch.equal(crop_flip(x, dy, dx, flip, fill), want), (dy, dx, flip)
    assert torch.equal(crop_flip(x, 4, 4, False, fill), x)
    assert torch.equal(crop_flip(x, 4, 4, True, fill), x.flip(-1))


def test_offset_out_of_range():
    with pytest.raises(TTPlanError, match=r"crop offset \(9, 0\): expected 0..8"):
        crop_flip(torch.zeros(1, 4, 4), 9, 0, False, torch.zeros(1))


def _dataset(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.arange(n))


def test_deterministic_given_the_seed_and_random_across_reads():
    data = Augmented(_dataset(), fill=[0.0])
    torch.manual_seed(5)
    first = torch.stack([data[i][0] for i in range(64)])
    torch.manual_seed(5)
    again = torch.stack([data[i][0] for i in range(64)])
    assert torch.equal(first, again)
    second = torch.stack([data[i][0] for i in range(64)])
    assert not torch.equal(first, second)  # a fresh crop/flip on every read
    assert [int(data[i][1]) for i in range(64)] == list(range(64))  # labels untouched


def test_offsets_and_flips_cover_the_range_evenly():
    """Over many reads of one image, the shift takes all 81 offsets and about half the reads are flipped."""
    image = torch.arange(64.0).reshape(1, 8, 8) + 1  # distinct values; fill 0 marks the padding
    data = Augmented(TensorDataset(image[None], torch.zeros(1)), fill=[0.0])
    keys = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)]
    candidates = torch.stack([crop_flip(image, *key, torch.zeros(1)) for key in keys])  # all distinct
    torch.manual_seed(0)
    seen, flips, n = set(), 0, 3000
    for _ in range(n):
        match = (candidates == data[0][0]).flatten(1).all(1).nonzero().flatten().tolist()
        assert len(match) == 1
        dy, dx, flip = keys[match[0]]
        seen.add((dy, dx))
        flips += flip
    assert len(seen) == 81
    assert abs(flips / n - 0.5) < 0.05


def test_flip_off_and_no_padding():
    data = Augmented(_dataset(8), fill=[0.0], pad=0, flip=False)
    assert all(torch.equal(data[i][0], data.base[i][0]) for i in range(8))
    with pytest.raises(TTPlanError, match="pad=-1"):
        Augmented(_dataset(8), fill=[0.0], pad=-1)
