"""Half-precision composites accumulate in float32, as PyTorch's CPU kernels do.

A single primitive on float16/bfloat16 already computes in float32 and rounds once at its end
(`Primitive.half_in_f32`). A composite (mean, var, softmax, layer_norm, ...) is several
primitives, and rounding between them loses what the float32 accumulation won: the sum of 4096
values of 20.0 is 81920, past float16's largest value, before `mean` divides it. Such composites
run on float32 copies of their half-precision tensor arguments and round their results back.
"""
from __future__ import annotations

import functools

from .._core import dtypes as dt
from ..ops import lax
from ..tensor import Tensor

HALF = (dt.float16, dt.bfloat16)


def _round(out, d: dt.DType):
    if isinstance(out, Tensor):
        return lax.convert(out, d) if out._dtype is dt.float32 else out
    if isinstance(out, (tuple, list)):
        return type(out)(_round(o, d) for o in out)
    return out


def accumulate_in_float32(*names: str):
    """Decorator: run the function on float32 copies of the named float16/bfloat16 tensor
    arguments (the first name is the input whose dtype decides) and round its results back."""
    def deco(fn):
        sig = []  # the signature, read on the first half-precision call (inspect is slow to import)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            first = args[0] if args else kwargs.get(names[0])
            if not (isinstance(first, Tensor) and first._dtype in HALF):
                return fn(*args, **kwargs)  # the common case costs one check
            if not sig:
                import inspect
                sig.append(inspect.signature(fn))
            b = sig[0].bind(*args, **kwargs)
            if b.arguments.get("dtype") is not None:  # the caller chose the compute dtype
                return fn(*args, **kwargs)
            for n in names:
                v = b.arguments.get(n)
                if isinstance(v, Tensor) and v._dtype in HALF:
                    b.arguments[n] = lax.convert(v, dt.float32)
            return _round(fn(*b.args, **b.kwargs), first._dtype)
        return wrapper
    return deco
