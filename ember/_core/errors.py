"""ember's exceptions, and the caller location that shape/dtype errors name.

The location is found by walking the stack *only when an error is raised*: the eager fast path
never inspects frames.
"""
from __future__ import annotations

import os
import sys

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class EmberError(Exception):
    """Base class of ember's own errors."""


class ShapeError(EmberError, ValueError):
    """Operand shapes do not fit an op."""


class DTypeError(EmberError, TypeError):
    """An op does not support (or cannot combine) the dtypes it was given."""


class ConcretizationError(EmberError, TypeError):
    """A traced tensor's value was needed while tracing (value-dependent Python control flow)."""


def data_dependent(op: str, data) -> None:
    """Refuse an op whose output shape depends on tensor values, if `data` is being traced."""
    if data.__class__.__name__ == "Var":
        raise ConcretizationError(
            f"{op}: its output shape depends on the values of its input, which ember.jit does not know "
            f"while tracing (data-dependent shape); run it outside the jitted function or use a "
            f"fixed-shape form such as ember.where / masked_fill (at {user_location()})")


class AutogradError(EmberError, RuntimeError):
    """Backward cannot run as asked (freed graph, modified saved tensor, leaf in-place...)."""


def user_frame():
    """The innermost stack frame outside the ember package (None if there is none)."""
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename.startswith(_PKG_DIR):
        f = f.f_back
    return f


def user_location() -> str:
    """'file:line' of the user's code that called into ember."""
    f = user_frame()
    if f is None:
        return "<unknown>"
    return f"{f.f_code.co_filename}:{f.f_lineno}"


def op_error(cls, op: str, msg: str) -> EmberError:
    """Build an error for op `op` that names the user's file:line."""
    return cls(f"{op}: {msg} (at {user_location()})")


def located(err: Exception) -> Exception:
    """The same kind of error, its message ending with the user's file:line (once)."""
    msg = str(err.args[0]) if err.args else str(err)
    if "(at " in msg:
        return err
    try:
        return type(err)(f"{msg} (at {user_location()})")
    except TypeError:  # an exception type that takes other arguments: keep it as it is
        return err
