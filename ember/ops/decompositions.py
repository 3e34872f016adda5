"""Matrix inverses, solvers and decompositions: the primitives behind `ember.linalg`.

Every kernel is one LAPACK call through numpy, batched over the leading dims, in float32 or
float64 (PyTorch's CPU linalg has no half precision either). None has a C lowering: under
`ember.jit` each runs as a host unit with its numpy kernel, and `ember.inspect` names it.

Multiple outputs. A primitive has one output (the tape, the IR and every executor hold one
value per equation), so an op with several results (`slogdet`, `qr`, `eigh`, `svd`) returns one
*packed* array: each component raveled over its matrix dims and concatenated along a last axis,
shape (*batch, total). `unpack(packed, name, a_shape, **params)` splits it back with slices and
reshapes. The API calls it on the output; the VJP calls it on the cotangent, where the slices'
own VJPs have put zeros for the components the loss does not use. So the forward is one LAPACK
call and one tape node, and the VJP sees the cotangents of all components together, as
PyTorch's backward formulas do. `eigvalsh` and `svdvals` are primitives of their own: their VJPs
(V diag(g) V^T, U diag(g) Vh) have no 1/(l_j - l_i) terms.

VJPs follow PyTorch's FunctionsManual.cpp and are written with primitives, so they can be
differentiated again (they call `inv`, `triangular_solve`, `eigh` and `svd` themselves):
- inv: -A^-T G A^-T; solve (X = A^-1 B): gB = A^-T G, gA = -gB X^T; triangular_solve: the same,
  gA kept to A's triangle; det: g det A^-T; slogdet: g_logabsdet A^-T (sign has no gradient);
- cholesky (Murray 2016): gA = L^-T Phi(L^T gL) L^-1, symmetrised, with Phi = tril, diagonal halved;
- qr (m >= n, reduced): gA = (gQ + Q copyltu(M)) R^-T, M = R gR^T - gQ^T Q; wide inputs split
  A = [X | Y]; mode='complete' with m > n and mode='r' raise (as PyTorch);
- eigh: gA = V (skew(V^T gV) / E + diag(gL)) V^T, E_ij = l_j - l_i: the eigenvectors' sign gauge
  drops out in the skew part; the gradient is the symmetric one (the input is taken as symmetric);
- svd: PyTorch's svd_backward; full_matrices=True uses the first min(m, n) columns of U and rows
  of Vh, whose gradients are the only defined ones (as PyTorch);
- pinv: PyTorch's pinv_backward, written in terms of pinv(A) itself.
A zero denominator (l_j = l_i exactly, s_j = s_i, or s_i = 0 where gU / s is formed) is taken as
infinite: the term it divides is dropped. With a zero cotangent for the eigen/singular vectors
(only the values used) the gradient is then right where PyTorch, which skips undefined
cotangents, is right too; with a non-zero one PyTorch gives inf/NaN there and ember drops it.
det's gradient at an exactly singular matrix raises LinAlgError (it needs A^-1), and so does
triangular_solve with a zero on the diagonal (PyTorch returns inf there; numpy has no trsm, so
the triangle is solved by LU).
"""
from __future__ import annotations

import math

import numpy as np

from .._core import dtypes as dt
from .._core.errors import AutogradError, EmberError, ShapeError, op_error
from ..backend.lowering import mark_unlowered
from . import lax
from .core import Aval, P, Primitive, bind, register

LINALG_DTYPES = (dt.float32, dt.float64)


class LinAlgError(EmberError, RuntimeError):
    """A matrix is singular, not positive-definite, or an iteration did not converge."""


# ---------------------------------------------------------------- matrix helpers (lax, any batch)
def mT(x):
    """Swap the last two dims."""
    n = len(x.shape)
    return lax.transpose(x, tuple(range(n - 2)) + (n - 1, n - 2))


def mm(a, b):
    """Batched matrix product of operands with the same batch dims."""
    nb = len(a.shape) - 2
    batch = tuple(range(nb))
    return lax.dot_general(a, b, ((nb + 1,), (nb,)), (batch, batch))


def _iotas(r: int, c: int):
    return lax.iota((r, c), 0, dt.int64), lax.iota((r, c), 1, dt.int64)


def tri(x, k: int = 0, lower: bool = True):
    """tril(x, k) (lower) or triu(x, k) of the last two dims."""
    i, j = _iotas(*x.shape[-2:])
    mask = lax.ge(lax.sub(i, j), -k) if lower else lax.le(lax.sub(i, j), -k)
    return lax.select(mask, x, lax.full((), 0, x.dtype))


def _eye_mask(n: int):
    i, j = _iotas(n, n)
    return lax.eq(i, j)


def diag_embed(v):
    """(..., n) -> (..., n, n) with v on the diagonal."""
    nd = len(v.shape)
    m = lax.broadcast_in_dim(v, tuple(v.shape) + (v.shape[-1],), tuple(range(nd - 1)) + (nd,))
    return lax.select(_eye_mask(v.shape[-1]), m, lax.full((), 0, v.dtype))


def _row(v):  # (..., k) -> (..., 1, k)
    return lax.reshape(v, tuple(v.shape[:-1]) + (1, v.shape[-1]))


def _col(v):  # (..., k) -> (..., k, 1)
    return lax.reshape(v, tuple(v.shape) + (1,))


def _cols(x, a: int, b: int):
    nd = len(x.shape)
    return lax.slice(x, (0,) * (nd - 1) + (a,), tuple(x.shape[:-1]) + (b,), (1,) * nd)


def _rows(x, a: int, b: int):
    return mT(_cols(mT(x), a, b))


def _nonzero(d):
    """d with exact zeros replaced by inf: a quotient by it drops the term (module docstring)."""
    return lax.select(lax.eq(d, 0), lax.full((), math.inf, d.dtype), d)


def _rsolve_upper(y, r):
    """y R^-T for upper-triangular R: solves X R^T = Y as R X^T = Y^T."""
    return mT(triangular_solve(r, mT(y), upper=True))


def inv(a):
    """The `inv` primitive."""
    return bind(P.inv, a)


def solve(a, b):
    """The `solve` primitive (A and B with equal batch dims, B a batch of matrices)."""
    return bind(P.solve, a, b)


def triangular_solve(a, b, upper: bool, unitriangular: bool = False):
    """The `triangular_solve` primitive: A^-1 B reading A's upper or lower triangle."""
    return bind(P.triangular_solve, a, b, upper=bool(upper), unitriangular=bool(unitriangular))


# ---------------------------------------------------------------- packed outputs
def _parts_slogdet(m, n):
    return [(), ()]


def _parts_qr(m, n, mode):
    k = min(m, n)
    if mode == "complete":
        return [(m, m), (m, n)]
    if mode == "r":
        return [(0,), (k, n)]
    return [(m, k), (k, n)]


def _parts_eigh(m, n, UPLO="L"):
    return [(n,), (n, n)]


def _parts_svd(m, n, full_matrices):
    k = min(m, n)
    return [(m, m), (k,), (n, n)] if full_matrices else [(m, k), (k,), (k, n)]


PARTS = {"slogdet": _parts_slogdet, "qr": _parts_qr, "eigh": _parts_eigh, "svd": _parts_svd}


def unpack(packed, name: str, a_shape: tuple, **params) -> list:
    """Split the packed output (or cotangent) of primitive `name` into its components."""
    batch = tuple(packed.shape[:-1])
    nb = len(batch)
    out, off = [], 0
    for s in PARTS[name](*a_shape[-2:], **params):
        size = math.prod(s)
        part = lax.slice(packed, (0,) * nb + (off,), batch + (off + size,), (1,) * (nb + 1))
        out.append(lax.reshape(part, batch + tuple(s)))
        off += size
    return out


def _pack(batch: tuple, *arrays) -> np.ndarray:
    nb = len(batch)
    return np.concatenate([np.reshape(a, batch + (math.prod(a.shape[nb:]),)) for a in arrays], axis=-1)


# ---------------------------------------------------------------- shape rules and failures
def check_matrix(op: str, shape: tuple, square: bool = True, what: str = "A") -> tuple:
    """The (m, n) of a batch of matrices, or a ShapeError naming the op and the shape."""
    if len(shape) < 2:
        raise op_error(ShapeError, op, f"{what} must be a batch of matrices (*, m, n) with at least 2 dims, "
                       f"got shape {tuple(shape)}")
    m, n = shape[-2:]
    if square and m != n:
        raise op_error(ShapeError, op, f"{what} must be batches of square matrices, but they are {m} by {n} "
                       f"matrices (shape {tuple(shape)})")
    return m, n


def _dtype(name: str, *avals: Aval):
    return getattr(P, name).resolve_dtypes(tuple(a.dtype for a in avals))[1]


def _first_failure(a: np.ndarray, fn) -> tuple:
    """The batch index of the first matrix that `fn` fails on (found again, on the error path only)."""
    for idx in np.ndindex(a.shape[:-2]):
        try:
            fn(a[idx])
        except np.linalg.LinAlgError:
            return idx
    return ()


def _where(a: np.ndarray, idx: tuple) -> str:
    if a.ndim <= 2:
        return ""
    return f"batch element {idx[0] if len(idx) == 1 else idx} of "


def _singular(op: str, a: np.ndarray, consequence: str) -> LinAlgError:
    idx = _first_failure(a, np.linalg.inv)
    return op_error(LinAlgError, op, f"{_where(a, idx)}the input of shape {a.shape} is singular "
                    f"(a zero pivot in its LU factorization), so {consequence}")


def _call(op: str, a: np.ndarray, fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except np.linalg.LinAlgError as e:
        raise op_error(LinAlgError, op, f"{e} (input of shape {a.shape})") from None


def _register(name: str, impl, abstract, vjp, *, needs_out=True, vjp_inputs=(), promote_args=None, doc=""):
    p = register(Primitive(name, impl=impl, abstract=abstract, vjp=vjp, kind="linalg", dtypes=LINALG_DTYPES,
                           needs_out=needs_out, vjp_inputs=vjp_inputs, promote_args=promote_args, doc=doc))
    mark_unlowered(p, "cpu", "a LAPACK call, numpy's")
    return p


# ---------------------------------------------------------------- inv, solve, triangular_solve
def _inv_abstract(a: Aval) -> Aval:
    check_matrix("linalg.inv", a.shape)
    return Aval(a.shape, _dtype("inv", a))


def _inv_impl(a):
    check_matrix("linalg.inv", a.shape)
    try:
        return np.linalg.inv(a)
    except np.linalg.LinAlgError:
        raise _singular("linalg.inv", a, "it has no inverse") from None


def _inv_vjp(g, out, a):
    return (lax.neg(mm(mT(out), mm(g, mT(out)))),)


def _solve_shapes(op: str, a, b) -> None:
    n, _ = check_matrix(op, a.shape)
    check_matrix(op, b.shape, square=False, what="B")
    if b.shape[-2] != n or tuple(a.shape[:-2]) != tuple(b.shape[:-2]):
        raise op_error(ShapeError, op, f"incompatible shapes of A and B for the equation AX = B: A of shape "
                       f"{tuple(a.shape)} and B of shape {tuple(b.shape)} (the primitive wants equal batch dims "
                       f"and B's rows equal to A's size)")


def _solve_abstract(a: Aval, b: Aval) -> Aval:
    _solve_shapes("linalg.solve", a, b)
    return Aval(b.shape, _dtype("solve", a, b))


def _solve_impl(a, b):
    _solve_shapes("linalg.solve", a, b)
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        raise _singular("linalg.solve", a, "A X = B has no unique solution") from None


def _solve_vjp(g, out, a, b):
    gb = solve(mT(a), g)
    return lax.neg(mm(gb, mT(out))), gb


def _trisolve_abstract(a: Aval, b: Aval, *, upper, unitriangular) -> Aval:
    _solve_shapes("linalg.solve_triangular", a, b)
    return Aval(b.shape, _dtype("triangular_solve", a, b))


def _triangle(a: np.ndarray, upper: bool, unitriangular: bool) -> np.ndarray:
    t = np.triu(a) if upper else np.tril(a)
    if unitriangular:
        t = t.copy()
        np.einsum("...ii->...i", t)[...] = 1
    return t


def _trisolve_impl(a, b, *, upper, unitriangular):
    _solve_shapes("linalg.solve_triangular", a, b)
    t = _triangle(a, upper, unitriangular)
    try:
        return np.linalg.solve(t, b)
    except np.linalg.LinAlgError:
        idx = _first_failure(t, np.linalg.inv)
        raise op_error(LinAlgError, "linalg.solve_triangular", f"{_where(t, idx)}the triangular input of shape "
                       f"{a.shape} has a zero on its diagonal") from None


def _trisolve_vjp(g, out, a, b, *, upper, unitriangular):
    gb = triangular_solve(mT(a), g, upper=not upper, unitriangular=unitriangular)
    k = (1 if upper else -1) if unitriangular else 0
    ga = tri(lax.neg(mm(gb, mT(out))), k, lower=not upper)
    return ga, gb


# ---------------------------------------------------------------- det, slogdet
def _det_abstract(a: Aval) -> Aval:
    check_matrix("linalg.det", a.shape)
    return Aval(a.shape[:-2], _dtype("det", a))


def _det_impl(a):
    check_matrix("linalg.det", a.shape)
    return np.asarray(np.linalg.det(a), a.dtype)


def _inv_t(op: str, a):
    """A^-T for the gradients of det and slogdet, naming `op` where A is singular."""
    try:
        return mT(inv(a))
    except LinAlgError:
        raise op_error(LinAlgError, op, f"the gradient at a singular matrix (shape {tuple(a.shape)}) is not "
                       "supported: it needs the inverse") from None


def _scale(g, x):  # g (...,) times x (..., n, n)
    return lax.mul(x, lax.reshape(g, tuple(g.shape) + (1, 1)))


def _det_vjp(g, out, a):
    return (_scale(lax.mul(g, out), _inv_t("linalg.det", a)),)


def _slogdet_abstract(a: Aval) -> Aval:
    check_matrix("linalg.slogdet", a.shape)
    return Aval(a.shape[:-2] + (2,), _dtype("slogdet", a))


def _slogdet_impl(a):
    check_matrix("linalg.slogdet", a.shape)
    sign, logabsdet = np.linalg.slogdet(a)
    return np.stack([sign, logabsdet], axis=-1).astype(a.dtype)


def _slogdet_vjp(g, out, a):
    _, g_logabsdet = unpack(g, "slogdet", a.shape)
    return (_scale(g_logabsdet, _inv_t("linalg.slogdet", a)),)


_register("inv", _inv_impl, _inv_abstract, _inv_vjp, doc="matrix inverse (LAPACK gesv)")
_register("solve", _solve_impl, _solve_abstract, _solve_vjp, vjp_inputs=(0,), promote_args=(0, 1),
          doc="solves A X = B for square A (LAPACK gesv)")
_register("triangular_solve", _trisolve_impl, _trisolve_abstract, _trisolve_vjp, vjp_inputs=(0,), promote_args=(0, 1),
          doc="solves A X = B reading one triangle of A")
_register("det", _det_impl, _det_abstract, _det_vjp, vjp_inputs=(0,), doc="determinant (LU)")
_register("slogdet", _slogdet_impl, _slogdet_abstract, _slogdet_vjp, vjp_inputs=(0,),
          doc="(sign, log|det|), packed in a last dim of 2")


# ---------------------------------------------------------------- cholesky
def _cholesky_abstract(a: Aval) -> Aval:
    check_matrix("linalg.cholesky", a.shape)
    return Aval(a.shape, _dtype("cholesky", a))


def _not_pd(a: np.ndarray) -> LinAlgError:
    idx = _first_failure(a, np.linalg.cholesky)
    m = a[idx]
    order = next((k for k in range(1, m.shape[-1] + 1) if not _chol_ok(m[:k, :k])), m.shape[-1])
    return op_error(LinAlgError, "linalg.cholesky", f"{_where(a, idx)}the input of shape {a.shape} is not "
                    f"positive-definite (the leading minor of order {order} is not positive-definite)")


def _chol_ok(m: np.ndarray) -> bool:
    try:
        np.linalg.cholesky(m)
        return True
    except np.linalg.LinAlgError:
        return False


def _cholesky_impl(a):
    check_matrix("linalg.cholesky", a.shape)
    try:
        return np.linalg.cholesky(a)  # reads the lower triangle
    except np.linalg.LinAlgError:
        raise _not_pd(a) from None


def _cholesky_vjp(g, L, a):
    p = tri(mm(mT(L), g))
    p = lax.mul(lax.add(p, mT(tri(p, -1))), 0.5)
    ga = triangular_solve(mT(L), p, upper=True)
    return (mT(triangular_solve(mT(L), mT(ga), upper=True)),)


_register("cholesky", _cholesky_impl, _cholesky_abstract, _cholesky_vjp,
          doc="lower Cholesky factor (reads the lower triangle)")


# ---------------------------------------------------------------- qr
def _qr_abstract(a: Aval, *, mode) -> Aval:
    m, n = check_matrix("linalg.qr", a.shape, square=False)
    if mode not in ("reduced", "complete", "r"):
        raise op_error(ValueError, "linalg.qr", f"mode must be 'reduced', 'complete' or 'r', got {mode!r}")
    total = sum(math.prod(s) for s in _parts_qr(m, n, mode))
    return Aval(a.shape[:-2] + (total,), _dtype("qr", a))


def _qr_impl(a, *, mode):
    m, n = check_matrix("linalg.qr", a.shape, square=False)
    batch = a.shape[:-2]
    if mode == "r":
        q, r = np.zeros(batch + (0,), a.dtype), np.linalg.qr(a, mode="r")
    else:
        q, r = np.linalg.qr(a, mode=mode)
    return _pack(batch, q, r).astype(a.dtype, copy=False)


def _qr_tall(q, r, gq, gr):
    # gA = (gQ + Q copyltu(M)) R^-T, with triu(M^T) = triu(gR R^T - Q^T gQ) mirrored below
    m_t = lax.sub(mm(gr, mT(r)), mm(mT(q), gq))
    b = lax.add(tri(m_t, 0, lower=False), mT(tri(m_t, 1, lower=False)))
    return _rsolve_upper(lax.add(gq, mm(q, b)), r)


def _qr_vjp(g, out, a, *, mode):
    m, n = a.shape[-2:]
    if mode == "r":
        raise AutogradError("linalg.qr: the derivative of linalg.qr depends on Q, which is not computed when "
                            "mode='r'; use mode='reduced' to differentiate through it")
    if mode == "complete" and m > n:
        raise AutogradError(f"linalg.qr: the QR decomposition is not differentiable when mode='complete' and "
                            f"nrows > ncols (input of shape {tuple(a.shape)}); use mode='reduced'")
    q, r = unpack(out, "qr", a.shape, mode=mode)
    gq, gr = unpack(g, "qr", a.shape, mode=mode)
    if m >= n:
        return (_qr_tall(q, r, gq, gr),)
    # wide: A = [X | Y], R = [U | V] with X = Q U square; Y = Q V
    u, v, gu, gv = _cols(r, 0, m), _cols(r, m, n), _cols(gr, 0, m), _cols(gr, m, n)
    gx = _qr_tall(q, u, lax.add(gq, mm(mm(q, v), mT(gv))), gu)
    return (lax.concatenate([gx, mm(q, gv)], len(a.shape) - 1),)


_register("qr", _qr_impl, _qr_abstract, _qr_vjp, doc="(Q, R) packed: Householder QR (LAPACK geqrf/orgqr)")


# ---------------------------------------------------------------- eigh, eigvalsh
def check_uplo(op: str, UPLO) -> None:
    """UPLO must name a triangle."""
    if UPLO not in ("L", "U"):
        raise op_error(ValueError, op, f"UPLO must be 'L' or 'U', got {UPLO!r}")


def _eigh_abstract(a: Aval, *, UPLO) -> Aval:
    _, n = check_matrix("linalg.eigh", a.shape)
    check_uplo("linalg.eigh", UPLO)
    return Aval(a.shape[:-2] + (n + n * n,), _dtype("eigh", a))


def _eigh_impl(a, *, UPLO):
    check_matrix("linalg.eigh", a.shape)
    w, v = _call("linalg.eigh", a, np.linalg.eigh, a, UPLO=UPLO)
    return _pack(a.shape[:-2], w, v).astype(a.dtype, copy=False)


def _eigh_vjp(g, out, a, *, UPLO):
    w, v = unpack(out, "eigh", a.shape)
    gw, gv = unpack(g, "eigh", a.shape)
    vtgv = mm(mT(v), gv)
    skew = lax.mul(lax.sub(vtgv, mT(vtgv)), 0.5)
    e = _nonzero(lax.sub(_row(w), _col(w)))  # E_ij = l_j - l_i (its zero diagonal drops out)
    x = lax.add(lax.div(skew, e), diag_embed(gw))
    return (mm(v, mm(x, mT(v))),)


def _eigvalsh_abstract(a: Aval, *, UPLO) -> Aval:
    check_matrix("linalg.eigvalsh", a.shape)
    check_uplo("linalg.eigvalsh", UPLO)
    return Aval(a.shape[:-1], _dtype("eigvalsh", a))


def _eigvalsh_impl(a, *, UPLO):
    check_matrix("linalg.eigvalsh", a.shape)
    return _call("linalg.eigvalsh", a, np.linalg.eigvalsh, a, UPLO=UPLO).astype(a.dtype, copy=False)


def _eigvalsh_vjp(g, out, a, *, UPLO):
    _, v = unpack(bind(P.eigh, a, UPLO=UPLO), "eigh", a.shape)
    return (mm(lax.mul(v, _row(g)), mT(v)),)


_register("eigh", _eigh_impl, _eigh_abstract, _eigh_vjp,
          doc="(eigenvalues, eigenvectors) of a symmetric matrix, packed (LAPACK syevd)")
_register("eigvalsh", _eigvalsh_impl, _eigvalsh_abstract, _eigvalsh_vjp, needs_out=False, vjp_inputs=(0,),
          doc="eigenvalues of a symmetric matrix, ascending")


# ---------------------------------------------------------------- svd, svdvals
def _svd_abstract(a: Aval, *, full_matrices) -> Aval:
    m, n = check_matrix("linalg.svd", a.shape, square=False)
    total = sum(math.prod(s) for s in _parts_svd(m, n, full_matrices))
    return Aval(a.shape[:-2] + (total,), _dtype("svd", a))


def _svd_impl(a, *, full_matrices):
    m, n = check_matrix("linalg.svd", a.shape, square=False)
    batch = a.shape[:-2]
    if a.size == 0:  # numpy's gesdd wants a non-empty matrix; the factors are identities and zeros
        pu, ps, pv = _parts_svd(m, n, full_matrices)
        eye = lambda r, c: np.broadcast_to(np.eye(r, c, dtype=a.dtype), batch + (r, c))  # noqa: E731
        return _pack(batch, eye(*pu), np.zeros(batch + ps, a.dtype), eye(*pv))
    u, s, vh = _call("linalg.svd", a, np.linalg.svd, a, full_matrices=full_matrices)
    return _pack(batch, u, s, vh).astype(a.dtype, copy=False)


def svd_backward(gu, gs, gvh, u, s, vh):
    """PyTorch's svd_backward for the reduced factors (k = min(m, n) columns of U, rows of Vh)."""
    m, n = u.shape[-2], vh.shape[-1]
    utgu, vtgv = mm(mT(u), gu), mm(vh, mT(gvh))
    utgu, vtgv = lax.sub(utgu, mT(utgu)), lax.sub(vtgv, mT(vtgv))
    s2 = lax.mul(s, s)
    e = _nonzero(lax.sub(_row(s2), _col(s2)))  # E_ij = s_j^2 - s_i^2
    ga = lax.add(lax.div(lax.add(lax.mul(utgu, _row(s)), lax.mul(_col(s), vtgv)), e), diag_embed(gs))
    if m > n:  # gA = [U gA + (I - U U^T) gU S^-1] Vh
        gus = lax.div(gu, _row(_nonzero(s)))
        ga = lax.add(mm(u, ga), lax.sub(gus, mm(u, mm(mT(u), gus))))
        return mm(ga, vh)
    if m < n:  # gA = U [gA Vh + S^-1 gVh (I - V Vh)]
        sgv = lax.div(gvh, _col(_nonzero(s)))
        ga = lax.add(mm(ga, vh), lax.sub(sgv, mm(mm(sgv, mT(vh)), vh)))
        return mm(u, ga)
    return mm(u, mm(ga, vh))


def _svd_vjp(g, out, a, *, full_matrices):
    m, n = a.shape[-2:]
    k = min(m, n)
    u, s, vh = unpack(out, "svd", a.shape, full_matrices=full_matrices)
    gu, gs, gvh = unpack(g, "svd", a.shape, full_matrices=full_matrices)
    if full_matrices:  # only the first k singular vectors have defined gradients (PyTorch)
        u, gu, vh, gvh = _cols(u, 0, k), _cols(gu, 0, k), _rows(vh, 0, k), _rows(gvh, 0, k)
    return (svd_backward(gu, gs, gvh, u, s, vh),)


def _svdvals_abstract(a: Aval) -> Aval:
    m, n = check_matrix("linalg.svdvals", a.shape, square=False)
    return Aval(a.shape[:-2] + (min(m, n),), _dtype("svdvals", a))


def _svdvals_impl(a):
    m, n = check_matrix("linalg.svdvals", a.shape, square=False)
    if a.size == 0:
        return np.zeros(a.shape[:-2] + (min(m, n),), a.dtype)
    return _call("linalg.svdvals", a, np.linalg.svd, a, compute_uv=False).astype(a.dtype, copy=False)


def _svdvals_vjp(g, out, a):
    u, _, vh = unpack(bind(P.svd, a, full_matrices=False), "svd", a.shape, full_matrices=False)
    return (mm(lax.mul(u, _row(g)), vh),)


_register("svd", _svd_impl, _svd_abstract, _svd_vjp, doc="(U, S, Vh) packed (LAPACK gesdd)")
_register("svdvals", _svdvals_impl, _svdvals_abstract, _svdvals_vjp, needs_out=False, vjp_inputs=(0,),
          doc="singular values, descending")


# ---------------------------------------------------------------- pinv
def _pinv_abstract(a: Aval, *, atol, rtol, hermitian) -> Aval:
    m, n = check_matrix("linalg.pinv", a.shape, square=bool(hermitian))
    return Aval(a.shape[:-2] + (n, m), _dtype("pinv", a))


def _pinv_impl(a, *, atol, rtol, hermitian):
    m, n = check_matrix("linalg.pinv", a.shape, square=bool(hermitian))
    if a.size == 0:
        return np.zeros(a.shape[:-2] + (n, m), a.dtype)
    with np.errstate(divide="ignore"):
        if hermitian:  # PyTorch's: eigenvalues with |l| above the tolerance inverted
            w, v = _call("linalg.pinv", a, np.linalg.eigh, a)
            tol = np.maximum(atol, rtol * np.abs(w).max(-1, keepdims=True))
            winv = np.where(np.abs(w) > tol, 1 / w, 0)
            return ((v * winv[..., None, :]) @ np.swapaxes(v, -1, -2)).astype(a.dtype, copy=False)
        u, s, vh = _call("linalg.pinv", a, np.linalg.svd, a, full_matrices=False)
        tol = np.maximum(atol, rtol * s[..., :1])
        sinv = np.where(s > tol, 1 / s, 0)
    return ((np.swapaxes(vh, -1, -2) * sinv[..., None, :]) @ np.swapaxes(u, -1, -2)).astype(a.dtype, copy=False)


def _pinv_vjp(g, p, a, *, atol, rtol, hermitian):
    # PyTorch's pinv_backward (valid where the rank is locally constant), p = pinv(A)
    m, n = a.shape[-2:]
    gt, pt = mT(g), mT(p)
    if m <= n:
        k = mm(gt, p)
        kp = mm(k, pt)
        ga = lax.add(lax.sub(kp, mT(mm(p, k))), lax.sub(mm(mm(pt, p), lax.sub(gt, mm(k, a))), mm(mm(a, p), kp)))
    else:
        k = mm(p, gt)
        pk = mm(pt, k)
        ga = lax.add(lax.sub(mm(mm(lax.sub(gt, mm(a, k)), p), pt), mT(mm(k, p))), lax.sub(pk, mm(mm(pk, p), a)))
    return (ga,)


_register("pinv", _pinv_impl, _pinv_abstract, _pinv_vjp, vjp_inputs=(0,),
          doc="Moore-Penrose pseudo-inverse: singular values above max(atol, rtol * s_max) inverted")
