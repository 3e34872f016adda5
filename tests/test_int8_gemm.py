"""The int8 GEMM (MD-9): `dot_general(..., preferred=int32)` on int8/uint8 operands is the exact
int32 sum of products, eagerly, in the numpy executor and in the native step, where it is ember's
own kernel (backend/cpu/qgemm.py: vpmaddubsw when the operands' ranges make it exact, else
vpmaddwd on int16; a portable C path without AVX2), at 1 and 2 threads, for every layout."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ember
from ember.ir import parse, print_graph
from ember.ops import lax
from ember.backend.cpu import compiler
from ember._core.errors import DTypeError

native = pytest.mark.skipif(not compiler.available(), reason="needs a C compiler")
I32 = ember.int32
PAIRS = [(np.uint8, np.int8), (np.int8, np.int8), (np.int8, np.uint8), (np.uint8, np.uint8)]
SIZES = [0, 1, 3, 15, 16, 17, 64, 100, 257]
# each size in each of m, k, n at least twice, with neighbours that differ
SHAPES = [(SIZES[i], SIZES[(i + 3) % 9], SIZES[(i + 6) % 9]) for i in range(9)] + \
         [(SIZES[i], SIZES[(i + 1) % 9], SIZES[(i + 5) % 9]) for i in range(9)]


def ref_dot(a, b, contract, batch=((), ())):
    """numpy's int64 contraction in ember's output order (batch, free of a, free of b), as int32."""
    (ac, bc), (ab, bb) = contract, batch
    af = [i for i in range(a.ndim) if i not in ac and i not in ab]
    bf = [i for i in range(b.ndim) if i not in bc and i not in bb]
    size = lambda x, dims: int(np.prod([x.shape[i] for i in dims], dtype=np.int64))  # noqa: E731
    nb, k = [a.shape[i] for i in ab], size(a, ac)
    A = np.transpose(a.astype(np.int64), list(ab) + af + list(ac)).reshape(nb + [size(a, af), k])
    B = np.transpose(b.astype(np.int64), list(bb) + list(bc) + bf).reshape(nb + [k, size(b, bf)])
    out = np.matmul(A, B)
    return out.reshape(nb + [a.shape[i] for i in af] + [b.shape[i] for i in bf]).astype(np.int32)


def rand(rng, dt, shape, lo=None, hi=None):
    info = np.iinfo(dt)
    return rng.integers(info.min if lo is None else lo, (info.max if hi is None else hi) + 1, shape, dtype=dt)


def _exe(j):
    (ent,) = j.cache.values()
    return ent.exe


def mm(x, y):
    return lax.dot_general(x, y, ((1,), (0,)), preferred=I32)


# ---------------------------------------------------------------- the op
def test_md9_preferred_is_a_param_only_when_given_and_round_trips():
    x, y = ember.tensor(np.ones((2, 3), np.uint8)), ember.tensor(np.ones((3, 4), np.int8))
    plain = print_graph(ember.jit(lambda x, y: lax.dot_general(x, y, ((1,), (0,)))).lower(x, y))
    assert "preferred" not in plain and "i16[2,4]" in plain
    same = print_graph(ember.jit(lambda x, y: lax.dot_general(x, y, ((1,), (0,)), preferred=ember.int16)).lower(x, y))
    assert same == plain  # the dtype it has anyway: no param
    text = print_graph(ember.jit(mm).lower(x, y))
    assert "preferred=int32" in text and "i32[2,4]" in text
    assert print_graph(parse(text)) == text
    with pytest.raises(DTypeError, match="preferred=int8"):
        lax.dot_general(x, y, ((1,), (0,)), preferred=ember.int8)  # cannot hold the int16 products


@pytest.mark.parametrize("xd,yd", PAIRS)
def test_md9_eager_is_the_exact_int32_matmul(xd, yd):
    rng = np.random.default_rng(0)
    for m, k, n in SHAPES:
        a, b = rand(rng, xd, (m, k)), rand(rng, yd, (k, n))
        out = mm(ember.tensor(a), ember.tensor(b))
        assert out.dtype is I32
        np.testing.assert_array_equal(out.numpy(), a.astype(np.int32) @ b.astype(np.int32))


def test_md9_numpy_executor_is_the_exact_int32_matmul():
    rng = np.random.default_rng(1)
    a, b = rand(rng, np.uint8, (17, 257)), rand(rng, np.int8, (257, 15))
    f = ember.jit(mm, backend="numpy")
    np.testing.assert_array_equal(f(ember.tensor(a), ember.tensor(b)).numpy(), ref_dot(a, b, ((1,), (0,))))


def test_md9_preferred_float_sums_half_operands_in_float32():
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal(s).astype(np.float16) for s in ((5, 300), (300, 4)))
    want = a.astype(np.float32) @ b.astype(np.float32)
    x, y = ember.tensor(a, requires_grad=True), ember.tensor(b)
    f = lambda x, y: lax.dot_general(x, y, ((1,), (0,)), preferred=ember.float32)  # noqa: E731
    out = f(x, y)
    assert out.dtype is ember.float32
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-5, atol=1e-4)
    out.sum().backward()
    assert x.grad.dtype is ember.float16
    want_grad = np.broadcast_to(b.astype(np.float32).sum(1), (5, 300))
    np.testing.assert_allclose(x.grad.numpy().astype(np.float32), want_grad, rtol=2e-3, atol=2e-3)
    for be in ("numpy", "native"):
        np.testing.assert_allclose(ember.jit(f, backend=be)(x.detach(), y).numpy(), want, rtol=1e-5, atol=1e-4)
    grad = x.grad.numpy().copy()

    def step(y):  # traced: the VJP of the preferred=float32 product gives a float16 gradient
        x.grad = None
        f(x, y).sum().backward()
        return x.grad
    assert ember.jit(step, backend="native")(y).dtype is ember.float16
    np.testing.assert_allclose(x.grad.numpy().astype(np.float32), grad.astype(np.float32), rtol=1e-3)


# ---------------------------------------------------------------- the native kernel
def _many(pairs):
    """One jitted step of many GEMMs (one compile), its results at 1 and 2 threads."""
    j = ember.jit(lambda xs, ys: [mm(x, y) for x, y in zip(xs, ys)], backend="native")
    xs, ys = [ember.tensor(a) for a, _ in pairs], [ember.tensor(b) for _, b in pairs]
    outs = {}
    for nt in (1, 2):
        with ember.num_threads(nt):
            outs[nt] = [o.numpy() for o in j(xs, ys)]
    exe = _exe(j)
    assert not exe.host_units, j.explain
    return outs, exe


@native
@pytest.mark.parametrize("xd,yd", PAIRS)
def test_md9_native_int8_gemm_is_exact_for_every_shape_and_range(xd, yd):
    """m, k, n over {0, 1, 3, 15, 16, 17, 64, 100, 257}; full-range operands (the int16 kernel)
    and narrow ones (vpmaddubsw: 2 * max unsigned * max |signed| <= 32767), 1 and 2 threads."""
    rng = np.random.default_rng(3)
    pairs = []
    for i, (m, k, n) in enumerate(SHAPES):
        if i % 2:  # narrow: what the flipped operand (A ^ 0x80 for like signs) keeps within 7 bits
            lo_a, hi_a = (-60, 60) if xd == np.int8 and yd == np.uint8 else (0, 100) if xd != yd else \
                ((-128, -28) if xd == np.int8 else (28, 228))
            a = rand(rng, xd, (m, k), lo_a, hi_a)
            b = rand(rng, yd, (k, n), -60 if yd == np.int8 else 0, 60 if yd == np.int8 else 120)
        else:
            a, b = rand(rng, xd, (m, k)), rand(rng, yd, (k, n))
        pairs.append((a, b))
    outs, exe = _many(pairs)
    for nt in (1, 2):
        for (a, b), o in zip(pairs, outs[nt]):
            assert o.dtype == np.int32
            np.testing.assert_array_equal(o, a.astype(np.int32) @ b.astype(np.int32), err_msg=f"{a.shape} {b.shape}")
    assert exe.source.count("int8 GEMM (qgemm.py)") == sum(1 for a, b in pairs if a.size and b.size)


@native
def test_md9_native_extreme_values_and_the_vpmaddubsw_bound():
    """Constant operands at the ends of the ranges, and at either side of the bound that picks
    vpmaddubsw (u8 255 x s8 -64: 2 * 255 * 64 = 32640 fits int16; -65 does not)."""
    cases = [(np.uint8, 255, np.int8, -128), (np.uint8, 255, np.int8, 127), (np.int8, -128, np.int8, -128),
             (np.int8, 127, np.int8, -128), (np.int8, -128, np.uint8, 255), (np.uint8, 255, np.uint8, 255),
             (np.uint8, 0, np.uint8, 0), (np.uint8, 255, np.int8, -64), (np.uint8, 255, np.int8, -65),
             (np.uint8, 127, np.int8, -128), (np.uint8, 128, np.int8, -128), (np.int8, -64, np.int8, -128)]
    pairs = [(np.full((17, 257), va, xd), np.full((257, 33), vb, yd)) for xd, va, yd, vb in cases]
    outs, _ = _many(pairs)
    for nt in (1, 2):
        for (a, b), o in zip(pairs, outs[nt]):
            np.testing.assert_array_equal(o, a.astype(np.int32) @ b.astype(np.int32), err_msg=f"{a[0, 0]} {b[0, 0]}")


@native
def test_md9_native_layouts_transposes_batches_and_strided_views():
    """Contracting dims on either side, two contracting dims, batch dims (not leading), and
    operands that are strided views made inside the step (sliced with a step, transposed)."""
    rng = np.random.default_rng(4)
    a3, b3 = rand(rng, np.uint8, (3, 17, 40)), rand(rng, np.int8, (40, 3, 19))
    a4, b4 = rand(rng, np.int8, (6, 5, 16)), rand(rng, np.int8, (5, 16, 21))
    aT, bT = rand(rng, np.uint8, (100, 65)), rand(rng, np.int8, (33, 100))
    big = rand(rng, np.uint8, (70, 130))

    def f(a3, b3, a4, b4, aT, bT, big, w):
        return [lax.dot_general(aT, bT, ((0,), (1,)), preferred=I32),             # x^T y^T
                lax.dot_general(a3, b3, ((2,), (0,)), ((0,), (1,)), preferred=I32),  # batch 0 with 1
                lax.dot_general(a4, b4, ((1, 2), (0, 1)), preferred=I32),         # two contracting dims
                lax.dot_general(b4, a4, ((1, 0), (2, 1)), preferred=I32),         # and in another order
                mm(big[1::2, ::3], w[::2]),                                       # strided views
                lax.dot_general(lax.transpose(big, (1, 0))[5:70], w[:65], ((0,), (0,)), preferred=I32)]
    w = rand(rng, np.int8, (88, 24))
    args = (a3, b3, a4, b4, aT, bT, big, w)
    want = [ref_dot(aT, bT, ((0,), (1,))), ref_dot(a3, b3, ((2,), (0,)), ((0,), (1,))),
            ref_dot(a4, b4, ((1, 2), (0, 1))), ref_dot(b4, a4, ((1, 0), (2, 1))),
            ref_dot(big[1::2, ::3], w[::2], ((1,), (0,))), ref_dot(big.T[5:70], w[:65], ((0,), (0,)))]
    eager = f(*map(ember.tensor, args))
    j = ember.jit(f, backend="native")
    for nt in (1, 2):
        with ember.num_threads(nt):
            got = j(*map(ember.tensor, args))
        for g, e, r in zip(got, eager, want):
            np.testing.assert_array_equal(e.numpy(), r)
            np.testing.assert_array_equal(g.numpy(), r)
    exe = _exe(j)
    assert not exe.host_units and exe.source.count("int8 GEMM (qgemm.py)") == 6


@native
def test_md9_the_jitted_int8_gemm_is_the_native_kernel():
    """Not the numpy fallback: a native step whose kernel is the int8 GEMM's C (and the int32
    result comes back from the native call)."""
    rng = np.random.default_rng(5)
    x, w = rand(rng, np.uint8, (64, 784)), rand(rng, np.int8, (784, 512))
    j = ember.jit(mm, backend="native")
    out = j(ember.tensor(x), ember.tensor(w))
    np.testing.assert_array_equal(out.numpy(), x.astype(np.int32) @ w.astype(np.int32))
    assert "numpy executor" not in " ".join(j.explain), j.explain
    exe = _exe(j)
    assert exe.target.name == "cpu" and not exe.host_units
    assert [k[0] for k in exe.kernels] == ["dot_general"]
    assert "int8 GEMM (qgemm.py)" in exe.source and "__builtin_ia32_pmaddubsw256" in exe.source
    assert "SGEMM(" not in exe.source and "DGEMM(" not in exe.source  # no BLAS call in the step


@native
def test_md9_portable_c_path_gives_the_same_int32_results(tmp_path):
    """Without AVX2 (-mno-avx2: CI on another CPU) the portable C kernel gives the same results."""
    script = textwrap.dedent("""
        import numpy as np, ember
        from ember.ops import lax
        rng = np.random.default_rng(6)
        cases = [((17, 257), (257, 33), np.uint8, np.int8), ((3, 100), (100, 64), np.int8, np.int8),
                 ((64, 15), (15, 17), np.int8, np.uint8), ((100, 16), (16, 1), np.uint8, np.uint8)]
        xs = [ember.tensor(rng.integers(np.iinfo(d).min, np.iinfo(d).max + 1, s, dtype=d)) for s, _, d, _ in cases]
        ys = [ember.tensor(rng.integers(np.iinfo(d).min, np.iinfo(d).max + 1, s, dtype=d)) for _, s, _, d in cases]
        j = ember.jit(lambda xs, ys: [lax.dot_general(x, y, ((1,), (0,)), preferred=ember.int32)
                                      for x, y in zip(xs, ys)], backend="native")
        from ember.ops.packed import pack_weight
        w = rng.integers(-128, 128, (100, 40), dtype=np.int8)
        pw = ember.tensor(pack_weight(w))
        jp = ember.jit(lambda x: ember.convert(lax.packed_matmul(x, pw, 100, 40), ember.float32) * 0.5)
        for nt in (1, 2):
            with ember.num_threads(nt):
                for o, x, y in zip(j(xs, ys), xs, ys):
                    assert np.array_equal(o.numpy(), x.numpy().astype(np.int32) @ y.numpy().astype(np.int32))
                x = ember.tensor(rng.integers(0, 256, (7, 100), dtype=np.uint8))  # a packed weight, an epilogue
                ref = (x.numpy().astype(np.int32) @ w.astype(np.int32)).astype(np.float32) * 0.5
                assert np.array_equal(jp(x).numpy(), ref)
        for f in (j, jp):
            (ent,) = f.cache.values()
            assert not ent.exe.host_units
        print("ok")
    """)
    env = dict(os.environ, EMBER_CFLAGS="-mno-avx2", EMBER_CACHE_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    srcs = [p for p in tmp_path.glob("*.c") if "int8 GEMM (qgemm.py)" in p.read_text()]
    assert len(srcs) == 2
    for src in srcs:
        r = subprocess.run([compiler.compiler(), *compiler.FLAGS, "-fopenmp", "-mno-avx2", "-S", "-o", "-", str(src)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and "vpmaddubsw" not in r.stdout and "vpmaddwd" not in r.stdout
