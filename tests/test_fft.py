"""ember.fft and complex tensors (issue: the PyTorch surface) against torch fixtures and central
differences.

Fixtures: tools/make_fft_fixtures.py (torch 2.13 in a separate venv) over the cases in
tests/_fft_cases.py: every transform with n/s cropping and padding, each norm, dims in any order,
transposed, strided and broadcast views, length-1 dims, inf/NaN, and the complex arithmetic the
gradients flow through. Gradients are of the real loss sum(Re(out * conj(w))), in PyTorch's
convention (a complex input's gradient is dL/dRe + i dL/dIm). float64 gradients are also checked
by central differences (real and imaginary parts perturbed separately), and the transforms run
under ember.jit (on the host: C has no complex type, and the jit report says so).
"""
import json
import pathlib

import numpy as np
import pytest

import ember
from _fft_cases import CASES
from ember._core.state import debug
from ember.backend.cpu import compiler

safetensors_numpy = pytest.importorskip("safetensors.numpy")

FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "fft.json").read_text())["cases"]
DATA = safetensors_numpy.load_file(str(FIX / "fft.safetensors"))
BY_NAME = {c[0]: c for c in CASES}


def _load(name: str, key: str) -> np.ndarray:
    a = DATA[f"{name}.{key}"]
    if f"{name}.{key}" in META[name]["complex"]:
        z = np.empty(a.shape[:-1], np.complex64 if a.dtype == np.float32 else np.complex128)
        z.real, z.imag = a[..., 0], a[..., 1]  # not re + 1j*im: 1j*inf is nan+infj
        return z
    return a


def _tol(dtype) -> dict:
    single = np.dtype(dtype) in (np.float32, np.complex64)
    return dict(rtol=2e-5, atol=2e-5) if single else dict(rtol=1e-10, atol=1e-11)


def _loss(y, w):
    return (y * ember.conj(ember.tensor(w))).real.sum()


def test_fixtures_cover_every_case():
    """Every case in _fft_cases.py has a fixture (regenerate them after adding one)."""
    assert set(META) == set(BY_NAME)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_matches_pytorch(name):
    """CG-2 (the PyTorch surface): value, dtype and gradient equal torch's."""
    _, fn, inputs, grads = BY_NAME[name]
    xs = [ember.tensor(_load(name, f"in{i}"), requires_grad=grads and inputs[i].dtype.kind in "fc")
          for i in range(len(inputs))]
    with np.errstate(all="ignore"):
        y = fn(ember, *xs)
    want = _load(name, "out")
    assert y.dtype.np == want.dtype, (y.dtype, want.dtype)
    assert y.shape == want.shape
    got = y.detach().numpy()
    if name.endswith("_special"):
        # which non-finite value (inf or NaN, in which part) a bin gets depends on the FFT
        # algorithm's order of operations (torch's MKL and numpy's pocketfft differ); which bins
        # are non-finite, and the finite bins' values, do not
        bad = ~np.isfinite(want)
        np.testing.assert_array_equal(~np.isfinite(got), bad)
        got, want = got[~bad], want[~bad]
    np.testing.assert_allclose(got, want, equal_nan=True, **_tol(want.dtype))
    if not grads:
        return
    _loss(y, _load(name, "w")).backward()
    for i, x in enumerate(xs):
        if x.requires_grad:
            g = _load(name, f"grad{i}")
            assert x.grad is not None and x.grad.dtype.np == g.dtype, (i, x.grad, g.dtype)
            np.testing.assert_allclose(x.grad.numpy(), g, **_tol(g.dtype), err_msg=f"grad of input {i}")


# ---------------------------------------------------------------- central differences in float64
def _numeric_grad(f, x: np.ndarray, eps=1e-6) -> np.ndarray:
    """dL/dRe + i dL/dIm of the real scalar f at x, by central differences."""
    g = np.zeros(x.shape, np.complex128 if x.dtype.kind == "c" else np.float64)
    steps = (1.0, 1j) if x.dtype.kind == "c" else (1.0,)
    for idx in np.ndindex(x.shape):
        for s in steps:
            xp, xm = x.copy(), x.copy()
            xp[idx] += eps * s
            xm[idx] -= eps * s
            d = (f(xp) - f(xm)) / (2 * eps)
            g[idx] += d * (1 if s == 1.0 else 1j)
    return g


GRADCHECK = [n for n, fn, inputs, grads in CASES
             if grads and inputs and all(x.dtype in (np.float64, np.complex128) for x in inputs)
             and sum(x.size for x in inputs) <= 80]


@pytest.mark.parametrize("name", GRADCHECK)
def test_gradcheck_float64(name):
    """Every differentiable complex/fft op's VJP equals central differences in float64."""
    _, fn, inputs, _ = BY_NAME[name]
    rng = np.random.default_rng(3)
    y0 = fn(ember, *[ember.tensor(x) for x in inputs])
    w = rng.standard_normal(y0.shape) + (1j * rng.standard_normal(y0.shape) if y0.is_complex() else 0)
    w = w.astype(y0.dtype.np)

    def loss_at(i, xi):
        args = [ember.tensor(xi if j == i else x) for j, x in enumerate(inputs)]
        return float(_loss(fn(ember, *args), w).item())

    xs = [ember.tensor(x, requires_grad=True) for x in inputs]
    _loss(fn(ember, *xs), w).backward()
    for i, x in enumerate(inputs):
        want = _numeric_grad(lambda v: loss_at(i, v), x)
        np.testing.assert_allclose(xs[i].grad.numpy(), want, rtol=1e-6, atol=1e-7, err_msg=f"input {i}")


def test_every_complex_primitive_is_gradchecked():
    """The central-difference cases apply every primitive with complex operands or results
    (tests/test_gradcheck_primitives.py leaves them to this file)."""
    from test_gradcheck_primitives import COMPLEX_VALUED
    seen = set()
    for name in GRADCHECK:
        _, fn, inputs, _ = BY_NAME[name]
        g = ember.make_ir(lambda *xs: fn(ember, *xs))(*[ember.tensor(x) for x in inputs])
        seen |= {e.prim.name for e in g.eqns}
    assert set(COMPLEX_VALUED) <= seen, sorted(set(COMPLEX_VALUED) - seen)


def test_double_backward_of_rfft_power_spectrum():
    """create_graph: the gradient of a gradient through rfft/irfft matches central differences."""
    x0 = np.random.default_rng(0).standard_normal(6)

    def grad_norm(v):
        x = ember.tensor(v, requires_grad=True)
        p = ember.fft.rfft(x).abs().pow(2).sum()
        (g,) = ember.autograd.grad(p, [x], create_graph=True)
        return (g * g).sum(), x

    s, x = grad_norm(x0)
    s.backward()
    want = _numeric_grad(lambda v: float(grad_norm(v)[0].item()), x0)
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- edge cases torch cannot record
@pytest.mark.parametrize("fn,np_fn,shape", [
    (lambda x: ember.fft.fft(x), np.fft.fft, (0, 4)),
    (lambda x: ember.fft.rfft2(x), np.fft.rfft2, (0, 3, 4)),
    (lambda x: ember.fft.irfft(x, n=6), lambda a: np.fft.irfft(a, n=6), (2, 0, 4)),
])
def test_empty_batch_dims(fn, np_fn, shape):
    """An empty batch dim gives an empty result of numpy's shape and dtype."""
    x = np.zeros(shape, np.float64)
    out = fn(ember.tensor(x))
    assert out.shape == np_fn(x).shape and out.dtype.np == np_fn(x).dtype


@pytest.mark.parametrize("call,exc,match", [
    (lambda: ember.fft.fft(ember.tensor(1.0)), ember.ShapeError, "out of range"),
    (lambda: ember.fft.fft(ember.zeros(3, 0)), ember.ShapeError, "data points"),
    (lambda: ember.fft.fft(ember.zeros(4), n=0), ember.ShapeError, "data points"),
    (lambda: ember.fft.fft(ember.zeros(4), norm="bogus"), ValueError, "norm must be"),
    (lambda: ember.fft.rfft(ember.zeros(4, dtype=ember.complex64)), ember.DTypeError, "real input"),
    (lambda: ember.fft.fft(ember.zeros(4, dtype=ember.float16)), ember.DTypeError, "float16"),
    (lambda: ember.fft.fft2(ember.zeros(4, 4), dim=(0, 0)), ember.ShapeError, "repeat"),
    (lambda: ember.fft.irfft(ember.zeros(1, dtype=ember.complex64)), ember.ShapeError, "pass n"),
    (lambda: ember.fft.fftn(ember.zeros(4, 4), s=(2,), dim=(0, 1)), ember.ShapeError, "same length"),
])
def test_errors_name_the_problem(call, exc, match):
    """Bad dims, lengths, norms and dtypes raise ember errors that say what is wrong."""
    with pytest.raises(exc, match=match):
        call()


def test_integer_input_uses_the_default_float():
    """An integer signal transforms in complex64 (the default float's complex), as in PyTorch."""
    out = ember.fft.fft(ember.arange(4))
    assert out.dtype is ember.complex64
    np.testing.assert_allclose(out.numpy(), np.fft.fft(np.arange(4)), atol=1e-6)


def test_backward_of_complex_output_needs_a_real_loss():
    """backward() on a complex scalar asks for a real loss (PyTorch's rule)."""
    z = ember.tensor([1 + 1j], requires_grad=True)
    with pytest.raises(ember.AutogradError, match="real scalar"):
        (z * 2).sum().backward()


PROMOTION = json.loads((FIX / "fft.json").read_text())["promotion"]
# ember has no complex32 (torch's chalf): float16 meeting a Python complex gives complex64
NO_COMPLEX32 = {"float16,complex": "complex64"}


@pytest.mark.parametrize("pair", sorted(PROMOTION["pairs"]))
def test_complex_promotion_matches_pytorch(pair):
    """torch.result_type of every dtype pair with a complex member (recorded by the fixture tool)."""
    a, b = (ember.tensor(np.ones(3)).to(getattr(ember, n)) if n != "bool" else ember.ones(3, dtype=ember.bool)
            for n in pair.split(","))
    assert ember.result_type(a, b).name == PROMOTION["pairs"][pair]
    assert (a + b).dtype.name == PROMOTION["pairs"][pair]


@pytest.mark.parametrize("key", sorted(PROMOTION["scalar"]))
def test_complex_scalar_promotion_matches_pytorch(key):
    """A tensor meeting a Python bool/int/float/complex, where a complex takes part."""
    name, kind = key.split(",")
    t = ember.ones(3, dtype=getattr(ember, name) if name != "bool" else ember.bool)
    s = {"bool": True, "int": 2, "float": 2.5, "complex": 1j}[kind]
    want = NO_COMPLEX32.get(key, PROMOTION["scalar"][key])
    assert ember.result_type(t, s).name == want


def test_complex_promotion_and_python_scalars():
    """complex64 meets float64 in complex128; a Python complex is weak; dtype names resolve."""
    a = ember.tensor(np.ones(2, np.complex64))
    assert (a + ember.ones(2, dtype=ember.float64)).dtype is ember.complex128
    assert (a * 2.5).dtype is ember.complex64
    assert (ember.ones(2) * 1j).dtype is ember.complex64
    assert (ember.ones(2, dtype=ember.float64) + 1j).dtype is ember.complex128
    assert ember.tensor([1 + 2j]).dtype is ember.complex64
    assert ember.zeros(2, dtype="complex128").dtype is ember.cdouble
    assert ember.ones(2).cfloat().dtype is ember.complex64 and a.type() == "ember.ComplexFloatTensor"
    assert a.is_complex() and not a.is_floating_point() and ember.ones(1).is_floating_point()
    assert ember.promote_types(ember.complex64, ember.int64) is ember.complex64


# ---------------------------------------------------------------- under ember.jit
def test_jit_matches_eager_and_names_the_host_units(capsys):
    """A spectral-filter training step jits: same loss and gradients as eager; the fft and
    complex units run on the host and EMBER_DEBUG=1 names them."""
    rng = np.random.default_rng(1)
    x = ember.tensor(rng.standard_normal((4, 32)).astype(np.float32))
    target = ember.tensor(rng.standard_normal((4, 32)).astype(np.float32))

    def step(h):
        y = ember.fft.irfft(ember.fft.rfft(x) * ember.fft.rfft(h, n=32), n=32)
        loss = ((y - target) ** 2).mean()
        (g,) = ember.autograd.grad(loss, [h])
        return loss, g

    h0 = rng.standard_normal(7).astype(np.float32)
    want_loss, want_g = step(ember.tensor(h0, requires_grad=True))
    f = ember.jit(step)
    with debug(1):
        for _ in range(2):
            got_loss, got_g = f(ember.tensor(h0, requires_grad=True))
    np.testing.assert_allclose(got_loss.numpy(), want_loss.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(got_g.numpy(), want_g.numpy(), rtol=1e-4, atol=1e-6)
    if compiler.available():
        err = capsys.readouterr().err
        assert "on the host, with numpy: fft_r2c" in err and "dtype complex64" in err, err


def test_saving_a_complex_tensor_says_how(tmp_path):
    """safetensors has no complex dtype: saving one is a TypeError that names view_as_real, and
    no file is left behind."""
    path = tmp_path / "z.safetensors"
    with pytest.raises(TypeError, match="view_as_real"):
        ember.save({"z": ember.tensor([1 + 2j])}, str(path))
    assert not path.exists()
