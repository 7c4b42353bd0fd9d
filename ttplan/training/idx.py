"""The idx file format of MNIST and Fashion-MNIST (gzip-compressed or plain), read into numpy arrays.

An idx file is a 4-byte magic number — two zero bytes, a type code (0x08: unsigned bytes) and the number of
dimensions — then one big-endian int32 per dimension, then the values in row-major order. Labels are 1-d
(magic 0x00000801 = 2049), images 3-d (0x00000803 = 2051).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ttplan.errors import TTPlanError
from ttplan.files import atomic_write_bytes

UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"
LABELS_MAGIC = 0x00000801
IMAGES_MAGIC = 0x00000803


def _raw_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TTPlanError(f"idx file {str(path)!r} does not exist") from None
    except OSError as err:
        raise TTPlanError(f"idx file {str(path)!r} cannot be read ({err.strerror or err})") from None
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        text = " ".join(str(err).split()) or type(err).__name__
        raise TTPlanError(f"idx file {str(path)!r} is a damaged or truncated gzip file ({text})") from None


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """An idx file of unsigned bytes as a uint8 array of its stored shape; `ndim` (1 labels, 3 images) is checked.

    Every inconsistency is a one-line TTPlanError naming the file: wrong magic, wrong type, a size that does
    not match the header (truncated or with trailing bytes).
    """
    path = Path(path).expanduser()
    data = _raw_bytes(path)
    if len(data) < 4:
        raise TTPlanError(f"idx file {str(path)!r} has {len(data)} bytes: too short for the 4-byte magic number")
    zero, kind, dims = struct.unpack(">HBB", data[:4])
    magic = int.from_bytes(data[:4], "big")
    wanted = "" if ndim is None else f" ({'0x%08x' % (0x800 + ndim)} for a {ndim}-d ubyte file)"
    if zero != 0 or kind != UBYTE or dims == 0 or (ndim is not None and dims != ndim):
        raise TTPlanError(f"idx file {str(path)!r} has magic number 0x{magic:08x}: expected 0x00000801 (labels) "
                          f"or 0x00000803 (images){wanted}")
    header = 4 + 4 * dims
    if len(data) < header:
        raise TTPlanError(f"idx file {str(path)!r} is truncated inside its header ({len(data)} of {header} bytes)")
    shape = struct.unpack(f">{dims}i", data[4:header])
    if any(n < 0 for n in shape):
        raise TTPlanError(f"idx file {str(path)!r} has a negative size in its header: {list(shape)}")
    count = int(np.prod(shape, dtype=np.int64))
    body = len(data) - header
    if body != count:
        what = "truncated" if body < count else "longer than its header says"
        raise TTPlanError(f"idx file {str(path)!r} is {what}: header {list(shape)} needs {count} bytes of "
                          f"values, found {body}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def write_idx(array: np.ndarray, path: str | Path, compress: bool | None = None) -> Path:
    """Write a uint8 array as an idx file (gzip when `compress`, default: when the name ends in .gz)."""
    a = np.ascontiguousarray(array)
    if a.dtype != np.uint8 or a.ndim == 0:
        raise TTPlanError(f"write_idx: array of dtype {a.dtype} and {a.ndim} dims; expected uint8 with >= 1 dim")
    path = Path(path)
    data = struct.pack(">HBB", 0, UBYTE, a.ndim) + struct.pack(f">{a.ndim}i", *a.shape) + a.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)
    return path


__all__ = ["IMAGES_MAGIC", "LABELS_MAGIC", "read_idx", "write_idx"]
