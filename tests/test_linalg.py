"""ember.linalg against torch.linalg (committed fixtures), float64 gradcheck, jit and errors.

The fixtures come from tools/make_linalg_fixtures.py run with torch in a separate environment;
these tests read them with safetensors and never import torch. Decompositions are compared on
sign-normalised factors (Q D and D R with D = sign(diag R); eigen/singular vectors with their
largest entry positive) and their gradients through the gauge-invariant losses the fixtures were
made with (`LOSSES`, the same definitions as the tool's). No book checklist ID covers linear
algebra (../shared/CHECKLIST.md has none).

`LINALG_BUILDERS` are gradcheck input builders in the format of
tests/test_gradcheck_primitives.py's `BUILDERS` (each applies exactly its primitive last), one per
linear-algebra primitive; they are run here, and are meant to be merged into `BUILDERS`.
"""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ember
from ember import autograd
from ember.ops import REGISTRY, P, bind
from ember.ops import decompositions as D
from ember.testing import gradcheck, gradgradcheck

safetensors_numpy = pytest.importorskip("safetensors.numpy")

L = ember.linalg
FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "linalg.json").read_text())
DATA = safetensors_numpy.load_file(str(FIX / "linalg.safetensors"))
DT = {"float32": ember.float32, "float64": ember.float64}
# max |ember - torch| <= atol + rtol * max|torch| over each compared tensor
TOL = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-12)}
LINALG_PRIMS = ("inv", "solve", "triangular_solve", "det", "slogdet", "cholesky", "qr", "eigh", "eigvalsh",
                "svd", "svdvals", "pinv")


def _close(got, want, dtype, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if want.size == 0:
        return
    tol = TOL[dtype]
    err = np.max(np.abs(got - want))
    bound = tol["atol"] + tol["rtol"] * max(1.0, np.max(np.abs(want)))
    assert err <= bound, f"{what}: max abs deviation {err:.3g} > {bound:.3g}"


# ---------------------------------------------------------------- gauge handling (ember or numpy)
def _dsign(r):
    return ember.sign(ember.diagonal(r, dim1=-2, dim2=-1)).detach()


def _norm_cols(x: np.ndarray) -> np.ndarray:
    """Signs of the columns of x (..., m, k) that make each column's largest-|.| entry positive."""
    if x.size == 0:
        return np.ones(x.shape[:-2] + x.shape[-1:])
    idx = np.argmax(np.abs(x), axis=-2)[..., None, :]
    return np.sign(np.take_along_axis(x, idx, axis=-2))[..., 0, :]


def loss_dot(outs, ws):
    return sum((o * w).sum() for o, w in zip(outs, ws))


def loss_qr(outs, ws):
    q, r = outs
    d = _dsign(r)
    return (ws[0] * (q * d[..., None, :])).sum() + (ws[1] * (d[..., :, None] * r)).sum()


def loss_eigh(outs, ws):
    lam, v = outs
    return (ws[0] * lam).sum() + (ws[1] * v * v).sum() + (ws[2] * ((v * lam[..., None, :]) @ v.mT)).sum()


def loss_svd(outs, ws):
    u, s, vh = outs
    k = s.shape[-1]
    u, vh = u[..., :, :k], vh[..., :k, :]
    return (ws[0] * s).sum() + (ws[1] * u * u).sum() + (ws[2] * vh * vh).sum() + (ws[3] * (u @ vh)).sum()


def loss_first(outs, ws):
    return (outs[1 if len(outs) == 2 else 0] * ws[0]).sum()


LOSSES = {"dot": loss_dot, "qr": loss_qr, "eigh": loss_eigh, "svd": loss_svd, "slogdet": loss_first,
          "lstsq": loss_first}


def _kwargs(kw: dict) -> dict:
    out = {}
    for k, v in kw.items():
        if k == "ord" and v in ("inf", "-inf"):
            v = float(v)
        out[k] = tuple(v) if isinstance(v, list) else v
    return out


def _compare_outputs(fn, kw, got, want, dtype, name):
    """Outputs of one case; decompositions as sign-normalised factors."""
    if fn == "qr":
        (q, r), (tq, tr) = got, want
        if kw.get("mode") == "r":
            _close(q, tq, dtype, f"{name} Q")
            q = tq = np.zeros(r.shape[:-1] + (0,))
        d, td = np.sign(np.diagonal(r, axis1=-2, axis2=-1)), np.sign(np.diagonal(tr, axis1=-2, axis2=-1))
        k = d.shape[-1]
        if q.size:
            _close(q[..., :, :k] * d[..., None, :], tq[..., :, :k] * td[..., None, :], dtype, f"{name} Q")
            if q.shape[-1] > k:  # complete mode: the extra columns are an orthonormal complement
                _close(np.swapaxes(q, -1, -2) @ q, np.broadcast_to(np.eye(q.shape[-1]), q.shape), dtype,
                       f"{name} Q^T Q")
        pad = [(0, 0)] * (d.ndim - 1) + [(0, r.shape[-2] - k)]  # complete mode's R has zero rows below k
        d, td = np.pad(d, pad, constant_values=1), np.pad(td, pad, constant_values=1)
        _close(d[..., :, None] * r, td[..., :, None] * tr, dtype, f"{name} R")
    elif fn == "eigh":
        (w, v), (tw, tv) = got, want
        _close(w, tw, dtype, f"{name} eigenvalues")
        _close(v * _norm_cols(v)[..., None, :], tv * _norm_cols(tv)[..., None, :], dtype, f"{name} eigenvectors")
    elif fn == "svd":
        (u, s, vh), (tu, ts, tvh) = got, want
        k = s.shape[-1]
        _close(s, ts, dtype, f"{name} S")
        sg, tsg = _norm_cols(u[..., :, :k]), _norm_cols(tu[..., :, :k])
        _close(u[..., :, :k] * sg[..., None, :], tu[..., :, :k] * tsg[..., None, :], dtype, f"{name} U")
        _close(vh[..., :k, :] * sg[..., :, None], tvh[..., :k, :] * tsg[..., :, None], dtype, f"{name} Vh")
        assert u.shape == tu.shape and vh.shape == tvh.shape
        for x, what in ((u, "U^T U"), (np.swapaxes(vh, -1, -2), "V^T V")):
            _close(np.swapaxes(x, -1, -2) @ x, np.broadcast_to(np.eye(x.shape[-1]), x.shape[:-2] + (x.shape[-1],) * 2),
                   dtype, f"{name} {what}")
    else:
        for i, (g, t) in enumerate(zip(got, want)):
            assert g.dtype == t.dtype, f"{name} output {i}: dtype {g.dtype} != {t.dtype}"
            _close(g, t, dtype, f"{name} output {i}")


def run_fixture(key: str, transpose_inputs: bool = False):
    """Run case `key` with ember; returns {what: max abs deviation} after asserting the tolerance."""
    case = META["cases"][key]
    dtype = case["dtype"]
    ins = {}
    for arg in case["inputs"]:
        a = DATA[f"{key}.{arg}"]
        if transpose_inputs and a.ndim >= 2:  # the same values, as a transposed (non-contiguous) view
            t = ember.tensor(np.ascontiguousarray(np.swapaxes(a, -1, -2)), dtype=DT[dtype])
            t = t.mT.detach().requires_grad_(arg in case["grads"])
            assert not t.is_contiguous() or min(a.shape[-2:]) <= 1
        else:
            t = ember.tensor(a, dtype=DT[dtype], requires_grad=arg in case["grads"])
        ins[arg] = t
    res = getattr(L, case["fn"])(*ins.values(), **_kwargs(case["kwargs"]))
    outs = list(res) if isinstance(res, tuple) else [res]
    assert len(outs) == case["outputs"]
    want = [DATA[f"{key}.out.{i}"] for i in range(case["outputs"])]
    _compare_outputs(case["fn"], case["kwargs"], [o.detach().numpy() for o in outs], want, dtype, key)
    if not case["grads"]:
        return
    ws = [ember.tensor(DATA[f"{key}.w.{i}"], dtype=DT[dtype]) for i in range(case["weights"])]
    loss = LOSSES[case["loss"]](outs, ws)
    if not loss.requires_grad:  # a piecewise-constant op (vector_norm with ord=0): zero gradients
        gs = [None] * len(case["grads"])
    else:
        gs = autograd.grad([loss], [ins[a] for a in case["grads"]], allow_unused=True)
    for a, g in zip(case["grads"], gs):
        want_g = DATA[f"{key}.grad.{a}"]
        got_g = np.zeros_like(want_g) if g is None else g.detach().numpy()
        _close(got_g, want_g, dtype, f"{key} grad {a}")


@pytest.mark.parametrize("key", sorted(META["cases"]))
def test_matches_torch(key):
    run_fixture(key)


NONCONTIGUOUS = ["inv_batched.float64", "solve.float64", "det_batched.float64", "cholesky.float64",
                 "eigh.float64", "qr_tall.float64", "svd_wide.float64", "pinv_wide.float64", "lstsq_tall.float64",
                 "matrix_norm_2.float64", "cholesky.float32"]


@pytest.mark.parametrize("key", NONCONTIGUOUS)
def test_transposed_inputs_match_torch(key):
    """Inputs given as transposed views (strides swapped) give the same values and gradients."""
    run_fixture(key, transpose_inputs=True)


def test_fixture_cover_every_function_and_both_dtypes():
    fns = {c["fn"] for c in META["cases"].values()}
    assert fns >= {"inv", "solve", "solve_triangular", "det", "slogdet", "cholesky", "qr", "eigh", "eigvalsh",
                   "svd", "svdvals", "pinv", "lstsq", "matrix_rank", "norm", "vector_norm", "matrix_norm"}
    assert {c["dtype"] for c in META["cases"].values()} == {"float32", "float64"}


# ---------------------------------------------------------------- float64 gradcheck of every op
_rng = np.random.default_rng(1234)


def _T(a):
    return ember.tensor(np.asarray(a, np.float64), dtype=ember.float64, requires_grad=True)


def _wellcond(*shape, rng=_rng):
    *batch, m, n = shape
    k = min(m, n)
    u = np.linalg.qr(rng.standard_normal(tuple(batch) + (m, m)))[0][..., :k]
    v = np.linalg.qr(rng.standard_normal(tuple(batch) + (n, n)))[0][..., :k]
    s = np.linspace(1.0, 3.0, k) + rng.uniform(0, 0.2, tuple(batch) + (k,))
    return (u * s[..., None, :]) @ np.swapaxes(v, -1, -2)


def _spd(*shape, rng=_rng):
    x = rng.standard_normal(shape)
    return x @ np.swapaxes(x, -1, -2) + shape[-1] * np.eye(shape[-1])


def _sym(f):
    """f of the symmetric part: eigh/cholesky read one triangle, their gradient is the symmetric one."""
    return lambda a, *rest: f((a + a.mT) * 0.5, *rest)


A3, B32 = _wellcond(2, 3, 3), _rng.standard_normal((2, 3, 2))
TALL, WIDE, SPD = _wellcond(4, 3), _wellcond(2, 3, 4), _spd(2, 3, 3)
GRADCHECK = {
    "inv": (L.inv, [A3]),
    "solve": (L.solve, [A3, B32]),
    "solve_vector": (lambda a, b: L.solve(a, b[..., 0]), [A3, B32]),
    "solve_broadcast_right": (lambda a, b: L.solve(a[0], b.mT, left=False), [A3, B32]),
    "solve_triangular": (lambda a, b: L.solve_triangular(a, b, upper=True), [A3, B32]),
    "solve_triangular_unit_right": (lambda a, b: L.solve_triangular(a, b.mT, upper=False, left=False,
                                                                    unitriangular=True), [A3, B32]),
    "det": (L.det, [A3]),
    "slogdet": (lambda a: L.slogdet(a).logabsdet, [A3]),
    "logdet": (lambda a: L.logdet(a @ a.mT), [A3]),
    "cholesky": (_sym(L.cholesky), [SPD]),
    "cholesky_upper": (_sym(lambda a: L.cholesky(a, upper=True)), [SPD]),
    "qr_tall": (lambda a: tuple(L.qr(a)), [TALL]),
    "qr_wide": (lambda a: tuple(L.qr(a)), [WIDE]),
    "qr_complete_square": (lambda a: tuple(L.qr(a, mode="complete")), [A3]),
    "eigh": (_sym(lambda a: tuple(L.eigh(a))), [SPD]),
    "eigh_upper": (_sym(lambda a: tuple(L.eigh(a, UPLO="U"))), [SPD]),
    "eigvalsh": (_sym(L.eigvalsh), [SPD]),
    "svd_tall": (lambda a: tuple(L.svd(a, full_matrices=False)), [TALL]),
    "svd_wide": (lambda a: tuple(L.svd(a, full_matrices=False)), [WIDE]),
    "svd_full": (lambda a: (lambda u, s, vh: (u[..., :3], s, vh))(*L.svd(a)), [TALL]),
    "svdvals": (L.svdvals, [WIDE]),
    "pinv_tall": (L.pinv, [TALL]),
    "pinv_wide": (L.pinv, [WIDE]),
    "pinv_hermitian": (_sym(lambda a: L.pinv(a, hermitian=True)), [SPD]),
    "lstsq": (lambda a, b: L.lstsq(a, b).solution, [_wellcond(5, 3), _rng.standard_normal((5, 2))]),
    "lstsq_min_norm": (lambda a, b: L.lstsq(a, b).solution, [WIDE, _rng.standard_normal((2, 3))]),
    "norm": (L.norm, [TALL]),
    "vector_norm_3": (lambda x: L.vector_norm(x, 3, dim=-1), [TALL]),
    "vector_norm_inf": (lambda x: L.vector_norm(x, math.inf), [TALL]),
    "matrix_norm_nuc": (lambda a: L.matrix_norm(a, "nuc"), [WIDE]),
    "matrix_norm_2": (lambda a: L.matrix_norm(a, 2), [WIDE]),
    "matrix_norm_-2": (lambda a: L.matrix_norm(a, -2), [WIDE]),
    "matrix_norm_1_dims": (lambda a: L.matrix_norm(a, 1, dim=(0, 2), keepdim=True), [WIDE]),
    "matrix_norm_-inf": (lambda a: L.matrix_norm(a, -math.inf), [WIDE]),
}
SECOND_ORDER = ["inv", "solve", "solve_triangular", "det", "slogdet", "cholesky", "qr_tall", "qr_wide", "eigh",
                "eigvalsh", "svd_tall", "svd_wide", "svdvals", "pinv_tall", "pinv_wide", "lstsq"]


@pytest.mark.parametrize("name", sorted(GRADCHECK))
def test_gradcheck(name):
    fn, arrays = GRADCHECK[name]
    assert gradcheck(fn, [_T(a) for a in arrays])


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_gradgradcheck(name):
    fn, arrays = GRADCHECK[name]
    assert gradgradcheck(fn, [_T(a) for a in arrays])


def test_every_linalg_primitive_is_gradchecked_by_name():
    """Every primitive of ember/ops/decompositions.py is registered, differentiable and has a builder."""
    mine = {n for n, p in REGISTRY.items() if p.vjp is not None and p.vjp.__module__ == D.__name__}
    assert mine == set(LINALG_PRIMS) == set(LINALG_BUILDERS)


# ---------------------------------------------------------------- builders (test_gradcheck_primitives format)
def _draw(data, square: bool):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    batch = tuple(data.draw(st.lists(st.integers(0, 2), max_size=1), label="batch"))  # 0: empty batches too
    m = data.draw(st.integers(1, 3), label="m")
    n = m if square else data.draw(st.integers(1, 3), label="n")
    return rng, batch, m, n


def _b_unary(name: str, kind: str, **params):
    """A builder for a one-operand primitive: kind 'square' or 'rect' (well-conditioned) or 'spd'."""
    def build(data, order=1):
        rng, batch, m, n = _draw(data, square=kind != "rect")
        if kind == "spd":  # symmetrised inside fn: the primitive reads one triangle
            return (lambda x: bind(REGISTRY[name], (x + x.mT) * 0.5, **params)), [_T(_spd(*batch, m, m, rng=rng))]
        return (lambda x: bind(REGISTRY[name], x, **params)), [_T(_wellcond(*batch, m, n, rng=rng))]
    return build


def _b_solve(name: str, **params):
    def build(data, order=1):
        rng, batch, n, _ = _draw(data, square=True)
        k = data.draw(st.integers(1, 2), label="k")
        a, b = _wellcond(*batch, n, n, rng=rng), rng.standard_normal(batch + (n, k))
        return (lambda x, y: bind(REGISTRY[name], x, y, **params)), [_T(a), _T(b)]
    return build


LINALG_BUILDERS = {
    "inv": _b_unary("inv", "square"), "det": _b_unary("det", "square"), "slogdet": _b_unary("slogdet", "square"),
    "solve": _b_solve("solve"), "triangular_solve": _b_solve("triangular_solve", upper=False, unitriangular=False),
    "cholesky": _b_unary("cholesky", "spd"), "eigh": _b_unary("eigh", "spd", UPLO="L"),
    "eigvalsh": _b_unary("eigvalsh", "spd", UPLO="U"),
    "qr": _b_unary("qr", "rect", mode="reduced"), "svd": _b_unary("svd", "rect", full_matrices=False),
    "svdvals": _b_unary("svdvals", "rect"),
    "pinv": _b_unary("pinv", "rect", atol=0.0, rtol=1e-12, hermitian=False),
}


@pytest.mark.parametrize("name", LINALG_PRIMS)
def test_builders_gradcheck(name):
    @settings(max_examples=8)
    @given(data=st.data())
    def run(data):
        fn, inputs = LINALG_BUILDERS[name](data)
        out = fn(*inputs)
        assert out.grad_fn is not None and out.grad_fn.prim is REGISTRY[name]
        assert gradcheck(fn, inputs)

    run()


@pytest.mark.parametrize("name", LINALG_PRIMS)
def test_builders_gradgradcheck(name):
    @settings(max_examples=3)
    @given(data=st.data())
    def run(data):
        fn, inputs = LINALG_BUILDERS[name](data, order=2)
        assert gradgradcheck(fn, inputs)

    run()


# ---------------------------------------------------------------- jit: host units, same values and gradients
def _step(A, B, S):
    x = L.solve(A, B) + L.inv(A) @ B
    c = L.cholesky(S)
    w, v = L.eigh(S)
    loss = (x * x).sum() + (c * c).sum() + (w * w).sum() + ((v * v) * w[..., None, :]).sum() + L.det(A).sum()
    loss.backward()
    return loss


def _run_step(fn, dtype):
    rng = np.random.default_rng(7)
    a, b, s = _wellcond(2, 3, 3, rng=rng), rng.standard_normal((2, 3, 2)), _spd(2, 3, 3, rng=rng)
    ts = [ember.tensor(v, dtype=dtype, requires_grad=True) for v in (a, b, s)]
    loss = fn(*ts)
    return [loss.detach().numpy()] + [t.grad.numpy() for t in ts]


@pytest.mark.parametrize("backend", ["numpy", "native", "sim"])
def test_jit_matches_eager(backend):
    from ember.backend.cpu import compiler
    if backend == "native" and not compiler.available():
        pytest.skip("needs a C compiler")
    for dtype, tol in ((ember.float64, 1e-12), (ember.float32, 1e-5)):
        eager = _run_step(_step, dtype)
        jitted = _run_step(ember.jit(_step, backend=backend), dtype)
        for e, j in zip(eager, jitted):
            np.testing.assert_allclose(j, e, rtol=tol, atol=tol)


def test_jit_runs_linalg_on_the_host_and_inspect_names_it():
    rng = np.random.default_rng(7)
    args = [ember.tensor(v, requires_grad=True) for v in (_wellcond(2, 3, 3, rng=rng), rng.standard_normal((2, 3, 2)),
                                                          _spd(2, 3, 3, rng=rng))]
    text = str(ember.inspect(ember.jit(_step), *args))
    for name in ("solve", "inv", "cholesky", "eigh", "det", "triangular_solve"):
        assert f"host: {name}" in text


def test_jit_error_names_the_op():
    with pytest.raises(L.LinAlgError, match="linalg.inv.*singular"):
        ember.jit(L.inv)(ember.zeros(3, 3))
    with pytest.raises(ember.ShapeError, match=r"linalg.cholesky.*square.*\(3, 4\)"):
        ember.jit(L.cholesky)(ember.zeros(3, 4))


# ---------------------------------------------------------------- errors
def test_linalg_error_class():
    assert issubclass(L.LinAlgError, ember.EmberError) and issubclass(L.LinAlgError, RuntimeError)


def test_singular_matrix_raises_naming_op_shape_and_batch_element():
    a = np.stack([np.eye(3), np.zeros((3, 3))])
    with pytest.raises(L.LinAlgError,
                       match=r"linalg.inv: batch element 1 of the input of shape \(2, 3, 3\) is singular"):
        L.inv(ember.tensor(a))
    with pytest.raises(L.LinAlgError, match=r"linalg.solve: .*shape \(3, 3\) is singular.*no unique solution"):
        L.solve(ember.zeros(3, 3), ember.ones(3))
    with pytest.raises(L.LinAlgError, match="linalg.solve_triangular: .*zero on its diagonal"):
        L.solve_triangular(ember.zeros(3, 3), ember.ones(3, 1), upper=True)


def test_not_positive_definite_raises_with_the_minor():
    with pytest.raises(L.LinAlgError, match=r"linalg.cholesky: the input of shape \(2, 2\) is not positive-definite "
                       r"\(the leading minor of order 2"):
        L.cholesky(ember.tensor([[1.0, 2.0], [2.0, 1.0]]))
    a = np.stack([np.eye(3), -np.eye(3)])
    with pytest.raises(L.LinAlgError, match="batch element 1 .* order 1"):
        L.cholesky(ember.tensor(a))


def test_shape_errors_name_both_shapes():
    with pytest.raises(ember.ShapeError, match=r"linalg.inv: .*square.*3 by 4"):
        L.inv(ember.zeros(3, 4))
    with pytest.raises(ember.ShapeError, match=r"at least 2 dims, got shape \(3,\)"):
        L.det(ember.zeros(3))
    with pytest.raises(ember.ShapeError, match=r"A of shape \(3, 3\) and B of shape \(4,\)"):
        L.solve(ember.zeros(3, 3), ember.zeros(4))
    with pytest.raises(ember.ShapeError, match=r"A of shape \(2, 3, 3\) and B of shape \(4, 3, 1\) do not broadcast"):
        L.solve(ember.zeros(2, 3, 3), ember.zeros(4, 3, 1))
    with pytest.raises(ember.ShapeError, match=r"A of shape \(5, 3\), B of shape \(4, 2\)"):
        L.lstsq(ember.zeros(5, 3), ember.zeros(4, 2))
    with pytest.raises(ember.ShapeError, match="input must be 1D or 2D"):
        L.norm(ember.zeros(2, 3, 4), ord=2)
    with pytest.raises(ember.ShapeError, match=r"linalg.solve: .*\(3, 3\) and B of shape \(2, 3, 1\)"):
        bind(P.solve, ember.zeros(3, 3), ember.zeros(2, 3, 1))  # the primitive itself wants equal batches


def test_dtype_and_argument_errors():
    with pytest.raises(ember.DTypeError, match="linalg.inv: expected a float32 or float64 tensor, got int64"):
        L.inv(ember.zeros(3, 3, dtype=ember.int64))
    with pytest.raises(ember.DTypeError, match="float16"):
        L.cholesky(ember.zeros(3, 3, dtype=ember.float16))
    with pytest.raises(ember.DTypeError, match="no kernel for dtype int32"):
        bind(P.svd, ember.zeros(3, 3, dtype=ember.int32), full_matrices=False)
    with pytest.raises(ValueError, match="mode"):
        L.qr(ember.zeros(3, 3), mode="economic")
    with pytest.raises(ValueError, match="UPLO"):
        L.eigh(ember.eye(3), UPLO="X")
    with pytest.raises(ValueError, match="order 3 not supported"):
        L.matrix_norm(ember.zeros(3, 3), ord=3)
    with pytest.raises(ValueError, match="driver"):
        L.svd(ember.zeros(3, 3), driver="gesvdj")


def test_non_differentiable_modes_raise_at_backward():
    a = ember.randn(4, 3, requires_grad=True)
    with pytest.raises(ember.AutogradError, match="mode='complete' and nrows > ncols"):
        L.qr(a, mode="complete").Q.sum().backward()
    with pytest.raises(ember.AutogradError, match="mode='r'"):
        L.qr(a, mode="r").R.sum().backward()
    s = ember.tensor([[1.0, 2.0], [2.0, 4.0]], requires_grad=True)
    with pytest.raises(L.LinAlgError, match="linalg.det: the gradient at a singular matrix"):
        L.det(s).backward()


# ---------------------------------------------------------------- semantics
@pytest.mark.filterwarnings("ignore:invalid value encountered in log")
def test_singular_det_and_slogdet_values():
    z = ember.tensor([[1.0, 2.0], [2.0, 4.0]])
    assert float(L.det(z)) == 0.0
    sign, logabsdet = L.slogdet(ember.zeros(2, 2))
    assert float(sign) == 0.0 and float(logabsdet) == -math.inf
    assert math.isnan(float(L.logdet(ember.tensor([[-1.0]]))))


def test_aliases_and_result_types():
    a = ember.tensor(_wellcond(3, 3))
    np.testing.assert_array_equal(L.inverse(a).numpy(), L.inv(a).numpy())
    np.testing.assert_allclose(L.pinverse(a).numpy(), np.linalg.pinv(a.numpy(), rcond=1e-15), rtol=1e-10)
    np.testing.assert_allclose(float(L.logdet(a @ a.mT)), np.linalg.slogdet(a.numpy() @ a.numpy().T)[1], rtol=1e-12)
    assert set(L.TORCH_ALIASES) <= set(L.__all__)
    assert L.qr(a)._fields == ("Q", "R") and L.svd(a)._fields == ("U", "S", "Vh")
    assert L.eigh(a @ a.mT)._fields == ("eigenvalues", "eigenvectors")
    assert L.slogdet(a)._fields == ("sign", "logabsdet")
    r = L.lstsq(ember.tensor(_wellcond(5, 3)), ember.ones(5, 2), driver="gelsd")
    assert r._fields == ("solution", "residuals", "rank", "singular_values")
    assert r.residuals.shape == (2,) and int(r.rank) == 3 and r.singular_values.shape == (3,)
    assert L.lstsq(ember.tensor(_wellcond(5, 3)), ember.ones(5, 2)).residuals.shape == (0,)


def test_repeated_eigen_and_singular_values_give_the_values_gradient():
    """Only the values used: the dropped 1/(l_j - l_i) terms leave d sum(l) / dA = I (and U Vh for svd)."""
    a = ember.eye(3, dtype=ember.float64, requires_grad=True)
    L.eigh(a).eigenvalues.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), np.eye(3), atol=1e-15)
    b = ember.tensor(2 * np.eye(4)[:, :3], requires_grad=True)
    u, s, vh = L.svd(b, full_matrices=False)
    s.sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), (u @ vh).detach().numpy(), atol=1e-15)
    assert np.isfinite(b.grad.numpy()).all()


def test_vector_norm_gradient_at_zero_is_zero():
    for ord in (2, 3, 1, math.inf):
        x = ember.zeros(3, requires_grad=True)
        L.vector_norm(x, ord).backward()
        np.testing.assert_array_equal(x.grad.numpy(), 0.0)


def test_matrix_rank_and_float32_default_tolerance():
    a = np.random.default_rng(3).standard_normal((2, 5, 2)) @ np.random.default_rng(4).standard_normal((2, 2, 4))
    assert L.matrix_rank(ember.tensor(a)).tolist() == [2, 2]
    assert L.matrix_rank(ember.tensor(a, dtype=ember.float32)).dtype is ember.int64
    assert int(L.matrix_rank(ember.zeros(3, 0))) == 0
    assert L.matrix_rank(ember.tensor(a), atol=1e9).tolist() == [0, 0]


def test_empty_matrices():
    for n in (0,):
        e = ember.zeros(2, n, n)
        assert L.inv(e).shape == (2, 0, 0) and L.det(e).tolist() == [1.0, 1.0]
        assert L.cholesky(e).shape == (2, 0, 0) and L.eigvalsh(e).shape == (2, 0)
    u, s, vh = L.svd(ember.zeros(3, 0))
    assert u.shape == (3, 3) and s.shape == (0,) and vh.shape == (0, 0)
    assert L.pinv(ember.zeros(3, 0)).shape == (0, 3)
