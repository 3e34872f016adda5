"""ember's dtypes and the one promotion table used by eager ops and IR type inference.

Promotion follows PyTorch's `result_type` for tensor/tensor pairs and treats Python scalars as
*weak* (JAX/PyTorch): a Python int never widens an integer tensor, a Python float never widens a
floating tensor, and a Python float meeting an integer or bool tensor gives the default float dtype.
float16 and bfloat16 meet in float32. Complex beats floating: complex64 meeting float64 gives
complex128, and a Python complex meeting a real tensor gives the complex dtype of its float width
(complex64 unless the tensor is float64). Unlike PyTorch, a 0-d *tensor* is not weak: only Python
scalars are (the IR's types carry the weak flag, not the rank).

bfloat16's numpy dtype comes from `ml_dtypes`, whose import takes most of a second: it is imported
the first time a bfloat16 value is needed (`bfloat16.np`), not by `import ember`.
"""
from __future__ import annotations

import sys

import numpy as np


class DType:
    """A tensor element type: a name, its numpy dtype and its category."""

    __slots__ = ("name", "np", "itemsize", "kind", "bits")

    def __init__(self, name: str, np_dtype, kind: str, itemsize: int | None = None):
        self.name = name
        if np_dtype is not None:
            self.np = np.dtype(np_dtype)
        self.itemsize = itemsize or self.np.itemsize
        self.kind = kind  # "b" bool, "u" unsigned int, "i" signed int, "f" floating, "c" complex
        self.bits = self.itemsize * 8

    @property
    def is_floating_point(self) -> bool:
        return self.kind == "f"

    @property
    def is_complex(self) -> bool:
        return self.kind == "c"

    @property
    def is_signed(self) -> bool:
        return self.kind in "ifc"

    def __repr__(self) -> str:
        return f"ember.{self.name}"

    def __reduce__(self):  # copy/deepcopy return the singleton
        return (_by_name, (self.name,))


_NP_SLOT = DType.__dict__["np"]


class _LateNumpyDType(DType):
    """bfloat16: its numpy dtype (from ml_dtypes) is made on first use."""

    __slots__ = ()

    @property
    def np(self):
        try:
            return _NP_SLOT.__get__(self)
        except AttributeError:
            return _load_ml_dtypes()


def _load_ml_dtypes():
    import ml_dtypes
    d = np.dtype(ml_dtypes.bfloat16)
    _NP_SLOT.__set__(bfloat16, d)
    _BY_NP[d] = bfloat16
    return d


class _ByNumpy(dict):
    """numpy dtype -> DType; an array of bfloat16 made before ember needed one registers it."""

    def __missing__(self, key):
        if "ml_dtypes" not in sys.modules or bfloat16 in self.values():
            raise KeyError(key)
        _load_ml_dtypes()
        return self[key]  # found now, or KeyError (bfloat16 is registered from here on)

    def __contains__(self, key):
        if dict.__contains__(self, key):
            return True
        try:
            self[key]
        except KeyError:
            return False
        return True


bool_ = DType("bool", np.bool_, "b")
uint8 = DType("uint8", np.uint8, "u")
uint32 = DType("uint32", np.uint32, "u")  # internal: RNG bits
int8 = DType("int8", np.int8, "i")
int16 = DType("int16", np.int16, "i")
int32 = DType("int32", np.int32, "i")
int64 = DType("int64", np.int64, "i")
float16 = DType("float16", np.float16, "f")
bfloat16 = _LateNumpyDType("bfloat16", None, "f", itemsize=2)
float32 = DType("float32", np.float32, "f")
float64 = DType("float64", np.float64, "f")
complex64 = DType("complex64", np.complex64, "c")
complex128 = DType("complex128", np.complex128, "c")

#: the real dtypes (uint32 exists for random bits and bit casts); a primitive supports these
#: unless it says otherwise
ALL = (float32, float64, float16, bfloat16, int8, int16, int32, int64, uint8, bool_)
FLOATS = (float16, bfloat16, float32, float64)
INTS = (uint8, int8, int16, int32, int64)
#: complex dtypes: the primitives that accept them list them (arithmetic, data movement, fft)
COMPLEX = (complex64, complex128)
#: the real dtype of each complex dtype's parts, and back
REAL_OF = {complex64: float32, complex128: float64}
COMPLEX_OF = {float32: complex64, float64: complex128}

_ALL_INTERNAL = ALL + COMPLEX + (uint32,)
_BY_NAME = {d.name: d for d in _ALL_INTERNAL}
_BY_NP = _ByNumpy((d.np, d) for d in _ALL_INTERNAL if d is not bfloat16)
_BY_NAME.update({"float": float32, "double": float64, "half": float16, "long": int64, "int": int32,
                 "short": int16, "bool_": bool_,
                 "cfloat": complex64, "cdouble": complex128})


def _by_name(name: str) -> DType:
    return _BY_NAME[name]


def as_dtype(x) -> DType:
    """Turn a DType, a name, a numpy dtype or a Python type into an ember DType."""
    if isinstance(x, DType):
        return x
    if isinstance(x, str):
        try:
            return _BY_NAME[x]
        except KeyError:
            raise TypeError(f"unknown dtype {x!r}; ember has "
                            f"{', '.join(d.name for d in ALL + COMPLEX)}") from None
    if x is float:
        return float32
    if x is int:
        return int64
    if x is bool:
        return bool_
    if x is complex:
        return complex64
    try:
        return _BY_NP[np.dtype(x)]
    except (KeyError, TypeError):
        raise TypeError(f"ember does not support dtype {x!r}") from None


def from_numpy_dtype(npdt) -> DType:
    """The ember dtype of a numpy dtype (fast path for arrays)."""
    try:
        return _BY_NP[npdt]
    except KeyError:
        raise TypeError(f"ember does not support numpy dtype {npdt}") from None


# ---------------------------------------------------------------- promotion
def _promote_strong(a: DType, b: DType) -> DType:
    if a is b:
        return a
    if a.kind == "b":
        return b
    if b.kind == "b":
        return a
    if a.kind == "c" or b.kind == "c":  # an integer or narrower float never widens a complex
        return complex128 if {a, b} & {complex128, float64} else complex64
    if a.kind == "f" or b.kind == "f":
        if a.kind != "f":
            return b
        if b.kind != "f":
            return a
        if {a, b} == {float16, bfloat16}:
            return float32
        return a if a.bits > b.bits else b
    # both integers
    if a.kind == b.kind:
        return a if a.bits > b.bits else b
    u, s = (a, b) if a.kind == "u" else (b, a)
    if s.bits > u.bits:
        return s
    return {8: int16, 16: int32, 32: int64, 64: int64}[u.bits]


PROMOTION = {(a, b): _promote_strong(a, b) for a in _ALL_INTERNAL for b in _ALL_INTERNAL}


def promote_types(a: DType, b: DType) -> DType:
    """The dtype two tensors of dtypes `a` and `b` compute in."""
    return PROMOTION[(a, b)]


def scalar_kind(x) -> str | None:
    """'b', 'i', 'f' or 'c' for a Python/numpy scalar, None for anything else."""
    if isinstance(x, bool):
        return "b"
    if isinstance(x, int):
        return "i"
    if isinstance(x, float):
        return "f"
    if isinstance(x, complex):
        return "c"
    return None


#: weak scalar kinds from weakest to strongest
SCALAR_ORDER = "bifc"


def promote_with_scalar(t: DType, kind: str, default_float: DType) -> DType:
    """Result dtype of a tensor of dtype `t` meeting a weak Python scalar of `kind`."""
    if kind == "b":
        return t
    if kind == "i":
        return int64 if t.kind == "b" else t
    if kind == "c":
        if t.kind == "c":
            return t
        return complex128 if (t if t.kind == "f" else default_float) is float64 else complex64
    return t if t.kind in "fc" else default_float


def weak_scalar_dtype(kind: str, default_float: DType) -> DType:
    """The dtype a lone weak scalar takes: bool, int64, the default float or its complex."""
    if kind == "c":
        return complex128 if default_float is float64 else complex64
    return {"b": bool_, "i": int64, "f": default_float}[kind]


def finfo(dtype):
    """Floating-point limits (max, eps, tiny, smallest_subnormal) of a floating dtype."""
    d = as_dtype(dtype)
    if d.kind != "f":
        raise TypeError(f"finfo needs a floating dtype, got {d.name}")
    if d is bfloat16:
        import ml_dtypes
        return ml_dtypes.finfo(d.np)
    return np.finfo(d.np)


def iinfo(dtype) -> np.iinfo:
    """Integer limits of an integer dtype."""
    d = as_dtype(dtype)
    if d.kind not in "ui":
        raise TypeError(f"iinfo needs an integer dtype, got {d.name}")
    return np.iinfo(d.np)
