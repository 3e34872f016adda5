"""Pre-packed int8 weights and fused GEMM epilogues (MD-9): `packed_matmul` (ops/packed.py) is the
exact int32 sum against a weight packed once, eagerly and natively; an elementwise group that is
the only reader of an int8 GEMM's result becomes one `Epilogue` unit, computed on each tile as
the GEMM stores it (the requantization of an int8 layer), bit for bit the unfused program's."""
import numpy as np
import pytest

import ember
from ember._core.errors import DTypeError, ShapeError
from ember.backend.cpu import compiler
from ember.ops import lax
from ember.ops.packed import pack_weight, packed_size, unpack_weight
from ember.runtime.units import Epilogue

native = pytest.mark.skipif(not compiler.available(), reason="needs a C compiler")
I32, F32 = ember.int32, ember.float32
SHAPES = [(1, 1, 1), (3, 5, 17), (64, 784, 40), (17, 16, 16), (5, 131, 33), (100, 4, 1)]  # (m, k, n)


def _w(rng, k, n, lo=-128, hi=127):
    return rng.integers(lo, hi + 1, (k, n), dtype=np.int8)


def _exe(j):
    (ent,) = j.cache.values()
    return ent.exe


def _labels(j):
    return [lab for lab, *_ in _exe(j).kernels]


# ---------------------------------------------------------------- the packed weight
@pytest.mark.parametrize("k,n", [(1, 1), (5, 3), (16, 16), (17, 33), (784, 512)])
def test_md9_pack_weight_round_trips_and_its_header_holds_the_range(k, n):
    w = _w(np.random.default_rng(k * n), k, n)
    p = pack_weight(w)
    assert p.dtype == np.int8 and p.shape == (packed_size(k, n),)
    np.testing.assert_array_equal(unpack_weight(p, k, n), w)
    head = p[:64].view(np.int32)
    assert tuple(head[1:4]) == (k, n, np.abs(w.astype(np.int32)).max())
    sums = p[64:64 + 4 * (-(-n // 16) * 16)].view(np.int32)
    np.testing.assert_array_equal(sums[:n], w.astype(np.int32).sum(0))
    assert not sums[n:].any()


def test_md9_packed_matmul_bad_inputs_raise_clear_errors():
    w = pack_weight(np.ones((8, 4), np.int8))
    x = ember.tensor(np.ones((2, 8), np.uint8))
    with pytest.raises(DTypeError, match="int8 weight"):
        pack_weight(np.ones((8, 4), np.float32))
    with pytest.raises(ShapeError, match="do not end in k=9"):
        lax.packed_matmul(x, ember.tensor(w), 9, 4)
    with pytest.raises(ShapeError, match="bytes pack_weight makes"):
        lax.packed_matmul(x, ember.tensor(w[:-1]), 8, 4)
    with pytest.raises(DTypeError, match="supports int8, uint8"):
        lax.packed_matmul(ember.tensor(np.ones((2, 8), np.float32)), ember.tensor(w), 8, 4)
    bad = w.copy()
    bad[:4] = 0  # the magic number gone: not a packed weight
    with pytest.raises(ShapeError, match="not a weight packed by pack_weight"):
        lax.packed_matmul(x, ember.tensor(bad), 8, 4)


@pytest.mark.parametrize("xd", [np.uint8, np.int8])
def test_md9_packed_matmul_eager_is_the_exact_int32_matmul(xd):
    rng = np.random.default_rng(1)
    for m, k, n in SHAPES:
        x, w = np.iinfo(xd), _w(rng, k, n)
        a = rng.integers(x.min, x.max + 1, (m, k), dtype=xd)
        out = lax.packed_matmul(ember.tensor(a), ember.tensor(pack_weight(w)), k, n).numpy()
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out, a.astype(np.int64) @ w.astype(np.int64))


@native
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("xd", [np.uint8, np.int8])
@pytest.mark.parametrize("wrange", [(-128, 127), (-64, 64)], ids=["full", "7bit"])
def test_md9_native_packed_matmul_is_exact_for_every_shape_and_range(xd, wrange, threads):
    rng = np.random.default_rng(2)
    for m, k, n in SHAPES:
        info = np.iinfo(xd)
        a = rng.integers(info.min, info.max + 1, (m, k), dtype=xd)
        w = _w(rng, k, n, *wrange)
        f = ember.jit(lambda a, p: lax.packed_matmul(a, p, k, n))
        with ember.num_threads(threads):
            out = f(ember.tensor(a), ember.tensor(pack_weight(w))).numpy()
        np.testing.assert_array_equal(out, a.astype(np.int64) @ w.astype(np.int64), err_msg=str((m, k, n)))
        assert not _exe(f).host_units


@native
def test_md9_native_packed_matmul_takes_leading_dims_views_and_an_unaligned_weight():
    rng = np.random.default_rng(3)
    w = _w(rng, 20, 24)
    buf = np.zeros(packed_size(20, 24) + 1, np.int8)
    buf[1:] = pack_weight(w)  # the packed bytes at an odd address
    p = ember.tensor(buf)[1:]
    a = rng.integers(0, 256, (2, 3, 40), dtype=np.uint8)
    f = ember.jit(lambda a, p: lax.packed_matmul(a[..., ::2], p, 20, 24))
    np.testing.assert_array_equal(f(ember.tensor(a), p).numpy(), a[..., ::2].astype(np.int64) @ w)


# ---------------------------------------------------------------- epilogues
def _requant(acc, col, scale, bias):
    """An int8 layer's requantization: (acc - col) * scale + bias, ReLU, to uint8 on a grid."""
    y = ember.convert(acc - col, F32) * scale + bias
    y = ember.maximum(y, 0.0)
    return ember.convert(ember.minimum(ember.round(y * 10.0) + 3.0, 255.0), ember.uint8)


def _operands(rng, m, k, n):
    a = ember.tensor(rng.integers(0, 256, (m, k), dtype=np.uint8))
    w = _w(rng, k, n, -64, 64)
    col = ember.tensor(rng.integers(-1000, 1000, (n,), dtype=np.int32))
    scale = ember.tensor(rng.uniform(1e-4, 1e-3, (n,)).astype(np.float32))
    bias = ember.tensor(rng.standard_normal((m, 1)).astype(np.float32))  # broadcast along the other axis
    return a, w, col, scale, bias


def _unfused(f, *args):
    """f's result with no epilogue fused (the CPU target's rule switched off)."""
    from ember.backend.cpu import CpuTarget
    orig = CpuTarget.epilogue
    CpuTarget.epilogue = lambda self, e: False
    try:
        j = ember.jit(f)
        out = j(*args)
        assert not any(" | " in lab for lab in _labels(j))
        return out
    finally:
        CpuTarget.epilogue = orig


@native
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m,k,n", [(64, 784, 40), (5, 3, 17), (1, 16, 1), (33, 100, 64)])
def test_md9_an_int8_gemm_and_its_requantization_are_one_kernel_equal_to_the_unfused(m, k, n, threads):
    rng = np.random.default_rng(m + k + n)
    a, w, col, scale, bias = _operands(rng, m, k, n)
    p, wt = ember.tensor(pack_weight(w)), ember.tensor(w)
    packed = lambda a, p, c, s, b: _requant(lax.packed_matmul(a, p, k, n), c, s, b)  # noqa: E731
    plain = lambda a, w, c, s, b: _requant(lax.dot_general(a, w, ((1,), (0,)), preferred=I32), c, s, b)  # noqa: E731
    with ember.num_threads(threads):
        for f, wgt in ((packed, p), (plain, wt)):
            j = ember.jit(f)
            out = j(a, wgt, col, scale, bias).numpy()
            eager = f(a, wgt, col, scale, bias).numpy()
            np.testing.assert_array_equal(out, eager)
            np.testing.assert_array_equal(out, _unfused(f, a, wgt, col, scale, bias).numpy())
            labels = _labels(j)
            assert len(labels) == 1 and labels[0].startswith(("packed_matmul | sub convert", "dot_general | sub"))
            assert isinstance(next(u for u in _exe(j).units if u.prim is None), Epilogue)


@native
def test_md9_an_epilogue_writes_every_output_of_its_group_and_transposed_gemms():
    rng = np.random.default_rng(5)
    a = ember.tensor(rng.integers(-128, 128, (20, 30), dtype=np.int8))
    w = ember.tensor(rng.integers(0, 256, (40, 30), dtype=np.uint8))  # read transposed: (n, k)

    def f(a, w):
        acc = lax.dot_general(a, w, ((1,), (1,)), preferred=I32)
        y = ember.convert(acc, F32) * 0.01
        return y, ember.exp(y * 1e-3)  # two outputs of one group

    j = ember.jit(f)
    (y, e), (y0, e0) = j(a, w), f(a, w)
    np.testing.assert_array_equal(y.numpy(), y0.numpy())
    np.testing.assert_allclose(e.numpy(), e0.numpy(), rtol=1e-6)
    assert any(lab.startswith("dot_general | ") for lab in _labels(j))


@native
def test_md9_no_epilogue_when_the_gemm_result_is_read_elsewhere_or_returned():
    rng = np.random.default_rng(6)
    a = ember.tensor(rng.integers(0, 256, (8, 12), dtype=np.uint8))
    w = ember.tensor(rng.integers(-128, 128, (12, 5), dtype=np.int8))
    mm = lambda a, w: lax.dot_general(a, w, ((1,), (0,)), preferred=I32)  # noqa: E731
    def returned(a, w):
        r = mm(a, w)
        return r, r * 2

    def two_readers(a, w):
        r = mm(a, w)
        return ember.sum(r, 0) + (r * 2)[0]
    for f in (returned, two_readers):
        j = ember.jit(f)
        out, ref = j(a, w), f(a, w)
        for o, r in zip(out if isinstance(out, tuple) else (out,), ref if isinstance(ref, tuple) else (ref,)):
            np.testing.assert_array_equal(o.numpy(), r.numpy())
        assert not any(isinstance(u, Epilogue) for u in _exe(j).units)
    f32 = ember.jit(lambda x, y: ember.relu(x @ y))  # float GEMMs go to BLAS: no epilogue
    x = ember.tensor(rng.standard_normal((4, 4)).astype(np.float32))
    f32(x, x)
    assert not any(isinstance(u, Epilogue) for u in _exe(f32).units)
