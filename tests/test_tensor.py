"""Tensor API: creation, numpy/DLPack interop, dtype/device conversion, views and memory sharing,
indexing against numpy, matmul broadcasting, empty tensors, in-place writes (BE-12 version counter)
and errors that name the user's own file and line."""
from __future__ import annotations

import inspect
import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ember
import ember.nn.functional as F

THIS_FILE = os.path.basename(__file__)


# ---------------------------------------------------------------- creation
@pytest.mark.parametrize("data, dtype", [
    ([1, 2, 3], ember.int64),
    ([[1, 2], [3, 4]], ember.int64),
    ([1.0, 2], ember.float32),
    (3.5, ember.float32),
    (7, ember.int64),
    ([True, False], ember.bool),
    (True, ember.bool),
    ([], ember.float32),
])
def test_tensor_from_python_infers_dtype_like_pytorch(data, dtype):
    t = ember.tensor(data)
    assert t.dtype is dtype
    assert t.shape == np.asarray(data).shape
    np.testing.assert_array_equal(t.numpy(), np.asarray(data, dtype=dtype.np))


@pytest.mark.parametrize("npdt, dtype", [(np.float64, ember.float64), (np.float32, ember.float32),
                                        (np.int32, ember.int32), (np.int64, ember.int64),
                                        (np.uint8, ember.uint8), (np.bool_, ember.bool),
                                        (np.float16, ember.float16)])
def test_tensor_from_numpy_keeps_dtype_and_copies(npdt, dtype):
    a = np.arange(6).reshape(2, 3).astype(npdt)
    t = ember.tensor(a)
    assert t.dtype is dtype
    assert not np.shares_memory(t.numpy(), a)  # tensor() copies
    np.testing.assert_array_equal(t.numpy(), a)


def test_tensor_explicit_dtype_and_requires_grad_only_for_floats():
    assert ember.tensor([1, 2], dtype=ember.float64).dtype is ember.float64
    assert ember.tensor([1.5], dtype="float16").dtype is ember.float16
    t = ember.tensor([1.0, 2.0], requires_grad=True)
    assert t.requires_grad and t.is_leaf and t.grad_fn is None
    for bad in (ember.int64, ember.int32, ember.bool, ember.uint8):
        with pytest.raises(ember.AutogradError, match="floating"):
            ember.tensor([1, 0], dtype=bad, requires_grad=True)
        with pytest.raises(ember.AutogradError):
            ember.zeros(2, dtype=bad).requires_grad_()
    with pytest.raises((TypeError, ValueError)):  # PyTorch raises ValueError
        ember.tensor([[1, 2], [3]])  # ragged


def test_creation_functions():
    z = ember.zeros(2, 3)
    assert z.shape == (2, 3) and z.dtype is ember.float32 and not z.numpy().any()
    assert ember.zeros((2, 3)).shape == (2, 3)
    o = ember.ones(4, dtype=ember.int32)
    assert o.dtype is ember.int32 and o.tolist() == [1, 1, 1, 1]
    assert ember.full((2,), 3).dtype is ember.int64
    assert ember.full((2,), 3.0).dtype is ember.float32
    assert ember.full((2,), True).dtype is ember.bool
    assert ember.full((2, 2), 7.5, dtype=ember.float64).tolist() == [[7.5, 7.5], [7.5, 7.5]]
    a = ember.arange(5)
    assert a.dtype is ember.int64 and a.tolist() == [0, 1, 2, 3, 4]
    assert ember.arange(2, 8, 3).tolist() == [2, 5]
    assert ember.arange(5, 0, -2).tolist() == [5, 3, 1]
    af = ember.arange(0, 1, 0.25)
    assert af.dtype is ember.float32 and af.tolist() == [0.0, 0.25, 0.5, 0.75]
    assert ember.arange(0).shape == (0,)
    ls = ember.linspace(0, 1, 5)
    assert ls.dtype is ember.float32
    np.testing.assert_allclose(ls.numpy(), np.linspace(0, 1, 5))
    np.testing.assert_array_equal(ember.eye(3).numpy(), np.eye(3, dtype=np.float32))
    np.testing.assert_array_equal(ember.eye(2, 3, dtype=ember.int64).numpy(), np.eye(2, 3, dtype=np.int64))
    with pytest.raises(ValueError):
        ember.arange(0, 3, 0)
    with pytest.raises(ValueError):
        ember.zeros(-1, 2)


def test_like_creation():
    i = ember.tensor([[1, 2, 3]])
    f = ember.tensor([1.0, 2.0], dtype=ember.float64)
    assert ember.zeros_like(i).dtype is ember.int64 and ember.zeros_like(i).shape == (1, 3)
    assert ember.ones_like(f).dtype is ember.float64 and ember.ones_like(f).tolist() == [1.0, 1.0]
    assert ember.full_like(f, 7).tolist() == [7.0, 7.0]
    assert ember.empty_like(i).shape == (1, 3)
    assert ember.zeros_like(i, dtype=ember.float32).dtype is ember.float32
    r = ember.ones_like(f, requires_grad=True)
    assert r.requires_grad
    # the new tensors own their memory
    assert not np.shares_memory(ember.zeros_like(f).numpy(), f.numpy())


# ---------------------------------------------------------------- numpy / python interop
def test_numpy_is_zero_copy_both_ways():
    t = ember.arange(6.0).reshape(2, 3)
    a = t.numpy()
    a[0, 0] = 42.0
    assert t[0, 0].item() == 42.0
    src = np.arange(4.0)
    f = ember.from_numpy(src)
    assert np.shares_memory(f.numpy(), src)
    src[1] = -1.0
    assert f.tolist() == [0.0, -1.0, 2.0, 3.0]
    assert np.shares_memory(ember.as_tensor(src).numpy(), src)
    assert not np.shares_memory(ember.as_tensor(src, dtype=ember.float32).numpy(), src)


def test_numpy_refuses_requires_grad():
    t = ember.ones(3, requires_grad=True)
    with pytest.raises(ember.AutogradError, match="detach"):
        t.numpy()
    d = t.detach()
    assert np.shares_memory(d.numpy(), t.numpy(force=True))


def test_item_tolist_and_python_conversions():
    assert ember.tensor([[2.5]]).item() == 2.5
    assert isinstance(ember.tensor(3).item(), int)
    assert isinstance(ember.tensor(True).item(), bool)
    with pytest.raises(ValueError):
        ember.ones(2).item()
    assert ember.tensor([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
    assert ember.tensor(1.5).tolist() == 1.5
    assert ember.tensor([1.5], dtype=ember.bfloat16).tolist() == [1.5]
    assert float(ember.tensor(2.0)) == 2.0 and int(ember.tensor(3)) == 3
    assert [10, 20, 30][ember.tensor(1)] == 20
    with pytest.raises(TypeError):
        [10, 20][ember.tensor(1.0)]
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(ember.ones(2))
    assert bool(ember.tensor([1]))


def test_dlpack_round_trip_shares_memory():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = ember.from_dlpack(a)
    assert t.dtype is ember.float32 and t.shape == (3, 4)
    assert np.shares_memory(t.numpy(), a)
    back = np.from_dlpack(t)
    assert np.shares_memory(back, a)
    back[2, 3] = -5.0
    assert t[2, 3].item() == -5.0
    assert t.__dlpack_device__() == a.__dlpack_device__()
    v = t.T  # a strided view exports too
    np.testing.assert_array_equal(np.from_dlpack(v), a.T)
    assert ember.from_dlpack(t) is t
    with pytest.raises(ember.DTypeError):
        np.from_dlpack(ember.ones(2, dtype=ember.bfloat16))


def test_to_dtype_device_and_cuda_error():
    t = ember.tensor([1.5, -2.5])
    d = t.to(ember.float64)
    assert d.dtype is ember.float64 and d.tolist() == [1.5, -2.5]
    assert t.to("float16").dtype is ember.float16
    assert t.to(ember.float32) is t
    assert t.to("cpu") is t
    assert t.to("cpu", ember.float64).dtype is ember.float64
    assert t.to(ember.tensor([1], dtype=ember.int32)).dtype is ember.int32
    c = t.to(ember.float32, copy=True)
    assert c is not t and not np.shares_memory(c.numpy(), t.numpy())
    assert t.device == "cpu" and t.device.type == "cpu" and str(t.device) == "cpu"
    assert t.cpu() is t
    for call in (lambda: t.to("cuda"), lambda: t.to("cuda:0"), lambda: ember.zeros(2, device="cuda"),
                 lambda: ember.tensor([1.0], device="cuda")):
        with pytest.raises(ember.EmberError, match="CUDA"):
            call()
    with pytest.raises(ember.EmberError, match="unknown device"):
        t.to(ember.device("tpu"))


def test_dtype_conversion_methods():
    t = ember.tensor([1.7, -1.7, 0.0])
    assert t.long().tolist() == [1, -1, 0] and t.long().dtype is ember.int64
    assert t.int().dtype is ember.int32
    assert t.bool().tolist() == [True, True, False]
    assert t.double().dtype is ember.float64
    assert t.half().dtype is ember.float16
    assert t.bfloat16().dtype is ember.bfloat16
    assert ember.tensor([True, False]).float().tolist() == [1.0, 0.0]
    assert ember.tensor([3, 4]).type_as(t).dtype is ember.float32
    assert ember.tensor([300]).byte().tolist() == [300 % 256]
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = x.double()
    assert y.requires_grad
    y.sum().backward()
    assert x.grad.dtype is ember.float32 and x.grad.tolist() == [1.0, 1.0]


def test_repr():
    assert repr(ember.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(ember.tensor([1, 2])) == "tensor([1, 2])"
    assert "dtype=ember.float64" in repr(ember.tensor([1.0], dtype=ember.float64))
    assert "requires_grad=True" in repr(ember.tensor([1.0], requires_grad=True))
    assert "grad_fn=<mul_backward>" in repr(ember.tensor([1.0], requires_grad=True) * 2)
    assert "dtype=ember.bfloat16" in repr(ember.tensor([1.0], dtype=ember.bfloat16))
    long = repr(ember.zeros(10000))
    assert "..." in long and len(long) < 2000


def test_shape_properties():
    t = ember.zeros(2, 3, 4)
    assert t.ndim == t.dim() == 3 and t.size() == (2, 3, 4) and t.size(1) == 3 and t.numel() == 24
    assert len(t) == 2 and t.element_size() == 4
    assert t.stride() == (12, 4, 1) and t.transpose(0, 2).stride() == (1, 4, 12)
    assert t.is_contiguous() and not t.transpose(0, 1).is_contiguous()
    with pytest.raises(TypeError):
        len(ember.tensor(1.0))


# ---------------------------------------------------------------- views share memory
def _shares(a, b):
    return np.shares_memory(a.numpy(), b.numpy())


def test_views_share_memory_and_writes_are_visible():
    base = ember.arange(24.0).reshape(2, 3, 4)
    views = {
        "int": base[1],
        "slice": base[:, 1:3],
        "step": base[..., ::2],
        "neg_step": base[:, ::-1],
        "none": base[None, 0],
        "transpose": base.transpose(0, 2),
        "T": base.T,
        "permute": base.permute(2, 0, 1),
        "reshape": base.reshape(6, 4),
        "view": base.view(4, 6),
        "flatten": base.flatten(),
        "unsqueeze": base.unsqueeze(1),
        "squeeze": base[:, :1].squeeze(1),
        "narrow": base.narrow(2, 1, 2),
        "expand": base[:, :1, :].expand(2, 5, 4),
        "detach": base.detach(),
    }
    for name, v in views.items():
        assert _shares(v, base), name
    # writes through a view land in the base (and bump the shared version)
    v0 = base._version
    base[1][0, 0] = -1.0
    assert base[1, 0, 0].item() == -1.0
    base.transpose(0, 2)[3, 2, 1] = -2.0
    assert base[1, 2, 3].item() == -2.0
    base.reshape(6, 4)[5].fill_(-3.0)
    assert base[1, 2].tolist() == [-3.0] * 4
    base[:, ::-1][0, 0, 0] = -4.0
    assert base[0, 2, 0].item() == -4.0
    base.detach()[0, 0, 1] = -5.0
    assert base[0, 0, 1].item() == -5.0
    assert base._version == v0 + 5
    assert base[1]._version == base._version  # views share the version counter


def test_view_on_noncontiguous_raises_while_reshape_copies():
    t = ember.arange(6.0).reshape(2, 3)
    tt = t.T
    with pytest.raises(ember.ShapeError, match="reshape"):
        tt.view(6)
    r = tt.reshape(6)
    assert r.tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    assert not _shares(r, t)
    assert tt.contiguous().is_contiguous() and not _shares(tt.contiguous(), t)
    assert t.contiguous() is t
    c = t.clone()
    assert not _shares(c, t) and c.tolist() == t.tolist()


# ---------------------------------------------------------------- in-place writes keep memory (BE-12)
def test_inplace_keeps_data_ptr_and_bumps_version():
    """BE-12: `a[0] = b` and `a += 1` write into a's memory and bump its version counter."""
    a = ember.zeros(3, 4)
    b = ember.ones(4)
    ptr, ver = a.data_ptr(), a._version
    a[0] = b
    assert a.data_ptr() == ptr and a._version == ver + 1
    assert a[0].tolist() == [1.0] * 4 and a[1].tolist() == [0.0] * 4
    alias = a
    a += 1
    assert a is alias and a.data_ptr() == ptr and a._version == ver + 2
    assert a.numpy()[0, 0] == 2.0 and a.numpy()[2, 3] == 1.0
    a.mul_(2).sub_(1)
    assert a.data_ptr() == ptr and a._version == ver + 4
    a[a > 2] = 0.0
    assert a.data_ptr() == ptr and a._version == ver + 5 and a.numpy().max() == 1.0
    a.zero_()
    assert a.data_ptr() == ptr and not a.numpy().any()
    i = ember.tensor([1, 2, 3])
    with pytest.raises(ember.AutogradError, match="can't be cast"):
        i.add_(0.5)  # float result into an int tensor


def test_write_into_expanded_view_raises():
    """BE-12: writing into a broadcast view (several elements, one memory location) is refused."""
    e = ember.ones(1, 3).expand(4, 3)
    with pytest.raises(RuntimeError, match="broadcast"):
        e.add_(1)
    with pytest.raises(RuntimeError, match="broadcast"):
        e[0] = 5.0
    with pytest.raises(RuntimeError, match="clone"):
        e.fill_(0.0)
    c = e.clone()
    c[0] = 5.0
    assert c[:, 0].tolist() == [5.0, 1.0, 1.0, 1.0]


# ---------------------------------------------------------------- indexing vs numpy (hypothesis)
def _expand_ellipsis(key, ndim):
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis and not
                 (isinstance(k, np.ndarray) and k.dtype == np.bool_))
    n_real += sum(k.ndim for k in key if isinstance(k, np.ndarray) and k.dtype == np.bool_)
    out = []
    for k in key:
        if k is Ellipsis:
            out.extend([slice(None)] * (ndim - n_real))
        else:
            out.append(k)
    return tuple(out)


def _split_advanced(arr_ndim, key):
    """(basic key, position of the advanced index in the basic result, the advanced index) or None.

    PyTorch (and ember) apply integers as basic indexing first, so a single integer-array or mask
    index keeps its place among the remaining dims; numpy agrees whenever no integer is separated
    from the array by a slice. The oracle indexes numpy in these two steps.
    """
    key = _expand_ellipsis(key if isinstance(key, tuple) else (key,), arr_ndim)
    adv = [i for i, k in enumerate(key) if isinstance(k, np.ndarray)]
    if not adv:
        return None
    j = adv[0]
    a = key[j]
    nd = a.ndim if a.dtype == np.bool_ else 1
    basic = key[:j] + (slice(None),) * nd + key[j + 1:]
    pos = sum(1 for k in key[:j] if k is None or isinstance(k, slice))
    return basic, pos, a


def oracle_getitem(arr, key):
    sp = _split_advanced(arr.ndim, key)
    if sp is None:
        return arr[key]
    basic, pos, a = sp
    return arr[basic][(slice(None),) * pos + (a,)]


def oracle_setitem(arr, key, value):
    sp = _split_advanced(arr.ndim, key)
    if sp is None:
        arr[key] = value
        return
    basic, pos, a = sp
    view = arr[basic]
    assert view.base is not None or view.size == 0 or np.shares_memory(view, arr)
    view[(slice(None),) * pos + (a,)] = value


@st.composite
def index_case(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    entries = []
    dim = 0
    used_ellipsis = used_adv = False
    kinds = draw(st.lists(st.sampled_from(["int", "negint", "slice", "slice", "none", "ellipsis", "array",
                                           "mask"]), min_size=1, max_size=len(shape) + 2))
    for kind in kinds:
        if dim >= len(shape):
            if kind == "none":
                entries.append(None)
            continue
        n = shape[dim]
        if kind == "int":
            entries.append(draw(st.integers(0, n - 1)))
        elif kind == "negint":
            entries.append(draw(st.integers(-n, -1)))
        elif kind == "slice":
            bound = st.none() | st.integers(-6, 6)
            step = draw(st.none() | st.sampled_from([1, 2, 3, -1, -2, -3]))
            entries.append(slice(draw(bound), draw(bound), step))
        elif kind == "none":
            entries.append(None)
            continue
        elif kind == "ellipsis" and not used_ellipsis:
            used_ellipsis = True
            entries.append(Ellipsis)
            dim += draw(st.integers(0, len(shape) - dim))  # the dims it stands for
            continue
        elif kind == "array" and not used_adv:
            used_adv = True
            entries.append(np.array(draw(st.lists(st.integers(-n, n - 1), max_size=4)), dtype=np.int64))
        elif kind == "mask" and not used_adv:
            used_adv = True
            k = draw(st.integers(1, min(2, len(shape) - dim)))
            entries.append(np.array(draw(st.lists(st.booleans(), min_size=int(np.prod(shape[dim:dim + k])),
                                                  max_size=int(np.prod(shape[dim:dim + k])))),
                                    dtype=np.bool_).reshape(shape[dim:dim + k]))
            dim += k
            continue
        else:
            entries.append(slice(None))
        dim += 1
    if used_ellipsis:  # later entries address the trailing dims: fill them so the count is exact
        entries.extend([slice(None)] * (len(shape) - dim))
    if used_adv and any(isinstance(e, int) for e in entries):
        # with an integer array present, numpy moves separated advanced dims to the front and
        # PyTorch does not (see test_int_and_array_index_follow_pytorch): keep the shared cases
        entries = [slice(None) if isinstance(e, int) else e for e in entries]
    as_ = draw(st.sampled_from(["numpy", "tensor", "list"]))
    key = tuple(entries)
    ekey = tuple(ember.from_numpy(e) if isinstance(e, np.ndarray) and as_ == "tensor" else
                 e.tolist() if isinstance(e, np.ndarray) and as_ == "list" and e.size and e.ndim == 1 else e
                 for e in entries)
    single = draw(st.booleans()) and len(key) == 1
    return shape, (key[0] if single else key), (ekey[0] if single else ekey)


@settings(max_examples=150)
@given(index_case())
def test_getitem_matches_numpy(case):
    shape, key, ekey = case
    base = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    expect = oracle_getitem(base, key)
    got = ember.from_numpy(base.copy())[ekey]
    assert got.shape == expect.shape, (key, got.shape, expect.shape)
    np.testing.assert_array_equal(got.numpy(), expect)
    if not any(isinstance(k, np.ndarray) for k in (key if isinstance(key, tuple) else (key,))):
        t = ember.from_numpy(base)
        if got.numel():
            assert np.shares_memory(t[ekey].numpy(), base), "basic indexing must give a view"


@settings(max_examples=150)
@given(index_case(), st.booleans())
def test_setitem_matches_numpy(case, scalar):
    shape, key, ekey = case
    base = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    target_shape = oracle_getitem(base, key).shape
    value = -7.0 if scalar else -(np.arange(int(np.prod(target_shape)), dtype=np.float32) + 100).reshape(
        target_shape)
    expect = base.copy()
    oracle_setitem(expect, key, value)
    t = ember.from_numpy(base.copy())
    ptr = t.data_ptr()
    t[ekey] = value if scalar else ember.from_numpy(value)
    assert t.data_ptr() == ptr
    np.testing.assert_array_equal(t.numpy(), expect)


def test_negative_step_after_int_index():
    """Regression: a flipped slice after an integer index must flip the right dim."""
    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = ember.from_numpy(base)
    for key in [(0, slice(None, None, -1)), (1, slice(None), slice(3, 0, -2)),
                (np.array([0, 1]), -2, slice(2, 0, -1)), (None, 1, slice(None, None, -1))]:
        np.testing.assert_array_equal(t[key].numpy(), base[key], err_msg=str(key))


def test_int_and_array_index_follow_pytorch():
    """Integers are basic indexing: x[0, :, idx] keeps the array dim in place (PyTorch), where
    numpy would move it to the front."""
    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    got = ember.from_numpy(base)[0, :, [0, 1]]
    assert got.shape == (3, 2)
    np.testing.assert_array_equal(got.numpy(), base[0][:, [0, 1]])


def test_multiple_adjacent_advanced_indices_and_errors():
    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = ember.from_numpy(base)
    i, j = np.array([1, 0, 1]), np.array([2, -1, 0])
    np.testing.assert_array_equal(t[i, j].numpy(), base[i, j])
    np.testing.assert_array_equal(t[:, i, j].numpy(), base[:, i, j])
    np.testing.assert_array_equal(t[ember.from_numpy(base > 5)].numpy(), base[base > 5])
    with pytest.raises(IndexError):
        t[2]
    with pytest.raises(IndexError):
        t[0, 0, 0, 0]
    with pytest.raises(IndexError):
        t[..., ...]
    with pytest.raises(IndexError):
        t[np.array([5])]


def test_setitem_repeated_indices_last_write_wins():
    x = ember.zeros(4)
    x[[0, 0, 2]] = 5.0
    assert x.tolist() == [5.0, 0.0, 5.0, 0.0]
    y = ember.zeros(4)
    y[ember.tensor([1, 1])] = ember.tensor([3.0, 4.0])
    assert y.tolist() == [0.0, 4.0, 0.0, 0.0]


# ---------------------------------------------------------------- matmul broadcasting (hypothesis)
@st.composite
def matmul_shapes(draw):
    n, k, m = draw(st.integers(0, 3)), draw(st.integers(0, 3)), draw(st.integers(0, 3))
    batch = draw(st.lists(st.integers(1, 3), max_size=3))
    ba = [b if draw(st.booleans()) else 1 for b in batch][draw(st.integers(0, len(batch))):]
    bb = [b if draw(st.booleans()) else 1 for b in batch][draw(st.integers(0, len(batch))):]
    a = (k,) if draw(st.integers(0, 4)) == 0 else tuple(ba) + (n, k)
    b = (k,) if draw(st.integers(0, 4)) == 0 else tuple(bb) + (k, m)
    return a, b


@given(matmul_shapes(), st.sampled_from([np.float32, np.float64, np.int64]))
def test_matmul_broadcasting_matches_numpy(shapes, npdt):
    sa, sb = shapes
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(sa) * 4).astype(npdt)
    b = (rng.standard_normal(sb) * 4).astype(npdt)
    expect = a @ b
    got = ember.from_numpy(a) @ ember.from_numpy(b)
    assert got.shape == expect.shape
    assert got.dtype.np == expect.dtype
    np.testing.assert_allclose(got.numpy(), expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ember.matmul(ember.from_numpy(a), ember.from_numpy(b)).numpy(), expect,
                               rtol=1e-5, atol=1e-5)


def test_matmul_grads_with_broadcast_batch():
    a = ember.randn(2, 1, 3, 4, dtype=ember.float64, requires_grad=True)
    b = ember.randn(5, 4, 2, dtype=ember.float64, requires_grad=True)
    from ember.testing import gradcheck
    assert gradcheck(lambda x, y: x @ y, [a, b])


# ---------------------------------------------------------------- empty tensors
def test_empty_tensors():
    e = ember.zeros(0, 3)
    assert e.shape == (0, 3) and e.numel() == 0
    assert (e + 1).shape == (0, 3)
    assert e.sum().item() == 0.0
    assert e.sum(0).tolist() == [0.0, 0.0, 0.0]
    assert (e @ ember.ones(3, 2)).shape == (0, 2)
    assert (ember.ones(2, 0) @ ember.ones(0, 3)).tolist() == [[0.0] * 3] * 2
    assert e.reshape(3, 0).shape == (3, 0)
    assert e[1:].shape == (0, 3) and ember.ones(4)[3:1].shape == (0,)
    assert ember.cat([ember.ones(2, 3), e]).shape == (2, 3)
    assert e.tolist() == []
    x = ember.zeros(0, 2, requires_grad=True)
    (x * 2).sum().backward()
    assert x.grad.shape == (0, 2)


# ---------------------------------------------------------------- errors name the user's line
def _assert_names(err, shapes, lineno):
    msg = str(err)
    for s in shapes:
        assert str(s) in msg, (s, msg)
    assert f"{THIS_FILE}:{lineno}" in msg, msg


def test_shape_errors_name_shapes_and_user_line():
    a, b = ember.ones(2, 3), ember.ones(4, 5)
    with pytest.raises(ember.ShapeError) as ei:
        line = sys._getframe().f_lineno; a + b  # noqa: E702
    _assert_names(ei.value, [(2, 3), (4, 5)], line)
    with pytest.raises(ember.ShapeError) as ei:
        line = sys._getframe().f_lineno; ember.ones(2, 3) @ ember.ones(4, 5)  # noqa: E702
    _assert_names(ei.value, [(2, 3), (4, 5)], line)
    with pytest.raises(ember.ShapeError) as ei:
        line = sys._getframe().f_lineno; F.conv2d(ember.ones(1, 3, 5, 5), ember.ones(2, 4, 3, 3))  # noqa: E702
    _assert_names(ei.value, [(1, 3, 5, 5), (2, 4, 3, 3)], line)
    with pytest.raises(ember.ShapeError) as ei:
        line = sys._getframe().f_lineno; a.mul_(b)  # noqa: E702
    _assert_names(ei.value, [(2, 3), (4, 5)], line)
    with pytest.raises(ember.ShapeError) as ei:
        line = sys._getframe().f_lineno; ember.ones(2, 3).reshape(4, 2)  # noqa: E702
    _assert_names(ei.value, [(2, 3), (4, 2)], line)


def test_backward_gradient_of_wrong_shape_is_refused():
    x = ember.ones(2, 3, requires_grad=True)
    with pytest.raises(ember.AutogradError, match="shape"):
        (x * 2).backward(ember.ones(3, 2))


def test_eager_success_path_inspects_no_frames(monkeypatch):
    """Error locations are found by a stack walk only when raising: the fast path never looks."""
    x = ember.randn(3, 4, requires_grad=True)
    w = ember.randn(5, 4, requires_grad=True)
    img = ember.randn(1, 2, 6, 6, requires_grad=True)
    k = ember.randn(3, 2, 3, 3, requires_grad=True)

    def boom(*args, **kwargs):
        raise AssertionError("a stack frame was inspected on the success path")

    monkeypatch.setattr(sys, "_getframe", boom)
    monkeypatch.setattr(inspect, "currentframe", boom)
    monkeypatch.setattr(inspect, "stack", boom)
    y = F.linear(x, w).tanh()
    z = (y[:, 1:] * 2 + 1).exp().sum() + F.relu(x @ w.T).mean()
    c = F.conv2d(img, k, padding=1).sigmoid().sum()
    (z + c).backward()
    h = ember.zeros(3, 4)
    h[0] = 1.0
    h += x.detach()
    monkeypatch.undo()
    assert x.grad.shape == (3, 4) and w.grad.shape == (5, 4) and k.grad.shape == (3, 2, 3, 3)
    # and the guard itself works: an error path does walk the stack
    monkeypatch.setattr(sys, "_getframe", boom)
    with pytest.raises(AssertionError, match="inspected"):
        ember.ones(2) + ember.ones(3)
