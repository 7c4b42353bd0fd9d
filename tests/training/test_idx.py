"""The idx reader on small files the tests write: round trips (gzip and plain) and every kind of bad file."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from ttplan.errors import TTPlanError
from ttplan.training.idx import read_idx, write_idx


def _header(ndim: int, shape: tuple[int, ...], kind: int = 0x08) -> bytes:
    return struct.pack(">HBB", 0, kind, ndim) + struct.pack(f">{len(shape)}i", *shape)


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_round_trip_plain_and_gzip(tmp_path, name):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = write_idx(images, tmp_path / name)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    got = read_idx(path, ndim=3)
    assert got.dtype == np.uint8 and got.shape == (5, 7, 3) and np.array_equal(got, images)


def test_header_layout_by_hand(tmp_path):
    """A file built byte by byte (magic 0x00000801, big-endian count) reads back as written."""
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 4, 3, 1, 4, 1]))
    assert read_idx(path, ndim=1).tolist() == [3, 1, 4, 1]
    images = tmp_path / "images"
    images.write_bytes(_header(3, (1, 2, 2)) + bytes([1, 2, 3, 4]))
    assert int.from_bytes(images.read_bytes()[:4], "big") == 0x00000803
    assert read_idx(images).tolist() == [[[1, 2], [3, 4]]]


def test_gzip_detected_by_content_not_name(tmp_path):
    path = tmp_path / "labels-no-suffix"
    path.write_bytes(gzip.compress(_header(1, (2,)) + bytes([7, 9])))
    assert read_idx(path, ndim=1).tolist() == [7, 9]


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\x00\x00\x08", "too short"),
        (b"\x12\x34\x08\x01" + struct.pack(">i", 1) + b"\x00", "magic number 0x12340801"),
        (_header(1, (2,), kind=0x0D) + b"\x00" * 8, "magic number 0x00000d01"),
        (_header(3, (1, 1, 1)) + b"\x00", r"magic number 0x00000803.*0x00000801 for a 1-d"),
        (b"\x00\x00\x08\x01\x00\x00", "truncated inside its header"),
        (_header(1, (5,)) + b"\x00\x01", r"truncated: header \[5\] needs 5 bytes of values, found 2"),
        (_header(1, (2,)) + b"\x00\x01\x02", "longer than its header says"),
        (_header(1, (-3,)), "negative size"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, data, match):
    path = tmp_path / "bad"
    path.write_bytes(data)
    with pytest.raises(TTPlanError, match=match) as info:
        read_idx(path, ndim=1)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_truncated_gzip_and_missing_file(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(_header(1, (100,)) + bytes(100))[:-12])
    with pytest.raises(TTPlanError, match="damaged or truncated gzip"):
        read_idx(path)
    with pytest.raises(TTPlanError, match="does not exist"):
        read_idx(tmp_path / "nothing")


def test_write_idx_rejects_other_dtypes(tmp_path):
    with pytest.raises(TTPlanError, match="dtype float64"):
        write_idx(np.zeros(3), tmp_path / "x")
