"""Numerical checks of gradients (FE-6): central differences against autograd.

`gradcheck(fn, inputs)` compares, for random cotangents v, the analytic v^T J from a backward
pass with v^T J from central differences (f(x + h e_j) - f(x - h e_j)) / 2h for every input
element j. Run it in float64: with h = 1e-6 the truncation error is O(h^2) ~ 1e-12 and the
round-off error O(eps/h) ~ 1e-10, so agreement to 1e-6 is a strong check. In float32 the round-off
term is ~0.1 and gradcheck reports mismatches, which is the point of FE-6.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from . import autograd
from ._core.state import enable_grad, no_grad
from .tensor import Tensor, tensor


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree."""


def _outputs(res) -> list:
    if isinstance(res, Tensor):
        return [res]
    return [r for r in res if isinstance(r, Tensor)]


def _numeric_vjp(fn, inputs, idx, vs, eps):
    """v^T J for input `idx` by central differences, one pass over its elements."""
    x = inputs[idx]
    base = x.detach().numpy().copy()
    flat = base.reshape(-1)
    out = np.zeros(flat.shape, np.float64)
    for j in range(flat.size):
        vals = []
        for sign in (1.0, -1.0):
            pert = flat.copy()
            pert[j] += sign * eps
            args = list(inputs)
            args[idx] = tensor(pert.reshape(base.shape), dtype=x.dtype, requires_grad=x.requires_grad)
            with no_grad():
                outs = _outputs(fn(*args))
            vals.append(sum(float(np.sum(np.asarray(o.detach().numpy(), np.float64) * v)) for o, v in zip(outs, vs)))
        out[j] = (vals[0] - vals[1]) / (2 * eps)
    return out.reshape(base.shape)


def gradcheck(fn: Callable, inputs: Sequence, *, eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-5,
              n_cotangents: int = 2, seed: int = 0, raise_exception: bool = True) -> bool:
    """Check d fn / d inputs (those requiring grad) against central differences."""
    inputs = list(inputs)
    rng = np.random.default_rng(seed)
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not wrt:
        raise ValueError("gradcheck: no input requires grad")
    with enable_grad():
        outs = _outputs(fn(*inputs))
    for _ in range(n_cotangents):
        vs = [rng.standard_normal(o.shape) for o in outs]
        diff = [o for o in outs if o.requires_grad]
        if diff:
            grads = autograd.grad([o for o in outs if o.requires_grad], [inputs[i] for i in wrt],
                                  grad_outputs=[tensor(v, dtype=o.dtype) for o, v in zip(outs, vs) if o.requires_grad],
                                  retain_graph=True, allow_unused=True)
        else:
            grads = [None] * len(wrt)
        for i, g in zip(wrt, grads):
            num = _numeric_vjp(fn, inputs, i, vs, eps)
            ana = np.zeros_like(num) if g is None else np.asarray(g.detach().numpy(), np.float64)
            if not np.allclose(ana, num, atol=atol, rtol=rtol, equal_nan=True):
                err = np.max(np.abs(ana - num))
                msg = (f"gradcheck: gradient of input {i} (shape {tuple(inputs[i].shape)}) disagrees with "
                       f"central differences; max abs error {err:.3g}\nanalytic:\n{ana}\nnumerical:\n{num}")
                if raise_exception:
                    raise GradcheckError(msg)
                return False
    return True


def gradgradcheck(fn: Callable, inputs: Sequence, *, seed: int = 0, **kw) -> bool:
    """Check second derivatives: gradcheck of x -> v^T J(x) built with create_graph=True."""
    inputs = list(inputs)
    rng = np.random.default_rng(seed + 1)
    with enable_grad():
        outs = _outputs(fn(*inputs))
    vs = [tensor(rng.standard_normal(o.shape), dtype=o.dtype) for o in outs]
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]

    def first(*xs):
        with enable_grad():
            o = _outputs(fn(*xs))
            gs = autograd.grad(o, [xs[i] for i in wrt], grad_outputs=vs, create_graph=True, allow_unused=True)
        return [g for g in gs if g is not None and g.requires_grad]

    if not first(*inputs):
        return True  # first derivative is constant: no second derivative to check
    return gradcheck(first, inputs, seed=seed, **kw)


# default (rtol, atol) per dtype: PyTorch's torch.testing.assert_close
_TOLERANCES = {"float16": (1e-3, 1e-5), "bfloat16": (1.6e-2, 1e-5), "float32": (1.3e-6, 1e-5),
               "float64": (1e-7, 1e-7)}


def _as_array(x):
    """(numpy array, ember dtype name) of a tensor, array or number."""
    if isinstance(x, Tensor):
        a = x.detach().numpy()
        return (a.astype(np.float32) if x.dtype.name == "bfloat16" else a), x.dtype.name
    a = np.asarray(x)
    return a, a.dtype.name


def assert_close(actual, expected, *, rtol: float | None = None, atol: float | None = None,
                 equal_nan: bool = False, check_dtype: bool = True, msg: str | None = None) -> None:
    """PyTorch's torch.testing.assert_close: |actual - expected| <= atol + rtol * |expected|
    elementwise, with dtype-based default tolerances; recurses into sequences and mappings."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(actual) != set(expected):
            raise AssertionError(msg or f"the keys do not match: {sorted(actual)} != {sorted(expected)}")
        for k in expected:
            assert_close(actual[k], expected[k], rtol=rtol, atol=atol, equal_nan=equal_nan, check_dtype=check_dtype,
                         msg=msg)
        return
    if isinstance(expected, (list, tuple)) and not isinstance(actual, (Tensor, np.ndarray)):
        if len(actual) != len(expected):
            raise AssertionError(msg or f"the lengths do not match: {len(actual)} != {len(expected)}")
        for a, e in zip(actual, expected):
            assert_close(a, e, rtol=rtol, atol=atol, equal_nan=equal_nan, check_dtype=check_dtype, msg=msg)
        return
    if (rtol is None) != (atol is None):
        raise ValueError("assert_close: give both rtol and atol, or neither")
    a, adt = _as_array(actual)
    e, edt = _as_array(expected)
    if a.shape != e.shape:
        raise AssertionError(msg or f"The values for attribute 'shape' do not match: {a.shape} != {e.shape}.")
    if check_dtype and isinstance(actual, Tensor) and isinstance(expected, Tensor) and adt != edt:
        raise AssertionError(msg or f"The values for attribute 'dtype' do not match: {adt} != {edt}.")
    if rtol is None:
        rtol, atol = max((_TOLERANCES.get(d, (0.0, 0.0)) for d in (adt, edt)), key=lambda t: t[0])
    if a.dtype.kind in "biu" and e.dtype.kind in "biu":
        ok = a == e
    else:
        a64, e64 = a.astype(np.float64), e.astype(np.float64)
        with np.errstate(invalid="ignore"):
            ok = (np.abs(a64 - e64) <= atol + rtol * np.abs(e64)) | (a64 == e64)
        if equal_nan:
            ok |= np.isnan(a64) & np.isnan(e64)
    if ok.all():
        return
    if msg is not None:
        raise AssertionError(msg)
    bad = ~ok
    n = int(bad.sum())
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.where(bad, np.abs(a64 - e64), -np.inf)
        rel = np.where(bad, np.abs(a64 - e64) / np.abs(e64), -np.inf)
    ia = np.unravel_index(int(np.nanargmax(np.where(np.isnan(diff), np.inf, diff))), a.shape) if a.ndim else ()
    ir = np.unravel_index(int(np.nanargmax(np.where(np.isnan(rel), np.inf, rel))), a.shape) if a.ndim else ()
    kind = "Scalars" if a.ndim == 0 else "Tensor-likes"
    raise AssertionError(
        f"{kind} are not close!\n\nMismatched elements: {n} / {a.size} ({100.0 * n / max(a.size, 1):.1f}%)\n"
        f"Greatest absolute difference: {diff[ia] if a.ndim else diff} at index {tuple(int(i) for i in ia)} "
        f"(up to {atol} allowed)\n"
        f"Greatest relative difference: {rel[ir] if a.ndim else rel} at index {tuple(int(i) for i in ir)} "
        f"(up to {rtol} allowed)")
