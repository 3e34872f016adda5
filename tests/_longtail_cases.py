"""The op long tail's reference cases, shared by tools/make_longtail_fixtures.py (which runs them
with torch) and tests/test_ops_longtail.py (which runs them with ember): each case is one
function of the framework module `T` and its input tensors, spelled identically for both, so the
fixtures also check that ember's names and signatures are PyTorch's.

Imports numpy only. Inputs are drawn from a seed derived from the case name; float inputs are
made in float64 and cast per dtype; integer inputs are int64.
"""
from __future__ import annotations

import zlib

import numpy as np

NAN, INF = float("nan"), float("inf")


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(20261202 + zlib.crc32(name.encode()))


def distinct(r, shape):
    """Floats with no ties (so the indices of sorts and top-k are unique)."""
    n = int(np.prod(shape))
    return (r.permutation(n).astype(np.float64) + r.uniform(0.1, 0.9, n)).reshape(shape) - n / 2


def special(r, shape):
    x = distinct(r, shape).ravel()
    x[:4] = [NAN, INF, -INF, 0.0]
    return r.permutation(x).reshape(shape)


class Case:
    """fn(T, *inputs); `grads`: the float inputs to differentiate; `jit`: traceable (fixed shapes)."""

    def __init__(self, name, fn, inputs, grads=(), jit=True, dtypes=("float32", "float64")):
        self.name, self.fn, self.inputs, self.grads, self.jit = name, fn, inputs, tuple(grads), jit
        self.dtypes = dtypes

    def names(self) -> list:
        """The inputs' names: fn's parameters after T, or x0, x1, ... for fn(T, *xs)."""
        code, n = self.fn.__code__, len(self.inputs)
        return [f"x{i}" for i in range(n)] if code.co_flags & 0x04 else list(code.co_varnames[1:1 + n])

    def arrays(self, dtype: str) -> list:
        r = rng_for(self.name)
        out = []
        for make in self.inputs:
            a = make(r) if callable(make) else np.asarray(make)
            out.append(a.astype(dtype) if a.dtype.kind == "f" else a)
        return out


def _cases():
    c = []
    add = lambda *a, **k: c.append(Case(*a, **k))  # noqa: E731
    # sort / argsort / msort
    add("sort_last", lambda T, x: T.sort(x), [lambda r: distinct(r, (3, 5))], ["x"])
    add("sort_dim0_desc", lambda T, x: T.sort(x, dim=0, descending=True), [lambda r: distinct(r, (4, 3))], ["x"])
    add("sort_special", lambda T, x: T.sort(x, -1), [lambda r: special(r, (2, 6))], ["x"])
    add("sort_special_desc", lambda T, x: T.sort(x, 1, descending=True), [lambda r: special(r, (2, 6))], ["x"])
    add("sort_ties_stable", lambda T, x: T.sort(x, stable=True), [lambda r: r.integers(0, 3, (3, 7))], dtypes=("int64",))
    add("sort_ties_stable_desc", lambda T, x: T.sort(x, descending=True, stable=True),
        [lambda r: r.integers(0, 3, (3, 7))], dtypes=("int64",))
    add("sort_float_ties_desc", lambda T, x: T.sort(x, descending=True, stable=True),
        [np.array([1.0, -0.0, 2.0, 0.0, 1.0, NAN, 2.0, NAN])], ["x"])
    add("sort_noncontig", lambda T, x: T.sort(x.transpose(0, 1)[:, ::2], dim=0), [lambda r: distinct(r, (6, 4))], ["x"])
    add("sort_empty", lambda T, x: T.sort(x, 1), [np.zeros((3, 0))], ["x"])
    add("sort_size1", lambda T, x: T.sort(x, 0), [lambda r: distinct(r, (1, 4))], ["x"])
    add("sort_0d", lambda T, x: T.sort(x), [np.array(1.5)], ["x"])
    add("argsort", lambda T, x: T.argsort(x, dim=1, descending=True), [lambda r: special(r, (3, 5))])
    add("argsort_method", lambda T, x: x.argsort(0), [lambda r: distinct(r, (4, 2))])
    add("msort", lambda T, x: T.msort(x), [lambda r: distinct(r, (4, 3))], ["x"])
    # topk / kthvalue / median
    add("topk", lambda T, x: T.topk(x, 3), [lambda r: distinct(r, (4, 6))], ["x"])
    add("topk_smallest_dim0", lambda T, x: T.topk(x, 2, dim=0, largest=False), [lambda r: distinct(r, (5, 3))], ["x"])
    add("topk_nan", lambda T, x: x.topk(2), [np.array([1.0, NAN, 3.0, -INF])], ["x"])
    add("topk_k0", lambda T, x: T.topk(x, 0), [lambda r: distinct(r, (2, 3))], ["x"])
    add("topk_noncontig", lambda T, x: T.topk(x.t(), 2, dim=1), [lambda r: distinct(r, (5, 3))], ["x"])
    add("kthvalue", lambda T, x: T.kthvalue(x, 2, dim=1), [lambda r: distinct(r, (3, 5))], ["x"])
    add("kthvalue_keepdim", lambda T, x: x.kthvalue(3, 0, keepdim=True), [lambda r: distinct(r, (4, 2))], ["x"])
    add("kthvalue_nan", lambda T, x: T.kthvalue(x, 4), [np.array([3.0, NAN, 1.0, 2.0, NAN])], ["x"])
    add("median_all_odd", lambda T, x: T.median(x), [lambda r: distinct(r, (3, 3))], ["x"])
    add("median_all_even", lambda T, x: x.median(), [lambda r: distinct(r, (2, 4))], ["x"])
    add("median_dim", lambda T, x: T.median(x, 1), [lambda r: distinct(r, (3, 4))], ["x"])
    add("median_dim_keepdim", lambda T, x: T.median(x, 0, keepdim=True), [lambda r: distinct(r, (5, 2))], ["x"])
    add("median_nan_rows", lambda T, x: T.median(x, 1),
        [np.array([[3.0, NAN, 1.0, 2.0, NAN], [4.0, 1.0, 2.0, 0.5, 3.0]])], ["x"])
    add("median_nan_all", lambda T, x: T.median(x), [np.array([3.0, NAN, 1.0])], ["x"])
    add("median_int", lambda T, x: T.median(x, 0), [lambda r: r.permutation(7).reshape(7, 1)], dtypes=("int64",))
    add("nanmedian_rows", lambda T, x: T.nanmedian(x, 1),
        [np.array([[3.0, NAN, 1.0, 2.0, NAN], [NAN, NAN, NAN, NAN, NAN], [4.0, 1.0, 2.0, 0.5, 3.0]])], ["x"])
    add("nanmedian_all", lambda T, x: T.nanmedian(x), [np.array([[3.0, NAN], [1.0, 2.0]])], ["x"])
    # cumprod
    add("cumprod", lambda T, x: T.cumprod(x, 1), [lambda r: r.uniform(0.5, 1.5, (3, 5))], ["x"])
    add("cumprod_zeros", lambda T, x: T.cumprod(x, 0),
        [np.array([[2.0, 0.0, 1.5], [0.0, 3.0, 0.5], [4.0, 2.0, 0.0], [0.5, 0.0, 2.0], [3.0, 1.0, -1.0]])], ["x"])
    add("cumprod_method_dim0", lambda T, x: x.cumprod(dim=-1), [np.array([1.5, -2.0, 0.0, 3.0, 0.0, 2.0])], ["x"])
    add("cumprod_noncontig", lambda T, x: T.cumprod(x.t(), 1), [lambda r: r.uniform(-1.5, 1.5, (4, 3))], ["x"])
    add("cumprod_empty", lambda T, x: T.cumprod(x, 1), [np.zeros((2, 0))], ["x"])
    add("cumprod_0d", lambda T, x: T.cumprod(x, 0), [np.array(-2.5)], ["x"])
    add("cumprod_int", lambda T, x: T.cumprod(x, 0), [lambda r: r.integers(-3, 4, (6,))], dtypes=("int64",))
    add("cumprod_special", lambda T, x: T.cumprod(x, 0), [np.array([2.0, INF, 0.5, NAN, 1.0])])
    # searchsorted / bucketize
    add("searchsorted_1d", lambda T, s, v: T.searchsorted(s, v),
        [np.array([-1.0, 0.0, 0.0, 2.5, 7.0]), np.array([[-2.0, 0.0, 1.0], [2.5, 9.0, NAN]])])
    add("searchsorted_right", lambda T, s, v: T.searchsorted(s, v, right=True),
        [np.array([-1.0, 0.0, 0.0, 2.5, 7.0]), np.array([-2.0, 0.0, 1.0, 2.5, 9.0])])
    add("searchsorted_side_int32", lambda T, s, v: T.searchsorted(s, v, side="right", out_int32=True),
        [np.array([1.0, 2.0, 3.0]), np.array([2.0, 0.5])])
    add("searchsorted_rows", lambda T, s, v: T.searchsorted(s, v),
        [lambda r: np.sort(r.standard_normal((3, 6)), 1), lambda r: r.standard_normal((3, 4))])
    add("searchsorted_empty_values", lambda T, s, v: T.searchsorted(s, v), [np.array([1.0, 2.0]), np.zeros((0,))])
    add("bucketize", lambda T, x, b: T.bucketize(x, b), [np.array([[0.5, 1.0], [3.0, 9.0]]), np.array([1.0, 3.0, 5.0])])
    add("bucketize_right", lambda T, x, b: T.bucketize(x, b, right=True), [np.array([1.0, 3.0, 4.0]),
                                                                         np.array([1.0, 3.0, 5.0])])
    # unique / bincount (data-dependent shapes: eager only)
    add("unique", lambda T, x: T.unique(x, return_inverse=True, return_counts=True),
        [lambda r: r.integers(0, 5, (3, 4))], jit=False, dtypes=("int64",))
    add("unique_float_nan", lambda T, x: T.unique(x, return_counts=True), [np.array([1.0, NAN, NAN, 2.0, 1.0])], jit=False)
    add("unique_dim0", lambda T, x: T.unique(x, dim=0, return_inverse=True),
        [np.array([[1, 2], [0, 1], [1, 2], [0, 0]])], jit=False, dtypes=("int64",))
    add("unique_empty", lambda T, x: T.unique(x), [np.zeros((0,))], jit=False)
    add("unique_consecutive", lambda T, x: T.unique_consecutive(x, return_inverse=True, return_counts=True),
        [np.array([1, 1, 2, 2, 3, 1, 1, 2])], jit=False, dtypes=("int64",))
    add("bincount", lambda T, x: T.bincount(x), [np.array([0, 1, 1, 3, 2, 1, 7])], jit=False, dtypes=("int64",))
    add("bincount_weights", lambda T, x, w: T.bincount(x, w), [np.array([0, 1, 1, 3]), np.array([0.5, 1.0, 2.0, -1.0])],
        jit=False)
    add("bincount_minlength", lambda T, x: x.bincount(minlength=6), [np.array([1, 1, 2])], jit=False, dtypes=("int64",))
    add("bincount_empty", lambda T, x: T.bincount(x, minlength=3), [np.zeros(0, np.int64)], jit=False, dtypes=("int64",))
    add("where_1arg", lambda T, x: T.where(x > 0), [np.array([[1.0, -1.0, 0.0], [2.0, 3.0, -2.0]])], jit=False)
    # nan_to_num
    add("nan_to_num", lambda T, x: T.nan_to_num(x), [np.array([NAN, INF, -INF, 0.0, -1.5, 1e30])], ["x"])
    add("nan_to_num_values", lambda T, x: x.nan_to_num(nan=1.0, posinf=2.0, neginf=-3.0),
        [np.array([[NAN, INF], [-INF, 4.0]])], ["x"])
    add("nan_to_num_int", lambda T, x: T.nan_to_num(x), [np.array([1, -2, 3])], dtypes=("int64",))
    # roll / meshgrid
    add("roll_flat", lambda T, x: T.roll(x, 2), [lambda r: r.standard_normal((3, 4))], ["x"])
    add("roll_dims", lambda T, x: T.roll(x, (1, -3), (0, 1)), [lambda r: r.standard_normal((3, 4))], ["x"])
    add("roll_big_shift", lambda T, x: x.roll(7, 1), [lambda r: r.standard_normal((2, 3))], ["x"])
    add("roll_noncontig", lambda T, x: T.roll(x.t(), 1, 0), [lambda r: r.standard_normal((2, 5))], ["x"])
    add("roll_empty", lambda T, x: T.roll(x, 1, 1), [np.zeros((2, 0))], ["x"])
    add("meshgrid_ij", lambda T, a, b: T.meshgrid(a, b, indexing="ij"), [np.arange(3.0), np.arange(2.0) + 10], ["a", "b"])
    add("meshgrid_xy", lambda T, a, b, c: T.meshgrid(a, b, c, indexing="xy"),
        [np.arange(3.0), np.arange(2.0) + 10, np.array([5.0, 6.0, 7.0, 8.0])], ["a", "b", "c"])
    # diagonals
    add("diag_1d", lambda T, x: T.diag(x), [lambda r: r.standard_normal(4)], ["x"])
    add("diag_1d_offset", lambda T, x: T.diag(x, 2), [lambda r: r.standard_normal(3)], ["x"])
    add("diag_1d_neg", lambda T, x: T.diag(x, -1), [np.array([INF, 2.0])], ["x"])
    add("diag_2d", lambda T, x: T.diag(x), [lambda r: r.standard_normal((3, 5))], ["x"])
    add("diag_2d_offset", lambda T, x: x.diag(1), [lambda r: r.standard_normal((4, 3))], ["x"])
    add("diag_2d_neg", lambda T, x: T.diag(x, -2), [lambda r: r.standard_normal((4, 3))], ["x"])
    add("diag_2d_out_of_range", lambda T, x: T.diag(x, 5), [lambda r: r.standard_normal((2, 3))], ["x"])
    add("diag_noncontig", lambda T, x: T.diag(x.t()), [lambda r: r.standard_normal((3, 4))], ["x"])
    add("diagonal_3d", lambda T, x: T.diagonal(x, 1, 0, 2), [lambda r: r.standard_normal((3, 2, 4))], ["x"])
    add("diagonal_method", lambda T, x: x.diagonal(offset=-1, dim1=-1, dim2=-2), [lambda r: r.standard_normal((2, 3, 3))],
        ["x"])
    add("diag_embed", lambda T, x: T.diag_embed(x), [lambda r: r.standard_normal((2, 3))], ["x"])
    add("diag_embed_offset_dims", lambda T, x: T.diag_embed(x, -1, 0, 2), [lambda r: r.standard_normal((2, 3))], ["x"])
    add("trace", lambda T, x: T.trace(x), [lambda r: r.standard_normal((3, 4))], ["x"])
    add("trace_int", lambda T, x: x.trace(), [np.arange(6).reshape(2, 3)], dtypes=("int64",))
    # scatter
    add("scatter_src", lambda T, x, i, s: T.scatter(x, 1, i, s),
        [lambda r: r.standard_normal((3, 5)), np.array([[0, 3], [4, 1], [2, 0]]), lambda r: r.standard_normal((3, 2))],
        ["x", "s"])
    add("scatter_src_larger", lambda T, x, i, s: T.scatter(x, 1, i, s),  # the rest of src is unused
        [lambda r: r.standard_normal((3, 5)), np.array([[0, 3], [4, 1], [2, 0]]), lambda r: r.standard_normal((3, 4))],
        ["x"])
    add("scatter_dim0", lambda T, x, i, s: x.scatter(0, i, s),
        [lambda r: r.standard_normal((3, 4)), np.array([[2, 0, 1, 1]]), lambda r: r.standard_normal((1, 4))], ["x", "s"])
    add("scatter_value", lambda T, x, i: T.scatter(x, 1, i, 7.5), [lambda r: r.standard_normal((2, 4)),
                                                                   np.array([[3], [0]])], ["x"])
    add("scatter_reduce_add", lambda T, x, i, s: T.scatter(x, 1, i, s, reduce="add"),
        [lambda r: r.standard_normal((2, 3)), np.array([[0, 0], [2, 1]]), lambda r: r.standard_normal((2, 2))])
    # einsum
    for eq, shapes in [("ij,jk->ik", [(3, 4), (4, 5)]), ("ij,jk", [(2, 3), (3, 2)]), ("ii->i", [(4, 4)]),
                       ("ii", [(3, 3)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 2)]), ("...ij,jk->...ik", [(2, 3, 4), (4, 5)]),
                       ("i,j->ij", [(3,), (4,)]), ("ij->", [(3, 4)]), ("ij,ij->ij", [(2, 3), (2, 3)]),
                       ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]), ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
                       ("ji", [(3, 2)]), ("...j,j", [(2, 3, 4), (4,)]), ("bij->j", [(2, 3, 4)]),
                       ("ij,kj->jik", [(3, 4), (2, 4)]), ("i,i", [(5,), (5,)]), ("...ij->...ji", [(2, 3)]),
                       ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
                       ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)])]:
        names = [f"x{i}" for i in range(len(shapes))]
        add(f"einsum_{eq.replace(',', '_').replace('->', '_to_').replace('...', 'E')}",
            (lambda e: lambda T, *xs: T.einsum(e, *xs))(eq),
            [(lambda s: lambda r: r.standard_normal(s))(s) for s in shapes], names)
    add("einsum_list", lambda T, a, b: T.einsum("ij,jk->ik", [a, b]), [lambda r: r.standard_normal((2, 3)),
                                                                       lambda r: r.standard_normal((3, 2))], ["a", "b"])
    add("einsum_empty", lambda T, a, b: T.einsum("ij,jk->ik", a, b), [np.zeros((2, 0)), np.zeros((0, 3))], ["a", "b"])
    add("einsum_noncontig", lambda T, a, b: T.einsum("ij,jk->ik", a.t(), b[:, ::2]),
        [lambda r: r.standard_normal((4, 3)), lambda r: r.standard_normal((4, 6))], ["a", "b"])
    # Tensor methods and aliases that are PyTorch spellings of existing ops
    add("softmax_method", lambda T, x: x.softmax(-1), [lambda r: r.standard_normal((3, 4))], ["x"])
    add("log_softmax_method", lambda T, x: x.log_softmax(dim=0), [lambda r: r.standard_normal((3, 4))], ["x"])
    add("relu_method", lambda T, x: x.relu(), [np.array([-1.0, 0.0, 2.0, NAN])], ["x"])
    add("top_softmax", lambda T, x: T.softmax(x, 1), [lambda r: r.standard_normal((2, 3))], ["x"])
    add("concat", lambda T, a, b: T.concat([a, b], 1), [np.ones((2, 1)), np.zeros((2, 3))], ["a", "b"])
    add("movedim", lambda T, x: T.movedim(x, (0, 1), (2, 0)), [lambda r: r.standard_normal((2, 3, 4))], ["x"])
    add("swapaxes", lambda T, x: x.swapaxes(0, 2), [lambda r: r.standard_normal((2, 3, 4))], ["x"])
    return c


CASES = _cases()
