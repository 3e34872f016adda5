"""FE-6: float64 gradcheck of every differentiable primitive in the registry.

Every primitive of `ember.ops.REGISTRY` that has a VJP must have an input builder in `BUILDERS`
(a newly registered differentiable primitive without one fails `test_every_differentiable_
primitive_has_a_builder` and its own gradcheck case). A builder draws shapes and parameters with
hypothesis, draws values from a seeded numpy generator kept away from the points where the
primitive is not differentiable, and returns `(fn, inputs)` where `fn` applies exactly that
primitive. Second derivatives are checked with `gradgradcheck`; primitives whose second derivative
is non-zero are listed in `SECOND_ORDER`, and for them the first derivative must itself carry a
graph (so the check cannot pass vacuously). Primitives without a VJP are listed in `NO_VJP`.
The builders of the linear-algebra primitives (ember/ops/decompositions.py) are tests/test_linalg.py's
`LINALG_BUILDERS`, imported (one copy).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ember
from ember import autograd
from ember.ops import REGISTRY, bind, lax
from _gradcheck_inputs import I, T, rng_from
from ember.testing import GradcheckError, gradcheck, gradgradcheck
from test_linalg import LINALG_BUILDERS  # one builder per primitive of ember/ops/decompositions.py

F64 = ember.float64


def _builtin(p) -> bool:
    # user primitives registered by other test modules (ember.register_primitive) are not ours:
    # a built-in one has its shape rule and VJP (if any) defined inside ember
    fns = [p.abstract] + ([p.vjp] if p.vjp is not None else [])
    return all(getattr(f, "__module__", "").startswith("ember.") for f in fns)


# primitives with complex operands or results: ember.testing.gradcheck perturbs real values, so
# their gradients are checked by complex central differences in tests/test_fft.py, which also
# asserts that its cases apply each of them
COMPLEX_VALUED = ("real", "imag", "conj", "complex", "complex_abs", "fft_c2c", "fft_r2c", "fft_c2r")

DIFFERENTIABLE = sorted(n for n, p in REGISTRY.items()
                        if p.vjp is not None and _builtin(p) and n not in COMPLEX_VALUED)

# primitives whose VJP is intentionally missing, and why
NO_VJP = {
    "argmax": "integer output", "argmin": "integer output", "check_classes": "integer output",
    "argsort": "integer output", "searchsorted": "integer output",
    "eq": "bool output", "ne": "bool output", "lt": "bool output", "le": "bool output",
    "gt": "bool output", "ge": "bool output", "isnan": "bool output",
    "reduce_and": "bool output", "reduce_or": "bool output",
    "bitwise_and": "integer/bool only", "bitwise_or": "integer/bool only",
    "bitwise_xor": "integer/bool only", "bitwise_not": "integer/bool only",
    "shift_left": "integer only", "shift_right": "integer only",
    "packed_matmul": "integer only",
    "full": "no tensor operands", "iota": "no tensor operands", "random_bits": "uint32 output",
    "bitcast": "reinterprets bits: not differentiable",
    "select_and_scatter_add": "max-pool VJP; its own VJP (max-pool double backward) is not implemented",
}

# primitives whose second derivative is not identically zero
SECOND_ORDER = {
    "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos", "tanh", "erf", "logistic",
    "mul", "div", "pow", "atan2", "logaddexp", "dot_general", "conv_general", "reduce_prod", "cumprod",
    # linear algebra (their VJPs call inv, triangular_solve, eigh and svd, which are differentiable)
    "inv", "solve", "triangular_solve", "det", "slogdet", "cholesky", "qr", "eigh", "eigvalsh", "svd", "svdvals",
    "pinv",
}
# differentiable once only: their VJP uses a primitive without a VJP
NO_DOUBLE_BACKWARD = {"reduce_window_max": "VJP is select_and_scatter_add"}


_rng = rng_from


# test_gradcheck_zero_size lowers this to 0: shapes with empty dims
_SIDE = {"min": 1}


def _shape(data, min_dims=0, max_dims=3, min_side=1, max_side=3):
    return data.draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min(min_side, _SIDE["min"]),
                                      max_side=max_side), label="shape")


def _prim(name):
    p = REGISTRY[name]
    return lambda *xs, **params: bind(p, *xs, **params)


# ---------------------------------------------------------------- value samplers
def s_any(rng, shape):
    return rng.uniform(-2.0, 2.0, shape)


def s_nonzero(rng, shape):
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 2.0, shape)


def s_pos(rng, shape):
    return rng.uniform(0.1, 2.0, shape)


def s_log1p(rng, shape):
    return rng.uniform(-0.9, 2.0, shape)


def s_off_grid(rng, shape):
    # away from integers (floor/ceil/trunc jump) and half-integers (round jumps)
    frac = rng.uniform(0.05, 0.45, shape) + rng.choice([0.0, 0.5], shape)
    return rng.integers(-3, 3, shape) + frac


def s_distinct(rng, *shapes):
    """Values distinct across all arrays (no ties for max/min), at least ~0.07 apart."""
    sizes = [math.prod(s) for s in shapes]
    vals = rng.permutation(np.linspace(-2.0, 2.0, max(sum(sizes), 2)))
    out, off = [], 0
    for s, n in zip(shapes, sizes):
        out.append(vals[off:off + n].reshape(s))
        off += n
    return out


def _retry(rng, sample, ok, tries=200):
    for _ in range(tries):
        v = sample()
        if ok(*v):
            return v
    raise AssertionError("could not draw inputs away from non-differentiable points")


# ---------------------------------------------------------------- builders
def unary(name, sampler):
    def build(data, order=1):
        x = sampler(_rng(data), _shape(data))
        return _prim(name), [T(x)]
    return build


def _broadcast_pair(data, n=2):
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=0, max_dims=3,
                                                         min_side=_SIDE["min"], max_side=3), label="shapes")
    return shapes.input_shapes


def binary(name, sx, sy, ok=None):
    def build(data, order=1):
        rng = _rng(data)
        shx, shy = _broadcast_pair(data)
        if ok is None:
            x, y = sx(rng, shx), sy(rng, shy)
        else:
            x, y = _retry(rng, lambda: (sx(rng, shx), sy(rng, shy)), ok)
        return _prim(name), [T(x), T(y)]
    return build


def b_distinct(name):
    def build(data, order=1):
        rng = _rng(data)
        shx, shy = _broadcast_pair(data)
        x, y = s_distinct(rng, shx, shy)
        return _prim(name), [T(x), T(y)]
    return build


def _quotient_ok(x, y):
    q = np.asarray(x / y)
    return np.all(np.abs(q - np.round(q)) > 0.02)


def b_select(data, order=1):
    rng = _rng(data)
    shc, shx, shy = _broadcast_pair(data, 3)
    c = ember.tensor(rng.random(shc) < 0.5)
    return (lambda c, x, y: bind(REGISTRY["select"], c, x, y)), [c, T(s_any(rng, shx)), T(s_any(rng, shy))]


def b_convert(data, order=1):
    x = s_any(_rng(data), _shape(data))
    return (lambda x: lax.convert(x, F64)), [T(x)]


def _axes(data, ndim):
    return tuple(sorted(data.draw(st.sets(st.integers(0, max(ndim - 1, 0)), max_size=ndim), label="axes")))


def reduction(name, kind):
    def build(data, order=1):
        rng = _rng(data)
        shape = _shape(data, min_dims=1)
        axes = _axes(data, len(shape))
        if kind == "distinct":
            (x,) = s_distinct(rng, shape)
        elif kind == "prod":
            x = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 1.5, shape)
            # zeros exercise the product-of-the-others branches; gradgrad: at most one zero
            nz = data.draw(st.integers(0, 1 if order == 2 else 3), label="zeros")
            x.reshape(-1)[rng.choice(x.size, min(nz, x.size), replace=False)] = 0.0
        else:
            x = s_any(rng, shape)
        return (lambda x: bind(REGISTRY[name], x, axes=axes)), [T(x)]
    return build


def b_cumsum(data, order=1):
    shape = _shape(data, min_dims=1)
    axis = data.draw(st.integers(0, len(shape) - 1))
    reverse = data.draw(st.booleans())
    return (lambda x: lax.cumsum(x, axis, reverse)), [T(s_any(_rng(data), shape))]


def b_cumprod(data, order=1):
    """Factors of magnitude 0.5-1.5 and exact zeros (cumprod is a polynomial: no kinks; the zeros
    exercise the VJP's before / at / after the first zero branches, and at second order the
    division-free pairwise form)."""
    rng = _rng(data)
    shape = _shape(data, min_dims=0)
    axis = data.draw(st.integers(0, max(len(shape) - 1, 0)), label="axis")
    reverse = data.draw(st.booleans(), label="reverse")
    x = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 1.5, shape)
    nz = data.draw(st.integers(0, 3), label="zeros")
    x.reshape(-1)[rng.choice(x.size, min(nz, x.size), replace=False)] = 0.0
    return (lambda x: lax.cumprod(x, axis, reverse)), [T(x)]


def _random_shape_of_size(data, n, max_dims=4):
    """A shape with product n (size-1 dims included)."""
    rank = data.draw(st.integers(1, max_dims))
    if n == 0:
        dims = [data.draw(st.integers(0, 3)) for _ in range(rank)]
        dims[data.draw(st.integers(0, rank - 1))] = 0
        return tuple(dims)
    dims = [1] * rank
    rest = n
    for f in range(2, n + 1):
        while rest % f == 0:
            dims[data.draw(st.integers(0, rank - 1))] *= f
            rest //= f
    return tuple(dims)


def b_reshape(data, order=1):
    shape = _shape(data)
    n = math.prod(shape)
    new = () if n == 1 and data.draw(st.booleans()) else _random_shape_of_size(data, n)
    return (lambda x: lax.reshape(x, new)), [T(s_any(_rng(data), shape))]


def b_broadcast_in_dim(data, order=1):
    shape = _shape(data)
    rank = len(shape) + data.draw(st.integers(0, 2))
    dims = tuple(sorted(data.draw(st.permutations(range(rank)))[:len(shape)]))
    out = [data.draw(st.integers(1, 3)) for _ in range(rank)]
    for i, d in enumerate(dims):
        out[d] = shape[i] if shape[i] != 1 else data.draw(st.integers(1, 3))
    out = tuple(out)
    return (lambda x: lax.broadcast_in_dim(x, out, dims)), [T(s_any(_rng(data), shape))]


def b_transpose(data, order=1):
    shape = _shape(data, max_dims=4)
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    return (lambda x: lax.transpose(x, perm)), [T(s_any(_rng(data), shape))]


def b_slice(data, order=1):
    shape = _shape(data, min_dims=1, max_side=5)
    start, stop, step = [], [], []
    for n in shape:
        a = data.draw(st.integers(0, n))
        b = data.draw(st.integers(a, n))
        start.append(a), stop.append(b), step.append(data.draw(st.integers(1, 3)))
    return (lambda x: lax.slice(x, start, stop, step)), [T(s_any(_rng(data), shape))]


def b_pad(data, order=1):
    shape = _shape(data, min_dims=1, max_side=4)
    cfg = []
    for n in shape:
        it = data.draw(st.integers(0, 2))
        size = n + max(n - 1, 0) * it
        lo = data.draw(st.integers(-min(2, size), 2))
        hi = data.draw(st.integers(-min(2, size + lo), 2))
        cfg.append((lo, hi, it))
    value = data.draw(st.sampled_from([0.0, -1.5]))
    return (lambda x: lax.pad(x, value, cfg)), [T(s_any(_rng(data), shape))]


def b_concatenate(data, order=1):
    rng = _rng(data)
    shape = list(_shape(data, min_dims=1))
    axis = data.draw(st.integers(0, len(shape) - 1))
    k = data.draw(st.integers(1, 4))
    xs = []
    for _ in range(k):
        s = list(shape)
        s[axis] = data.draw(st.integers(1, 3))
        xs.append(T(s_any(rng, tuple(s))))
    return (lambda *xs: lax.concatenate(xs, axis)), xs


def b_rev(data, order=1):
    shape = _shape(data, min_dims=1)
    axes = tuple(data.draw(st.permutations(range(len(shape))))[:data.draw(st.integers(0, len(shape)))])
    return (lambda x: lax.rev(x, axes)), [T(s_any(_rng(data), shape))]


def b_dot_general(data, order=1):
    rng = _rng(data)
    size = st.integers(1, 3)
    nb, nc = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))
    nfx, nfy = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))
    bsz = [data.draw(size) for _ in range(nb)]
    csz = [data.draw(size) for _ in range(nc)]
    fx = [data.draw(size) for _ in range(nfx)]
    fy = [data.draw(size) for _ in range(nfy)]
    px = data.draw(st.permutations(range(nb + nc + nfx)))  # position of each logical dim in x
    py = data.draw(st.permutations(range(nb + nc + nfy)))
    sx, sy = [0] * len(px), [0] * len(py)
    for i, d in enumerate(bsz + csz + fx):
        sx[px[i]] = d
    for i, d in enumerate(bsz + csz + fy):
        sy[py[i]] = d
    xb, yb = tuple(px[:nb]), tuple(py[:nb])
    xc, yc = tuple(px[nb:nb + nc]), tuple(py[nb:nb + nc])
    x, y = T(s_any(rng, tuple(sx))), T(s_any(rng, tuple(sy)))
    return (lambda x, y: lax.dot_general(x, y, (xc, yc), (xb, yb))), [x, y]


def _dil(n, d):
    return 0 if n == 0 else 1 + d * (n - 1)


def b_conv_general(data, order=1):
    rng = _rng(data)
    nd = data.draw(st.integers(1, 2), label="nd")
    small = st.integers(1, 2)
    n, groups, cin, cout = data.draw(small), data.draw(small), data.draw(small), data.draw(small)
    sp, ks, strides, pads, ld, rd = [], [], [], [], [], []
    for _ in range(nd):
        k, s = data.draw(st.integers(1, 3)), data.draw(small)
        l_, r_ = data.draw(small), data.draw(small)
        m = data.draw(st.integers(1, 4 if nd == 1 else 3))
        lo, hi = data.draw(st.integers(-1, 2)), data.draw(st.integers(-1, 2))
        hi = max(hi, _dil(k, r_) - _dil(m, l_) - lo)  # at least one output position
        sp.append(m), ks.append(k), strides.append(s), pads.append((lo, hi)), ld.append(l_), rd.append(r_)
    x = T(s_any(rng, (n, groups * cin) + tuple(sp)))
    w = T(s_any(rng, (groups * cout, cin) + tuple(ks)))
    return (lambda x, w: lax.conv_general(x, w, strides, pads, ld, rd, groups)), [x, w]


def window(kind):
    def build(data, order=1):
        rng = _rng(data)
        shape = _shape(data, min_dims=1, max_side=4)
        win, strides, pads, bd, wd = [], [], [], [], []
        for n in shape:
            k = data.draw(st.integers(1, 3))
            s = data.draw(st.integers(1, 2))
            if kind == "max":  # windows never entirely in the (-inf) padding; no dilation
                b_, w_ = 1, 1
                lo, hi = data.draw(st.integers(0, k - 1)), data.draw(st.integers(0, k - 1))
            else:
                b_, w_ = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
                lo, hi = data.draw(st.integers(-1, 2)), data.draw(st.integers(-1, 2))
                hi = max(hi, _dil(k, w_) - _dil(n, b_) - lo)
            win.append(k), strides.append(s), pads.append((lo, hi)), bd.append(b_), wd.append(w_)
        if kind == "max":
            (x,) = s_distinct(rng, shape)
        else:
            x = s_any(rng, shape)
        return (lambda x: lax.reduce_window(x, kind, win, strides, pads, bd, wd)), [T(x)]
    return build


def _indices(rng, n, shape):
    """Indices into a dim of size n: negative ones and repeats included (none if n == 0)."""
    if n == 0:
        assert math.prod(shape) == 0
        return np.zeros(shape, np.int64)
    return rng.integers(-n, n, shape)


def b_gather(data, order=1):
    rng = _rng(data)
    shape = _shape(data, min_dims=1)
    axis = data.draw(st.integers(0, len(shape) - 1))
    ishape = _shape(data, min_dims=0, max_dims=2, min_side=0)
    if shape[axis] == 0:  # nothing to index: the indices must be empty
        ishape = (0,) + ishape[1:]
    idx = I(_indices(rng, shape[axis], ishape))
    return (lambda x: lax.gather(x, idx, axis)), [T(s_any(rng, shape))]


def b_scatter_add(data, order=1):
    rng = _rng(data)
    shape = _shape(data, min_dims=1)
    axis = data.draw(st.integers(0, len(shape) - 1))
    ishape = _shape(data, min_dims=0, max_dims=2, min_side=0)
    if shape[axis] == 0:  # nothing to index: the indices must be empty
        ishape = (0,) + ishape[1:]
    idx = I(_indices(rng, shape[axis], ishape))
    ushape = shape[:axis] + ishape + shape[axis + 1:]
    return (lambda x, u: lax.scatter_add(x, idx, u, axis)), [T(s_any(rng, shape)), T(s_any(rng, ushape))]


def _along_axis(data, rng):
    shape = _shape(data, min_dims=1)
    axis = data.draw(st.integers(0, len(shape) - 1))
    ishape = tuple((data.draw(st.integers(1, 3)) if d else 0) if i == axis else data.draw(st.sampled_from([1, d]))
                   for i, d in enumerate(shape))
    idx = I(_indices(rng, shape[axis], ishape))
    out = tuple(ishape[i] if i == axis else d for i, d in enumerate(shape))
    return shape, axis, idx, out


def b_take_along_axis(data, order=1):
    rng = _rng(data)
    shape, axis, idx, _ = _along_axis(data, rng)
    return (lambda x: lax.take_along_axis(x, idx, axis)), [T(s_any(rng, shape))]


def b_scatter_add_along_axis(data, order=1):
    rng = _rng(data)
    shape, axis, idx, out = _along_axis(data, rng)
    return (lambda x, u: lax.scatter_add_along_axis(x, idx, u, axis)), [T(s_any(rng, shape)), T(s_any(rng, out))]


def _unique_indices(rng, n, shape, axis):
    """Indices along `axis` that are distinct in every row (after wrapping negatives): no write
    is overwritten, so every update reaches the output; some are given as negative ones."""
    k = shape[axis]
    assert k <= n
    out = np.zeros(shape, np.int64)
    rows = np.moveaxis(out, axis, -1)  # a view: writing a row writes `out`
    for pos in np.ndindex(rows.shape[:-1]):
        r = rng.permutation(n)[:k]
        rows[pos] = r - n * (rng.random(k) < 0.3)
    return out


def b_scatter_along_axis(data, order=1):
    rng = _rng(data)
    shape = _shape(data, min_dims=1)
    axis = data.draw(st.integers(0, len(shape) - 1), label="axis")
    n = shape[axis]
    k = data.draw(st.integers(1, n), label="k") if n else 0
    # the indices broadcast (size 1) or match in the other dims; the updates cover x there
    ishape = tuple(k if i == axis else data.draw(st.sampled_from([1, d])) for i, d in enumerate(shape))
    idx = I(_unique_indices(rng, n, ishape, axis))
    ushape = tuple(k if i == axis else d for i, d in enumerate(shape))
    return (lambda x, u: lax.scatter_along_axis(x, idx, u, axis)), [T(s_any(rng, shape)), T(s_any(rng, ushape))]


BUILDERS = {
    # elementwise unary
    "neg": unary("neg", s_any), "abs": unary("abs", s_nonzero), "sign": unary("sign", s_nonzero),
    "exp": unary("exp", s_any), "log": unary("log", s_pos), "log1p": unary("log1p", s_log1p),
    "expm1": unary("expm1", s_any), "sqrt": unary("sqrt", s_pos), "rsqrt": unary("rsqrt", s_pos),
    "sin": unary("sin", s_any), "cos": unary("cos", s_any), "tanh": unary("tanh", s_any),
    "erf": unary("erf", s_any), "logistic": unary("logistic", s_any),
    "floor": unary("floor", s_off_grid), "ceil": unary("ceil", s_off_grid),
    "round": unary("round", s_off_grid), "trunc": unary("trunc", s_off_grid),
    "convert": b_convert,
    # elementwise binary (numpy broadcasting, size-1 dims)
    "add": binary("add", s_any, s_any), "sub": binary("sub", s_any, s_any),
    "mul": binary("mul", s_any, s_any), "div": binary("div", s_any, s_nonzero),
    "pow": binary("pow", s_pos, s_any),
    "atan2": binary("atan2", s_nonzero, s_nonzero),
    "logaddexp": binary("logaddexp", s_any, s_any),
    "rem": binary("rem", s_any, s_nonzero, ok=_quotient_ok),
    "fmod": binary("fmod", s_any, s_nonzero, ok=_quotient_ok),
    "floordiv": binary("floordiv", s_any, s_nonzero, ok=_quotient_ok),
    "max": b_distinct("max"), "min": b_distinct("min"),
    "select": b_select,
    # reductions
    "reduce_sum": reduction("reduce_sum", "any"), "reduce_prod": reduction("reduce_prod", "prod"),
    "reduce_max": reduction("reduce_max", "distinct"), "reduce_min": reduction("reduce_min", "distinct"),
    "cumsum": b_cumsum, "cumprod": b_cumprod,
    # shapes
    "reshape": b_reshape, "broadcast_in_dim": b_broadcast_in_dim, "transpose": b_transpose,
    "slice": b_slice, "pad": b_pad, "concatenate": b_concatenate, "rev": b_rev,
    # contractions and windows
    "dot_general": b_dot_general, "conv_general": b_conv_general,
    "reduce_window_max": window("max"), "reduce_window_sum": window("sum"),
    # indexing
    "gather": b_gather, "scatter_add": b_scatter_add, "take_along_axis": b_take_along_axis,
    "scatter_add_along_axis": b_scatter_add_along_axis, "scatter_along_axis": b_scatter_along_axis,
    # linear algebra (tests/test_linalg.py)
    **LINALG_BUILDERS,
}

# second derivatives cost a backward pass per finite difference: fewer examples
GRADGRAD_EXAMPLES = 15


def _check_prim_applied(fn, inputs, name):
    out = fn(*inputs)
    assert out.grad_fn is not None and out.grad_fn.prim is REGISTRY[name], \
        f"builder for {name} does not apply {name} last (got {out.grad_fn})"


# ---------------------------------------------------------------- the registry is covered
def test_every_differentiable_primitive_has_a_builder():
    missing = sorted(set(DIFFERENTIABLE) - set(BUILDERS))
    assert not missing, f"differentiable primitives without a gradcheck builder: {missing}"
    stale = sorted(set(BUILDERS) - set(DIFFERENTIABLE))
    assert not stale, f"builders for primitives that are gone or lost their VJP: {stale}"


def test_primitives_without_vjp_are_listed():
    no_vjp = sorted(n for n, p in REGISTRY.items() if p.vjp is None and _builtin(p))
    assert no_vjp == sorted(NO_VJP), (
        f"unlisted: {sorted(set(no_vjp) - set(NO_VJP))}; listed but differentiable or gone: "
        f"{sorted(set(NO_VJP) - set(no_vjp))}")
    assert SECOND_ORDER <= set(DIFFERENTIABLE) and set(NO_DOUBLE_BACKWARD) <= set(DIFFERENTIABLE)


# ---------------------------------------------------------------- first derivatives
@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradcheck(name):
    build = BUILDERS.get(name)
    if build is None:
        pytest.fail(f"no gradcheck builder for the differentiable primitive {name!r}: add one to BUILDERS")

    @given(data=st.data())
    def run(data):
        fn, inputs = build(data)
        _check_prim_applied(fn, inputs, name)
        assert gradcheck(fn, inputs)

    run()


# primitives that cannot take an empty operand (max/min have no identity; a window must fit)
NO_EMPTY = {"reduce_max", "reduce_min", "reduce_window_max"}


@pytest.mark.parametrize("name", [n for n in DIFFERENTIABLE if n not in NO_EMPTY])
def test_gradcheck_zero_size(name):
    """Shapes with empty dims: the VJPs and kernels must cope with zero elements."""
    build = BUILDERS.get(name)
    if build is None:
        pytest.fail(f"no gradcheck builder for the differentiable primitive {name!r}: add one to BUILDERS")

    @settings(max_examples=10)
    @given(data=st.data())
    def run(data):
        fn, inputs = build(data)
        assert gradcheck(fn, inputs)

    _SIDE["min"] = 0
    try:
        run()
    finally:
        _SIDE["min"] = 1


# ---------------------------------------------------------------- second derivatives
@pytest.mark.parametrize("name", [n for n in DIFFERENTIABLE if n not in NO_DOUBLE_BACKWARD])
def test_gradgradcheck(name):
    build = BUILDERS.get(name)
    if build is None:
        pytest.fail(f"no gradcheck builder for the differentiable primitive {name!r}: add one to BUILDERS")

    @settings(max_examples=GRADGRAD_EXAMPLES)
    @given(data=st.data())
    def run(data):
        fn, inputs = build(data, order=2)
        if name in SECOND_ORDER:
            # the first derivative must itself depend on the inputs through a graph
            out = fn(*inputs)
            wrt = [x for x in inputs if x.requires_grad]
            gs = autograd.grad([out], wrt, grad_outputs=[ember.ones_like(out)], create_graph=True,
                               allow_unused=True)
            assert any(g is not None and g.requires_grad for g in gs), \
                f"{name}: the first derivative carries no graph, so its derivative would be lost"
        assert gradgradcheck(fn, inputs)

    run()


# ---------------------------------------------------------------- special points
def test_max_min_ties_share_the_gradient():
    # max(x, x) = x: each side gets half, the total derivative is 1
    x = T(np.linspace(-1, 1, 5))
    assert gradcheck(lambda x: lax.max(x, x), [x])
    assert gradcheck(lambda x: lax.min(x, x), [x])
    y = T(np.linspace(-1, 1, 5))
    (gx,) = autograd.grad(lax.max(x, y), [x], grad_outputs=ember.ones_like(x))
    np.testing.assert_allclose(gx.numpy(), 0.5)


def test_reduce_max_ties_share_the_gradient():
    x = T([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]])
    (gx,) = autograd.grad(lax.reduce_max(x, (1,)), [x], grad_outputs=ember.ones_like(x[:, 0]))
    np.testing.assert_allclose(gx.numpy(), [[0, 0.5, 0.5], [0.5, 0, 0.5]])


def test_reduce_prod_with_zeros_matches_finite_differences():
    x = T([[0.0, 2.0, 3.0], [0.0, 0.0, 5.0], [1.5, -2.0, 0.5], [0.0, 0.0, 0.0]])
    assert gradcheck(lambda x: lax.reduce_prod(x, (1,)), [x])
    assert gradcheck(lambda x: lax.reduce_prod(x, (0, 1)), [x])
    # second derivative at a single zero: d2/dx0 dx1 of x0 x1 x2 is x2, not 0
    assert gradgradcheck(lambda x: lax.reduce_prod(x, (1,)), [T([[0.0, 2.0, 3.0], [1.5, -2.0, 0.5]])])


def test_cumprod_with_zeros_matches_finite_differences():
    x = T([[0.0, 2.0, 3.0, 0.5], [1.5, 0.0, 0.0, -2.0], [1.5, -2.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
    for axis in (0, 1):
        for reverse in (False, True):
            assert gradcheck(lambda x: lax.cumprod(x, axis, reverse), [x])


def test_cumprod_second_derivative_at_a_zero():
    # cumprod([a, z, c])[2] = a z c: d2/da dz = c, which the double backward gives as 0
    assert gradgradcheck(lambda x: lax.cumprod(x, 0), [T([0.7, 0.0, 0.9])])


def test_gradcheck_detects_a_wrong_vjp():
    """The harness can fail: a primitive with a deliberately wrong VJP is caught."""
    from ember.ops.core import Primitive, elementwise_abstract
    p = Primitive("_wrong_square", impl=lambda x: x * x, vjp=lambda g, out, x: (lax.mul(g, x),))
    p.abstract = elementwise_abstract(p)
    x = T([0.5, -1.0, 2.0])
    with pytest.raises(GradcheckError):
        gradcheck(lambda x: bind(p, x), [x])
    # right first derivative 3 x^2 written so that its own derivative is 3 x, not 6 x
    p2 = Primitive("_wrong_cube", impl=lambda x: x * x * x,
                   vjp=lambda g, out, x: (lax.mul(g, lax.mul(lax.mul(x, x.detach()), 3.0)),))
    p2.abstract = elementwise_abstract(p2)
    assert gradcheck(lambda x: bind(p2, x), [x])
    with pytest.raises(GradcheckError):
        gradgradcheck(lambda x: bind(p2, x), [x])


# ---------------------------------------------------------------- missing VJPs raise
def test_backward_through_float_op_without_vjp_raises():
    x = T(np.arange(16.0).reshape(1, 1, 4, 4))
    g = T(np.ones((1, 1, 2, 2)))
    out = lax.select_and_scatter_add(g, x, (1, 1, 2, 2), (1, 1, 2, 2), [(0, 0)] * 4)
    with pytest.raises(ember.AutogradError, match="not implemented"):
        out.sum().backward()
    y = lax.bitcast(T([1.0, 2.0]), F64)
    with pytest.raises(ember.AutogradError, match="not implemented"):
        y.sum().backward()


def test_max_pool_double_backward_raises_not_implemented():
    from ember.nn import functional as F
    x = T(np.random.default_rng(0).permutation(np.arange(32.0)).reshape(1, 2, 4, 4))
    with pytest.raises(ember.AutogradError, match="not implemented"):
        gradgradcheck(lambda x: F.max_pool2d(x, 2), [x])
    with pytest.raises(ember.AutogradError, match="not implemented"):
        (g,) = autograd.grad(F.max_pool2d(x, 2).sum(), [x], create_graph=True)
        g.sum().backward()


def test_dilated_max_window_vjp_is_refused():
    x = T(np.random.default_rng(0).permutation(np.arange(16.0)))
    y = lax.reduce_window(x, "max", (2,), (1,), [(0, 0)], None, (2,))
    with pytest.raises(ember.AutogradError, match="dilat"):
        y.sum().backward()


def test_integer_outputs_carry_no_gradient():
    x = T([0.3, 2.0, -1.0])
    for out in (lax.argmax(x, 0), lax.eq(x, 0.3), lax.isnan(x), lax.reduce_or(lax.gt(x, 0), (0,)),
                lax.argsort(x, 0), lax.searchsorted(T([-1.0, 0.0, 2.0]), x)):
        assert not out.requires_grad and out.grad_fn is None
