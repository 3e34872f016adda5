"""Half precision: composites that accumulate in float32, and autocast (mixed precision).

A single primitive on float16/bfloat16 already computes in float32 and rounds once at its end
(`Primitive.half_in_f32`). A composite (mean, var, softmax, layer_norm, ...) is several
primitives, and rounding between them loses what the float32 accumulation won: the sum of 4096
values of 20.0 is 81920, past float16's largest value, before `mean` divides it. Such composites
run on float32 copies of their half-precision tensor arguments and round their results back.

`autocast` is PyTorch's CPU policy: inside it, matmuls and convolutions (the primitives marked
`autocast_low`) convert their float32 operands to bfloat16 (or float16) at `bind`, eagerly and
while ember.jit traces; functions on the float32 list (the losses) take float32 copies of
half-precision arguments (`autocast_float32`); everything else runs in its inputs' dtype. The
parameters stay float32, so gradients arrive in float32 through the converts' VJPs.
"""
from __future__ import annotations

import contextlib
import functools

from .._core import dtypes as dt
from .._core.state import TLS
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


class autocast(contextlib.ContextDecorator):
    """Mixed precision for a block (PyTorch's torch.autocast): matmuls and convolutions in `dtype`
    (bfloat16 by default on the CPU, or float16), losses in float32."""

    def __init__(self, device_type: str = "cpu", dtype=None, enabled: bool = True, cache_enabled=None):
        if device_type not in ("cpu", "cuda"):
            raise ValueError(f"autocast: device_type must be 'cpu' or 'cuda', got {device_type!r}")
        self.device_type, self.enabled = device_type, bool(enabled)
        self.fast_dtype = dt.as_dtype(dtype) if dtype is not None else dt.bfloat16
        if self.fast_dtype not in HALF:
            raise ValueError(f"autocast: dtype must be bfloat16 or float16, got {self.fast_dtype.name}")

    def _recreate_cm(self):  # a decorated function gets a fresh context per call (thread safety)
        return autocast(self.device_type, self.fast_dtype, self.enabled)

    def __enter__(self):
        self._prev = TLS.autocast
        TLS.autocast = self.fast_dtype if self.enabled else None
        return self

    def __exit__(self, *exc):
        TLS.autocast = self._prev


def is_autocast_enabled() -> bool:
    """True inside an enabled autocast block of this thread."""
    return TLS.autocast is not None


def get_autocast_dtype():
    """The dtype of the innermost enabled autocast block (None outside)."""
    return TLS.autocast


def autocast_float32(*names: str):
    """Decorator for autocast's float32 list: inside autocast, the named float16/bfloat16 tensor
    arguments are converted to float32 and the result stays float32 (PyTorch's losses)."""
    def deco(fn):
        sig = []

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if TLS.autocast is None:
                return fn(*args, **kwargs)
            if not sig:
                import inspect
                sig.append(inspect.signature(fn))
            b = sig[0].bind(*args, **kwargs)
            for n in names:
                v = b.arguments.get(n)
                if isinstance(v, Tensor) and v._dtype in HALF:
                    b.arguments[n] = lax.convert(v, dt.float32)
            return fn(*b.args, **b.kwargs)
        return wrapper
    return deco
