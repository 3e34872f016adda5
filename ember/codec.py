"""Nested state with arrays by reference, and no pickle: the one codec behind checkpoints
(`ember.save`), DataLoader worker results (`ember.data.shm`) and pipeline caches.

``encode(obj) -> (header, arrays)`` turns a nested object into a JSON-able *header* and the
arrays it holds; ``decode(header, arrays) -> obj`` rebuilds it. The caller moves the arrays its own
way (a safetensors file, a shared-memory block, ``.npy`` files) and the header as JSON.

The header (format of ``ember.save``'s ``ember.structure`` "root", checkpoint format version 1):

- ``None``, ``bool``, ``int``, ``str`` and finite ``float`` are themselves; a non-finite float is
  ``{"$float": "inf" | "-inf" | "nan"}``;
- a list is a JSON list, a tuple ``{"$tuple": [...]}``;
- a dict whose keys are all ``str`` is ``{"$dict": {key: value}}``; any other dict is
  ``{"$items": [[key, value], ...]}`` whose keys are ``str``, ``int``, ``float``, ``bool``,
  ``None`` or tuples of them (``{"$tuple": [...]}``, a non-finite float ``{"$float": ...}``);
- an ember Tensor is ``{"$tensor": ref}`` (plus ``"requires_grad": true`` when it requires grad),
  a numpy array ``{"$ndarray": ref}``, a numpy scalar ``{"$npscalar": ref}`` (a 0-d array);
- with ``numbers_as_arrays``: a Python int (in int64 range) or float is ``{"$number": ref,
  "type": "int" | "float"}`` (a 0-d array), so objects that differ only in their numbers share one
  header (a pipeline cache stacks them);
- with ``namedtuples``: a named tuple is ``{"$namedtuple": [...], "type": "module:QualName"}``,
  rebuilt only by a `decode` that allows it (it imports the class: for messages between ember's
  own processes, never for files).

``ref`` is the array's index in the list of arrays, or, with ``named=True``, its name: the path
of keys that leads to it joined by ``.`` (``"state.0.exp_avg"``; ``"tensor"`` for the root;
``~1``, ``~2``... appended to keep names unique). An object reached twice (one tensor under two
keys) is stored once and decoded as one object. Nothing is copied: the arrays are the objects'
own (a tensor's data, a numpy array), and decoded objects view the arrays they are given.
"""
from __future__ import annotations

import math

import numpy as np

from ._core.errors import EmberError
from .tensor import Tensor, from_numpy

__all__ = ["encode", "decode", "CodecError", "MAX_DEPTH"]

#: how deep `encode` lets containers nest (`ember.save` refuses deeper objects, `load` deeper files)
MAX_DEPTH = 200

_I64 = (-2 ** 63, 2 ** 63)
_WHAT = ("only tensors, numpy arrays, dicts, lists, tuples, str, int, float, bool and None can be "
         "stored (no pickle)")


class CodecError(EmberError, ValueError):
    """A header that `decode` cannot turn into an object, or an object too deep to `encode`."""


def _where(path) -> str:
    return "obj" + "".join(f"[{p!r}]" for p in path)


def _short(x, n: int = 80) -> str:
    r = repr(x)
    return r if len(r) <= n else r[:n] + "..."


def _float(v: float):
    return v if math.isfinite(v) else {"$float": repr(v)}


# ---------------------------------------------------------------- encoding
class _Encoder:
    def __init__(self, named: bool, reserved, numbers_as_arrays: bool, namedtuples: bool, max_depth: int):
        self.named = named
        self.arrays = {} if named else []
        self.reserved = frozenset(reserved)
        self.numbers = numbers_as_arrays
        self.namedtuples = namedtuples
        self.max_depth = max_depth
        self.seen = {}  # id(object) -> ref: `obj` keeps the objects alive, so ids stay unique

    def ref(self, obj, arr: np.ndarray, path) -> int | str:
        if obj is not None:
            r = self.seen.get(id(obj))
            if r is not None:
                return r
        if self.named:
            base = ".".join(str(p) for p in path) or "tensor"
            r, i = base, 1
            while r in self.arrays or r in self.reserved:
                r, i = f"{base}~{i}", i + 1
            self.arrays[r] = arr
        else:
            r = len(self.arrays)
            self.arrays.append(arr)
        if obj is not None:
            self.seen[id(obj)] = r
        return r

    def array(self, obj, arr, path, kind: str):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"cannot store the {kind} at {_where(path)}: its values are not known (a "
                            f"tensor traced by ember.jit); {_WHAT}")
        if arr.dtype.kind in "OUS" or arr.dtype.fields is not None:
            raise TypeError(f"cannot store a {kind} of dtype {arr.dtype} at {_where(path)}: {_WHAT}")
        return self.ref(obj, arr, path)

    def enc(self, v, path: list):
        if len(path) > self.max_depth:
            raise CodecError(f"nesting deeper than {self.max_depth} levels")
        c = v.__class__
        if v is None or c is str or c is bool:
            return v
        if c is int:
            return self.number(v, path) if self.numbers else v
        if c is float:
            return self.number(v, path) if self.numbers else _float(v)
        if isinstance(v, Tensor):
            node = {"$tensor": self.array(v, v._data, path, "tensor")}
            if v._rg:
                node["requires_grad"] = True
            return node
        if isinstance(v, np.ndarray):
            return {"$ndarray": self.array(v, v, path, "numpy array")}
        if isinstance(v, np.generic) and not isinstance(v, (np.str_, np.bytes_)):
            return {"$npscalar": self.array(v, np.asarray(v), path, "numpy scalar")}
        if isinstance(v, bool):
            return bool(v)
        if isinstance(v, str):
            return str(v)
        if isinstance(v, int):
            return self.enc(int(v), path)
        if isinstance(v, float):
            return self.enc(float(v), path)
        if isinstance(v, dict):
            if all(type(k) is str for k in v):
                return {"$dict": {k: self.enc(x, path + [k]) for k, x in v.items()}}
            return {"$items": [[self.key(k, path), self.enc(x, path + [k])] for k, x in v.items()]}
        if isinstance(v, list):
            return [self.enc(x, path + [i]) for i, x in enumerate(v)]
        if isinstance(v, tuple):
            items = [self.enc(x, path + [i]) for i, x in enumerate(v)]
            t = type(v)
            if self.namedtuples and hasattr(v, "_fields") and "<locals>" not in t.__qualname__:
                return {"$namedtuple": items, "type": f"{t.__module__}:{t.__qualname__}"}
            return {"$tuple": items}
        raise TypeError(f"cannot store a {type(v).__module__}.{type(v).__qualname__} at {_where(path)}: "
                        f"{_WHAT}")

    def number(self, v, path):
        if v.__class__ is int:
            if not _I64[0] <= v < _I64[1]:
                return v  # beyond int64: stays in the header
            arr, kind = np.asarray(v, np.int64), "int"
        else:
            arr, kind = np.asarray(v, np.float64), "float"
        return {"$number": self.ref(None, arr, path), "type": kind}

    def key(self, k, path):
        if isinstance(k, tuple):
            return {"$tuple": [self.key(x, path) for x in k]}
        if k is None:
            return None
        for t in (bool, str, int):
            if isinstance(k, t):
                return t(k)
        if isinstance(k, float):
            return _float(float(k))
        raise TypeError(f"cannot store dict key {_short(k)} ({type(k).__name__}) at {_where(path)}: keys "
                        "must be str, int, float, bool, None or tuples of them")


def encode(obj, *, named: bool = False, reserved=(), numbers_as_arrays: bool = False,
           namedtuples: bool = False, max_depth: int = MAX_DEPTH):
    """``(header, arrays)`` for `obj` (see the module docstring).

    `arrays` is a list (references are indices) or, with `named`, a dict from each array's
    path name to the array; `reserved` names are never given to an array. Raises TypeError for
    what cannot be stored without pickle (naming where it is in `obj`) and `CodecError` for
    containers nested deeper than `max_depth`.
    """
    e = _Encoder(named, reserved, numbers_as_arrays, namedtuples, max_depth)
    return e.enc(obj, []), e.arrays


# ---------------------------------------------------------------- decoding
# the tags a header's dicts carry, each with the other keys its node may have
_EXTRA = {"$dict": (), "$items": (), "$tuple": (), "$float": (), "$tensor": ("requires_grad",),
          "$ndarray": (), "$npscalar": (), "$number": ("type",), "$namedtuple": ("type",)}


class _Decoder:
    def __init__(self, arrays, namedtuples: bool):
        self.arrays = arrays
        self.by_name = isinstance(arrays, dict)
        self.namedtuples = namedtuples
        self.tensors = {}  # ref -> Tensor: one tensor stored under two paths comes back as one

    def array(self, ref) -> np.ndarray:
        if self.by_name:
            ok = isinstance(ref, str) and ref in self.arrays
        else:
            ok = type(ref) is int and 0 <= ref < len(self.arrays)
        if not ok:
            raise CodecError(f"the header refers to array {_short(ref)}, which is not there")
        return self.arrays[ref]

    def dec(self, node):
        c = node.__class__
        if node is None or c is str or c is int or c is bool or c is float:
            return node
        if c is list:
            return [self.dec(x) for x in node]
        if c is not dict or not node:
            raise CodecError(f"unexpected node {_short(node)}")
        for tag in node:
            if tag in _EXTRA:
                break
        else:
            raise CodecError(f"unknown node {_short(node)}")
        if any(k != tag and k not in _EXTRA[tag] for k in node):
            raise CodecError(f"unknown node {_short(node)}")
        v = node[tag]
        if tag == "$dict":
            if v.__class__ is not dict:
                raise CodecError(f"bad $dict node {_short(node)}")
            return {k: self.dec(x) for k, x in v.items()}
        if tag == "$items":
            if v.__class__ is not list or any(p.__class__ is not list or len(p) != 2 for p in v):
                raise CodecError(f"bad $items node {_short(node)}")
            return {self.key(k): self.dec(x) for k, x in v}
        if tag == "$tuple":
            if v.__class__ is not list:
                raise CodecError(f"bad $tuple node {_short(node)}")
            return tuple(self.dec(x) for x in v)
        if tag == "$float":
            return self.float(v)
        if tag == "$tensor":
            rg = node.get("requires_grad", False)
            if rg.__class__ is not bool:
                raise CodecError(f"bad requires_grad in {_short(node)}")
            t = self.tensors.get(v) if v.__class__ in (int, str) else None
            if t is None:
                t = from_numpy(self.array(v))
                if rg:
                    t.requires_grad_(True)
                self.tensors[v] = t
            return t
        if tag == "$ndarray":
            return self.array(v)
        if tag == "$npscalar":
            a = self.array(v)
            if a.ndim:
                raise CodecError(f"a numpy scalar refers to array {_short(v)} of shape {a.shape}")
            return a[()]
        if tag == "$number":
            a, kind = self.array(v), node.get("type")
            if a.ndim or (kind, a.dtype.kind) not in (("int", "i"), ("int", "u"), ("float", "f")):
                raise CodecError(f"bad $number node {_short(node)} (array {a.dtype}{list(a.shape)})")
            return int(a) if kind == "int" else float(a)
        return self.namedtuple(node)  # "$namedtuple"

    def key(self, k):
        c = k.__class__
        if k is None or c in (bool, int, float, str):
            return k
        if c is dict and len(k) == 1:
            v = k.get("$tuple")
            if v.__class__ is list:
                return tuple(self.key(x) for x in v)
            if "$float" in k:
                return self.float(k["$float"])
        raise CodecError(f"bad dict key {_short(k)}")

    @staticmethod
    def float(v) -> float:
        try:
            if v.__class__ is str:
                return float(v)
        except ValueError:
            pass
        raise CodecError(f"bad $float value {_short(v)}")

    def namedtuple(self, node):
        if not self.namedtuples:
            raise CodecError(f"a named tuple ({_short(node.get('type'))}) is not allowed here")
        import importlib
        name, values = node.get("type"), node["$namedtuple"]
        if name.__class__ is not str or ":" not in name or values.__class__ is not list:
            raise CodecError(f"bad $namedtuple node {_short(node)}")
        mod, qual = name.split(":", 1)
        cls = importlib.import_module(mod)
        for part in qual.split("."):
            cls = getattr(cls, part)
        if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_make")):
            raise CodecError(f"{name} is not a named tuple")
        return cls._make(self.dec(x) for x in values)


def decode(header, arrays, *, namedtuples: bool = False):
    """The object `encode` turned into `header`; `arrays` is the list (or dict) it gave.

    Tensors and arrays view the given arrays (no copy). Named tuples are rebuilt only with
    `namedtuples` (it imports their class). A malformed header raises `CodecError` (a ValueError).
    """
    return _Decoder(arrays, namedtuples).dec(header)
