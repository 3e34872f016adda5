"""The 8-lane vector forms of elementwise equations (backend/cpu/c_vec.py): a fused group of the
ops they cover (float32 / int32 / 8-bit arithmetic, clamps against literals, rounding,
conversions) runs as one flat vector loop plus a scalar tail, bit for bit the numpy executor's
results, special values included; a group with any other op keeps the scalar loop."""
import numpy as np
import pytest

import ember
from ember.backend.cpu import compiler

pytestmark = [pytest.mark.skipif(not compiler.available(), reason="needs a C compiler"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]
F32, U8, I8, I32 = ember.float32, ember.uint8, ember.int8, ember.int32
SIZES = [8, 7, 37, 1, 40000]  # one vector, the tail only, both, a single element, split among threads

SPECIAL = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 0.5, 1.5, 2.5, -0.5, -1.5, 254.5, 255.5, -128.5, 127.5,
                    1e-45, -1e-45, 3e9, -3e9, 300.0, -300.0], np.float32)


def _x(n, seed=0):
    """float32 values: the special ones first, then uniform in [-400, 400)."""
    x = np.random.default_rng(seed).uniform(-400, 400, n).astype(np.float32)
    k = min(n, len(SPECIAL))
    x[:k] = SPECIAL[:k]
    return x


def _source(j) -> str:
    (ent,) = j.cache.values()
    return ent.exe.program.source


def _same_bits(got, want):
    got, want = np.ascontiguousarray(got), np.ascontiguousarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def _check(f, *args, vector=True):
    j = ember.jit(f)
    with ember.num_threads(2):
        out = j(*args)
    outs = out if isinstance(out, tuple) else (out,)
    ref = f(*args)
    for o, r in zip(outs, ref if isinstance(ref, tuple) else (ref,)):
        _same_bits(o.numpy(), r.numpy())
    n = args[0].shape[0] if args[0].shape else 1
    assert ("EM_STORE8" in _source(j) or "v_x0 = " in _source(j)) == (vector and n >= 8)


def _quant(x, s, z, lo, hi, dt):
    """An int8 layer's quantization of x: round(x * s) + z clamped to [lo, hi], converted to dt."""
    return ember.convert(ember.minimum(ember.maximum(ember.round(x * s) + z, lo), hi), dt)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dt,lo,hi", [(U8, 0.0, 255.0), (I8, -128.0, 127.0)])
def test_md9_quantization_in_vector_form_is_the_scalar_result_bitwise(n, dt, lo, hi):
    x, s = ember.tensor(_x(n)), ember.tensor(np.float32(0.37))  # s a 0-d operand, broadcast
    _check(lambda x, s: _quant(x, s, 3.0, lo, hi, dt), x, s)


@pytest.mark.parametrize("n", SIZES)
def test_md9_conversions_give_zero_for_nan_and_inf_and_truncate(n):
    x = ember.tensor(_x(n, 1))
    big = ember.tensor(np.clip(_x(n, 1), -2e9, 2e9))  # in int32's range (beyond it C's cast is undefined)
    _check(lambda x: ember.convert(ember.minimum(ember.maximum(x, -100.0), 200.0), I32), x)
    _check(lambda x: ember.convert(ember.trunc(x), I32), big)
    _check(lambda x: (ember.convert(ember.floor(x), F32), ember.ceil(x) * 2.0), x)


@pytest.mark.parametrize("n", SIZES)
def test_md9_max_min_against_literals_keep_nan_and_signed_zeros(n):
    x = ember.tensor(_x(n, 2))
    _check(lambda x: ember.maximum(x, 0.0), x)        # ReLU: -0.0 stays -0.0, NaN stays NaN
    _check(lambda x: ember.minimum(ember.maximum(x, -1.0), 1.0) * 3.0 - 0.5, x)


@pytest.mark.parametrize("n", SIZES)
def test_md9_integer_arithmetic_wraps_in_its_own_width(n):
    rng = np.random.default_rng(n)
    a8 = ember.tensor(rng.integers(0, 256, n, dtype=np.uint8))
    b8 = ember.tensor(rng.integers(0, 256, n, dtype=np.uint8))
    s8 = ember.tensor(rng.integers(-128, 128, n, dtype=np.int8))
    big = ember.tensor(rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32))
    _check(lambda a, b: ember.maximum(a + b, a * b - 7), a8, b8)      # uint8 wraps at 256
    _check(lambda s: ember.minimum(s * s + s, ember.convert(s, I8) - 100), s8)  # int8 wraps at 128
    _check(lambda v: ember.convert(v * 3 + v, F32) + 1.0, big)        # int32 wraps; vcvtdq2ps rounds as C
    _check(lambda a, s: ember.convert(a, I8) + s, a8, s8)             # uint8 -> int8 truncates


def test_md9_ops_without_a_vector_form_keep_the_scalar_loop():
    x = ember.tensor(_x(100, 3))
    _check(lambda x: ember.abs(ember.maximum(x, 0.0) * -0.01) / 3.0, x, vector=False)  # abs, div: none
    _check(lambda x, y: ember.maximum(x, y), x, ember.tensor(_x(100, 4)), vector=False)  # two values
    _check(lambda x: x.reshape(10, 10).T * 2.0 + 1.0, x, vector=False)  # read transposed
