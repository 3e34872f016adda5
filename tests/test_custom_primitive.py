"""PI-7: a user-registered primitive gets ember's whole contract: a shape rule that fails at
graph-build time and eagerly, a dtype table that refuses unsupported dtypes, and a VJP that
autograd (and gradcheck) use."""
from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.ops.core import P, REGISTRY, Aval
from ember.testing import GradcheckError, gradcheck

NAME = "user_tensor_add"
NAME64 = "user_tensor_add_f64"


def _abstract(x: Aval, y: Aval) -> Aval:
    """Shape rule: both operands have one shape (no broadcasting); dtype from the promotion."""
    if tuple(x.shape) != tuple(y.shape):
        raise ember.ShapeError(f"{NAME}: operand shapes {tuple(x.shape)} and {tuple(y.shape)} differ")
    dtype = x.dtype if x.dtype is y.dtype else ember.promote_types(x.dtype, y.dtype)
    return Aval(x.shape, dtype)


def _impl(x, y):
    return np.add(x, y)


def _vjp(g, out, x, y):
    return g, g


def _make(name, dtypes, vjp=_vjp):
    return ember.Primitive(name, impl=_impl, abstract=_abstract, vjp=vjp, dtypes=dtypes)


@pytest.fixture(scope="module")
def prims():
    made = {}
    for name, dtypes in ((NAME, (ember.float32, ember.int32)), (NAME64, (ember.float64,))):
        assert name not in REGISTRY
        made[name] = ember.register_primitive(_make(name, dtypes))
    yield made[NAME], made[NAME64]
    for name in made:
        REGISTRY.pop(name, None)
        P.__dict__.pop(name, None)


def test_registered_and_matches_numpy_add(prims):
    """PI-7: the user primitive is in the registry and computes numpy's add."""
    prim, _ = prims
    assert ember.primitives[NAME] is prim and P.user_tensor_add is prim
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((3, 4)).astype(np.float32)
    out = prim.bind(ember.from_numpy(a), ember.from_numpy(b))
    assert isinstance(out, ember.Tensor) and out.dtype is ember.float32
    np.testing.assert_array_equal(out.numpy(), a + b)
    ia, ib = np.arange(6, dtype=np.int32).reshape(2, 3), np.full((2, 3), 7, np.int32)
    iout = prim.bind(ember.from_numpy(ia), ember.from_numpy(ib))
    assert iout.dtype is ember.int32
    np.testing.assert_array_equal(iout.numpy(), ia + ib)
    # mixed int32/float32 promotes to float32, which the primitive supports
    mixed = prim.bind(ember.from_numpy(ia), ember.ones(2, 3))
    assert mixed.dtype is ember.float32
    np.testing.assert_array_equal(mixed.numpy(), ia + 1)


def test_shape_rule_at_graph_build_time(prims):
    """PI-7: the shape rule rejects mismatched shapes from abstract values alone (no data)."""
    prim, _ = prims
    ok = prim.abstract(Aval((2, 3), ember.float32), Aval((2, 3), ember.float32))
    assert ok == Aval((2, 3), ember.float32)
    with pytest.raises(ember.ShapeError, match=r"\(2, 3\) and \(4, 5\)"):
        prim.abstract(Aval((2, 3), ember.float32), Aval((4, 5), ember.float32))
    with pytest.raises(ember.ShapeError):
        prim.abstract(Aval((3,), ember.float32), Aval((2, 3), ember.float32))


def test_shape_rule_explains_eager_failure(prims):
    """PI-7: eagerly, the kernel's failure is reported through the primitive's own shape rule."""
    prim, _ = prims
    with pytest.raises(ember.ShapeError) as ei:
        prim.bind(ember.ones(2, 3), ember.ones(4, 5))
    msg = str(ei.value)
    assert msg.startswith(f"{NAME}: operand shapes (2, 3) and (4, 5) differ")


def test_shape_rule_runs_before_the_kernel_eagerly(prims):
    """PI-7: a rule stricter than the kernel (no broadcasting) is enforced in eager mode too."""
    prim, _ = prims
    assert prim.eager_checks and not ember.primitives["add"].eager_checks
    with pytest.raises(ember.ShapeError, match=r"\(2, 3\) and \(3,\) differ"):
        prim.bind(ember.ones(2, 3), ember.ones(3))  # numpy alone would broadcast this


def test_unsupported_dtype_has_no_kernel(prims):
    """PI-7: float64 is not in the primitive's dtype table."""
    prim, prim64 = prims
    with pytest.raises(ember.DTypeError, match="no kernel for dtype float64") as ei:
        prim.bind(ember.ones(2, dtype=ember.float64), ember.ones(2, dtype=ember.float64))
    assert NAME in str(ei.value) and "float32" in str(ei.value) and "int32" in str(ei.value)
    with pytest.raises(ember.DTypeError, match="no kernel for dtype int64"):
        prim.bind(ember.tensor([1, 2]), ember.tensor([3, 4]))
    with pytest.raises(ember.DTypeError, match="no kernel for dtype float32"):
        prim64.bind(ember.ones(2), ember.ones(2))


def test_vjp_recorded_and_used_by_backward(prims):
    prim, _ = prims
    x = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = ember.tensor([4.0, 5.0, 6.0], requires_grad=True)
    out = prim.bind(x * x, y)
    assert out.requires_grad and out.grad_fn.name == f"{NAME}_backward"
    (out * ember.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [2.0, 8.0, 18.0]
    assert y.grad.tolist() == [1.0, 2.0, 3.0]
    with ember.no_grad():
        assert prim.bind(x, y).grad_fn is None


def test_vjp_passes_gradcheck(prims):
    """PI-7: the VJP agrees with central differences: in float64 through a float64 registration,
    and in float32 with a float32-sized step and tolerance."""
    prim, prim64 = prims
    rng = np.random.default_rng(1)
    a = ember.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = ember.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    assert a.dtype is ember.float64
    assert gradcheck(lambda u, v: prim64.bind(u * u, v.sin()), [a, b])
    a32 = ember.tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    b32 = ember.tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    assert gradcheck(lambda u, v: prim.bind(u, v), [a32, b32], eps=1e-2, atol=1e-3, rtol=1e-3)


def test_gradcheck_catches_a_wrong_user_vjp():
    bad = ember.register_primitive(_make("user_tensor_add_bad_vjp", (ember.float64,),
                                         vjp=lambda g, out, x, y: (g * 2, g)))
    try:
        a = ember.tensor(np.ones((2, 2)), requires_grad=True)
        b = ember.tensor(np.ones((2, 2)), requires_grad=True)
        with pytest.raises(GradcheckError):
            gradcheck(lambda u, v: bad.bind(u, v), [a, b])
    finally:
        REGISTRY.pop("user_tensor_add_bad_vjp", None)
        P.__dict__.pop("user_tensor_add_bad_vjp", None)


def test_duplicate_registration_raises(prims):
    """PI-7: a name can be registered once; built-in names are taken too."""
    prim, _ = prims
    with pytest.raises(ValueError, match="already registered"):
        ember.register_primitive(_make(NAME, (ember.float32,)))
    assert ember.primitives[NAME] is prim  # the original stays
    with pytest.raises(ValueError, match="already registered"):
        ember.register_primitive(_make("add", (ember.float32,)))
    assert ember.primitives["add"] is not prim
    assert (ember.ones(2) + ember.ones(2)).tolist() == [2.0, 2.0]


def test_missing_vjp_is_a_clear_autograd_error():
    noderiv = ember.register_primitive(ember.Primitive("user_no_vjp", impl=lambda x: x * 2,
                                                       abstract=lambda x: x, dtypes=(ember.float32,)))
    try:
        x = ember.tensor([1.0], requires_grad=True)
        y = noderiv.bind(x)
        assert y.tolist() == [2.0]
        with pytest.raises(ember.AutogradError, match="not implemented"):
            y.sum().backward()
    finally:
        REGISTRY.pop("user_no_vjp", None)
        P.__dict__.pop("user_no_vjp", None)
