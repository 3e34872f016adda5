"""Tests for ember.ops._conv_kernels against naive loop references."""

from __future__ import annotations

import math
from itertools import product

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.ops._conv_kernels import (
    conv_general,
    conv_transpose_lhs_params,
    conv_transpose_rhs_params,
    reduce_window,
    reduce_window_sum_transpose_params,
    select_and_scatter_add,
)

SETTINGS = settings(deadline=None, max_examples=40, derandomize=True)


# --------------------------------------------------------------------------- helpers


def dil(n, d):
    return 0 if n == 0 else (n - 1) * d + 1


def out_sizes(in_sp, k_sp, strides, pads, bdil, wdil):
    return tuple(
        (dil(n, bd) + lo + hi - dil(k, wd)) // s + 1
        for n, k, s, (lo, hi), bd, wd in zip(in_sp, k_sp, strides, pads, bdil, wdil)
    )


def src_index(opos, kpos, strides, pads, bdil, wdil, in_sp):
    """Map (output pos, window tap) to an input index, or None if it lands on padding/holes."""
    idx = []
    for o, k, s, (lo, _), bd, wd, n in zip(opos, kpos, strides, pads, bdil, wdil, in_sp):
        p = o * s + k * wd - lo
        if p < 0 or p % bd or p // bd >= n:
            return None
        idx.append(p // bd)
    return tuple(idx)


def relayout(a, layout):
    """Return an array equal to ``a`` but with a non-C-contiguous memory layout."""
    if layout == "transposed":
        rev = tuple(range(a.ndim))[::-1]
        return np.ascontiguousarray(a.transpose(rev)).transpose(rev)
    if layout == "flipped" and a.ndim:
        return np.flip(np.ascontiguousarray(np.flip(a, -1)), -1)
    if layout == "strided" and a.ndim:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    return a


def rand(rng, shape, dtype):
    if np.dtype(dtype).kind in "iu":
        return rng.integers(-3, 4, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def assert_matches(got, want, dtype):
    assert got.dtype == np.dtype(dtype), (got.dtype, dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if np.dtype(dtype).kind in "iu":
        np.testing.assert_array_equal(got, want.astype(dtype))
    elif np.dtype(dtype) == np.float64:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    else:
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=2e-5, atol=2e-5)


# --------------------------------------------------------------------------- references


def ref_conv(x, w, strides, pads, ldil, rdil, g):
    N, C = x.shape[:2]
    O, Cg = w.shape[:2]
    in_sp, k_sp = x.shape[2:], w.shape[2:]
    out_sp = out_sizes(in_sp, k_sp, strides, pads, ldil, rdil)
    acc = np.int64 if x.dtype.kind in "iu" else np.float64
    xa, wa = x.astype(acc), w.astype(acc)
    out = np.zeros((N, O) + out_sp, acc)
    og = O // g
    for opos in product(*map(range, out_sp)):
        for kpos in product(*map(range, k_sp)):
            ipos = src_index(opos, kpos, strides, pads, ldil, rdil, in_sp)
            if ipos is None:
                continue
            for gi in range(g):
                xs = xa[(slice(None), slice(gi * Cg, (gi + 1) * Cg)) + ipos]  # (N, Cg)
                ws = wa[(slice(gi * og, (gi + 1) * og), slice(None)) + kpos]  # (og, Cg)
                out[(slice(None), slice(gi * og, (gi + 1) * og)) + opos] += xs @ ws.T
    return out


def ref_reduce_window(x, kind, win, strides, pads, bdil, wdil):
    out_sp = out_sizes(x.shape, win, strides, pads, bdil, wdil)
    isint = x.dtype.kind in "iu"
    ident = 0 if kind == "sum" else (int(np.iinfo(x.dtype).min) if isint else -math.inf)
    res = np.zeros(out_sp, np.int64 if isint else np.float64)
    for opos in product(*map(range, out_sp)):
        vals = []
        for kpos in product(*map(range, win)):
            ipos = src_index(opos, kpos, strides, pads, bdil, wdil, x.shape)
            vals.append(ident if ipos is None else (int(x[ipos]) if isint else float(x[ipos])))
        if kind == "sum":
            res[opos] = sum(vals)
        elif any(v != v for v in vals):
            res[opos] = math.nan
        else:
            res[opos] = max(vals, default=ident)
    return res


def ref_select_and_scatter_add(source, x, win, strides, pads):
    ones = (1,) * x.ndim
    out_sp = out_sizes(x.shape, win, strides, pads, ones, ones)
    isint = x.dtype.kind in "iu"
    pad_val = int(np.iinfo(x.dtype).min) if isint else -math.inf
    res = np.zeros(x.shape, np.int64 if isint else np.float64)
    for opos in product(*map(range, out_sp)):
        best, best_pos = None, None
        for kpos in product(*map(range, win)):
            ipos = src_index(opos, kpos, strides, pads, ones, ones, x.shape)
            v = pad_val if ipos is None else (int(x[ipos]) if isint else float(x[ipos]))
            if best is None:
                best, best_pos = v, ipos
            elif best != best:  # first NaN sticks
                continue
            elif v != v or v > best:
                best, best_pos = v, ipos
        if best_pos is not None:
            res[best_pos] += source[opos]
    return res


# --------------------------------------------------------------------------- VJP builders


def conv_vjp_lhs(ct, x_shape, w, strides, pads, ldil, rdil, g):
    O, Cg = w.shape[:2]
    k_sp = w.shape[2:]
    C = x_shape[1]
    P, s2 = conv_transpose_lhs_params(x_shape[2:], k_sp, strides, pads, ldil, rdil)
    wt = w.reshape((g, O // g, Cg) + k_sp).swapaxes(1, 2).reshape((C, O // g) + k_sp)
    wt = np.flip(wt, axis=tuple(range(2, wt.ndim)))
    return conv_general(ct, wt, ldil, P, s2, rdil, g)


def conv_vjp_rhs(ct, x, w_shape, strides, pads, ldil, rdil, g):
    N, C = x.shape[:2]
    sp = x.shape[2:]
    Q = conv_transpose_rhs_params(sp, w_shape[2:], ct.shape[2:], strides, pads, ldil, rdil)
    xs = x.swapaxes(0, 1)  # (C, N, *sp)
    if g > 1:
        xs = xs.reshape((g, C // g, N) + sp).swapaxes(0, 1).reshape((C // g, g * N) + sp)
    dw = conv_general(xs, ct.swapaxes(0, 1), rdil, Q, ldil, strides, g)  # (C//g, O, *k)
    return dw.swapaxes(0, 1)


def num_grad(f, x, eps=1e-2):
    gr = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        gr[i] = (f(xp) - f(xm)) / (2 * eps)
    return gr


# --------------------------------------------------------------------------- conv_general


@st.composite
def conv_cases(draw, edgy=False):
    """Conv configs; ``edgy`` widens the ranges so size-0 dims and negative sizes are common."""
    nsp = draw(st.integers(1, 3))
    maxin, maxk, maxp = {1: (7, 3, 2), 2: (5, 3, 2), 3: (3, 2, 1)}[nsp]
    ints = lambda lo, hi: tuple(draw(st.integers(lo, hi)) for _ in range(nsp))  # noqa: E731
    lo = 0 if edgy else 1
    in_sp = ints(lo, maxin) if edgy else ints(2, maxin + 1)
    return dict(
        N=draw(st.integers(lo, 2)),
        g=draw(st.integers(1, 3)),
        Cg=draw(st.integers(lo, 2)),
        og=draw(st.integers(1, 2)),
        in_sp=in_sp,
        k_sp=ints(1, maxk),
        strides=ints(1, 3),
        pads=tuple(zip(ints(-maxp, maxp), ints(-maxp, maxp))) if edgy else tuple(zip(ints(-1, 2), ints(-1, 2))),
        ldil=ints(1, 2),
        rdil=ints(1, 2),
        dtype=draw(st.sampled_from([np.float64, np.float32, np.int32])),
        x_layout=draw(st.sampled_from(["c", "transposed", "flipped", "strided"])),
        w_layout=draw(st.sampled_from(["c", "transposed", "flipped"])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@SETTINGS
@given(conv_cases())
def test_conv_general_matches_reference(c):
    check_conv_case(c)


@SETTINGS
@given(conv_cases(edgy=True))
def test_conv_general_edge_cases_match_reference(c):
    check_conv_case(c)


def check_conv_case(c):
    rng = np.random.default_rng(c["seed"])
    g, Cg, og = c["g"], c["Cg"], c["og"]
    x = rand(rng, (c["N"], g * Cg) + c["in_sp"], c["dtype"])
    w = rand(rng, (g * og, Cg) + c["k_sp"], c["dtype"])
    args = (c["strides"], c["pads"], c["ldil"], c["rdil"])
    xv, wv = relayout(x, c["x_layout"]), relayout(w, c["w_layout"])
    if any(o < 0 for o in out_sizes(c["in_sp"], c["k_sp"], *args)):
        with pytest.raises(ValueError, match="negative output"):
            conv_general(xv, wv, *args, g)
        return
    got = conv_general(xv, wv, *args, g)
    assert_matches(got, ref_conv(x, w, *args, g), c["dtype"])


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_conv_general_low_precision(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 6, 5)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    args = ((2, 1), ((1, 0), (-1, 2)), (1, 1), (1, 2))
    got = conv_general(x, w, *args, 2)
    assert got.dtype == np.dtype(dtype)
    want = ref_conv(x.astype(np.float64), w.astype(np.float64), *args, 2)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=2e-2, atol=5e-2)


def test_conv_general_sizes_zero_and_one():
    w = np.ones((3, 2, 2, 2))
    assert conv_general(np.ones((0, 2, 4, 4)), w, (1, 1), ((0, 0),) * 2, (1, 1), (1, 1)).shape == (0, 3, 3, 3)
    r = conv_general(np.ones((2, 0, 4, 4)), np.ones((3, 0, 2, 2)), (1, 1), ((0, 0),) * 2, (1, 1), (1, 1))
    assert r.shape == (2, 3, 3, 3) and not r.any()
    r = conv_general(np.ones((2, 2, 1, 4)), w, (1, 1), ((0, 0),) * 2, (1, 1), (1, 1))
    assert r.shape == (2, 3, 0, 3)
    # Empty input whose padding alone gives outputs: all zeros.
    r = conv_general(np.ones((1, 2, 0, 3)), w, (1, 1), ((1, 1), (0, 0)), (1, 1), (1, 1))
    assert r.shape == (1, 3, 1, 2) and not r.any()
    r = conv_general(np.ones((1, 1, 1)), np.full((1, 1, 1), 3.0), (1,), ((0, 0),), (1,), (1,))
    assert r.shape == (1, 1, 1) and r[0, 0, 0] == 3.0
    assert conv_general(np.ones((2, 2, 4), np.float32), np.ones((0, 2, 3), np.float32), (1,), ((0, 0),), (1,), (1,)).shape == (2, 0, 2)


def test_conv_general_errors_name_shapes():
    x, w = np.ones((1, 4, 5, 5)), np.ones((6, 3, 3, 3))
    with pytest.raises(ValueError, match=r"\(1, 4, 5, 5\).*\(6, 3, 3, 3\)"):
        conv_general(x, w, (1, 1), ((0, 0),) * 2, (1, 1), (1, 1))
    with pytest.raises(ValueError, match=r"\(1, 4, 5, 5\).*\(6, 2, 3, 3\)"):
        conv_general(x, np.ones((6, 2, 3, 3)), (1, 1), ((0, 0),) * 2, (1, 1), (1, 1), 3)
    with pytest.raises(ValueError, match=r"\(1, 4, 5, 5\).*\(6, 4, 3, 3\).*negative output"):
        conv_general(x, np.ones((6, 4, 3, 3)), (1, 1), ((-4, 0), (0, 0)), (1, 1), (1, 1))


def test_conv_general_1x1_fast_path_and_pointwise():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5, 6))
    w = rng.standard_normal((8, 2, 1, 1))
    args = ((1, 1), ((1, -1), (0, 2)), (1, 2), (1, 1))
    np.testing.assert_allclose(conv_general(x, w, *args, 2), ref_conv(x, w, *args, 2), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- reduce_window


SPECIALS = np.array([np.nan, np.inf, -np.inf])


@st.composite
def rw_cases(draw, edgy=False):
    """reduce_window configs; ``edgy`` makes size-0 dims, empty windows and negative sizes common."""
    nd = draw(st.integers(1, 4))
    maxin, maxw, maxp = {1: (8, 3, 2), 2: (6, 3, 2), 3: (4, 2, 1), 4: (3, 2, 1)}[nd]
    ints = lambda lo, hi: tuple(draw(st.integers(lo, hi)) for _ in range(nd))  # noqa: E731
    if edgy:
        shape, win, pads = ints(0, maxin), ints(0, maxw), tuple(zip(ints(-maxp, maxp), ints(-maxp, maxp)))
    else:
        shape, win, pads = ints(2, maxin), ints(1, maxw), tuple(zip(ints(-1, maxp), ints(-1, maxp)))
    return dict(
        shape=shape,
        win=win,
        strides=ints(1, 3),
        pads=pads,
        bdil=ints(1, 2),
        wdil=ints(1, 2),
        kind=draw(st.sampled_from(["max", "sum"])),
        dtype=draw(st.sampled_from([np.float64, np.float32, np.int32])),
        specials=draw(st.booleans()),
        layout=draw(st.sampled_from(["c", "transposed", "flipped", "strided"])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@SETTINGS
@given(rw_cases())
def test_reduce_window_matches_reference(c):
    check_rw_case(c)


@SETTINGS
@given(rw_cases(edgy=True))
def test_reduce_window_edge_cases_match_reference(c):
    check_rw_case(c)


def check_rw_case(c):
    rng = np.random.default_rng(c["seed"])
    x = rand(rng, c["shape"], c["dtype"])
    if c["specials"] and c["kind"] == "max" and x.dtype.kind == "f" and x.size:
        mask = rng.random(x.shape) < 0.3
        x[mask] = rng.choice(SPECIALS, size=int(mask.sum()))
    args = (c["win"], c["strides"], c["pads"], c["bdil"], c["wdil"])
    xv = relayout(x, c["layout"])
    if any(o < 0 for o in out_sizes(x.shape, *args)):
        with pytest.raises(ValueError, match="negative output"):
            reduce_window(xv, c["kind"], *args)
        return
    got = reduce_window(xv, c["kind"], *args)
    assert_matches(got, ref_reduce_window(x, c["kind"], *args), c["dtype"])


@pytest.mark.parametrize("kind", ["max", "sum"])
def test_reduce_window_pool2d_and_large_window(kind):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 7, 6))
    for win, strides, pads in [
        ((1, 1, 2, 2), (1, 1, 2, 2), ((0, 0), (0, 0), (0, 1), (0, 0))),
        ((1, 1, 3, 3), (1, 1, 2, 1), ((0, 0), (0, 0), (1, 1), (1, -1))),
        ((1, 1, 7, 6), (1, 1, 1, 1), ((0, 0),) * 4),  # global pool: > 64 taps path
        ((2, 1, 5, 5), (1, 1, 1, 1), ((0, 0), (0, 0), (2, 2), (2, 1))),  # 50 taps
        ((1, 3, 5, 6), (1, 1, 1, 1), ((0, 0), (0, 0), (0, 0), (0, 0))),  # 90 taps
    ]:
        args = (win, strides, pads, (1,) * 4, (1,) * 4)
        np.testing.assert_allclose(reduce_window(x, kind, *args), ref_reduce_window(x, kind, *args), rtol=1e-12)


def test_reduce_window_low_precision_and_int_identity():
    x = (np.arange(24, dtype=np.float32).reshape(4, 6) / 7).astype(ml_dtypes.bfloat16)
    args = ((2, 3), (1, 2), ((1, 0), (0, 2)), (1, 1), (1, 1))
    for kind in ("max", "sum"):
        got = reduce_window(x, kind, *args)
        assert got.dtype == x.dtype
        want = ref_reduce_window(x.astype(np.float64), kind, *args)
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-2)
    xi = np.array([[1, 2], [3, 4]], np.int32)
    got = reduce_window(xi, "max", (2, 2), (1, 1), ((2, 0), (0, 0)), (1, 1), (1, 1))
    assert got[0, 0] == np.iinfo(np.int32).min and got[-1, 0] == 4


# --------------------------------------------------------------------------- select_and_scatter_add


@st.composite
def sas_cases(draw, edgy=False):
    """select_and_scatter_add configs; ``edgy`` makes size-0 dims and negative sizes common."""
    nd = draw(st.integers(1, 4))
    maxin, maxw = {1: (8, 3), 2: (6, 3), 3: (4, 2), 4: (3, 2)}[nd]
    ints = lambda lo, hi: tuple(draw(st.integers(lo, hi)) for _ in range(nd))  # noqa: E731
    return dict(
        shape=ints(0, maxin) if edgy else ints(2, maxin),
        win=ints(1, maxw),
        strides=ints(1, 3),
        pads=tuple(zip(ints(-2, 2), ints(-2, 2))) if edgy else tuple(zip(ints(-1, 1), ints(-1, 1))),
        dtype=draw(st.sampled_from([np.float64, np.float32, np.int32])),
        specials=draw(st.booleans()),
        layout=draw(st.sampled_from(["c", "transposed", "flipped", "strided"])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@SETTINGS
@given(sas_cases())
def test_select_and_scatter_add_matches_reference(c):
    check_sas_case(c)


@SETTINGS
@given(sas_cases(edgy=True))
def test_select_and_scatter_add_edge_cases_match_reference(c):
    check_sas_case(c)


def check_sas_case(c):
    rng = np.random.default_rng(c["seed"])
    x = rng.integers(-2, 3, size=c["shape"]).astype(c["dtype"])  # small ints: many ties
    if c["specials"] and x.dtype.kind == "f" and x.size:
        mask = rng.random(x.shape) < 0.3
        x[mask] = rng.choice(SPECIALS, size=int(mask.sum()))
    ones = (1,) * x.ndim
    out_sp = out_sizes(x.shape, c["win"], c["strides"], c["pads"], ones, ones)
    if any(o < 0 for o in out_sp):
        with pytest.raises(ValueError):
            select_and_scatter_add(np.zeros((0,) * x.ndim, c["dtype"]), x, c["win"], c["strides"], c["pads"])
        return
    src = rand(rng, out_sp, c["dtype"])
    got = select_and_scatter_add(relayout(src, c["layout"]), relayout(x, c["layout"]), c["win"], c["strides"], c["pads"])
    assert_matches(got, ref_select_and_scatter_add(src, x, c["win"], c["strides"], c["pads"]), c["dtype"])


def test_select_and_scatter_add_is_max_pool_vjp():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6, 7))
    win, strides, pads = (1, 1, 3, 2), (1, 1, 2, 2), ((0, 0), (0, 0), (1, 0), (0, 1))
    ones = (1,) * 4
    ct = rng.standard_normal(reduce_window(x, "max", win, strides, pads, ones, ones).shape)
    f = lambda z: float(np.sum(ct * reduce_window(z, "max", win, strides, pads, ones, ones)))  # noqa: E731
    np.testing.assert_allclose(select_and_scatter_add(ct, x, win, strides, pads), num_grad(f, x, 1e-6), atol=1e-6)


# --------------------------------------------------------------------------- VJP helpers


VJP_CASES = [
    # nsp, N, C, O, g, in_sp, k_sp, strides, pads, ldil, rdil
    (2, 2, 4, 6, 2, (7, 6), (3, 2), (2, 1), ((1, 2), (0, 1)), (1, 1), (2, 1)),
    (1, 2, 3, 2, 1, (9,), (3,), (2,), ((2, -1),), (1,), (2,)),
    (2, 1, 2, 4, 2, (5, 5), (3, 3), (2, 2), ((1, 0), (2, 1)), (1, 1), (1, 2)),
    (2, 2, 2, 3, 1, (4, 3), (2, 2), (1, 2), ((1, 1), (-1, 2)), (2, 1), (1, 1)),
    (3, 1, 2, 2, 2, (4, 3, 4), (2, 2, 1), (2, 1, 2), ((0, 1), (1, 1), (-1, 0)), (1, 1, 1), (2, 1, 1)),
    (2, 2, 4, 4, 4, (6, 6), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), (1, 1)),
    (1, 1, 2, 2, 2, (6,), (2,), (3,), ((0, 3),), (2,), (2,)),
]


@pytest.mark.parametrize("case", VJP_CASES)
def test_conv_vjp_helpers_central_differences(case):
    nsp, N, C, O, g, in_sp, k_sp, strides, pads, ldil, rdil = case
    rng = np.random.default_rng(4)
    x = rng.standard_normal((N, C) + in_sp)
    w = rng.standard_normal((O, C // g) + k_sp)
    args = (strides, pads, ldil, rdil)
    ct = rng.standard_normal(conv_general(x, w, *args, g).shape)
    dx = conv_vjp_lhs(ct, x.shape, w, *args, g)
    dw = conv_vjp_rhs(ct, x, w.shape, *args, g)
    fx = lambda z: float(np.sum(ct * conv_general(z, w, *args, g)))  # noqa: E731
    fw = lambda z: float(np.sum(ct * conv_general(x, z, *args, g)))  # noqa: E731
    np.testing.assert_allclose(dx, num_grad(fx, x), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(dw, num_grad(fw, w), rtol=1e-8, atol=1e-9)


@SETTINGS
@given(conv_cases())
def test_conv_vjp_helpers_directional(c):
    g, Cg, og = c["g"], max(c["Cg"], 1), c["og"]
    in_sp = tuple(max(n, 1) for n in c["in_sp"])
    args = (c["strides"], c["pads"], c["ldil"], c["rdil"])
    out_sp = out_sizes(in_sp, c["k_sp"], *args)
    if any(o <= 0 for o in out_sp):
        return
    rng = np.random.default_rng(c["seed"])
    N = max(c["N"], 1)
    x = rng.standard_normal((N, g * Cg) + in_sp)
    w = rng.standard_normal((g * og, Cg) + c["k_sp"])
    ct = rng.standard_normal((N, g * og) + out_sp)
    vx, vw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    f = lambda a, b: float(np.sum(ct * conv_general(a, b, *args, g)))  # noqa: E731
    e = 0.5  # f is linear in each argument, so central differences are exact up to rounding
    num_x = (f(x + e * vx, w) - f(x - e * vx, w)) / (2 * e)
    num_w = (f(x, w + e * vw) - f(x, w - e * vw)) / (2 * e)
    dx = conv_vjp_lhs(ct, x.shape, w, *args, g)
    dw = conv_vjp_rhs(ct, x, w.shape, *args, g)
    assert dx.shape == x.shape and dw.shape == w.shape
    np.testing.assert_allclose(np.sum(dx * vx), num_x, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.sum(dw * vw), num_w, rtol=1e-9, atol=1e-9)


def test_conv_transpose_params_match_jax_formulas():
    # Hand-computed from JAX's _conv_general_vjp_{lhs,rhs}_padding.
    P, s2 = conv_transpose_lhs_params((7,), (3,), (2,), ((1, 2),), (1,), (2,))
    # out = (7+3-5)//2+1 = 3; lhs_d=7, rhs_d=5, out_d=5; before=5-1-1=3; after=7+5-1-5-3=3
    assert P == ((3, 3),) and s2 == (2,)
    Q = conv_transpose_rhs_params((7,), (3,), (3,), (2,), ((1, 2),), (1,), (2,))
    # hi = (5-7) + (5-1-1) = 1
    assert Q == ((1, 1),)


@SETTINGS
@given(rw_cases())
def test_reduce_window_sum_transpose_params(c):
    shape = tuple(max(n, 1) for n in c["shape"])
    win = tuple(max(k, 1) for k in c["win"])
    args = (win, c["strides"], c["pads"], c["bdil"], c["wdil"])
    out_sp = out_sizes(shape, *args)
    if any(o < 0 for o in out_sp):
        return
    rng = np.random.default_rng(c["seed"])
    x = rng.standard_normal(shape)
    ct = rng.standard_normal(out_sp)
    v = rng.standard_normal(shape)
    P, b = reduce_window_sum_transpose_params(shape, *args)
    dx = reduce_window(ct, "sum", win, c["bdil"], P, b, c["wdil"])
    assert dx.shape == shape
    f = lambda z: float(np.sum(ct * reduce_window(z, "sum", *args)))  # noqa: E731
    num = (f(x + 0.5 * v) - f(x - 0.5 * v)) / 1.0
    np.testing.assert_allclose(np.sum(dx * v), num, rtol=1e-9, atol=1e-9)


def test_reduce_window_sum_transpose_central_differences():
    rng = np.random.default_rng(5)
    shape = (2, 7, 6)
    args = ((1, 3, 2), (1, 2, 3), ((0, 0), (2, -1), (1, 2)), (1, 1, 2), (1, 2, 1))
    x = rng.standard_normal(shape)
    ct = rng.standard_normal(reduce_window(x, "sum", *args).shape)
    P, b = reduce_window_sum_transpose_params(shape, *args)
    dx = reduce_window(ct, "sum", args[0], args[3], P, b, args[4])
    f = lambda z: float(np.sum(ct * reduce_window(z, "sum", *args)))  # noqa: E731
    np.testing.assert_allclose(dx, num_grad(f, x), rtol=1e-8, atol=1e-9)
