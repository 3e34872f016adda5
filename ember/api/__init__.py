"""Layer 3's public functions (PyTorch names) and the Tensor methods and operators built on them."""
from __future__ import annotations

import copy as _copy

from .._core import dtypes as _dt
from .._core.state import TLS as _TLS
from ..autograd import assign_
from ..ops import lax as _lax
from ..tensor import Tensor, tensor as _tensor
from . import activations, complex as _complex, creation, diagonals, fft, linalg, math, random, shape, sorting
from .complex import *  # noqa: F401,F403
from .activations import log_softmax, relu, softmax  # noqa: F401
from .creation import *  # noqa: F401,F403
from .diagonals import *  # noqa: F401,F403
from .einsum import einsum  # noqa: F401
from .linalg import bmm, det, dot, inverse, logdet, matmul, mm, outer, pinverse, slogdet  # noqa: F401
from .math import *  # noqa: F401,F403
from .math import MaxMin, convert, result_type  # noqa: F401
from .random import (Generator, bernoulli, default_generator, get_rng_state, initial_seed,  # noqa: F401
                     manual_seed, multinomial, normal, rand, randint, randn, randperm, seed, set_rng_state)
from .shape import *  # noqa: F401,F403
from .sorting import *  # noqa: F401,F403

M, S, O, D = math, shape, sorting, diagonals

_TYPE_NAMES = {_dt.float32: "FloatTensor", _dt.float64: "DoubleTensor", _dt.float16: "HalfTensor",
               _dt.bfloat16: "BFloat16Tensor", _dt.int8: "CharTensor", _dt.int16: "ShortTensor",
               _dt.int32: "IntTensor", _dt.int64: "LongTensor", _dt.uint8: "ByteTensor", _dt.bool_: "BoolTensor",
               _dt.complex64: "ComplexFloatTensor", _dt.complex128: "ComplexDoubleTensor"}


def _type(self, dtype=None, non_blocking: bool = False):
    """type(): the type name ("ember.FloatTensor"); type(dtype or name): a converted tensor."""
    if dtype is None:
        return "ember." + _TYPE_NAMES[self.dtype]
    if isinstance(dtype, str):
        by_name = {v: k for k, v in _TYPE_NAMES.items()}
        name = dtype.rpartition(".")[2]
        if name not in by_name:
            raise TypeError(f"invalid type {dtype!r} (expected a dtype or one of "
                            f"{', '.join('ember.' + n for n in by_name)})")
        dtype = by_name[name]
    return M.convert(self, dtype)


def _new_full(self, size, fill_value, *, dtype=None, device=None, requires_grad: bool = False):
    """A tensor of `size` filled with `fill_value`, of this tensor's dtype unless told otherwise."""
    shape = (int(size),) if isinstance(size, int) else tuple(int(n) for n in size)
    t = _lax.full(shape, fill_value, _dt.as_dtype(dtype) if dtype is not None else self.dtype)
    return t.requires_grad_() if requires_grad else t


def _new(fill):
    def method(self, *size, dtype=None, device=None, requires_grad: bool = False):
        return _new_full(self, S._shape_arg(size), fill, dtype=dtype, device=device, requires_grad=requires_grad)
    method.__doc__ = f"A tensor of `size` filled with {fill}, of this tensor's dtype unless told otherwise."
    return method


def _to_sparse(self):
    """The COO form of this tensor (ember.sparse)."""
    from ..sparse import to_sparse
    return to_sparse(self)


def _new_tensor(self, data, *, dtype=None, device=None, requires_grad: bool = False):
    """A copy of `data` as a tensor of this tensor's dtype unless told otherwise."""
    return _tensor(data, dtype=dtype if dtype is not None else self.dtype, requires_grad=requires_grad)


def _rev(fn):
    return lambda self, other: fn(other, self)


def _inplace(fn):
    def method(self, *args, **kwargs):
        src = self
        if _TLS.grad_enabled and (self._rg or [a for a in args if isinstance(a, Tensor) and a._rg]):
            # the op's VJP may save `self`, whose memory is about to be overwritten: compute from a
            # (differentiable) copy so that saved value stays intact and backward stays correct
            src = S.clone(self)
        return assign_(self, fn(src, *args, **kwargs))
    method.__name__ = fn.__name__ + "_"
    method.__doc__ = f"In-place {fn.__name__}: writes the result into this tensor's memory."
    return method


def _deepcopy(self, memo):
    t = self.detach().clone()
    t._rg = self._rg
    if self.grad is not None:
        t.grad = self.grad.detach().clone()
    memo[id(self)] = t
    return t


_METHODS = {
    # operators
    "__add__": M.add, "__radd__": _rev(M.add), "__sub__": M.sub, "__rsub__": _rev(M.sub),
    "__mul__": M.mul, "__rmul__": _rev(M.mul), "__truediv__": M.div, "__rtruediv__": _rev(M.div),
    "__floordiv__": M.floor_divide, "__rfloordiv__": _rev(M.floor_divide),
    "__mod__": M.remainder, "__rmod__": _rev(M.remainder), "__pow__": M.pow, "__rpow__": _rev(M.pow),
    "__matmul__": linalg.matmul, "__rmatmul__": _rev(linalg.matmul),
    "__neg__": M.neg, "__pos__": lambda self: self, "__abs__": M.abs, "__invert__": lambda self: (
        M.logical_not(self) if self.dtype is _dt.bool_ else M.bitwise_not(self)),
    "__and__": M.bitwise_and, "__rand__": _rev(M.bitwise_and), "__or__": M.bitwise_or,
    "__ror__": _rev(M.bitwise_or), "__xor__": M.bitwise_xor, "__rxor__": _rev(M.bitwise_xor),
    "__eq__": M.eq, "__ne__": M.ne, "__lt__": M.lt, "__le__": M.le, "__gt__": M.gt, "__ge__": M.ge,
    "__getitem__": S.getitem, "__setitem__": S.setitem, "__deepcopy__": _deepcopy,
    # math
    "add": M.add, "sub": M.sub, "mul": M.mul, "div": M.div, "pow": M.pow, "neg": M.neg, "abs": M.abs,
    "sign": M.sign, "exp": M.exp, "log": M.log, "log1p": M.log1p, "expm1": M.expm1, "log2": M.log2,
    "sqrt": M.sqrt, "rsqrt": M.rsqrt, "sin": M.sin, "cos": M.cos, "tanh": M.tanh, "erf": M.erf,
    "sigmoid": M.sigmoid, "floor": M.floor, "ceil": M.ceil, "round": M.round, "trunc": M.trunc,
    "square": M.square, "reciprocal": M.reciprocal, "remainder": M.remainder, "fmod": M.fmod,
    "floor_divide": M.floor_divide, "logaddexp": M.logaddexp, "maximum": M.maximum, "minimum": M.minimum, "clamp": M.clamp,
    "clip": M.clamp, "isnan": M.isnan, "isinf": M.isinf, "isfinite": M.isfinite,
    "eq": M.eq, "ne": M.ne, "lt": M.lt, "le": M.le, "gt": M.gt, "ge": M.ge,
    "logical_not": M.logical_not, "logical_and": M.logical_and, "logical_or": M.logical_or,
    "where": lambda self, condition, other: M.where(condition, self, other), "lerp": M.lerp,
    "sum": M.sum, "mean": M.mean, "prod": M.prod, "amax": M.amax, "amin": M.amin, "max": M.max,
    "min": M.min, "argmax": M.argmax, "argmin": M.argmin, "all": M.all, "any": M.any, "var": M.var,
    "std": M.std, "logsumexp": M.logsumexp, "cumsum": M.cumsum, "cumprod": M.cumprod, "norm": M.norm,
    "nan_to_num": M.nan_to_num, "softmax": activations.softmax, "log_softmax": activations.log_softmax,
    "relu": activations.relu,
    # sorting and diagonals
    "sort": O.sort, "argsort": O.argsort, "msort": O.msort, "topk": O.topk, "kthvalue": O.kthvalue,
    "median": O.median, "nanmedian": O.nanmedian, "unique": O.unique, "unique_consecutive": O.unique_consecutive,
    "bincount": O.bincount, "diag": D.diag, "diagonal": D.diagonal, "diag_embed": D.diag_embed, "trace": D.trace,
    "matmul": linalg.matmul, "mm": linalg.mm, "bmm": linalg.bmm, "dot": linalg.dot, "det": linalg.det,
    "inverse": linalg.inverse, "logdet": linalg.logdet, "slogdet": linalg.slogdet, "pinverse": linalg.pinverse,
    # shape
    "reshape": S.reshape, "view": S.view, "flatten": S.flatten, "unflatten": S.unflatten,
    "squeeze": S.squeeze, "unsqueeze": S.unsqueeze, "permute": S.permute, "transpose": S.transpose,
    "t": S.t, "expand": S.expand, "expand_as": S.expand_as, "broadcast_to": S.broadcast_to,
    "contiguous": S.contiguous, "clone": S.clone, "flip": S.flip, "split": S.split, "chunk": S.chunk,
    "unbind": S.unbind, "narrow": S.narrow, "repeat": S.repeat, "tril": S.tril, "triu": S.triu,
    "index_select": S.index_select, "gather": S.gather, "scatter_add": S.scatter_add,
    "index_add": S.index_add, "masked_fill": S.masked_fill, "nonzero": S.nonzero, "scatter": S.scatter,
    "roll": S.roll, "movedim": S.movedim, "moveaxis": S.movedim, "swapaxes": S.swapaxes,
    # new tensors like this one, type names
    "new_zeros": _new(0), "new_ones": _new(1), "new_empty": _new(0), "new_full": _new_full,
    "new_tensor": _new_tensor, "type": _type, "to_sparse": _to_sparse,
    # dtype conversions
    "float": lambda self: M.convert(self, _dt.float32), "double": lambda self: M.convert(self, _dt.float64),
    "half": lambda self: M.convert(self, _dt.float16), "bfloat16": lambda self: M.convert(self, _dt.bfloat16),
    "int": lambda self: M.convert(self, _dt.int32), "long": lambda self: M.convert(self, _dt.int64),
    "bool": lambda self: M.convert(self, _dt.bool_), "byte": lambda self: M.convert(self, _dt.uint8),
    "cfloat": lambda self: M.convert(self, _dt.complex64), "cdouble": lambda self: M.convert(self, _dt.complex128),
    "type_as": lambda self, other: M.convert(self, other.dtype),
    # complex
    "conj": _complex.conj, "conj_physical": _complex.conj, "angle": _complex.angle,
    "is_complex": _complex.is_complex, "is_floating_point": _complex.is_floating_point,
    # in-place
    "add_": _inplace(M.add), "sub_": _inplace(M.sub), "mul_": _inplace(M.mul), "div_": _inplace(M.div),
    "pow_": _inplace(M.pow), "neg_": _inplace(M.neg), "exp_": _inplace(M.exp), "sqrt_": _inplace(M.sqrt),
    "clamp_": _inplace(M.clamp), "abs_": _inplace(M.abs), "sign_": _inplace(M.sign),
    "lerp_": _inplace(M.lerp), "masked_fill_": _inplace(S.masked_fill), "index_add_": _inplace(S.index_add),
    "scatter_add_": _inplace(S.scatter_add), "scatter_": _inplace(S.scatter), "maximum_": _inplace(M.maximum),
    "relu_": _inplace(activations.relu), "nan_to_num_": _inplace(M.nan_to_num), "cumprod_": _inplace(M.cumprod),
    "__iadd__": _inplace(M.add), "__isub__": _inplace(M.sub), "__imul__": _inplace(M.mul),
    "__itruediv__": _inplace(M.div),
    "zero_": lambda self: assign_(self, _lax.full(self.shape, 0, self.dtype)),
    "fill_": lambda self, v: assign_(self, _lax.broadcast_to(v, self.shape) if isinstance(v, Tensor)
                                     else _lax.full(self.shape, v, self.dtype)),
    "copy_": lambda self, src: assign_(self, _lax.broadcast_to(M.convert(src, self.dtype), self.shape)),
    "uniform_": random.uniform_, "normal_": random.normal_, "bernoulli_": random.bernoulli_,
}

for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)

Tensor.real = property(_complex.real)
Tensor.imag = property(_complex.imag)
Tensor.T = property(lambda self: S.permute(self, tuple(reversed(range(self.ndim)))))
Tensor.mT = property(lambda self: S.transpose(self, -2, -1))
Tensor.__deepcopy__ = _deepcopy
del _copy
