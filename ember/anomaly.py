"""Anomaly detection: name the first op that turned finite values into NaN or inf.

`with ember.autograd.detect_anomaly():` (or `set_detect_anomaly(True)`) turns it on for the
current thread, like grad mode. While on, every primitive's result is checked: a floating result
with a NaN or an infinity, computed from operands that are all finite, raises `AnomalyError`
naming the primitive and the user's line, and for an op of a backward pass also the forward op it
differentiates and where that ran. Under ember.jit the compiled step runs equation by equation on
the checking reference executor instead (slow, for debugging), so the state is left untouched
when an anomaly is found. Results that are meant to be infinite from finite inputs (log(0) as a
mask) are anomalies too: turn the mode on only while hunting a divergence.
"""
from __future__ import annotations

import contextlib

import numpy as np

from ._core.errors import EmberError, user_location
from ._core.state import TLS


class AnomalyError(EmberError, RuntimeError):
    """A primitive produced NaN or inf from finite operands while anomaly detection was on."""


def is_anomaly_enabled() -> bool:
    """True when anomaly detection is on in this thread."""
    return TLS.anomaly


class detect_anomaly(contextlib.ContextDecorator):
    """Context manager and decorator: check every op's result for new NaN/inf (this thread)."""

    def __init__(self, check_nan: bool = True):
        self.mode = bool(check_nan)

    def __enter__(self):
        self._prev = TLS.anomaly
        TLS.anomaly = self.mode

    def __exit__(self, *exc):
        TLS.anomaly = self._prev


class set_detect_anomaly:
    """Turn anomaly detection on or off now (and back when used as a context manager)."""

    def __init__(self, mode: bool):
        self._prev = TLS.anomaly
        TLS.anomaly = bool(mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        TLS.anomaly = self._prev


def _finite(x) -> bool:
    if isinstance(x, (np.ndarray, np.generic)):
        return x.dtype.kind in "biu" or bool(np.isfinite(x).all())
    return not isinstance(x, float) or bool(np.isfinite(x))


def check(op: str, inputs, result, loc: str | None = None) -> None:
    """Raise AnomalyError if floating `result` has NaN/inf while every input is finite."""
    if not isinstance(result, np.ndarray) or result.dtype.kind in "biu" or np.isfinite(result).all():
        return
    if not all(_finite(x) for x in inputs):
        return
    what = " and ".join(w for w, f in (("nan", np.isnan), ("inf", np.isinf)) if f(result).any())
    node = TLS.anomaly_node
    ctx = ""
    if node is not None:
        ctx = f", in the backward of {node.prim.name if node.prim is not None else node.name}"
        if node.loc:
            ctx += f" (whose forward ran at {node.loc})"
    raise AnomalyError(f"anomaly: {op} produced {what} from finite inputs{ctx} (at {loc or user_location()})")
