"""Layer 3: the eager interpreter, the bottom of every thread's interpreter stack.

`bind(prim, *args)` with no tracer active lands in `EagerInterpreter.process`: it unboxes the
operands (a Tensor gives its ndarray and dtype, a Python scalar stays a weak scalar), looks up the
compute and result dtypes in the primitive's cache, runs the numpy kernel, wraps the result (a view
primitive's result shares its operand's storage) and, in grad mode, records a node on the autograd
tape (`autograd.record`). Importing this module installs the interpreter (`ember/__init__` does).

Imports go one way: `tensor` (the Tensor and its constructors) <- `autograd` (the tape and the
engine) <- `eager`. `tensor` imports neither at module level: Tensor's autograd methods
(`backward`, hooks) import `autograd` when they run.
"""
from __future__ import annotations

import numbers

import numpy as np

from ._core import dtypes as dt
from ._core.errors import DTypeError, EmberError, ShapeError, located, op_error
from ._core.state import TLS, install_base_interpreter
from .autograd import record
from .ops.core import CUSTOM, Aval
from .tensor import Tensor, from_numpy, make_view, tensor

__all__ = ["EagerInterpreter"]

_BY_NP = dt._BY_NP
_DType = dt.DType
_scalar_kind = dt.scalar_kind
_new = object.__new__


def _avals(args):
    out = []
    for a in args:
        if isinstance(a, Tensor):
            out.append(Aval(a.shape, a._dtype))
        else:
            k = _scalar_kind(a)
            out.append(Aval((), dt.weak_scalar_dtype(k, dt.float32), True) if k else a)
    return out


class EagerInterpreter:
    """Runs each primitive at once with its numpy kernel and records the autograd tape."""

    level = 0

    def process(self, prim, args, params):
        datas = []
        keys = []
        for a in args:
            c = a.__class__
            if c is Tensor:
                datas.append(a._data)
                keys.append(a._dtype)
            elif c is float:
                datas.append(a)
                keys.append("f")
            else:
                k = _scalar_kind(a)
                if k is not None:
                    datas.append(a)
                    keys.append(k)
                else:
                    if not isinstance(a, Tensor):
                        a = _coerce_operand(prim, a)
                    datas.append(a._data)
                    keys.append(a._dtype)
        pa = prim.promote_args
        out_dt = None
        if pa or (pa is None and args):
            idx = range(len(args)) if pa is None else pa
            key = tuple(keys) if pa is None else tuple([keys[i] for i in pa])
            compute, out_dt = prim._dtype_cache.get(key) or prim.resolve_dtypes(key)
            cnp = compute.np
            for i in (idx if key.count(compute) != len(key) else ()):  # skip when no cast is due
                d = datas[i]
                if keys[i].__class__ is _DType:
                    dd = d.dtype
                    if dd is not cnp and dd != cnp:
                        datas[i] = d.astype(cnp)
                else:
                    datas[i] = cnp.type(d)
        if prim.eager_checks:
            prim.abstract(*_avals(args), **params)
        try:
            res = prim.impl(*datas, **params) if params else prim.impl(*datas)
        except (ValueError, TypeError, IndexError) as e:
            raise _explain(prim, args, params, e) from None
        if res.__class__ is not np.ndarray:
            res = np.asarray(res)
        if TLS.anomaly:
            from .anomaly import check
            check(prim.name, datas, res)
        rd = res.dtype
        if out_dt is not None and rd is out_dt.np:
            odt = out_dt
        else:
            if out_dt is not None and prim.dtype_rule is not CUSTOM and rd != out_dt.np:
                res = res.astype(out_dt.np)
            odt = _BY_NP[res.dtype]
        out = _new(Tensor)
        out._data = res
        out._dtype = odt
        out._storage = None
        out._rg = False
        out._node = None
        out._grad = None
        out._base = None
        out._extra = None
        if prim.is_view and res.base is not None and np.may_share_memory(res, datas[0]):
            make_view(out, args[0], prim, params)
        if TLS.grad_enabled and odt.kind in "fc":
            for a in args:
                if a.__class__ is Tensor or isinstance(a, Tensor):
                    if a._rg:
                        record(prim, args, params, out)
                        break
        return out


def _coerce_operand(prim, a):
    if isinstance(a, np.ndarray) or isinstance(a, np.generic):
        return from_numpy(np.asarray(a))
    if isinstance(a, numbers.Number):
        return tensor(a)
    raise op_error(TypeError, prim.name, f"expected a Tensor or a Python number, got {type(a).__name__}")


def _explain(prim, args, params, err: Exception) -> Exception:
    """Turn a kernel's failure into an ember error naming the shapes and the user's line."""
    if isinstance(err, IndexError) and "out of bounds" in str(err) and not isinstance(err, np.exceptions.AxisError):
        return located(err)
    if prim.abstract is not None:
        try:
            prim.abstract(*_avals(args), **params)
        except EmberError as e:
            return e
        except Exception:  # noqa: BLE001 - fall through to the kernel's own message
            pass
    shapes = ", ".join(str(tuple(a.shape)) if isinstance(a, Tensor) else repr(a) for a in args)
    return op_error(ShapeError if isinstance(err, ValueError) else DTypeError, prim.name,
                    f"{err} (operands {shapes})")


_EAGER = EagerInterpreter()
install_base_interpreter(_EAGER)
