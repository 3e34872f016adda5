"""Saving and loading tensors and training state: the safetensors format, atomic writes, no pickle.

Two levels:

- `save_safetensors(tensors, path, metadata)` / `load_safetensors(path)` read and write *flat*
  ``{name: tensor}`` dicts in the safetensors format (implemented here, with numpy only, because the
  `safetensors` package's numpy API has no bfloat16). A PyTorch state dict exported with
  ``safetensors.torch.save_file`` loads through `load_safetensors`, and what ember writes loads with
  ``safetensors.numpy.load_file`` / ``safetensors.torch.load_file``.
- `save(obj, path)` / `load(path)` store a *nested* object: dicts (any JSON-scalar keys, e.g. an
  optimizer's ``{"state": {0: {...}}}``), lists, tuples, tensors, numpy arrays and JSON-able
  Python values (epoch numbers, learning rates, strings).

The checkpoint format (format version 1) is ONE safetensors file, so a write is truly atomic:

- every tensor/array of ``obj`` is a safetensors tensor; its name is the path of keys joined by
  ``.`` (``"state.0.exp_avg"``), so a flat ``{str: tensor}`` state dict keeps its own keys and
  other tools can read the weights;
- ``__metadata__`` holds ``ember.format = "checkpoint"``, ``ember.format_version = "1"``,
  ``ember.structure`` (the object with each tensor replaced by a reference, as JSON) and
  ``ember.sha256`` (sha256 of the canonical JSON of the rest of the header, then the data section:
  checked on load, so any corrupted byte, in a tensor or in the structure, is caught);
- ``path + ".json"`` is a human-readable copy of the structure and checksum written AFTER the data
  file, for people and tools (`verify` compares it with the data file). `load` never reads it: the
  data file alone is the truth, so a crash between the two renames cannot give a mismatched pair.

Bytes layout of a safetensors file: an 8-byte little-endian header length ``n``, ``n`` bytes of
UTF-8 JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``
padded with spaces so the data starts at a multiple of 8, then the little-endian tensor bytes.
ember lists the tensors in the safetensors library's order (decreasing alignment, then name), so
both write byte-identical files and, with the 8-aligned data start, every tensor is naturally
aligned (a memory map gives aligned arrays).

Atomic writes (`ember._core.files`, re-exported here as `atomic_write` and
`remove_stale_temp_files`): the file is written to ``.<name>.tmp-<pid>-<random>`` in the same
directory, flushed and fsync'ed, renamed over the final name with `os.replace` and the directory
fsync'ed. Before each write the temporaries of the same target that a killed writer left behind
are deleted (dead pid, this process's own pid but not being written, or untouched for 15
minutes); a live writer's temp file is never touched.

Reading (`ember._safetensors`) validates before it uses: a path that is not a regular file is
refused without a blocking open, the header is read and checked first (types, ranks, offsets,
nesting depth, exact file size) and only then is the data read or memory-mapped; BOOL bytes must
be 0 or 1. Every problem with a file (empty, truncated, foreign format, bad header, checksum
mismatch, malformed structure) raises `CheckpointError`, naming the file and what is wrong.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from typing import Any

import numpy as np

from . import _safetensors as _st, codec
from ._core import dtypes as dt
from ._core.errors import EmberError
from ._core.files import atomic_write, remove_stale_temp_files
from ._safetensors import DTYPE_TO_ST, ST_TO_DTYPE, CheckpointError, Raw as _Raw

__all__ = ["CheckpointError", "save", "load", "save_safetensors", "load_safetensors", "verify",
           "read_safetensors_metadata", "dumps", "loads", "remove_stale_temp_files", "atomic_write",
           "FORMAT_VERSION"]

#: the checkpoint format version this ember writes (and the newest it reads)
FORMAT_VERSION = 1


# ---------------------------------------------------------------- safetensors: writing
def _as_array(name: str, v) -> np.ndarray:
    from .tensor import Tensor
    if isinstance(v, Tensor):
        arr = v._data
    elif isinstance(v, (np.ndarray, np.generic)):
        arr = np.asarray(v)
    else:
        raise TypeError(f"tensor {name!r}: expected an ember Tensor or numpy array, got {type(v).__name__}")
    if not arr.dtype.isnative:  # e.g. a '>f4' array: native order here, little-endian on write
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype not in dt._BY_NP or dt._BY_NP[arr.dtype] not in DTYPE_TO_ST:
        hint = "; save ember.view_as_real(t) instead" if arr.dtype.kind == "c" else ""
        raise TypeError(f"tensor {name!r}: dtype {arr.dtype} cannot be saved (ember saves "
                        f"{', '.join(d.name for d in ST_TO_DTYPE.values())}){hint}")
    return arr if arr.flags.c_contiguous else arr.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)


# the safetensors library's dtype order (its Rust enum, increasing alignment); files list tensors
# in decreasing order of it, then by name, which ember copies so both write identical bytes
_ST_RANK = {n: i for i, n in enumerate(["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32",
                                        "F32", "F64", "I64", "U64"])}


def _order(arrays: dict) -> list:
    """(name, array) pairs in file order: largest alignment first, so that with an 8-aligned data
    start every tensor is naturally aligned, then by name (the safetensors library's order)."""
    def key(k):
        return (-_ST_RANK[DTYPE_TO_ST[dt._BY_NP[arrays[k].dtype]]], k)
    return [(k, arrays[k]) for k in sorted(arrays, key=key)]


def _header_dict(items: list, metadata: dict | None) -> dict:
    header: dict = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"safetensors metadata must map str to str, got {k!r}: {type(v).__name__}")
        header["__metadata__"] = dict(metadata)
    off = 0
    for k, a in items:
        header[k] = {"dtype": DTYPE_TO_ST[dt._BY_NP[a.dtype]], "shape": list(a.shape),
                     "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    return header


def _encode_header(header: dict) -> bytes:
    """The JSON header, padded with spaces so the data starts at a multiple of 8."""
    hb = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hb + b" " * (-(8 + len(hb)) % 8)


def _header(items: list, metadata: dict | None) -> bytes:
    return _encode_header(_header_dict(items, metadata))


_SUM_KEY = "ember.sha256"


def _canonical(header: dict) -> bytes:
    """The header without its checksum entry, as canonical JSON (what the checksum covers)."""
    h = dict(header)
    meta = dict(h.get("__metadata__") or {})
    meta.pop(_SUM_KEY, None)
    h["__metadata__"] = meta
    return json.dumps(h, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _bytes_of(a: np.ndarray) -> memoryview:
    """The little-endian bytes of a native-order contiguous array."""
    if sys.byteorder == "big" and a.dtype.itemsize > 1:
        a = a.byteswap()
    return memoryview(a.reshape(-1).view(np.uint8))


def _write_st(f, hb: bytes, items) -> None:
    f.write(len(hb).to_bytes(8, "little"))
    f.write(hb)
    for _, a in items:
        if a.nbytes:
            f.write(_bytes_of(a))


def _checksum(header: dict, items) -> str:
    h = hashlib.sha256(_canonical(header))
    h.update(b"\0")
    for _, a in items:
        if a.nbytes:
            h.update(_bytes_of(a))
    return h.hexdigest()


def save_safetensors(tensors: dict, path, metadata: dict | None = None) -> None:
    """Write a flat ``{name: Tensor or ndarray}`` dict to `path` in the safetensors format
    (atomically when `path` is a path; a binary file object is written in place)."""
    if not isinstance(tensors, dict):
        raise TypeError(f"save_safetensors takes a dict of tensors, got {type(tensors).__name__}")
    arrays = {}
    for k, v in tensors.items():
        if not isinstance(k, str):
            raise TypeError(f"safetensors names are strings, got {k!r}")
        if k == "__metadata__":
            raise ValueError("'__metadata__' is reserved in safetensors and cannot name a tensor")
        arrays[k] = _as_array(k, v)
    items = _order(arrays)
    hb = _header(items, metadata)
    if hasattr(path, "write"):
        _write_st(path, hb, items)
    else:
        atomic_write(path, lambda f: _write_st(f, hb, items))


# ---------------------------------------------------------------- safetensors: reading
def _read(path, mmap: bool = False, header_only: bool = False) -> _Raw:
    """Validate the header of `path`, then read or memory-map the data (see `ember._safetensors`)."""
    return _st.read(path, mmap=mmap, header_only=header_only)


def _file_checksum(raw: _Raw) -> str:
    """What `_checksum` gives for this file's header and data."""
    h = hashlib.sha256(_canonical(raw.header))
    h.update(b"\0")
    h.update(memoryview(raw.data))
    return h.hexdigest()


def _check_map_location(map_location) -> None:
    if map_location is None or callable(map_location) or isinstance(map_location, dict):
        return
    from .backend import as_device
    as_device(map_location)  # only the CPU exists so far: validates and raises for others


def load_safetensors(path, *, mmap: bool = False, map_location=None) -> dict:
    """Read a safetensors file into a ``{name: Tensor}`` dict (in the file's tensor order).

    The tensors share one buffer read from the file (or, with ``mmap=True``, a copy-on-write memory
    map of it: zero-copy, pages are read on first touch). Any problem raises `CheckpointError`.
    """
    from .tensor import from_numpy
    _check_map_location(map_location)
    raw = _read(path, mmap)
    return {k: from_numpy(raw.array(k)) for k in raw.entries}


def read_safetensors_metadata(path) -> dict:
    """The ``__metadata__`` dict of a safetensors file (reads and validates only the header)."""
    return dict(_read(path, header_only=True).metadata)


# ---------------------------------------------------------------- nested objects
#: how deep a checkpoint's structure JSON may nest (save refuses deeper objects, load deeper files)
MAX_NESTING = codec.MAX_DEPTH


def _encode(obj):
    """(structure root, {name: array}) of `obj`, by the shared codec (`ember.codec`)."""
    try:
        root, arrays = codec.encode(obj, named=True, reserved=("__metadata__",), max_depth=MAX_NESTING)
    except codec.CodecError as e:
        raise ValueError(f"ember.save cannot store this object: {e}") from None
    except TypeError as e:
        raise TypeError(f"ember.save {e}") from None
    return root, {k: _as_array(k, a) for k, a in arrays.items()}


def _sidecar_text(path: str, hb: bytes, items, structure, sha: str) -> str:
    head = {
        "note": "human-readable copy of the checkpoint's structure; ember.load reads only the data file",
        "format": "ember.checkpoint", "format_version": FORMAT_VERSION,
        "data_file": os.path.basename(path), "sha256": sha, "header_bytes": len(hb),
        "file_bytes": 8 + len(hb) + sum(a.nbytes for _, a in items),
    }
    lines = [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
    tens = [f"  {json.dumps(k, ensure_ascii=False)}: "
            f'{{"dtype": "{DTYPE_TO_ST[dt._BY_NP[a.dtype]]}", "shape": {list(a.shape)}}}' for k, a in items]
    lines.append(' "tensors": {' + ("\n" + ",\n".join(tens) + "\n }," if tens else "},"))
    lines.append(' "structure": ' + json.dumps(structure, indent=1, ensure_ascii=False).replace("\n", "\n "))
    return "{\n" + "\n".join(lines) + "\n}\n"


def save(obj: Any, path, *, sidecar: bool = True, metadata: dict | None = None) -> None:
    """Save a (nested) object of tensors and JSON-able values to `path` atomically (no pickle).

    `obj` is typically a state dict, an optimizer state dict, or a dict of both with an epoch
    number and RNG state. The file is a safetensors file (see the module docstring); with
    `sidecar` a readable ``path + ".json"`` is written after it. `metadata` adds str->str entries to
    the safetensors ``__metadata__``. `path` may also be a binary file object (written in place).
    """
    root, arrays = _encode(obj)
    structure = {"format": "ember.checkpoint", "version": FORMAT_VERSION, "root": root}
    try:  # never write what `load` would refuse
        _st.check_json(structure, MAX_NESTING)
    except ValueError as err:
        raise ValueError(f"ember.save cannot store this object: {err}") from None
    user_meta = dict(metadata or {})
    for k in user_meta:
        if k.startswith("ember."):
            raise ValueError(f"metadata key {k!r}: the 'ember.' prefix is reserved")
    items = _order(arrays)
    user_meta.update({"ember.format": "checkpoint", "ember.format_version": str(FORMAT_VERSION),
                      "ember.structure": json.dumps(structure, separators=(",", ":"), ensure_ascii=False)})
    header = _header_dict(items, user_meta)
    sha = _checksum(header, items)
    header["__metadata__"][_SUM_KEY] = sha
    hb = _encode_header(header)
    if hasattr(path, "write"):
        _write_st(path, hb, items)
        return
    path = os.fspath(path)
    atomic_write(path, lambda f: _write_st(f, hb, items))
    if sidecar:
        text = _sidecar_text(path, hb, items, structure, sha)
        atomic_write(path + ".json", lambda f: f.write(text.encode("utf-8")))


def load(path, map_location=None, *, mmap: bool = False, verify: bool = True) -> Any:
    """Load what `save` wrote; tensors come back as ember Tensors, arrays as numpy arrays.

    A plain safetensors file (no ember structure) loads as a flat ``{name: Tensor}`` dict.
    `map_location` is accepted for PyTorch compatibility (only the CPU exists). With `mmap` the
    tensors view a copy-on-write memory map of the file. With `verify` (default) the sha256 of
    header and data is checked against the one recorded in the header, before the structure is
    interpreted. Problems raise `CheckpointError`.
    """
    _check_map_location(map_location)
    raw = _read(path, mmap)
    meta = raw.metadata
    if not any(k.startswith("ember.") for k in meta):  # a plain safetensors file
        from .tensor import from_numpy
        return {k: from_numpy(raw.array(k)) for k in raw.entries}

    def fail(msg):
        return CheckpointError(f"{raw.name}: {msg}")

    if verify:  # first: a damaged file must not be interpreted at all
        want = meta.get(_SUM_KEY)
        if want is None:
            raise fail(f"the header has no {_SUM_KEY} checksum (damaged, or not written by ember.save)")
        got = _file_checksum(raw)
        if got != want:
            raise fail(f"checksum mismatch (sha256 of header and data is {got[:16]}..., the header "
                       f"records {want[:16]}...): the file is corrupted")
    if meta.get("ember.format") != "checkpoint":
        raise fail(f"unknown ember.format {meta.get('ember.format')!r} (expected 'checkpoint')")
    try:
        version = int(meta.get("ember.format_version", ""))
    except ValueError:
        raise fail(f"bad ember.format_version {meta.get('ember.format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise fail(f"written by a newer ember (checkpoint format version {version}); this ember "
                   f"reads versions up to {FORMAT_VERSION}")
    try:
        structure = _st.parse_json(meta["ember.structure"], MAX_NESTING)
        root = structure["root"]
    except (KeyError, TypeError, ValueError) as e:
        raise fail(f"the checkpoint structure in the header is unreadable ({str(e)[:200]})") from None
    arrays = {k: raw.array(k) for k in raw.entries}
    try:
        return codec.decode(root, arrays)
    except codec.CodecError as e:
        raise fail(f"the checkpoint structure in the header is malformed: {str(e)[:200]}") from None
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError, EmberError) as e:
        raise fail(f"the checkpoint structure in the header is malformed ({e.__class__.__name__}: "
                   f"{str(e)[:200]})") from None


def verify(path) -> dict:
    """Check a checkpoint file (header, checksum) and its ``.json`` sidecar if present.

    Returns ``{"tensors": n, "sha256": ..., "sidecar": "ok" | "missing"}``; raises
    `CheckpointError` if the file is damaged or the sidecar describes another file.
    """
    path = os.fspath(path)
    raw = _read(path, mmap=True)
    for k in raw.entries:  # BOOL bytes
        raw.array(k)
    want = raw.metadata.get(_SUM_KEY)
    sha = _file_checksum(raw)
    if want is not None and want != sha:
        raise CheckpointError(f"{path}: checksum mismatch: the file is corrupted")
    side = path + ".json"
    status = "missing"
    if os.path.exists(side):
        try:
            with open(side, encoding="utf-8") as f:
                info = json.load(f)
            recorded = info["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{side}: unreadable sidecar ({e})") from None
        if recorded != sha:
            raise CheckpointError(f"{side} describes another version of {os.path.basename(path)} "
                                  "(checksum mismatch); the data file is authoritative")
        status = "ok"
    return {"tensors": len(raw.entries), "sha256": sha, "sidecar": status}


def dumps(obj: Any) -> bytes:
    """`save` into bytes (for messages and tests)."""
    b = io.BytesIO()
    save(obj, b)
    return b.getvalue()


def loads(data: bytes, *, verify: bool = True) -> Any:
    """`load` from bytes."""
    return load(io.BytesIO(data), verify=verify)
