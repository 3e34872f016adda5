"""matmul with PyTorch's broadcasting rules, and `ember.linalg` (torch.linalg's names and semantics).

The decompositions and solvers are primitives in `ember/ops/decompositions.py` (one LAPACK call
each, with PyTorch's backward formulas); this module gives them torch.linalg's signatures, result
named tuples, vector right-hand sides and batch broadcasting, and composes the rest from them:
`lstsq` is pinv(A) @ B (whose gradient is exactly PyTorch's, which differentiates lstsq through
pinv), the norms and `matrix_rank` are reductions of |A| or of singular values.

`TORCH_ALIASES` names the functions that torch also has at top level and as Tensor methods
(torch.det, torch.inverse, torch.logdet, torch.slogdet, torch.pinverse); ember/api/__init__.py
re-exports them.
"""
from __future__ import annotations

import math
from collections import namedtuple

from .._core import dtypes as dt
from .._core.errors import DTypeError, ShapeError, op_error
from ..ops import decompositions as D, lax
from ..ops.core import P, bind
from ..ops.decompositions import LinAlgError  # noqa: F401  (ember.linalg.LinAlgError)
from ..tensor import Tensor
from . import math as _M
from .shape import expand, permute, reshape


def matmul(input: Tensor, other: Tensor) -> Tensor:
    """Matrix product: 1-D vectors, 2-D matrices and broadcast batches of matrices (x @ y)."""
    a, b = input, other
    if a.ndim == 0 or b.ndim == 0:
        raise op_error(ShapeError, "matmul", f"both operands need at least 1 dim, got {a.shape} and {b.shape}")
    if b.ndim <= 2:
        # (..., n, k) @ (k, m) or (k,): contract the last dim of a with the first of b, no batch
        return lax.dot_general(a, b, ((a.ndim - 1,), (0,)))
    if a.ndim == 1:
        out = matmul(reshape(a, (1, a.shape[0])), b)
        return reshape(out, out.shape[:-2] + out.shape[-1:])
    batch_a, batch_b = a.shape[:-2], b.shape[:-2]
    try:
        import numpy as np
        batch = tuple(np.broadcast_shapes(batch_a, batch_b))
    except ValueError:
        raise op_error(ShapeError, "matmul", f"batch dims of {a.shape} and {b.shape} do not broadcast") from None
    if batch_a != batch:
        a = expand(a, batch + a.shape[-2:])
    if batch_b != batch:
        b = expand(b, batch + b.shape[-2:])
    nb = len(batch)
    return lax.dot_general(a, b, ((nb + 1,), (nb,)), (tuple(range(nb)), tuple(range(nb))))


def mm(input, mat2):
    if input.ndim != 2 or mat2.ndim != 2:
        raise op_error(ShapeError, "mm", f"expects 2-D operands, got {input.shape} and {mat2.shape}")
    return matmul(input, mat2)


def bmm(input, mat2):
    if input.ndim != 3 or mat2.ndim != 3:
        raise op_error(ShapeError, "bmm", f"expects 3-D operands, got {input.shape} and {mat2.shape}")
    return matmul(input, mat2)


def dot(input, other):
    if input.ndim != 1 or other.ndim != 1:
        raise op_error(ShapeError, "dot", f"expects 1-D operands, got {input.shape} and {other.shape}")
    return matmul(input, other)


def outer(input, vec2):
    return lax.dot_general(reshape(input, (-1, 1)), reshape(vec2, (1, -1)), ((1,), (0,)))




# ====================================================================== ember.linalg
SlogdetResult = namedtuple("SlogdetResult", ["sign", "logabsdet"])
QRResult = namedtuple("QRResult", ["Q", "R"])
EighResult = namedtuple("EighResult", ["eigenvalues", "eigenvectors"])
SVDResult = namedtuple("SVDResult", ["U", "S", "Vh"])
LstsqResult = namedtuple("LstsqResult", ["solution", "residuals", "rank", "singular_values"])

TORCH_ALIASES = ("det", "inverse", "logdet", "slogdet", "pinverse")
_INF = math.inf


def _float_matrix(op: str, A, square: bool = True) -> tuple:
    """(m, n) of A, a float32/float64 batch of matrices, or an error naming op and shape."""
    if not isinstance(A, Tensor):
        raise op_error(TypeError, op, f"expected a Tensor, got {type(A).__name__}")
    if A.dtype not in D.LINALG_DTYPES:
        raise op_error(DTypeError, op, f"expected a float32 or float64 tensor, got {A.dtype.name}")
    return D.check_matrix(op, A.shape, square)


def _batch(op: str, A: Tensor, B: Tensor) -> tuple:
    """A and B expanded to their broadcast batch dims (all but the last two)."""
    try:
        import numpy as np
        batch = tuple(np.broadcast_shapes(A.shape[:-2], B.shape[:-2]))
    except ValueError:
        raise op_error(ShapeError, op, f"batch dims of A of shape {A.shape} and B of shape {B.shape} "
                       "do not broadcast") from None
    if A.shape[:-2] != batch:
        A = expand(A, batch + A.shape[-2:])
    if B.shape[:-2] != batch:
        B = expand(B, batch + B.shape[-2:])
    return A, B


def _unsqueeze(x: Tensor) -> Tensor:
    return reshape(x, x.shape + (1,))


def _squeeze(x: Tensor) -> Tensor:
    return reshape(x, x.shape[:-1])


def _empty(dtype) -> Tensor:
    return lax.full((0,), 0, dtype)


def inv(A: Tensor) -> Tensor:
    """Inverse of a (batch of) square matrix; LinAlgError if singular."""
    _float_matrix("linalg.inv", A)
    return D.inv(A)


def inverse(input: Tensor) -> Tensor:
    """torch.inverse: the same as linalg.inv."""
    return inv(input)


def solve(A: Tensor, B: Tensor, *, left: bool = True) -> Tensor:
    """X with A X = B (left) or X A = B; B is (*, n) (a batch of vectors) or (*, n, k); batches broadcast."""
    n, _ = _float_matrix("linalg.solve", A)
    if not isinstance(B, Tensor) or B.ndim == 0:
        raise op_error(ShapeError, "linalg.solve", f"B must have at least 1 dim, got {getattr(B, 'shape', B)}")
    if not left:  # X A = B  <=>  A^T X^T = B^T
        if B.ndim < 2:
            raise op_error(ShapeError, "linalg.solve", f"left=False needs B of shape (*, k, n), got {B.shape}")
        return D.mT(solve(D.mT(A), D.mT(B)))
    vector = B.ndim == 1 or (B.ndim == A.ndim - 1 and B.shape == A.shape[:-1])
    Bm = _unsqueeze(B) if vector else B
    if Bm.shape[-2] != n:
        raise op_error(ShapeError, "linalg.solve", f"incompatible shapes of A and B for the equation AX = B: "
                       f"A of shape {A.shape} and B of shape {B.shape} ({n}x{n} and {Bm.shape[-2]}x{Bm.shape[-1]})")
    A2, B2 = _batch("linalg.solve", A, Bm)
    X = D.solve(A2, B2)
    return _squeeze(X) if vector else X


def solve_triangular(A: Tensor, B: Tensor, *, upper: bool, left: bool = True,
                     unitriangular: bool = False) -> Tensor:
    """X with A X = B (left) or X A = B for triangular A (only its `upper` or lower triangle is read)."""
    n, _ = _float_matrix("linalg.solve_triangular", A)
    if not isinstance(B, Tensor) or B.ndim < 2:
        raise op_error(ShapeError, "linalg.solve_triangular", f"B must be a batch of matrices (*, n, k), "
                       f"got shape {getattr(B, 'shape', B)}")
    if not left:
        return D.mT(solve_triangular(D.mT(A), D.mT(B), upper=not upper, unitriangular=unitriangular))
    if B.shape[-2] != n:
        raise op_error(ShapeError, "linalg.solve_triangular", f"incompatible shapes of A and B for the equation "
                       f"AX = B: A of shape {A.shape} and B of shape {B.shape}")
    A2, B2 = _batch("linalg.solve_triangular", A, B)
    return D.triangular_solve(A2, B2, upper=upper, unitriangular=unitriangular)


def det(A: Tensor) -> Tensor:
    """Determinant of a (batch of) square matrix."""
    _float_matrix("linalg.det", A)
    return bind(P.det, A)


def slogdet(A: Tensor) -> SlogdetResult:
    """(sign, log|det|) of a (batch of) square matrix; sign is 0 and logabsdet -inf if singular."""
    _float_matrix("linalg.slogdet", A)
    sign, logabsdet = D.unpack(bind(P.slogdet, A), "slogdet", A.shape)
    return SlogdetResult(sign, logabsdet)


def logdet(input: Tensor) -> Tensor:
    """torch.logdet: log(det), NaN where det < 0 and -inf where it is 0."""
    sign, logabsdet = slogdet(input)
    return _M.add(logabsdet, _M.log(sign))


def cholesky(A: Tensor, *, upper: bool = False) -> Tensor:
    """Cholesky factor L (A = L L^T; upper: L^T) of a symmetric positive-definite matrix (reads its lower triangle)."""
    _float_matrix("linalg.cholesky", A)
    L = bind(P.cholesky, A)
    return D.mT(L) if upper else L


def qr(A: Tensor, mode: str = "reduced") -> QRResult:
    """QR decomposition; mode 'reduced' (Q m x k), 'complete' (Q m x m) or 'r' (R only, Q empty)."""
    _float_matrix("linalg.qr", A, square=False)
    if mode not in ("reduced", "complete", "r"):
        raise op_error(ValueError, "linalg.qr", f"qr received unrecognized mode {mode!r} but expected one of "
                       "'reduced' (default), 'r', or 'complete'")
    Q, R = D.unpack(bind(P.qr, A, mode=mode), "qr", A.shape, mode=mode)
    return QRResult(_empty(A.dtype) if mode == "r" else Q, R)


def eigh(A: Tensor, UPLO: str = "L") -> EighResult:
    """Eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix, from its UPLO triangle."""
    _float_matrix("linalg.eigh", A)
    D.check_uplo("linalg.eigh", UPLO)
    w, V = D.unpack(bind(P.eigh, A, UPLO=UPLO), "eigh", A.shape)
    return EighResult(w, V)


def eigvalsh(A: Tensor, UPLO: str = "L") -> Tensor:
    """Eigenvalues (ascending) of a symmetric matrix, from its UPLO triangle."""
    _float_matrix("linalg.eigvalsh", A)
    D.check_uplo("linalg.eigvalsh", UPLO)
    return bind(P.eigvalsh, A, UPLO=UPLO)


def _no_driver(op: str, driver) -> None:
    if driver is not None:
        raise op_error(ValueError, op, "keyword argument `driver=` is only supported on CUDA inputs with the "
                       "cuSOLVER backend (ember runs on the CPU)")


def svd(A: Tensor, full_matrices: bool = True, *, driver=None) -> SVDResult:
    """A = U diag(S) Vh, S descending; full_matrices=False gives the reduced factors (k = min(m, n))."""
    _float_matrix("linalg.svd", A, square=False)
    _no_driver("linalg.svd", driver)
    U, S, Vh = D.unpack(bind(P.svd, A, full_matrices=bool(full_matrices)), "svd", A.shape,
                        full_matrices=bool(full_matrices))
    return SVDResult(U, S, Vh)


def svdvals(A: Tensor, *, driver=None) -> Tensor:
    """Singular values, descending."""
    _float_matrix("linalg.svdvals", A, square=False)
    _no_driver("linalg.svdvals", driver)
    return bind(P.svdvals, A)


def _tolerances(A: Tensor, atol, rtol) -> tuple:
    """PyTorch's rule: rtol = eps * max(m, n) unless given, or 0 when only atol > 0 is given."""
    atol = 0.0 if atol is None else float(atol)
    if rtol is None:
        rtol = 0.0 if atol > 0 else dt.finfo(A.dtype).eps * max(A.shape[-2:])
    return atol, float(rtol)


def pinv(A: Tensor, *, atol=None, rtol=None, hermitian: bool = False) -> Tensor:
    """Moore-Penrose pseudo-inverse: singular values <= max(atol, rtol * s_max) are treated as 0."""
    _float_matrix("linalg.pinv", A, square=bool(hermitian))
    atol, rtol = _tolerances(A, atol, rtol)
    return bind(P.pinv, A, atol=atol, rtol=rtol, hermitian=bool(hermitian))


def pinverse(input: Tensor, rcond: float = 1e-15, hermitian: bool = False) -> Tensor:
    """torch.pinverse: pinv with rtol=rcond."""
    return pinv(input, rtol=rcond, hermitian=hermitian)


def matrix_rank(A: Tensor, *, atol=None, rtol=None, hermitian: bool = False) -> Tensor:
    """Number of singular values above max(atol, rtol * s_max) (int64)."""
    _float_matrix("linalg.matrix_rank", A, square=bool(hermitian))
    atol, rtol = _tolerances(A, atol, rtol)
    s = _M.abs(eigvalsh(A)) if hermitian else svdvals(A)
    if s.shape[-1] == 0:
        return lax.full(s.shape[:-1], 0, dt.int64)
    tol = _M.maximum(_M.mul(_M.amax(s, -1, True), rtol), atol)
    return _M.sum(_M.gt(s, tol), -1)


_DRIVERS = (None, "gelsy", "gels", "gelsd", "gelss")


def lstsq(A: Tensor, B: Tensor, rcond: float | None = None, *, driver: str | None = None) -> LstsqResult:
    """Least-squares / minimum-norm solution of A X = B, as pinv(A) @ B; other fields follow the driver."""
    m, n = _float_matrix("linalg.lstsq", A, square=False)
    if driver not in _DRIVERS:
        raise op_error(ValueError, "linalg.lstsq", f"parameter `driver` should be one of (gels, gelsy, gelsd, "
                       f"gelss), got {driver!r}")
    if not isinstance(B, Tensor) or not 0 <= A.ndim - B.ndim <= 1:
        raise op_error(ShapeError, "linalg.lstsq", f"B must have A's number of dims or one fewer: A of shape "
                       f"{A.shape}, B of shape {getattr(B, 'shape', B)}")
    vector = B.ndim == A.ndim - 1
    Bm = _unsqueeze(B) if vector else B
    if Bm.shape[-2] != m:
        raise op_error(ShapeError, "linalg.lstsq", f"A and B must have the same number of rows: A of shape "
                       f"{A.shape}, B of shape {B.shape}")
    A2, B2 = _batch("linalg.lstsq", A, Bm)
    rtol = dt.finfo(A.dtype).eps * max(m, n) if rcond is None else float(rcond)
    X = D.mm(bind(P.pinv, A2, atol=0.0, rtol=rtol, hermitian=False), B2)
    residuals = _empty(A.dtype)
    if driver not in (None, "gelsy") and m > n:  # computed here even where A is rank-deficient
        residuals = _M.sum(_M.square(_M.sub(D.mm(A2, X), B2)), -2)
        residuals = _squeeze(residuals) if vector else residuals
    rank = _empty(dt.int64) if driver == "gels" else matrix_rank(A2, atol=0.0, rtol=rtol)
    sv = svdvals(A2) if driver in ("gelsd", "gelss") else _empty(A.dtype)
    return LstsqResult(_squeeze(X) if vector else X, residuals, rank, sv)


# ---------------------------------------------------------------- norms
def _root(s: Tensor, p: float) -> Tensor:
    """s ** p with 0 (and a zero gradient) where s == 0, as PyTorch's norm backward masks it."""
    zero = _M.eq(s, 0)
    safe = lax.select(zero, lax.full((), 1, s.dtype), s)
    return lax.select(zero, lax.full((), 0, s.dtype), _M.sqrt(safe) if p == 0.5 else _M.pow(safe, p))


def vector_norm(x: Tensor, ord: float = 2, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """Vector ord-norm over `dim` (all elements by default): sum(|x|^ord)^(1/ord), max/min |x| for +-inf."""
    if dtype is not None:
        x = _M.convert(x, dtype)
    if x.dtype.kind != "f" or x.dtype not in D.LINALG_DTYPES + (dt.float16, dt.bfloat16):
        raise op_error(DTypeError, "linalg.vector_norm", f"expected a floating point tensor, got {x.dtype.name}")
    if isinstance(ord, str):
        raise op_error(ValueError, "linalg.vector_norm", f"ord must be a number, got {ord!r}")
    a = _M.abs(x)
    if ord == _INF:
        return _M.amax(a, dim, keepdim)
    if ord == -_INF:
        return _M.amin(a, dim, keepdim)
    if ord == 0:
        return _M.sum(_M.convert(_M.ne(a, 0), x.dtype), dim, keepdim)
    if ord == 1:
        return _M.sum(a, dim, keepdim)
    if ord == 2:
        return _root(_M.sum(_M.mul(a, a), dim, keepdim), 0.5)
    return _root(_M.sum(_M.pow(a, float(ord)), dim, keepdim), 1.0 / float(ord))


def _two_dims(op: str, A: Tensor, dim) -> tuple:
    try:
        d0, d1 = (int(d) for d in dim)
    except (TypeError, ValueError):
        raise op_error(ShapeError, op, f"dim must be a 2-tuple of ints, got {dim!r}") from None
    nd = A.ndim
    if not (-nd <= d0 < nd and -nd <= d1 < nd) or d0 % nd == d1 % nd:
        raise op_error(ShapeError, op, f"dims {tuple(dim)} must be two different dims of a tensor of shape {A.shape}")
    return d0 % nd, d1 % nd


def matrix_norm(A: Tensor, ord="fro", dim=(-2, -1), keepdim: bool = False, *, dtype=None) -> Tensor:
    """Matrix norm over the two dims `dim`: 'fro', 'nuc', 2/-2 (largest/smallest singular value), 1/-1, inf/-inf."""
    if dtype is not None:
        A = _M.convert(A, dtype)
    if A.ndim < 2:
        raise op_error(ShapeError, "linalg.matrix_norm", f"the input must have at least 2 dims, got shape {A.shape}")
    d0, d1 = _two_dims("linalg.matrix_norm", A, dim)
    kept = tuple(1 if i in (d0, d1) else s for i, s in enumerate(A.shape))
    if ord == "fro":
        return vector_norm(A, 2, (d0, d1), keepdim)
    if ord in ("nuc", 2, -2):
        _float_matrix("linalg.matrix_norm", A, square=False)
        rest = [i for i in range(A.ndim) if i not in (d0, d1)]
        s = svdvals(permute(A, rest + [d0, d1]))
        out = _M.sum(s, -1) if ord == "nuc" else _M.amax(s, -1) if ord == 2 else _M.amin(s, -1)
        return reshape(out, kept) if keepdim else out
    if ord in (1, -1, _INF, -_INF):
        # 1: the largest column sum of |A| (sum over rows d0, extreme over columns d1); inf: rows
        inner, outer = (d0, d1) if ord in (1, -1) else (d1, d0)
        sums = _M.sum(_M.abs(A), inner, True)
        out = (_M.amax if ord > 0 else _M.amin)(sums, outer, True)
        return out if keepdim else reshape(out, tuple(s for i, s in enumerate(A.shape) if i not in (d0, d1)))
    raise op_error(ValueError, "linalg.matrix_norm", f"order {ord!r} not supported (use 'fro', 'nuc', 2, -2, "
                   "1, -1, inf or -inf)")


def norm(A: Tensor, ord=None, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """Vector norm (dim an int or None with 1-D input) or matrix norm (dim a 2-tuple, or 2-D input with ord)."""
    if isinstance(dim, int):
        dim = (dim,)
    if dim is not None:
        dim = tuple(dim)
        if len(dim) == 1:
            if isinstance(ord, str):
                raise op_error(ValueError, "linalg.norm", f"ord {ord!r} is a matrix norm; with one dim use a number")
            return vector_norm(A, 2 if ord is None else ord, dim, keepdim, dtype=dtype)
        if len(dim) == 2:
            return matrix_norm(A, "fro" if ord is None else ord, dim, keepdim, dtype=dtype)
        raise op_error(ShapeError, "linalg.norm", f"dim must be an int or a tuple of 1 or 2 ints, got {dim}")
    if ord is None:
        return vector_norm(A, 2, None, keepdim, dtype=dtype)
    if A.ndim == 2:
        return matrix_norm(A, ord, (-2, -1), keepdim, dtype=dtype)
    if A.ndim == 1 and not isinstance(ord, str):
        return vector_norm(A, ord, None, keepdim, dtype=dtype)
    raise op_error(ShapeError, "linalg.norm", f"if dim is not specified but ord is, the input must be 1D or 2D; "
                   f"got shape {A.shape}")


__all__ = [_n for _n, _v in list(globals().items())
           if not _n.startswith("_") and getattr(_v, "__module__", None) == __name__]
