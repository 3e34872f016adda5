"""BE-6: float16 and bfloat16 values computed by the native CPU step itself.

Both are their bits in a uint16_t in the generated C; every primitive on them computes in
float32 and rounds once at its end (`Primitive.half_in_f32`), as the numpy executor does, and the
shape and indexing primitives move the 16 bits unchanged. Each check runs a step on the native
backend, on the numpy executor and eagerly, and compares the results bit for bit; the native
step must hold no host unit (`explain` names none "on the host").

- elementwise chains with special values (inf, NaN, -0.0, ties that round to even, subnormals,
  overflow to inf), every conversion to and from the half types (float64 rounds to them directly,
  bfloat16 -> integers follow ml_dtypes), and exp/log/tanh/erf/sigmoid/sin/... over all 65536
  values of each type: those read a table of the numpy executor's own results, since numpy's
  float32 functions are not the exactly rounded ones;
- reductions (float32 accumulation, rounded once), argmax, cumsum (a float32 running sum),
  gather, take_along_axis, scatter_add (float32 sums), pad, concatenate, transposes;
- matmul/linear and conv2d with their gradients (float32 copies through SGEMM, rounded once),
  max-pooling and its gradient;
- an autocast training step (Linear, GELU, LayerNorm, Linear, cross-entropy, AdamW) runs fully
  native in bfloat16 and float16, with the numpy executor's parameters bit for bit after 3 steps
  (its float32 parts permitting, see the test).

Bit for bit means every bit but a NaN's sign and payload (any NaN equals any NaN): C does not fix
which operand's NaN an addition returns, as for float32 steps. Sums are checked on values whose
float32 sums are exact in any order: the native kernels add in another order than numpy's
pairwise sum (as for float32), so the one rounding at the end is what is ember's own.
"""
import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember._core import dtypes as dt
from ember.backend.cpu import compiler
from ember.ops import lax
from ember.runtime.step import StepExecutable

pytestmark = pytest.mark.skipif(not compiler.available(), reason="needs a C compiler")

HALF = ["float16", "bfloat16"]


def _np(name):
    return getattr(dt, name).np


def _native(j) -> StepExecutable:
    (ent,) = j.cache.values()
    exe = ent.exe
    assert isinstance(exe, StepExecutable) and exe.target.name == "cpu", j.explain
    assert not exe.host_units and not any("on the host" in line for line in j.explain), j.explain
    return exe


def _same_bits(got, want, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, want.dtype, got.shape, want.shape)
    g, w = np.ascontiguousarray(got).reshape(-1), np.ascontiguousarray(want).reshape(-1)
    gb, wb = g.view(np.uint8).reshape(g.size, -1), w.view(np.uint8).reshape(w.size, -1)
    differ = np.any(gb != wb, axis=1)
    if g.dtype.kind in "fV":  # NaN is NaN: its sign and payload aside (as for float32, module doc)
        with np.errstate(invalid="ignore"):
            differ &= ~(np.isnan(g.astype(np.float32)) & np.isnan(w.astype(np.float32)))
    bad = np.flatnonzero(differ)
    assert not bad.size, f"{what}: {bad.size} of {g.size} differ, first at {bad[:5]}: {g[bad[:5]]} != {w[bad[:5]]}"


def _check(f, *arrays):
    """f jitted natively == f on the numpy executor == f eagerly, bit for bit; returns the jit."""
    ts = [ember.tensor(a) for a in arrays]
    j = ember.jit(f, backend="native")
    with np.errstate(all="ignore"):
        got, want, eager = j(*ts), ember.jit(f, backend="numpy")(*ts), f(*ts)
    _native(j)
    seq = lambda v: list(v) if isinstance(v, (tuple, list)) else [v]  # noqa: E731
    got, want, eager = seq(got), seq(want), seq(eager)
    assert len(got) == len(want) == len(eager)
    for k, (g, w, e) in enumerate(zip(got, want, eager)):
        _same_bits(g.detach().numpy(), w.detach().numpy(), f"output {k} vs numpy")
        _same_bits(g.detach().numpy(), e.detach().numpy(), f"output {k} vs eager")
    return j


def _special(name, shape, rng, scale=3.0):
    """Random values of half type `name` with the special ones sprinkled in."""
    a = (rng.standard_normal(shape) * scale).astype(np.float32)
    flat = a.reshape(-1)
    tiny = 2.0 ** -24 if name == "float16" else 1e-40  # a subnormal of the type
    for i, v in enumerate([np.nan, np.inf, -np.inf, -0.0, 0.0, tiny, -3 * tiny, 60000.0, 1e-30]):
        if flat.size > 3 * i + 1:
            flat[3 * i + 1] = v
    return a.astype(_np(name))


def _exact(name, shape, rng):
    """Multiples of 1/8 below 64 in magnitude: their float32 sums are exact in any order."""
    return (rng.integers(-512, 512, shape) / 8).astype(_np(name))


# ---------------------------------------------------------------- elementwise and conversions
@pytest.mark.parametrize("name", HALF)
def test_be6_elementwise_chains_with_special_values(name):
    rng = np.random.default_rng(0)
    a, b = _special(name, (13, 31), rng), _special(name, (13, 31), rng)[::-1].copy()
    big = np.full(5, 300.0 if name == "float16" else 3e37, _np(name))  # a product past the type's range

    def chain(a, b, big):
        return (a * b + 1, a / b, a - b * 0.5, ember.exp(a), ember.tanh(a), ember.erf(b), ember.sigmoid(a),
                ember.log(ember.abs(a)), ember.sqrt(ember.abs(b)), ember.maximum(a, b), ember.minimum(a, -b),
                a > b, a == b, ember.where(a > b, a, b), -a, ember.abs(b), ember.floor(a),
                ember.exp(ember.tanh(a) * 2) / (1 + b * b), big * big, big * -big, a.to(ember.float32) * 3,
                ember.tensor(0.1, dtype=getattr(ember, name)) * a)
    _check(chain, a, b, big)
    _check(lambda x: x.T.T[::2, 1:] * 2 + x[::2, :-1], a)  # strided views


@pytest.mark.parametrize("name", HALF)
def test_be6_every_value_through_the_unary_functions(name):
    """All 65536 bit patterns: exactly rounded arithmetic (one rounding of the float32 result)
    and the functions numpy does not round exactly (a table of the numpy executor's results)."""
    x = np.arange(65536, dtype=np.uint16).view(_np(name))

    def unary(x):
        return (ember.exp(x), ember.log(x), ember.tanh(x), ember.erf(x), ember.sigmoid(x), ember.sin(x),
                ember.cos(x), ember.log1p(x), ember.expm1(x), x ** 2.5, x * 3 + 1, 1 / x, ember.sqrt(x),
                ember.rsqrt(x), ember.round(x), x // 3, x % 2.5, ember.isnan(x), x.to(ember.float32))
    j = _check(unary, x)
    assert "em_lut_" in _native(j).source


@pytest.mark.parametrize("name", HALF)
def test_be6_conversions_round_to_nearest_even_and_keep_nan(name):
    rng = np.random.default_rng(1)
    bits = 10 if name == "float16" else 7  # stored fraction bits
    e = 2.0 ** -bits
    f32 = np.array([1 + e / 2, 1 + 3 * e / 2, 1 + e / 2 + 2.0 ** -20, -(1 + e / 2), 0.1, -0.0, np.nan, -np.nan,
                    np.inf, -np.inf, 1e-8, 2.0 ** -25, 3 * 2.0 ** -26, 1e-39, 3.4e38, 65519.0, 65520.0, 70000.0,
                    *rng.standard_normal(40) * 1000], np.float32)
    # float64 (and wide ints) round through float32, as PyTorch (not once, as numpy and some
    # ml_dtypes versions do): 1 + e/2 + 2**-40 becomes 1, as in torch
    f64 = np.array([1 + e / 2 + 2.0 ** -40, 1 + e / 2 - 2.0 ** -40, -(1 + e / 2 + 2.0 ** -40), 1e-300, 1e300,
                    2.0 ** -133 * 1.5, 2.0 ** -24 * 0.75, *rng.standard_normal(40) * 1e5], np.float64)
    ints = np.array([0, 1, -1, 255, 2**24 + 2**16 + 1, -(2**24 + 2**16 + 1), 65519, 65520, 2**31 - 1, -2**31],
                    np.int64)
    other = "bfloat16" if name == "float16" else "float16"
    h = getattr(ember, name)

    def conv(f32, f64, ints):
        return (f32.to(h), f64.to(h), ints.to(h), ints.to(ember.int32).to(h), ints.to(ember.uint8).to(h),
                f32.to(h).to(ember.float64), f32.to(h).to(getattr(ember, other)), (f32 > 0).to(h),
                f64.to(getattr(ember, other)).to(h))
    _check(conv, f32, f64, ints)
    # torch 2.13's values for the cases where rounding through float32 differs from rounding once
    np.testing.assert_array_equal(ember.tensor(f64[:3]).to(h).float().numpy(), [1, 1, -1])
    wide = ember.tensor(ints[4:6]).to(h).float().numpy()
    np.testing.assert_array_equal(wide, [2.0 ** 24, -2.0 ** 24] if name == "bfloat16" else [np.inf, -np.inf])
    # every value to every integer type, bool and back to float (bfloat16 -> int as ml_dtypes casts)
    x = np.arange(65536, dtype=np.uint16).view(_np(name))
    _check(lambda x: tuple(x.to(getattr(ember, t)) for t in ("int8", "int16", "int32", "int64", "uint8", "bool"))
           + (x.to(ember.float32), x.to(ember.float64), x.to(getattr(ember, other))), x)


@pytest.mark.parametrize("name", HALF)
def test_be6_two_half_operands_of_an_inexact_function_stay_on_the_host_and_say_why(name):
    rng = np.random.default_rng(2)
    a, b = (np.abs(_special(name, (4, 5), rng)) for _ in range(2))
    j = ember.jit(lambda a, b: ember.pow(a, b) + 1, backend="native")
    ts = [ember.tensor(v) for v in (a, b)]
    _same_bits(j(*ts).numpy(), ember.jit(lambda a, b: ember.pow(a, b) + 1, backend="numpy")(*ts).numpy())
    why = (f"pow of two {name} operands: numpy's float32 result has no bit-exact C form (a table of its "
           "results needs a single half operand)")
    assert j.explain == [f"traced: first call (on the host, with numpy: pow ({why}))"]


# ---------------------------------------------------------------- reductions and scans
@pytest.mark.parametrize("name", HALF)
def test_be6_reductions_and_argmax(name):
    rng = np.random.default_rng(3)
    a = _exact(name, (13, 31), rng)
    b = _exact(name, (300, 257), rng)  # threaded

    def red(a, b):
        out = []
        for x in (a, a.T, b, b.T):
            out += [x.sum(0), x.sum(1), x.sum(), x.mean(0), x.mean(1), x.amax(0), x.amin(1), x.argmax(0), x.argmin(1)]
        return tuple(out) + (a.sum((0, 1)), (a * a).sum(1), a.amax())
    _check(red, a, b)
    s = _special(name, (13, 31), rng)  # NaN, inf and signed zeros: max/min/argmax pick as numpy does
    _check(lambda x: (x.amax(1), x.amin(0), x.argmax(1), x.argmin(0), x.argmax()), s)


@pytest.mark.parametrize("name", HALF)
def test_be6_cumsum_is_a_float32_running_sum(name):
    rng = np.random.default_rng(4)
    for shape in [(7,), (13, 31), (300, 257)]:
        a = _special(name, shape, rng, scale=1.0)
        _check(lambda x: tuple(lax.cumsum(v, ax, rev) for v in (x, x.T) for ax in range(len(shape))
                               for rev in (False, True)), a)
    _check(lambda x: lax.cumprod(x, 0, False), (rng.standard_normal(40) + 1.5).astype(_np(name)))


# ---------------------------------------------------------------- indexing and copies
@pytest.mark.parametrize("name", HALF)
def test_be6_gather_scatter_pad_concatenate_transpose(name):
    rng = np.random.default_rng(5)
    x = _special(name, (5, 7, 3), rng)
    idx = np.array([[4, -1, 0], [2, 2, 2]])
    upd = _special(name, (5, 2, 3, 3), rng)
    tal = rng.integers(-7, 7, (5, 4, 3))

    def index(x, i, u, t):
        return (lax.gather(x, i, 0), lax.gather(x.transpose(0, 2), i, 1), lax.take_along_axis(x, t, 1),
                lax.scatter_add(x, i, u, 1),
                lax.pad(x, 0.5, [(1, 2, 0), (-1, 1, 1), (0, 0, 2)]), ember.cat([x, x * 2], 1),
                x.transpose(0, 2).reshape(3, 35), ember.flip(x, (0, 1)) * 2)
    _check(index, x, idx, upd, tal)
    # many updates of one element: summed in float32, rounded once
    big = _special(name, (300, 64), rng)
    ids = rng.integers(-300, 300, (1000,))
    _check(lambda t, i, u: lax.scatter_add(t, i, u, 0), big, ids, _special(name, (1000, 64), rng))


# ---------------------------------------------------------------- GEMMs, convolutions, pooling
@pytest.mark.parametrize("name", HALF)
def test_be6_matmul_and_linear(name):
    rng = np.random.default_rng(6)
    a, b = _special(name, (67, 31), rng, 1.0), (rng.standard_normal((31, 13))).astype(_np(name))
    q = rng.standard_normal((2, 5, 3, 12)).astype(_np(name))
    w, bias = rng.standard_normal((6, 12)).astype(_np(name)), rng.standard_normal(6).astype(_np(name))
    f32 = rng.standard_normal((31, 13)).astype(np.float32)
    _check(lambda a, b, f: (a @ b, b.T @ a.T, a[:, :13] @ (b[:13] * 2), a @ f, (a.T.contiguous().T @ b)), a, b, f32)
    _check(lambda q, w, b: (q[..., :4].transpose(1, 2) @ q[..., 4:8].transpose(1, 2).transpose(-1, -2),
                            F.linear(q, w, b)), q, w, bias)
    # threaded natively (blocks of columns per thread), one SGEMM call in numpy (OpenBLAS threads
    # only larger products, splitting them its own way, which changes float32 GEMMs' last bits)
    big = rng.standard_normal((64, 48)).astype(_np(name))
    _check(lambda x, y: x @ y, big, rng.standard_normal((48, 80)).astype(_np(name)))


CONVS = [dict(), dict(stride=2, padding=1), dict(groups=2, dilation=(2, 1))]


@pytest.mark.parametrize("kw", CONVS)
@pytest.mark.parametrize("name", HALF)
def test_be6_conv2d_and_its_gradients(name, kw):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 6, 11, 9)).astype(_np(name))
    w = rng.standard_normal((8, 6 // kw.get("groups", 1), 3, 2)).astype(_np(name))

    def grads(x, w):
        y = F.conv2d(x, w, **kw)
        return (y,) + tuple(ember.autograd.grad((y * y).sum(), [x, w]))
    ts = [ember.tensor(a, requires_grad=True) for a in (x, w)]
    j = ember.jit(grads, backend="native")
    with np.errstate(over="ignore"):  # (float16's squares past its range are inf in all three)
        got, want, eager = j(*ts), ember.jit(grads, backend="numpy")(*ts), grads(*ts)
    _native(j)
    for k, (g, n, e) in enumerate(zip(got, want, eager)):
        _same_bits(g.detach().numpy(), n.detach().numpy(), f"output {k} vs numpy")
        _same_bits(g.detach().numpy(), e.detach().numpy(), f"output {k} vs eager")


@pytest.mark.parametrize("name", HALF)
def test_be6_max_pool_and_its_gradient(name):
    rng = np.random.default_rng(8)
    x = _special(name, (3, 4, 11, 9), rng)
    x[0, 0, :4, :4] = 1.0  # ties

    def pool(x):
        out = []
        for kw in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)):  # tiles; overlapping
            y = F.max_pool2d(x, **kw)
            out += [y, ember.autograd.grad((y * 3).sum(), [x])[0]]
        return tuple(out) + (F.avg_pool2d(x, 2),)
    ts = [ember.tensor(x, requires_grad=True)]
    j = ember.jit(pool, backend="native")
    with np.errstate(all="ignore"):
        got, want, eager = j(*ts), ember.jit(pool, backend="numpy")(*ts), pool(*ts)
    _native(j)
    for k, (g, n, e) in enumerate(zip(got, want, eager)):
        _same_bits(g.detach().numpy(), n.detach().numpy(), f"output {k} vs numpy")
        _same_bits(g.detach().numpy(), e.detach().numpy(), f"output {k} vs eager")


@pytest.mark.parametrize("name", HALF)
def test_be6_softmax_and_layer_norm_of_half_values(name):
    rng = np.random.default_rng(9)
    x = _exact(name, (37, 24), rng)
    _check(lambda x: (F.softmax(x, -1), F.layer_norm(x, (24,))), x)


def test_be6_a_value_of_the_rows_shape_read_as_a_column_vector_stays_out_of_a_row_group():
    """With as many rows as columns, a value of the rows' shape K that an elementwise group reads
    with numpy's broadcasting is a column vector (autocast's converted bias before a layer norm),
    not one scalar per row: it is computed outside the row group."""
    rng = np.random.default_rng(10)
    x, b = (rng.integers(-64, 64, s) / 8 for s in ((8, 8), (8,)))  # exact sums in any order
    _check(lambda x, b: (F.layer_norm(x + b * 2, (8,)), x - lax.reduce_sum(x, (1,)),
                         x * lax.reduce_max(x, (1,))), x.astype(np.float32), b.astype(np.float32))
    for name in HALF:
        _check(lambda x, b: lax.reduce_sum(x + b.to(getattr(ember, name)), (1,)) * x, x.astype(_np(name)),
               b.astype(np.float32))


# ---------------------------------------------------------------- mixed precision training
def _autocast_run(name, backend, hidden, steps=3):
    ember.manual_seed(0)
    rng = np.random.default_rng(0)
    m = nn.Sequential(nn.Linear(16, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, 5))
    opt = ember.optim.AdamW(m.parameters(), lr=1e-2)
    data = [(ember.tensor(rng.standard_normal((8, 16)).astype(np.float32)), ember.tensor(rng.integers(0, 5, (8,))))
            for _ in range(steps)]

    def step(x, y):
        opt.zero_grad()
        with ember.autocast(dtype=getattr(ember, name)):
            loss = F.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        return loss
    f = ember.jit(step, backend=backend)
    losses = [float(f(x, y).item()) for x, y in data]
    return losses, [p.detach().numpy().copy() for p in m.parameters()], f


@pytest.mark.parametrize("name", HALF)
def test_be6_autocast_training_step_runs_native_and_matches_the_numpy_executor(name):
    """The matmuls, GELU and their gradients run in `name`, natively, and the parameters after 3
    steps are the numpy executor's bit for bit. Autocast keeps LayerNorm and cross-entropy in
    float32, where the native step is as exact as any float32 step: its exp and log are within
    an ulp of numpy's (the losses), and its row sums add in numpy's order only for rows under 8
    elements (numpy's pairwise sum is sequential there), so the bitwise run has 7 hidden units
    and a 32-wide one agrees to float32 rounding."""
    ln, pn, _ = _autocast_run(name, "numpy", 7)
    lc, pc, f = _autocast_run(name, "native", 7)
    exe = _native(f)
    assert {name} <= {e.out.aval.dtype.name for e in exe.graph.eqns if e.prim.name == "dot_general"}
    for k, (a, b) in enumerate(zip(pc, pn)):
        _same_bits(a, b, f"parameter {k}")
    np.testing.assert_allclose(lc, ln, rtol=1e-6)
    ln, pn, _ = _autocast_run(name, "numpy", 32)
    lc, pc, f = _autocast_run(name, "native", 32)
    _native(f)
    for a, b in zip(pc, pn):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(lc, ln, rtol=1e-6)
