"""Edge cases whose reference is PyTorch: special values, empty and 0-d inputs, half precision.

Each case is a function of (T, F, **tensors) written so that it runs unchanged with T = torch,
F = torch.nn.functional (tools/make_edge_fixtures.py records the results in a separate
environment) and with T = ember, F = ember.nn.functional (tests/test_edge_cases.py compares).
`grad` names the inputs whose gradients are recorded (out.backward(ones)); `jit` marks cases
whose forward is also compared under ember.jit on both backends.
"""
import numpy as np

nan, inf = float("nan"), float("inf")
CASES = []


def case(name, grad=(), jit=False, **inputs):
    """Register a case; each input is a numpy array (its dtype is the tensor's)."""
    def deco(fn):
        CASES.append((name, inputs, tuple(grad), jit, fn))
        return fn
    return deco


def f16(x):
    return np.asarray(x, np.float16)


def f32(x):
    return np.asarray(x, np.float32)


def f64(x):
    return np.asarray(x, np.float64)


def i64(x):
    return np.asarray(x, np.int64)


_r = np.random.default_rng(20261202)
_fx = f64([3.0, 1.0, -6.0, 0.5, 0.0, -0.0, 7.25, -1e-300])
_fy = f64([1.5, 2.0, 3.0, 0.0, 2.0, 2.0, -0.5, 3.0])


# ---------------------------------------------------------------- gradients at special points
@case("fmod_grad", grad=("x", "y"), x=_fx, y=_fy)
def _(T, F, x, y): return T.fmod(x, y)


@case("fmod_scalar_f64", grad=("x",), x=f64([1.0, 2.5, -0.7, 10.0, -3.0]))
def _(T, F, x): return T.fmod(x, 0.3)


@case("pow_scalar_exponent_f64", grad=("x",), x=f64([0.5, 1.5, 2.0, 3.7]))
def _(T, F, x): return x ** 0.1


@case("pow_scalar_base_f64", grad=("y",), y=f64([0.5, 1.5, -2.0, 3.7]))
def _(T, F, y): return 0.3 ** y


@case("scalar_minus_f64", grad=("x",), x=f64([0.0, 1.0, -2.0]))
def _(T, F, x): return 1 / 3 - x * 0.1


_mx = f32([3.0, nan, 2.0, 1.0, nan, -0.0, 0.0])
_my = f32([3.0, 1.0, nan, 2.0, nan, 0.0, -0.0])


@case("maximum_nan_grad", grad=("x", "y"), x=_mx, y=_my)
def _(T, F, x, y): return T.maximum(x, y)


@case("minimum_nan_grad", grad=("x", "y"), x=_mx, y=_my)
def _(T, F, x, y): return T.minimum(x, y)


@case("fmax_grad", grad=("x", "y"), x=_mx, y=_my)
def _(T, F, x, y): return T.fmax(x, y)


@case("fmin_grad", grad=("x", "y"), x=_mx, y=_my)
def _(T, F, x, y): return T.fmin(x, y)


@case("atan2_origin_grad", grad=("y", "x"), y=f64([0.0, 1.0, -0.0, 3.0, 0.0]), x=f64([0.0, 2.0, 1.0, 0.0, -0.0]))
def _(T, F, y, x): return T.atan2(y, x)


_dx = f64([inf, 1.0, nan, 5.0, -inf, 0.0, 7.0, -7.0])
_dy = f64([2.0, inf, 1.0, nan, 0.0, 0.0, 2.0, 2.0])


@case("div_trunc_special_grad", grad=("x", "y"), x=_dx, y=_dy)
def _(T, F, x, y): return T.div(x, y, rounding_mode="trunc")


@case("div_floor_special_grad", grad=("x", "y"), x=_dx, y=_dy)
def _(T, F, x, y): return T.div(x, y, rounding_mode="floor")


# ---------------------------------------------------------------- inputs PyTorch accepts
_m45 = np.arange(20, dtype=np.float32).reshape(4, 5)


@case("narrow_negative_start", grad=("x",), x=_m45)
def _(T, F, x): return x.narrow(1, -2, 2)


@case("norm_p0", x=f32([0.0, 1.0, -2.0, 0.0, 3.0]))
def _(T, F, x): return T.norm(x, p=0)


@case("var_correction_none", x=_m45)
def _(T, F, x): return T.var(x, dim=1, correction=None)


@case("std_correction_none", x=_m45)
def _(T, F, x): return T.std(x, correction=None)


_img = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)


@case("avg_pool2d_one_element_padding", grad=("x",), x=_img)
def _(T, F, x): return F.avg_pool2d(x, 2, padding=(1,))


@case("max_pool2d_one_element_padding", grad=("x",), x=_img)
def _(T, F, x): return F.max_pool2d(x, 2, padding=(1,))


@case("softmax_size0", x=np.zeros((3, 0), np.float32))
def _(T, F, x): return F.softmax(x, 1)


@case("log_softmax_size0", x=np.zeros((3, 0), np.float32))
def _(T, F, x): return F.log_softmax(x, 1)


@case("logsumexp_size0", x=np.zeros((3, 0), np.float32))
def _(T, F, x): return T.logsumexp(x, 1)


@case("matmul_k0", x=np.zeros((5, 5, 0), np.float32), y=np.zeros((0, 5), np.float32))
def _(T, F, x, y): return T.matmul(x, y)


@case("cat_with_empty_1d_first", x=np.zeros(0, np.float32), y=_m45)
def _(T, F, x, y): return T.cat([x, y], 1)


@case("cat_with_empty_1d_last", x=_m45, y=np.zeros(0, np.float32))
def _(T, F, x, y): return T.cat([x, y], 0)


@case("batch_norm_empty_batch", x=np.zeros((0, 3), np.float32), rm=f32([0.5, 1.0, 2.0]), rv=f32([1.0, 2.0, 3.0]))
def _(T, F, x, rm, rv): return F.batch_norm(x, rm, rv, training=True)


@case("index_select_0d_index", x=_m45, i=i64(2))
def _(T, F, x, i): return T.index_select(x, 1, i)


@case("index_select_0d_index_1d", x=f32([5.0, 6.0, 7.0]), i=i64(-1 + 3))
def _(T, F, x, i): return T.index_select(x, 0, i)


@case("gather_0d", x=f32(3.0), i=i64(0))
def _(T, F, x, i): return T.gather(x, 0, i)


@case("index_add_0d", x=f32(3.0), i=i64(0), s=f32(5.0))
def _(T, F, x, i, s): return T.index_add(x, 0, i, s)


@case("scatter_add_0d", x=f32(3.0), i=i64(0), s=f32(5.0))
def _(T, F, x, i, s): return T.scatter_add(x, 0, i, s)


@case("nonzero_0d_true", x=f32(2.0))
def _(T, F, x): return T.nonzero(x)


@case("nonzero_0d_false", x=f32(0.0))
def _(T, F, x): return T.nonzero(x)


_si = _r.integers(0, 5, (5, 5))


@case("scatter_add_small_index", grad=("x", "s"), x=np.zeros((10, 5), np.float32), i=_si,
      s=_r.standard_normal((5, 5)).astype(np.float32))
def _(T, F, x, i, s): return T.scatter_add(x, 1, i, s)


@case("scatter_add_larger_src", x=np.zeros((10, 5), np.float32), i=_si, s=_r.standard_normal((6, 7)).astype(np.float32))
def _(T, F, x, i, s): return T.scatter_add(x, 1, i, s)


@case("gather_small_index", grad=("x",), x=_r.standard_normal((6, 5)).astype(np.float32), i=_r.integers(0, 5, (3, 2)))
def _(T, F, x, i): return T.gather(x, 1, i)


# ---------------------------------------------------------------- half precision accumulates in float32
@case("mean_f16_4096x20", jit=True, x=f16(np.full(4096, 20.0)))
def _(T, F, x): return x.mean()


@case("var_f16_4096x300", jit=True, x=f16(np.full(4096, 300.0)))
def _(T, F, x): return x.var()


@case("std_f16", jit=True, x=f16(np.linspace(0, 300, 4096)))
def _(T, F, x): return x.std()


@case("layer_norm_f16_large", jit=True, x=f16([1000.0, 2000.0, 3000.0, 4000.0]))
def _(T, F, x): return F.layer_norm(x, (4,))


@case("layer_norm_f16_affine", jit=True, x=f16(_r.standard_normal((3, 64)) * 300), w=f16(_r.standard_normal(64)),
      b=f16(_r.standard_normal(64)))
def _(T, F, x, w, b): return F.layer_norm(x, (64,), w, b)


@case("matmul_f16_long", jit=True, x=f16(np.ones((1, 4096))), y=f16(np.full((4096, 1), 0.01)))
def _(T, F, x, y): return x @ y


@case("logsumexp_f16", jit=True, x=f16(np.full((2, 4096), 10.0)))
def _(T, F, x): return T.logsumexp(x, 1)


@case("softmax_f16_long_row", jit=True, x=f16(np.linspace(-3, 3, 4096)))
def _(T, F, x): return F.softmax(x, 0)


@case("log_softmax_f16", jit=True, x=f16(_r.standard_normal((4, 2048)) * 4))
def _(T, F, x): return F.log_softmax(x, 1)


@case("cross_entropy_f16", jit=True, x=f16(_r.standard_normal((512, 10)) * 3), t=_r.integers(0, 10, 512))
def _(T, F, x, t): return F.cross_entropy(x, t)


@case("batch_norm_f16_train", jit=True, x=f16(_r.standard_normal((256, 4, 8)) * 200 + 1000))
def _(T, F, x): return F.batch_norm(x, None, None, training=True)


@case("sum_f16_overflows", jit=True, x=f16(np.full(4096, 20.0)))
def _(T, F, x): return x.sum()
