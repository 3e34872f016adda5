"""PyTorch-style shape functions and indexing: views, joins, splits, gather and setitem."""
from __future__ import annotations

import math

import numpy as np

from .._core import dtypes as dt
from .._core.errors import DTypeError, ShapeError, data_dependent, located, op_error
from ..autograd import assign_
from ..ops import lax
from ..ops.core import P, bind, normalize_axes
from ..tensor import Tensor, as_tensor


def _dim(d: int, ndim: int, op: str) -> int:
    return normalize_axes(op, (d,), ndim)[0]


def _shape_arg(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


def reshape(input, *shape):
    """Same data in a new shape (one dim may be -1); a view when the layout allows."""
    shape = _shape_arg(shape)
    if shape.count(-1) > 1:
        raise op_error(ShapeError, "reshape", f"only one dim can be -1, got {shape}")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or input.numel() % known:
            raise op_error(ShapeError, "reshape", f"cannot reshape a tensor of shape {input.shape} to {shape}")
        shape = tuple(input.numel() // known if s == -1 else s for s in shape)
    if shape == input.shape:
        return input
    return lax.reshape(input, shape)


def view(input, *shape):
    """Like reshape, but refuses when the result would need a copy (PyTorch's view)."""
    if len(shape) == 1 and not isinstance(shape[0], (tuple, list, int)):
        return convert_view(input, shape[0])
    out = reshape(input, *shape)
    if out is not input and out.numel() and out._base is None:  # reshape had to copy
        raise op_error(ShapeError, "view", f"view of shape {out.shape} is not compatible with the strides "
                       f"of the input {input.shape}; use reshape()")
    return out


def convert_view(input, dtype):
    return lax.bitcast(input, dt.as_dtype(dtype))


def flatten(input, start_dim: int = 0, end_dim: int = -1):
    """Merge dims start_dim..end_dim into one."""
    if input.ndim == 0:
        return reshape(input, 1)
    s, e = _dim(start_dim, input.ndim, "flatten"), _dim(end_dim, input.ndim, "flatten")
    shape = input.shape[:s] + (math.prod(input.shape[s:e + 1]),) + input.shape[e + 1:]
    return reshape(input, shape)


def unflatten(input, dim: int, sizes):
    d = _dim(dim, input.ndim, "unflatten")
    return reshape(input, input.shape[:d] + tuple(sizes) + input.shape[d + 1:])


def squeeze(input, dim=None):
    """Drop size-1 dims (all of them, or those in `dim`)."""
    if dim is None:
        dims = tuple(i for i, s in enumerate(input.shape) if s == 1)
    else:
        dims = normalize_axes("squeeze", (dim,) if isinstance(dim, int) else dim, input.ndim) if input.ndim else ()
        dims = tuple(d for d in dims if input.shape[d] == 1)
    if not dims:
        return input
    return lax.reshape(input, tuple(s for i, s in enumerate(input.shape) if i not in dims))


def unsqueeze(input, dim: int):
    """Insert a size-1 dim at `dim`."""
    d = normalize_axes("unsqueeze", (dim,), input.ndim + 1)[0]
    return lax.reshape(input, input.shape[:d] + (1,) + input.shape[d:])


def permute(input, *dims):
    """Reorder dims."""
    dims = _shape_arg(dims)
    perm = normalize_axes("permute", dims, input.ndim) if dims else ()
    if len(dims) != input.ndim or sorted(perm) != list(range(input.ndim)):
        raise op_error(ShapeError, "permute", f"{dims} is not a permutation of the dims of shape {input.shape}")
    perm = tuple(d % input.ndim for d in dims)
    if perm == tuple(range(input.ndim)):
        return input
    return lax.transpose(input, perm)


def transpose(input, dim0: int, dim1: int):
    """Swap two dims."""
    if input.ndim == 0:
        return input
    a, b = _dim(dim0, input.ndim, "transpose"), _dim(dim1, input.ndim, "transpose")
    perm = list(range(input.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    return permute(input, perm)


def t(input):
    """Transpose a tensor of at most 2 dims."""
    if input.ndim > 2:
        raise op_error(ShapeError, "t", f"expects a tensor with <= 2 dims, got shape {input.shape}")
    return transpose(input, 0, 1) if input.ndim == 2 else input


def expand(input, *sizes):
    """Broadcast to a larger shape without copying (-1 keeps a dim)."""
    sizes = _shape_arg(sizes)
    lead = len(sizes) - input.ndim
    if lead < 0:
        raise op_error(ShapeError, "expand", f"cannot expand shape {input.shape} to {sizes}")
    shape = tuple(input.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes))
    try:
        return lax.broadcast_to(input, shape)
    except Exception:
        raise op_error(ShapeError, "expand", f"cannot expand shape {input.shape} to {sizes}") from None


def expand_as(input, other): return expand(input, other.shape)
def broadcast_to(input, shape): return expand(input, tuple(shape))


def broadcast_tensors(*tensors):
    shape = np.broadcast_shapes(*(x.shape for x in tensors))
    return tuple(expand(x, shape) for x in tensors)


def contiguous(input):
    """The same tensor if row-major contiguous, else a contiguous copy."""
    if input._data.flags.c_contiguous:
        return input
    out = clone(input)
    if not out._data.flags.c_contiguous:  # numpy keeps the input's (e.g. transposed) layout
        out._data = np.ascontiguousarray(out._data)
    return out


def clone(input):
    """A copy with its own storage (differentiable)."""
    return bind(P.add, input, lax.full((), 0, input.dtype)) if input.dtype is not dt.bool_ else \
        bind(P.bitwise_or, input, False)


def flip(input, dims):
    dims = normalize_axes("flip", (dims,) if isinstance(dims, int) else dims, input.ndim)
    return lax.rev(input, dims)


def cat(tensors, dim: int = 0):
    """Join tensors along an existing dim."""
    tensors = [as_tensor(x) for x in tensors]
    if not tensors:
        raise ValueError("cat needs at least one tensor")
    # 1-D empty tensors are skipped whatever the others' rank (PyTorch's legacy rule)
    nonempty = [x for x in tensors if not (x.ndim == 1 and x.shape[0] == 0)] or tensors[:1]
    d = _dim(dim, nonempty[0].ndim, "cat")
    if len(nonempty) == 1:
        return nonempty[0] if nonempty[0] is not tensors[0] or len(tensors) == 1 else clone(nonempty[0])
    return lax.concatenate(nonempty, d)


concatenate = concat = cat


def stack(tensors, dim: int = 0):
    """Join tensors along a new dim."""
    tensors = [as_tensor(x) for x in tensors]
    d = normalize_axes("stack", (dim,), tensors[0].ndim + 1)[0]
    for x in tensors[1:]:
        if x.shape != tensors[0].shape:
            raise op_error(ShapeError, "stack", "tensors must all have one shape, got " +
                           ", ".join(str(x.shape) for x in tensors))
    return lax.concatenate([unsqueeze(x, d) for x in tensors], d)


def movedim(input, source, destination):
    """`input` with the dims in `source` moved to the positions in `destination`."""
    src = (source,) if isinstance(source, int) else tuple(source)
    dst = (destination,) if isinstance(destination, int) else tuple(destination)
    if len(src) != len(dst):
        raise op_error(ShapeError, "movedim", f"source {src} and destination {dst} differ in length")
    src = tuple(_dim(d, input.ndim, "movedim") for d in src)
    dst = tuple(_dim(d, input.ndim, "movedim") for d in dst)
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise op_error(ShapeError, "movedim", f"repeated dim in source {src} or destination {dst}")
    rest = iter(d for d in range(input.ndim) if d not in src)
    where = dict(zip(dst, src))
    perm = tuple(where[i] if i in where else next(rest) for i in range(input.ndim))
    return input if perm == tuple(range(input.ndim)) else lax.transpose(input, perm)


moveaxis = movedim


def swapaxes(input, axis0: int, axis1: int):
    return transpose(input, axis0, axis1)


def roll(input, shifts, dims=None):
    """Elements shifted along `dims` (the flattened tensor when None), wrapping around."""
    if dims is None:
        return reshape(roll(flatten(input), shifts, 0), input.shape)
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shifts) != len(dims):
        raise op_error(ShapeError, "roll", f"shifts {shifts} and dims {dims} differ in length")
    out = input
    for shift, dim in zip(shifts, dims):
        d = _dim(dim, max(out.ndim, 1), "roll")
        if out.ndim == 0:
            continue
        n = out.shape[d]
        k = shift % n if n else 0
        if k:
            out = lax.concatenate([narrow(out, d, n - k, k), narrow(out, d, 0, n - k)], d)
    return out


def meshgrid(*tensors, indexing: str = "ij"):
    """Coordinate grids of 1-D tensors ("ij": matrix indexing; "xy": the first two swapped)."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing not in ("ij", "xy"):
        raise op_error(ValueError, "meshgrid", f"indexing must be 'ij' or 'xy', got {indexing!r}")
    ts = [reshape(as_tensor(t), (-1,)) if as_tensor(t).ndim == 0 else as_tensor(t) for t in tensors]
    for t in ts:
        if t.ndim != 1:
            raise op_error(ShapeError, "meshgrid", f"expects 0-d or 1-D tensors, got shape {t.shape}")
    swap = indexing == "xy" and len(ts) >= 2
    order = [1, 0] + list(range(2, len(ts))) if swap else list(range(len(ts)))
    shape = tuple(ts[i].shape[0] for i in order)
    return tuple(lax.broadcast_in_dim(t, shape, (order.index(i),)) for i, t in enumerate(ts))


def narrow(input, dim: int, start: int, length: int):
    """`length` elements of `dim` from `start` (negative: counted from the end)."""
    d = _dim(dim, input.ndim, "narrow")
    n = input.shape[d]
    if not -n <= start <= n:
        raise op_error(ShapeError, "narrow", f"start {start} is out of range for dim {dim} of size {n}")
    start = start + n if start < 0 else start
    if length < 0 or start + length > n:
        raise op_error(ShapeError, "narrow", f"start {start} + length {length} exceeds dim {dim} of size {n}")
    start0 = [0] * input.ndim
    stop = list(input.shape)
    start0[d], stop[d] = start, start + length
    return lax.slice(input, start0, stop, (1,) * input.ndim)


def split(input, split_size_or_sections, dim: int = 0):
    """Split into chunks of a size, or into the given section sizes."""
    d = _dim(dim, input.ndim, "split")
    n = input.shape[d]
    if isinstance(split_size_or_sections, int):
        s = split_size_or_sections
        sizes = [s] * (n // s) + ([n % s] if n % s else []) if s else [0]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise op_error(ShapeError, "split", f"sections {sizes} do not add up to {n} (shape {input.shape})")
    out, off = [], 0
    for s in sizes:
        out.append(narrow(input, d, off, s))
        off += s
    return tuple(out)


def chunk(input, chunks: int, dim: int = 0):
    n = input.shape[_dim(dim, input.ndim, "chunk")]
    return split(input, -(-n // chunks) if n else 1, dim)


def unbind(input, dim: int = 0):
    d = _dim(dim, input.ndim, "unbind")
    return tuple(squeeze(x, d) for x in split(input, 1, d))


def repeat(input, *sizes):
    sizes = _shape_arg(sizes)
    x = input
    lead = len(sizes) - x.ndim
    if lead < 0:
        raise op_error(ShapeError, "repeat", f"repeat needs at least {x.ndim} sizes, got {sizes}")
    x = reshape(x, (1,) * lead + x.shape)
    inter = []
    for s, r in zip(x.shape, sizes):
        inter += [r, s]
    b = lax.broadcast_in_dim(x, tuple(inter), tuple(range(1, 2 * x.ndim, 2)))
    return reshape(b, tuple(s * r for s, r in zip(x.shape, sizes)))


def tril(input, diagonal: int = 0):
    r, c = input.shape[-2:]
    mask = lax.ge(lax.sub(lax.iota((r, c), 0, dt.int64), lax.iota((r, c), 1, dt.int64)), -diagonal)
    return lax.select(mask, input, lax.full((), 0, input.dtype))


def triu(input, diagonal: int = 0):
    r, c = input.shape[-2:]
    mask = lax.le(lax.sub(lax.iota((r, c), 0, dt.int64), lax.iota((r, c), 1, dt.int64)), -diagonal)
    return lax.select(mask, input, lax.full((), 0, input.dtype))


# ---------------------------------------------------------------- gather / scatter
def _as_1d(t: Tensor) -> Tensor:
    return lax.reshape(t, (1,)) if isinstance(t, Tensor) and t.ndim == 0 else t


def index_select(input, dim: int, index):
    """The entries of `input` at `index` along `dim` (a 0-d index selects one, keeping the dim)."""
    if input.ndim == 0:
        return lax.reshape(index_select(lax.reshape(input, (1,)), dim, index), ())
    return lax.gather(input, _as_1d(_index_tensor(index)), _dim(dim, input.ndim, "index_select"))


def _index_region(x, index, d: int, op: str, limit_dim: bool):
    """`x` cut to `index`'s extent: in dims other than `d` (PyTorch's gather/scatter input), or in
    every dim (scatter's src); an index larger than `x` there is an error naming both shapes."""
    if index.ndim != x.ndim:
        raise op_error(ShapeError, op, f"index of shape {index.shape} and tensor of shape {x.shape} need the "
                       "same number of dims")
    stop = tuple(n if (i == d and not limit_dim) else m for i, (m, n) in enumerate(zip(index.shape, x.shape)))
    if any(a > b for a, b in zip(stop, x.shape)):
        raise op_error(ShapeError, op, f"index of shape {index.shape} is larger than the tensor of shape "
                       f"{x.shape}" + ("" if limit_dim else f" outside dim {d}"))
    if stop == tuple(x.shape):
        return x
    return lax.slice(x, (0,) * x.ndim, stop, (1,) * x.ndim)


def gather(input, dim: int, index):
    """PyTorch's gather: out[i][j] = input[i][index[i][j]] along `dim`."""
    index, d = _index_tensor(index), _dim(dim, input.ndim, "gather")
    if input.ndim == 0:  # a 0-d tensor is a 1-element one (PyTorch)
        return lax.reshape(gather(lax.reshape(input, (1,)), 0, _as_1d(index)), ())
    return lax.take_along_axis(_index_region(input, index, d, "gather", False), index, d)


def scatter_add(input, dim: int, index, src):
    """PyTorch's scatter_add: input[i][index[i][j]] += src[i][j] along `dim`; `index` may be smaller
    than `input` outside `dim` and than `src` in every dim (the rest of `src` is unused)."""
    index, d = _index_tensor(index), _dim(dim, input.ndim, "scatter_add")
    if input.ndim == 0:
        return lax.reshape(scatter_add(lax.reshape(input, (1,)), 0, _as_1d(index), _as_1d(src)), ())
    if isinstance(src, Tensor):
        src = _index_region(src, index, d, "scatter_add", True)
    return lax.scatter_add_along_axis(input, index, src, d)


def scatter(input, dim: int, index, src=None, *, value=None, reduce=None):
    """PyTorch's scatter: input[i][index[i][j]] = src[i][j] (or a scalar `value`) along `dim`;
    reduce="add" adds instead. Of repeated indices the last write wins (PyTorch leaves it undefined)."""
    if src is None:
        src = value
    if src is None:
        raise op_error(TypeError, "scatter", "needs src (a tensor or a number) or value=")
    if reduce == "add":
        return scatter_add(input, dim, index, src if isinstance(src, Tensor) else
                           lax.full(_index_tensor(index).shape, src, input.dtype))
    if reduce is not None:
        raise op_error(ValueError, "scatter", f"reduce must be None or 'add', got {reduce!r}")
    index, d = _index_tensor(index), _dim(dim, input.ndim, "scatter")
    if input.ndim == 0:
        src1 = _as_1d(src) if isinstance(src, Tensor) else src
        return lax.reshape(scatter(lax.reshape(input, (1,)), 0, _as_1d(index), src1), ())
    src = _index_region(src, index, d, "scatter", True) if isinstance(src, Tensor) else \
        lax.full(index.shape, src, input.dtype)
    return lax.scatter_along_axis(input, index, src, d)


def index_add(input, dim: int, index, source, *, alpha=1):
    """`input` with `alpha * source` added at `index` along `dim`."""
    if alpha != 1:
        source = lax.mul(source, alpha)
    if input.ndim == 0:
        return lax.reshape(index_add(lax.reshape(input, (1,)), 0, _as_1d(_index_tensor(index)), _as_1d(source)), ())
    return lax.scatter_add(input, _index_tensor(index), source, _dim(dim, input.ndim, "index_add"))


def masked_fill(input, mask, value):
    """input with `value` where mask is true."""
    return lax.select(mask, value if isinstance(value, Tensor) else lax.full((), value, input.dtype), input)


def nonzero(input, *, as_tuple: bool = False):
    """Indices of non-zero elements (eager only: the output shape depends on the data)."""
    from ..tensor import from_numpy
    data_dependent("nonzero", input._data)
    a = np.asarray(input._data)
    if a.ndim == 0:  # one element, no dims: a (1, 0) or (0, 0) result (PyTorch)
        hit = 1 if a else 0
        if as_tuple:
            return (from_numpy(np.zeros(hit, np.int64)),)
        return from_numpy(np.zeros((hit, 0), np.int64))
    idx = np.nonzero(a)
    if as_tuple:
        return tuple(from_numpy(i.astype(np.int64)) for i in idx)
    return from_numpy(np.stack(idx, axis=1).astype(np.int64) if idx else np.zeros((0, 0), np.int64))


def _index_tensor(idx) -> Tensor:
    if isinstance(idx, Tensor):
        if idx.dtype.kind not in "iu":
            raise op_error(DTypeError, "index", f"indices must be an integer tensor, got {idx.dtype.name}")
        return idx
    arr = np.asarray(idx)
    if arr.dtype.kind not in "iu":
        if arr.size == 0:
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"indices must be integers, got {arr.dtype}")
    return as_tensor(arr.astype(np.int64, copy=False))


# ---------------------------------------------------------------- __getitem__ / __setitem__
def _expand_index(key, ndim):
    if not isinstance(key, tuple):
        key = (key,)
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis and not
                 (isinstance(k, Tensor) and k.dtype is dt.bool_) and not
                 (isinstance(k, np.ndarray) and k.dtype == np.bool_)) + \
        sum(k.ndim for k in key if (isinstance(k, (Tensor, np.ndarray)) and k.dtype in (dt.bool_, np.bool_)))
    if sum(1 for k in key if k is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis")
    out = []
    for k in key:
        if k is Ellipsis:
            out.extend([slice(None)] * (ndim - n_real))
        else:
            out.append(k)
    if not any(k is Ellipsis for k in key):  # not `Ellipsis in key`: that calls Tensor.__eq__
        out.extend([slice(None)] * (ndim - n_real))
    if n_real > ndim:
        raise IndexError(f"too many indices for a tensor of dimension {ndim}")
    return out


def _is_adv(k):
    return isinstance(k, (Tensor, np.ndarray, list))


def getitem(x: Tensor, key):
    """x[key] with numpy/PyTorch semantics: basic indexing gives views, integer arrays gather."""
    key = _expand_index(key, x.ndim)
    # basic part: slices, ints, None; advanced entries are kept for a second pass
    start, stop, step, flips, newshape = [], [], [], [], []
    dim = 0
    for k in key:
        if k is None:
            newshape.append(("new",))
            continue
        if _is_adv(k):
            kt = k if isinstance(k, Tensor) else as_tensor(np.asarray(k))
            if kt.dtype is dt.bool_:
                for _ in range(kt.ndim):
                    start.append(0), stop.append(x.shape[dim]), step.append(1)
                    dim += 1
                newshape.append(("mask", kt, dim - kt.ndim))
            else:
                start.append(0), stop.append(x.shape[dim]), step.append(1)
                newshape.append(("adv", kt, dim))
                dim += 1
            continue
        n = x.shape[dim]
        if isinstance(k, slice):
            a, b, s = k.indices(n)
            if s > 0:
                start.append(a), stop.append(max(a, b)), step.append(s)
            else:  # negative step: slice the mirrored range, then flip
                cnt = len(range(a, b, s))
                lo = a + (cnt - 1) * s if cnt else 0
                start.append(lo), stop.append(lo + (cnt - 1) * (-s) + 1 if cnt else 0), step.append(-s)
                flips.append(dim)  # a dim of the sliced tensor (ints and new axes not yet applied)
            newshape.append(("keep", dim))
        else:
            try:
                i = int(k)
            except TypeError:
                raise located(IndexError(f"unsupported index {k!r}")) from None
            if not -n <= i < n:
                raise located(IndexError(f"index {i} is out of bounds for dimension {dim} with size {n}"))
            i %= n
            start.append(i), stop.append(i + 1), step.append(1)
            newshape.append(("drop", dim))
        dim += 1
    y = x
    if any(a != 0 or b != n or s != 1 for a, b, s, n in zip(start, stop, step, x.shape)):
        y = lax.slice(x, start, stop, step)
    if flips:
        y = lax.rev(y, tuple(flips))
    # reshape for dropped ints and new axes; advanced entries handled after
    shape, adv_dims = [], []
    for entry in newshape:
        kind = entry[0]
        if kind == "new":
            shape.append(1)
        elif kind == "keep":
            shape.append(y.shape[entry[1]])
        elif kind == "adv":
            adv_dims.append((len(shape), entry[1]))
            shape.append(y.shape[entry[2]])
        elif kind == "mask":
            m = entry[1]
            adv_dims.append((len(shape), m))
            shape.extend(y.shape[entry[2]:entry[2] + m.ndim])
    if tuple(shape) != y.shape:
        y = lax.reshape(y, tuple(shape))
    if adv_dims:
        y = _advanced(y, adv_dims)
    return y


def _advanced(y: Tensor, adv):
    """Apply integer-array / mask indices (at consecutive dims) by merging them and gathering."""
    # turn masks into integer index tuples
    entries = []
    for pos, k in adv:
        if isinstance(k, Tensor) and k.dtype is dt.bool_:
            data_dependent("indexing with a boolean mask", k._data)
            nz = np.nonzero(k._data)
            entries.extend((pos + j, as_tensor(ix.astype(np.int64))) for j, ix in enumerate(nz))
        else:
            entries.append((pos, k))
    dims = [p for p, _ in entries]
    if dims != list(range(dims[0], dims[0] + len(dims))):
        raise IndexError("advanced indices must be at consecutive dims in ember "
                         "(index them in two steps)")
    d0 = dims[0]
    sizes = [y.shape[d] for d in dims]
    idx = [_index_tensor(k) for _, k in entries]
    idx = [lax.select(lax.lt(i, 0), lax.add(i, n), i) for i, n in zip(idx, sizes)]
    flat = idx[0]
    for i, n in zip(idx[1:], sizes[1:]):
        flat = lax.add(lax.mul(flat, n), i)
    merged = lax.reshape(y, y.shape[:d0] + (math.prod(sizes),) + y.shape[d0 + len(dims):]) if len(dims) > 1 else y
    return lax.gather(merged, flat, d0)


def setitem(x: Tensor, key, value) -> None:
    """x[key] = value, in place (keeps x's memory; recorded for autograd)."""
    if not isinstance(value, Tensor):
        value = as_tensor(np.asarray(value, dtype=x.dtype.np)) if not isinstance(value, (int, float, bool)) \
            else value
    k = key if isinstance(key, tuple) else (key,)
    if any(_is_adv(e) for e in k):
        if len(k) == 1 and isinstance(k[0], Tensor) and k[0].dtype is dt.bool_ and k[0].shape == x.shape:
            v = value if isinstance(value, Tensor) else lax.full((), value, x.dtype)
            assign_(x, lax.select(k[0], v, x))
            return
        # general advanced assignment: x + scatter(value - x[key])
        pos = as_tensor(np.arange(x.numel()).reshape(x.shape))
        picked = getitem(pos, key)
        flat = reshape(x, x.numel())
        v = lax.broadcast_to(value if isinstance(value, Tensor) else lax.full((), value, x.dtype), picked.shape)
        v = reshape(v, picked.numel())
        pk = picked._data.reshape(-1)
        uniq, last = np.unique(pk[::-1], return_index=True)
        if uniq.size != pk.size:  # repeated positions: the last write wins (numpy), nothing adds up
            v = lax.gather(v, as_tensor((pk.size - 1 - last).astype(np.int64)), 0)
            pk = uniq
        idx = as_tensor(pk.astype(np.int64, copy=False))
        delta = lax.sub(v, lax.gather(flat, idx, 0))
        new = lax.scatter_add(flat, idx, delta, 0)
        assign_(x, reshape(new, x.shape))
        return
    target = getitem(x, key)
    if target is x:
        target = x
    v = value if isinstance(value, Tensor) else lax.full((), value, x.dtype)
    v = lax.broadcast_to(v, target.shape) if v.shape != target.shape else v
    if not target.numel():  # nothing selected (numpy does not report an empty slice as a view)
        return
    if target._base is None and target is not x:
        raise RuntimeError("internal: basic indexing did not produce a view")
    assign_(target, v)


__all__ = [_n for _n, _v in list(globals().items())
           if not _n.startswith("_") and getattr(_v, "__module__", None) == __name__]
