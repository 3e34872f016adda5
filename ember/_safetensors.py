"""Reading safetensors files, validating everything before it is used (behind `ember.serialization`).

Order of checks, so that a bad file costs little and never hangs or crashes:

1. the path must be a regular file (`os.stat`; opened with ``O_NONBLOCK``, checked again with
   `os.fstat`): a FIFO, directory or device is refused without a blocking read;
2. the 8-byte header length must fit the file's real size (and the 100 MB limit);
3. the header is read and parsed alone: UTF-8 JSON object, no NaN/Infinity literals, no lone
   surrogates, at most 128 levels of nesting (the `safetensors` library's serde limit);
4. every entry is checked: dtype a known name, shape a list of at most 64 non-negative ints that
   numpy can represent (also when a 0 makes it empty), data_offsets two ints in order spanning
   exactly the shape's bytes, ``__metadata__`` null or a str -> str map; unknown fields are ignored;
5. the tensors must tile the data section without gaps or overlaps, and the file must end exactly
   where the last tensor does (both as the `safetensors` library enforces);
6. only then is the data section read (or memory-mapped), and a BOOL tensor's bytes are checked to
   be 0 or 1 when its array is made.
"""
from __future__ import annotations

import io
import json
import math
import mmap as _mmap
import os
import stat
import sys

import numpy as np

from ._core import dtypes as dt
from ._core.errors import EmberError


class CheckpointError(EmberError, RuntimeError):
    """A checkpoint or safetensors file cannot be read (or written) as asked."""

    __module__ = "ember.serialization"  # its public home


#: safetensors dtype names <-> ember dtypes (U32 is ember's internal RNG-bits dtype)
ST_TO_DTYPE = {"F64": dt.float64, "F32": dt.float32, "F16": dt.float16, "BF16": dt.bfloat16,
               "I64": dt.int64, "I32": dt.int32, "I16": dt.int16, "I8": dt.int8, "U8": dt.uint8,
               "BOOL": dt.bool_, "U32": dt.uint32}
DTYPE_TO_ST = {v: k for k, v in ST_TO_DTYPE.items()}

MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit
MAX_HEADER_NESTING = 128  # serde_json's recursion limit, which the safetensors library inherits
MAX_RANK = 64  # numpy's
_MAX_NBYTES = 2 ** 63 - 1  # numpy's limit on size * itemsize (checked with zero dims counted as 1)


def _short(x, n: int = 80) -> str:
    r = repr(x)
    return r if len(r) <= n else r[:n] + "..."


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str, max_nesting: int):
    """`json.loads` that refuses NaN/Infinity, lone surrogates and nesting deeper than `max_nesting`
    (raising ValueError; no RecursionError escapes)."""
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(f"nesting deeper than {max_nesting} levels") from None
    check_json(obj, max_nesting)
    return obj


def check_json(obj, max_nesting: int) -> None:
    """Raise ValueError if JSON data `obj` nests deeper than `max_nesting` or holds a string that is
    not valid UTF-8 (a lone surrogate); iterative, so any depth is safe to check."""
    stack = [(obj, 1)]
    while stack:
        x, depth = stack.pop()
        if isinstance(x, str):
            if not x.isascii():
                try:
                    x.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError(f"a string that is not valid UTF-8 (lone surrogate): {_short(x)}") \
                        from None
        elif isinstance(x, (list, tuple, dict)):
            if depth > max_nesting:
                raise ValueError(f"nesting deeper than {max_nesting} levels")
            if isinstance(x, dict):
                stack.extend((k, depth) for k in x)
                x = x.values()
            stack.extend((v, depth + 1) for v in x)


_MAGIC_HINTS = [
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"PK\x03\x04", "a zip archive (a PyTorch .pt/.pth file? export it with safetensors instead)"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\x93NUMPY", "a numpy .npy file"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x80\x02", "a pickle (ember never loads pickles: they can run arbitrary code)"),
    (b"\x80\x03", "a pickle (ember never loads pickles: they can run arbitrary code)"),
    (b"\x80\x04", "a pickle (ember never loads pickles: they can run arbitrary code)"),
    (b"\x80\x05", "a pickle (ember never loads pickles: they can run arbitrary code)"),
    (b"{", "a JSON file (the checkpoint's .json sidecar? load the .safetensors file itself)"),
]


def _foreign(head: bytes) -> str:
    for magic, what in _MAGIC_HINTS:
        if head.startswith(magic):
            return f"; it looks like {what}"
    return ""


class Raw:
    """A safetensors file whose header has been validated: entries, metadata and the data section."""

    def __init__(self, name: str, header: dict, data_start: int):
        self.name = name
        self.header = dict(header)  # with "__metadata__", as in the file
        self.data_start = data_start
        self.data = None  # the data section (uint8), set by `read` once the header checked out
        header = dict(header)
        meta = header.pop("__metadata__", None)
        if meta is None:
            meta = {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise self.error("the header's __metadata__ must map strings to strings")
        self.metadata = meta
        entries = sorted(self._entry(k, e) for k, e in header.items())
        end = 0
        for b, e, k, _, _ in entries:
            if b != end:
                raise self.error(f"tensor {_short(k)}: data_offsets start at {b}, expected {end} (tensors "
                                 "must tile the data section without gaps or overlaps)")
            end = e
        self.data_len = end
        self.entries = {k: (b, d, shape) for b, e, k, d, shape in entries}

    def error(self, msg: str) -> CheckpointError:
        """A CheckpointError naming this file."""
        return CheckpointError(f"{self.name}: {msg}")

    def _entry(self, k: str, e) -> tuple:
        if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= e.keys():
            raise self.error(f"tensor {_short(k)}: a header entry needs dtype, shape and data_offsets, "
                             f"got {_short(e)}")
        st, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if not isinstance(st, str) or st not in ST_TO_DTYPE:
            raise self.error(f"tensor {_short(k)} has dtype {_short(st)}, which ember does not support "
                             f"(it reads {', '.join(ST_TO_DTYPE)})")
        d = ST_TO_DTYPE[st]
        if not isinstance(shape, list) or not all(type(s) is int and 0 <= s <= _MAX_NBYTES for s in shape):
            raise self.error(f"tensor {_short(k)}: bad shape {_short(shape)} (a list of non-negative ints)")
        if len(shape) > MAX_RANK:
            raise self.error(f"tensor {_short(k)}: shape has {len(shape)} dimensions, more than {MAX_RANK}")
        if math.prod(s or 1 for s in shape) * d.itemsize > _MAX_NBYTES:
            raise self.error(f"tensor {_short(k)}: shape {_short(shape)} is too large for an array")
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)
                and 0 <= offs[0] <= offs[1]):
            raise self.error(f"tensor {_short(k)}: bad data_offsets {_short(offs)}")
        nbytes = math.prod(shape) * d.itemsize
        if offs[1] - offs[0] != nbytes:
            raise self.error(f"tensor {_short(k)}: shape {tuple(shape)} of {st} needs {nbytes} bytes but "
                             f"data_offsets {offs} span {offs[1] - offs[0]}")
        return offs[0], offs[1], k, d, tuple(shape)

    def array(self, key: str) -> np.ndarray:
        """The tensor `key` as a numpy array viewing the data section (copied only if misaligned)."""
        b, d, shape = self.entries[key]
        raw = self.data[b:b + math.prod(shape) * d.itemsize]
        if d is dt.bool_ and raw.size and raw.max() > 1:
            i = int(np.argmax(raw > 1))
            raise self.error(f"tensor {_short(key)}: BOOL data holds byte {int(raw[i])} at element {i} "
                             "(only 0 and 1 are booleans): the file is corrupted")
        a = raw.view(d.np).reshape(shape)
        if sys.byteorder == "big":  # the file is little-endian
            a = a.byteswap()
        elif not a.flags.aligned:  # a foreign file without alignment padding
            a = a.copy()
        return a


def _read_exact(f, n: int, name: str) -> bytes:
    parts, got = [], 0
    while got < n:
        b = f.read(n - got)
        if not isinstance(b, (bytes, bytearray)):
            raise CheckpointError(f"{name}: reading gave {type(b).__name__}, not bytes (open the file in "
                                  "binary mode)")
        if not b:
            raise CheckpointError(f"{name}: read {got} of {n} bytes (the file changed while reading)")
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _open(path) -> tuple:
    """(name, binary file, size, fd or None) for a path (regular files only) or a file object."""
    if hasattr(path, "read"):
        name = str(getattr(path, "name", "<file object>"))
        try:
            pos = path.tell()
            size = path.seek(0, 2) - pos
            path.seek(pos)
        except (AttributeError, OSError, ValueError):  # not seekable: take what it holds
            data = path.read()
            if not isinstance(data, (bytes, bytearray)):
                raise CheckpointError(f"{name}: reading gave {type(data).__name__}, not bytes") from None
            return name, io.BytesIO(data), len(data), None
        return name, path, size, None
    name = os.fspath(path)
    try:
        _check_regular(name, os.stat(name).st_mode)
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"no such checkpoint file: {name}") from None
    except OSError as e:
        raise CheckpointError(f"{name}: cannot open the file ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        _check_regular(name, st.st_mode)  # it may have been swapped since the stat
        return name, os.fdopen(fd, "rb", buffering=0), st.st_size, fd
    except BaseException:
        os.close(fd)
        raise


def _check_regular(name, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    what = ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    raise CheckpointError(f"{name} is {what}, not a checkpoint file")


def read(path, mmap: bool = False, header_only: bool = False) -> Raw:
    """Validate the header of a safetensors path or binary file object, then read (or, with `mmap`,
    memory-map copy-on-write) the data section it describes; any problem raises CheckpointError."""
    name, f, size, fd = _open(path)
    try:
        raw = _read_header(name, f, size)
        if not header_only:
            raw.data = _read_data(raw, f, fd, mmap)
        return raw
    except OSError as e:
        raise CheckpointError(f"{name}: reading failed ({e})") from None
    finally:
        if fd is not None:
            f.close()


def _read_header(name: str, f, size: int) -> Raw:
    def bad(msg):
        return CheckpointError(f"{name}: {msg}")

    if size == 0:
        raise bad("the file is empty (0 bytes), not a safetensors file")
    head = _read_exact(f, min(size, 8), name)
    if size < 8:
        raise bad(f"the file has only {size} bytes, too short for a safetensors header{_foreign(head)}")
    n = int.from_bytes(head, "little")
    if n > MAX_HEADER or n + 8 > size:
        hint = _foreign(head)
        if hint:
            raise bad(f"not a safetensors file{hint}")
        if n > MAX_HEADER:
            raise bad(f"the header length field says {n} bytes, more than the {MAX_HEADER}-byte "
                      "limit: this is not a safetensors file or its first bytes are corrupted")
        raise bad(f"the header length field says {n} bytes but the file has only {size - 8} "
                  "bytes after it: the file is truncated or not a safetensors file")
    try:
        header = parse_json(_read_exact(f, n, name).decode("utf-8"), MAX_HEADER_NESTING)
    except ValueError as e:  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
        raise bad(f"the header is not valid UTF-8 JSON ({e.__class__.__name__}: {str(e)[:200]}): "
                  f"the file is corrupted or not a safetensors file{_foreign(head)}") from None
    if not isinstance(header, dict):
        raise bad(f"the header is JSON {type(header).__name__}, not an object: not a safetensors file")
    raw = Raw(name, header, 8 + n)
    have = size - raw.data_start
    if raw.data_len > have:
        raise bad(f"the header describes {raw.data_len} bytes of tensor data but the file holds only "
                  f"{have}: the file is truncated")
    if raw.data_len < have:
        raise bad(f"the file has {have - raw.data_len} bytes after the last tensor: it is corrupted or "
                  "was not written as safetensors")
    return raw


def _read_data(raw: Raw, f, fd, mmap: bool) -> np.ndarray:
    n = raw.data_len
    if mmap and fd is not None and n:
        try:  # copy-on-write: writable arrays, the file stays untouched
            m = _mmap.mmap(fd, raw.data_start + n, access=_mmap.ACCESS_COPY)
            return np.frombuffer(m, np.uint8, count=n, offset=raw.data_start)
        except (OSError, ValueError):  # a file system without mmap: read it instead
            pass
    if hasattr(f, "readinto"):
        buf = np.empty(n, np.uint8)
        view, got = memoryview(buf), 0
        while got < n:
            k = f.readinto(view[got:])
            if not k:
                raise raw.error(f"read {got} of {n} data bytes (the file changed while reading)")
            got += k
        return buf
    return np.frombuffer(bytearray(_read_exact(f, n, raw.name)), np.uint8)
