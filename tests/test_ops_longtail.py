"""The op long tail (sort, argsort, topk, kthvalue, median, cumprod, searchsorted, unique, bincount,
nan_to_num, roll, meshgrid, diag, trace, scatter, einsum, one-argument where, multinomial and the
PyTorch Tensor methods and aliases) against PyTorch fixtures, float64 central differences, and
ember.jit.

The fixtures come from tools/make_longtail_fixtures.py, run in a separate torch environment over
the cases in tests/_longtail_cases.py, which these tests run with ember (torch is never imported).
"""
import json
import pathlib

import numpy as np
import pytest

import ember
from ember._core.errors import ConcretizationError, ShapeError
from ember.testing import gradcheck

from _longtail_cases import CASES

safetensors_numpy = pytest.importorskip("safetensors.numpy")

FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "longtail.json").read_text())["cases"]
REF = safetensors_numpy.load_file(str(FIX / "longtail.safetensors"))
TOL = {"float32": dict(rtol=2e-6, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-12)}
PAIRS = [(c, d) for c in CASES for d in c.dtypes]


def _inputs(case, key, requires_grad=True):
    arrays = [REF[f"{key}.in{i}"] for i in range(len(case.inputs))]
    names = case.names()
    return [ember.tensor(a, requires_grad=requires_grad and n in case.grads) for a, n in zip(arrays, names)]


def _flat(out):
    if isinstance(out, ember.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return list(out)
    return [ember.tensor(out)]


def _same(what, got, want, dtype):
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != PyTorch's {want.shape}"
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, err_msg=what, equal_nan=True, **TOL.get(dtype, TOL["float32"]))
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


@pytest.mark.parametrize("case,dtype", PAIRS, ids=[f"{c.name}-{d}" for c, d in PAIRS])
def test_matches_pytorch(case, dtype):
    """Values, dtypes and gradients equal PyTorch's on the same inputs (special values, empty and
    size-1 dims, non-contiguous views, 0-d tensors)."""
    key = f"{case.name}.{dtype}"
    meta = META[key]
    xs = _inputs(case, key)
    outs = _flat(case.fn(ember, *xs))
    assert len(outs) == meta["outputs"] and isinstance(case.fn(ember, *xs), (tuple, list)) == meta["tuple"]
    for k, (o, want_dt) in enumerate(zip(outs, meta["out_dtypes"])):
        assert o.dtype.name == want_dt, f"{key} out{k}: dtype {o.dtype.name} != PyTorch's {want_dt}"
        _same(f"{key} out{k}", o.detach().numpy(), REF[f"{key}.out{k}"], dtype)
    if meta["grads"]:
        loss = sum((o * ember.tensor(REF[f"{key}.gout{k}"])).sum() for k, o in enumerate(outs)
                   if f"{key}.gout{k}" in REF)
        loss.backward()
        for i in meta["grads"]:
            g = xs[i].grad.numpy() if xs[i].grad is not None else np.zeros(xs[i].shape, xs[i].numpy().dtype)
            _same(f"{key} grad{i}", g, REF[f"{key}.grad{i}"], dtype)


GRAD_CASES = [c for c in CASES if c.grads and "float64" in c.dtypes and all(
    np.isfinite(a).all() for a in c.arrays("float64") if a.dtype.kind == "f") and not c.name.endswith("empty")]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c.name for c in GRAD_CASES])
def test_gradcheck_float64(case):
    """Analytic gradients equal central differences in float64 (FE-6)."""
    xs = _inputs(case, f"{case.name}.float64")

    def f(*ts):
        return tuple(o for o in _flat(case.fn(ember, *ts)) if o.dtype.kind == "f")
    gradcheck(f, xs)


def test_cumprod_gradient_with_zeros_and_second_order():
    """cumprod's VJP is itself differentiable, also where the input holds zeros."""
    x = ember.tensor([1.5, 0.0, -2.0, 0.0, 3.0], dtype=ember.float64, requires_grad=True)
    gradcheck(lambda t: ember.grad(lambda u: (ember.cumprod(u, 0) ** 2).sum())(t), [x])


JIT_CASES = [c for c in CASES if c.jit]


@pytest.mark.parametrize("case", JIT_CASES, ids=[c.name for c in JIT_CASES])
def test_jit_matches_eager(case):
    """Each traceable case compiles with ember.jit (native, or per-unit host fallback) and gives
    eager's values and gradients."""
    dtype = case.dtypes[-1]
    key = f"{case.name}.{dtype}"
    xs = _inputs(case, key, requires_grad=False)
    eager = _flat(case.fn(ember, *xs))
    got = _flat(ember.jit(lambda *ts: case.fn(ember, *ts))(*xs))
    for k, (g, e) in enumerate(zip(got, eager)):
        assert g.dtype is e.dtype
        _same(f"{key} jit out{k}", g.detach().numpy(), e.detach().numpy(), dtype)
    want = META[key]["grads"]
    if not want or not all(x.numel() for x in xs):
        return
    gouts = {k: ember.tensor(REF[f"{key}.gout{k}"]) for k in range(len(eager)) if f"{key}.gout{k}" in REF}

    def loss(*ts):
        outs = _flat(case.fn(ember, *ts))
        return sum((outs[k] * g).sum() for k, g in gouts.items())
    grads = ember.jit(ember.grad(loss, argnums=tuple(want)))(*xs)
    for i, g in zip(want, grads):
        _same(f"{key} jit grad{i}", g.numpy(), REF[f"{key}.grad{i}"], dtype)


def test_jit_names_the_host_units_and_lowers_the_rest():
    """argsort and searchsorted have no C kernel: under jit they run on the host, and the report
    says so; cumprod, roll, diag, einsum and nan_to_num lower to native code."""
    x = ember.randn(4, 6)

    def sorted_top(t):
        return ember.topk(t, 2).values.sum() + ember.searchsorted(ember.tensor([0.0, 1.0]), t).sum()
    f = ember.jit(sorted_top)
    f(x)
    text = "\n".join(ember.jit.explain(f))
    assert "on the host" in text and "argsort" in text and "searchsorted" in text

    def native(t):
        return (ember.cumprod(t, 1).sum() + ember.roll(t, 1, 0).sum() + ember.diag(t[:, :4]).sum()
                + ember.einsum("ij,kj->ik", t, t).sum() + ember.nan_to_num(t).sum())
    g = ember.jit(native)
    np.testing.assert_allclose(g(x).numpy(), native(x).numpy(), rtol=1e-5)
    assert "on the host" not in "\n".join(ember.jit.explain(g))


def test_data_dependent_ops_refuse_to_trace():
    """unique, bincount and one-argument where have value-dependent shapes: a clear error under jit."""
    x = ember.tensor([1, 2, 2])
    for fn in (ember.unique, ember.bincount, lambda t: ember.where(t > 1)):
        with pytest.raises(ConcretizationError, match="data-dependent"):
            ember.jit(fn)(x)


def test_errors_name_the_shapes():
    x = ember.randn(2, 3)
    with pytest.raises(ShapeError, match=r"k=4 .*size 3.*\(2, 3\)"):
        ember.topk(x, 4)
    with pytest.raises(ShapeError, match=r"label 'j' has sizes 3 and 4.*\(2, 3\), \(4, 5\)"):
        ember.einsum("ij,jk->ik", x, ember.randn(4, 5))
    with pytest.raises(ShapeError, match=r"subscript 'ijk' does not fit an operand of shape \(2, 3\)"):
        ember.einsum("ijk->i", x)
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(3, 1\)"):
        ember.searchsorted(x, ember.randn(3, 1))
    with pytest.raises(ValueError, match="non-negative"):
        ember.bincount(ember.tensor([1, -1]))
    with pytest.raises(ShapeError, match="1-D or 2-D"):
        ember.diag(ember.randn(2, 2, 2))


def test_format_type_and_new_tensors():
    """f"{t:.4f}" on a 0-d tensor, Tensor.type, new_zeros/ones/full/empty/tensor (PyTorch's)."""
    t = ember.tensor(3.14159)
    assert f"{t:.2f}" == "3.14" and f"{ember.tensor(7):>3d}" == "  7"
    assert f"{t}" == str(t.item()) and f"{ember.ones(2)}" == str(ember.ones(2))  # as PyTorch
    with pytest.raises(TypeError, match="unsupported format string"):
        f"{ember.ones(2):.2f}"
    x = ember.ones(2, dtype=ember.float64)
    assert x.type() == "ember.DoubleTensor" and ember.tensor([1]).type() == "ember.LongTensor"
    assert x.type(ember.int32).dtype is ember.int32 and x.type("ember.HalfTensor").dtype is ember.float16
    assert x.type("torch.FloatTensor").dtype is ember.float32
    with pytest.raises(TypeError, match="invalid type"):
        x.type("ember.Nope")
    z = x.new_zeros(2, 3)
    assert z.shape == (2, 3) and z.dtype is ember.float64 and not z.numpy().any()
    assert x.new_ones((4,)).numpy().tolist() == [1.0] * 4 and x.new_ones(1, dtype=ember.int8).dtype is ember.int8
    f = x.new_full((2, 2), 7, requires_grad=True)
    assert f.requires_grad and f.detach().numpy().tolist() == [[7.0, 7.0], [7.0, 7.0]]
    assert x.new_empty(0).shape == (0,) and x.new_tensor([1, 2]).dtype is ember.float64


def test_multinomial_draws_follow_the_weights():
    """Sampling with replacement matches the weights' proportions; without replacement the draws
    in a row are distinct and never pick a zero-weight category; a fixed seed repeats; it traces."""
    ember.manual_seed(0)
    w = ember.tensor([[1.0, 0.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0]])
    s = ember.multinomial(w, 4000, replacement=True)
    assert s.shape == (2, 4000) and s.dtype is ember.int64
    freq = np.stack([np.bincount(r, minlength=4) for r in s.numpy()]) / 4000
    np.testing.assert_allclose(freq, (w / w.sum(-1, keepdim=True)).numpy(), atol=0.03)
    for _ in range(20):
        d = ember.multinomial(w[0], 3).numpy()
        assert len(set(d.tolist())) == 3 and 1 not in d
    ember.manual_seed(5)
    a = ember.multinomial(w, 2)
    ember.manual_seed(5)
    assert (ember.multinomial(w, 2).numpy() == a.numpy()).all()
    ember.manual_seed(5)
    assert (ember.jit(lambda t: ember.multinomial(t, 2))(w).numpy() == a.numpy()).all()
    with pytest.raises(ValueError, match="without replacement"):
        ember.multinomial(w, 3)
    with pytest.raises(ValueError, match="non-negative"):
        ember.multinomial(ember.tensor([1.0, -1.0]), 1)


def test_scatter_repeated_index_last_write_wins_and_inplace():
    x = ember.zeros(1, 3)
    x.scatter_(1, ember.tensor([[1, 1]]), ember.tensor([[5.0, 6.0]]))
    assert x.numpy().tolist() == [[0.0, 6.0, 0.0]]
