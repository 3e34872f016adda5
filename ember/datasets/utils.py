"""Helpers for built-in datasets: the IDX file reader, checksummed atomic downloads, `DatasetError`.

IDX (LeCun's MNIST format): two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, each dimension as a big-endian
uint32, then the values big-endian in row-major order. Files may be gzip-compressed (detected by
content, not by name).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib

import numpy as np

from .._core.errors import EmberError
from .._core.files import atomic_write

__all__ = ["DatasetError", "read_idx", "download_file", "file_digest"]

_IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class DatasetError(EmberError, RuntimeError):
    """A dataset's files are missing, damaged or fail their checksum."""


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as e:
            raise DatasetError(f"{path}: the gzip stream is damaged or truncated ({e}); delete the "
                               "file and fetch it again") from None
    return data


def read_idx(path, expect_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array in native byte order."""
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DatasetError(f"{path}: {len(data)} bytes is too short for an IDX file (truncated?)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DatasetError(f"{path}: bad IDX magic number 0x{data[:4].hex()} (expected 0x0000 then a "
                           "type byte 08/09/0B/0C/0D/0E): not an IDX file")
    dtype, ndim = _IDX_TYPES[data[2]], data[3]
    if expect_ndim is not None and ndim != expect_ndim:
        raise DatasetError(f"{path}: IDX file has {ndim} dimensions, expected {expect_ndim} "
                           "(images and labels swapped?)")
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DatasetError(f"{path}: truncated IDX header ({len(data)} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    need = head + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) < need:
        raise DatasetError(f"{path}: truncated IDX file: shape {shape} needs {need} bytes, the file "
                           f"holds {len(data)}; delete it and fetch it again")
    if len(data) > need:
        raise DatasetError(f"{path}: {len(data) - need} unexpected bytes after the IDX data of shape "
                           f"{shape}: the file is damaged")
    arr = np.frombuffer(data, dtype=dtype, offset=head).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def file_digest(path, algorithm: str = "md5") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(url: str, dest, *, md5: str | None = None, check=None, timeout: float = 60.0,
                  progress: bool = True) -> str:
    """Download `url` to `dest` atomically: into a temp file beside it, checked, then renamed.

    The file is accepted if its MD5 equals `md5`, or if ``check(temp_path)`` returns True (for
    mirrors that recompress the same content). On a mismatch the temp file is deleted and
    `DatasetError` is raised; `dest` is never left half-written.
    """
    dest = os.fspath(dest)
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)

    def fetch(f):
        try:
            resp = urllib.request.urlopen(url, timeout=timeout)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise DatasetError(f"cannot download {url}: {e}") from None
        h = hashlib.md5()
        with resp:
            total = resp.headers.get("Content-Length")
            bar = None
            if progress:
                from tqdm import tqdm
                bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                           desc=os.path.basename(dest), disable=None, leave=False)
            try:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    h.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            except (OSError, urllib.error.URLError) as e:
                raise DatasetError(f"download of {url} failed midway: {e}") from None
            finally:
                if bar is not None:
                    bar.close()
        f.flush()
        got = h.hexdigest()
        ok = (md5 is None and check is None) or got == md5 or (check is not None and check(f.name))
        if not ok:
            raise DatasetError(f"checksum mismatch for {url}: md5 {got}, expected {md5}; the download "
                               "is corrupted or the mirror serves another file (nothing was kept)")

    atomic_write(dest, fetch)
    return dest
