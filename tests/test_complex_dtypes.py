"""Every primitive x every complex dtype it claims (`Primitive.dtypes`) against numpy.

The complex counterpart of tests/test_ops_dtypes.py: `CHECKS` holds one checker per primitive that
lists complex64 or complex128, and `test_every_complex_primitive_has_a_checker` keeps it in step
with the registry. Values mix special parts (NaN, +-inf, -0.0, subnormals) in the real and the
imaginary part independently; operands come contiguous, transposed, strided, broadcast (stride 0),
and as empty, size-1 and 0-d tensors. Data movement must keep the bits; arithmetic must equal
numpy's complex128 ufunc rounded to the dtype (numpy's complex64 ufuncs are what ember runs, so
the comparison is exact there too, NaN positions included).
"""
from __future__ import annotations

import numpy as np
import pytest

import ember
from ember._core import dtypes as dt
from ember.ops.core import REGISTRY

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

PARTS = np.array([0.0, -0.0, 1.5, -2.25, np.nan, np.inf, -np.inf, 1e-40, 3.0])


def values(d, n=None):
    """A complex array of dtype `d` pairing every special real part with every imaginary part."""
    re, im = np.meshgrid(PARTS, PARTS[::-1] * 0.5, indexing="ij")
    z = np.empty(re.shape, d.np)
    z.real, z.imag = re, im
    return z if n is None else z.reshape(-1)[:n]


def T(a):
    return ember.tensor(np.array(a))


def views(z):
    """(label, ember tensor) of `z` (2-D) contiguous, transposed and strided."""
    big = np.zeros(z.shape[:-1] + (2 * z.shape[-1],), z.dtype)
    big[..., ::2] = z
    out = [("contig", T(z)), ("transposed", T(np.ascontiguousarray(z.T)).T), ("strided", T(big)[..., ::2])]
    for label, t in out[1:]:
        assert not t.is_contiguous(), label
    return out


def same(got, want, d, ctx=""):
    """Equal dtype, shape and bits of both parts (NaN == NaN, signed zeros distinguished)."""
    want = np.asarray(want)
    if want.dtype.kind == "c":
        want = want.astype(d.np)
    g = got.numpy()
    assert g.dtype == want.dtype and g.shape == want.shape, (ctx, g.dtype, want.dtype, g.shape, want.shape)
    if g.dtype.kind == "c":
        for part in ("real", "imag"):
            a, b = getattr(g, part), getattr(want, part)
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{ctx} {part} NaN")
            ok = ~np.isnan(a)
            np.testing.assert_array_equal(a[ok], b[ok], err_msg=f"{ctx} {part}")
            np.testing.assert_array_equal(np.signbit(a[ok]), np.signbit(b[ok]), err_msg=f"{ctx} {part} sign")
    else:
        np.testing.assert_array_equal(g, want, err_msg=ctx)


# ---------------------------------------------------------------- elementwise
UNARY = {"neg": np.negative, "exp": np.exp, "isnan": np.isnan, "conj": np.conjugate,
         "real": lambda z: z.real.copy(), "imag": lambda z: z.imag.copy(), "complex_abs": np.abs}
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide,
          "eq": np.equal, "ne": np.not_equal}


def check_unary(name, d):
    z = values(d)
    ref = UNARY[name]
    with np.errstate(all="ignore"):
        for label, t in views(z):
            same(REGISTRY[name].bind(t), ref(z), d, f"{name}[{label}]")
        for shape in ((), (0,), (1, 1), (0, 3)):
            a = values(d).reshape(-1)[:int(np.prod(shape))].reshape(shape)
            same(REGISTRY[name].bind(T(a)), ref(a), d, f"{name}{shape}")


def check_binary(name, d):
    z = values(d)
    ref = BINARY[name]
    col = z[:, :1].copy()  # broadcast along the columns
    with np.errstate(all="ignore"):
        for label, t in views(z):
            same(REGISTRY[name].bind(t, T(z[::-1].copy())), ref(z, z[::-1]), d, f"{name}[{label}]")
            same(REGISTRY[name].bind(t, T(col)), ref(z, col), d, f"{name}[{label}, broadcast]")
        stride0 = T(col).expand(*z.shape)
        same(REGISTRY[name].bind(stride0, T(z)), ref(np.broadcast_to(col, z.shape), z), d, f"{name}[stride 0]")
        real = np.linspace(-2, 2, z.shape[1]).astype(dt.REAL_OF[d].np)  # a real operand promotes
        same(REGISTRY[name].bind(T(z), T(real)), ref(z, real.astype(d.np)), d, f"{name}[real]")
        same(REGISTRY[name].bind(T(z), 2.5j), ref(z, np.asarray(2.5j, d.np)), d, f"{name}[python complex]")
        e = np.zeros((0, 3), d.np)
        same(REGISTRY[name].bind(T(e), T(e)), ref(e, e), d, f"{name}[empty]")


def check_select(name, d):
    z = values(d)
    c = (np.add.outer(np.arange(z.shape[0]), np.arange(z.shape[1])) % 2 == 0)
    for label, t in views(z):
        same(REGISTRY[name].bind(T(c), t, T(z[::-1].copy())), np.where(c, z, z[::-1]), d, f"select[{label}]")
    same(REGISTRY[name].bind(T(c), T(z), 0j), np.where(c, z, 0), d, "select[scalar]")


def check_convert(name, d):
    z = values(d)
    for dst in dt.COMPLEX + (dt.float32, dt.float64):
        want = z.astype(dst.np) if dst.kind == "c" else z.real.astype(dst.np)  # keeps the real part
        for label, t in views(z):
            same(REGISTRY[name].bind(t, dtype=dst), want, dst, f"convert->{dst.name}[{label}]")
    r = np.array([[1.5, -0.0, np.nan]], np.float32)  # real -> complex: a zero imaginary part
    same(REGISTRY[name].bind(T(r), dtype=d), r.astype(d.np), d, "convert real->complex")


def check_reduce_sum(name, d):
    z = values(d)
    z[np.isnan(z)] = 1 + 1j  # NaN placement differs with the summation order
    for label, t in views(z):
        for axes in ((0,), (1,), (0, 1)):
            got = REGISTRY[name].bind(t, axes=axes)
            want = np.add.reduce(z.astype(np.complex128), axis=axes).astype(d.np)
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-6 if d is dt.complex64 else 1e-14)
    same(REGISTRY[name].bind(T(np.zeros((0, 2), d.np)), axes=(0,)), np.zeros(2, d.np), d, "sum of empty")


# ---------------------------------------------------------------- data movement (bit-exact)
def _moves(d):
    z = values(d)
    i2 = np.array([[2, 0, 1]], np.int64)
    return {
        "reshape": (lambda t: REGISTRY["reshape"].bind(t, shape=(z.size,)), lambda a: a.reshape(-1)),
        "broadcast_in_dim": (lambda t: REGISTRY["broadcast_in_dim"].bind(t, shape=(2,) + z.shape, dims=(1, 2)),
                             lambda a: np.broadcast_to(a, (2,) + z.shape)),
        "transpose": (lambda t: REGISTRY["transpose"].bind(t, perm=(1, 0)), lambda a: a.T),
        "slice": (lambda t: REGISTRY["slice"].bind(t, start=(1, 0), stop=(7, 9), step=(2, 3)),
                  lambda a: a[1:7:2, 0:9:3]),
        "pad": (lambda t: REGISTRY["pad"].bind(t, value=0.0, config=((1, 2, 0), (0, 1, 1))),
                lambda a: _pad_ref(a)),
        "concatenate": (lambda t: REGISTRY["concatenate"].bind(t, t, axis=1), lambda a: np.concatenate([a, a], 1)),
        "rev": (lambda t: REGISTRY["rev"].bind(t, axes=(0, 1)), lambda a: a[::-1, ::-1]),
        "gather": (lambda t: REGISTRY["gather"].bind(t, T(np.array([3, 0, 3])), axis=1), lambda a: a[:, [3, 0, 3]]),
        "take_along_axis": (lambda t: REGISTRY["take_along_axis"].bind(t, T(np.broadcast_to(i2, (z.shape[0], 3))), axis=1),
                            lambda a: np.take_along_axis(a, np.broadcast_to(i2, (z.shape[0], 3)), 1)),
    }


def _pad_ref(a):
    out = np.zeros((a.shape[0] + 3, 2 * a.shape[1]), a.dtype)
    out[1:1 + a.shape[0], 0:2 * a.shape[1] - 1:2] = a
    return out


def check_move(name, d):
    fn, ref = _moves(d)[name]
    z = values(d)
    for label, t in views(z):
        same(fn(t), ref(z), d, f"{name}[{label}]")


def check_scatter_add(name, d):
    z = values(d)[:4, :3].copy()
    z[np.isnan(z)] = 0
    upd = np.full((z.shape[0], 2), 1 - 2j, d.np)
    if name == "scatter_add":
        got = REGISTRY[name].bind(T(z), T(np.array([2, 2])), T(upd), axis=1)
        want = z.copy()
        np.add.at(want, (slice(None), [2, 2]), upd)
    else:
        idx = np.array([[0, 0]] * z.shape[0], np.int64)
        got = REGISTRY[name].bind(T(z), T(idx), T(upd), axis=1)
        want = z.copy()
        want[:, 0] += 2 * upd[:, 0]
    same(got, want, d, name)


def check_full(name, d):
    for shape in ((), (0,), (2, 3)):
        same(REGISTRY[name].bind(shape=shape, value=complex(1.5, -0.0), dtype=d),
             np.full(shape, complex(1.5, -0.0), d.np), d, f"full{shape}")


# ---------------------------------------------------------------- transforms
def check_fft_c2c(name, d):
    x = values(d, 36).reshape(4, 9)
    x[~np.isfinite(x)] = 0.5 - 1j
    for label, t in views(x):
        for axes in ((1,), (0,), (0, 1)):
            for inverse in (False, True):
                got = REGISTRY[name].bind(t, axes=axes, inverse=inverse, norm="ortho")
                f = np.fft.ifftn if inverse else np.fft.fftn
                want = f(x.astype(np.complex128), axes=axes, norm="ortho")
                assert got.dtype is d
                np.testing.assert_allclose(got.numpy(), want, rtol=1e-5 if d is dt.complex64 else 1e-13,
                                           atol=1e-5 if d is dt.complex64 else 1e-13)


def check_fft_c2r(name, d):
    x = values(d, 20).reshape(4, 5)
    x[~np.isfinite(x)] = 2 + 0.5j
    for label, t in views(x):
        for n in (8, 9):
            got = REGISTRY[name].bind(t, axes=(0, 1), n=n, norm="backward")
            want = np.fft.irfftn(x.astype(np.complex128), s=(4, n), axes=(0, 1))
            assert got.dtype is dt.REAL_OF[d] and got.shape == (4, n)
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-5 if d is dt.complex64 else 1e-13,
                                       atol=1e-5 if d is dt.complex64 else 1e-13)


CHECKS = {
    **{n: check_unary for n in UNARY}, **{n: check_binary for n in BINARY},
    "select": check_select, "convert": check_convert, "reduce_sum": check_reduce_sum,
    **{n: check_move for n in ("reshape", "broadcast_in_dim", "transpose", "slice", "pad", "concatenate",
                               "rev", "gather", "take_along_axis")},
    "scatter_add": check_scatter_add, "scatter_add_along_axis": check_scatter_add, "full": check_full,
    "fft_c2c": check_fft_c2c, "fft_c2r": check_fft_c2r,
}
CELLS = [(n, d.name) for n, p in REGISTRY.items() for d in dt.COMPLEX if d in p.dtypes]


def test_every_complex_primitive_has_a_checker():
    claiming = {n for n, p in REGISTRY.items() if p.dtypes & set(dt.COMPLEX)}
    assert claiming == set(CHECKS), (sorted(claiming - set(CHECKS)), sorted(set(CHECKS) - claiming))


@pytest.mark.parametrize("name,dtype", CELLS, ids=[f"{n}-{d}" for n, d in CELLS])
def test_cell(name, dtype):
    CHECKS[name](name, dt.as_dtype(dtype))


@pytest.mark.parametrize("name", ["lt", "max", "floor", "sin", "reduce_max", "argmax", "dot_general", "cumsum"])
def test_unclaimed_complex_dtype_raises(name):
    """An op that does not list complex (ordering, rounding, most math) refuses it by name."""
    z = T(np.ones((2, 2), np.complex64))
    prim = REGISTRY[name]
    calls = {"reduce_max": lambda: prim.bind(z, axes=(0,)), "argmax": lambda: prim.bind(z, axis=0),
             "dot_general": lambda: prim.bind(z, z, contract=((1,), (0,)), batch=((), ())),
             "cumsum": lambda: prim.bind(z, axis=0, reverse=False)}
    with pytest.raises(ember.DTypeError, match="no kernel for dtype complex64"):
        calls[name]() if name in calls else prim.bind(*([z] * (2 if name in ("lt", "max") else 1)))
