"""ONNX op handlers, one small function per op, written in ember ops.

A handler is `fn(ctx, *inputs) -> Tensor | tuple`, where missing optional inputs are None and
`ctx` gives the node's attributes and the opset version. `register(op_type, since=v)` files it
under (domain, op_type); `lookup` picks the handler with the largest `since` <= the model's opset,
so ops whose semantics changed (Reduce* axes, Split/Squeeze/Unsqueeze, Clip, Pad, Softmax...) get
one handler per version. Values an op needs at import time (shapes, axes, pads) are read from
their tensors with `.numpy()`; the data path stays in ember ops, so autograd flows through.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import api as E
from ..tensor import from_numpy as _from_numpy
from .._core import dtypes as dt
from ..nn import functional as F
from ..ops import lax
from ..tensor import Tensor
from .errors import UnsupportedOpError

OPS: dict = {}  # (domain, op_type) -> sorted list of (since_version, handler)


def register(op_type: str, since: int = 1, domain: str = ""):
    """Decorator: file a handler for (domain, op_type), valid from opset `since`."""
    def deco(fn):
        lst = OPS.setdefault((domain, op_type), [])
        lst.append((since, fn))
        lst.sort(key=lambda p: p[0])
        return fn
    return deco


def lookup(domain: str, op_type: str, opset: int):
    """The handler for `op_type` at `opset`, or None."""
    best = None
    for since, fn in OPS.get((domain, op_type), ()):
        if since <= opset:
            best = fn
    return best


class Ctx:
    """What a handler sees besides its inputs: the node, its attributes and opset versions."""

    __slots__ = ("node", "opset", "opsets", "value_info", "env", "_attrs")

    def __init__(self, node, opset, opsets, value_info, env):
        self.node, self.opset, self.opsets, self.value_info, self.env = node, opset, opsets, value_info, env
        self._attrs = {a.name: a for a in node.attribute}

    def attr(self, name, default=None):
        a = self._attrs.get(name)
        if a is None:
            return default
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode() for s in v]
        return v

    def has(self, name) -> bool:
        return name in self._attrs

    @property
    def n_out(self) -> int:
        return len(self.node.output)

    def wants(self, i: int) -> bool:
        return len(self.node.output) > i and bool(self.node.output[i])

    def unsupported(self, detail: str):
        return UnsupportedOpError(self.node.op_type, self.node.domain, self.opset, detail)


# ------------------------------------------------------------------ helpers
def const(arr, dtype=None) -> Tensor:
    a = np.array(arr, dtype=dtype, copy=True, order="C")
    return _from_numpy(a)


def static(t) -> np.ndarray:
    """The value of a tensor the op needs at import/run time (shape, axes, pads...)."""
    return t.detach().numpy() if isinstance(t, Tensor) else np.asarray(t)


def ints(t) -> list:
    return [int(v) for v in static(t).reshape(-1)]


def onnx_dtype(elem_type: int) -> dt.DType:
    return dt.from_numpy_dtype(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)))


def _ax(a: int, n: int) -> int:
    return a + n if a < 0 else a


def _zero(x):
    return False if x.dtype is dt.bool_ else 0


# ------------------------------------------------------------------ elementwise
def _unary(name, fn, since=1):
    register(name, since)(lambda ctx, x: fn(x))


for _n, _f in {
    "Abs": lax.abs, "Neg": lax.neg, "Exp": lax.exp, "Log": lax.log, "Sqrt": lax.sqrt, "Floor": lax.floor,
    "Ceil": lax.ceil, "Round": lax.round, "Sign": lax.sign, "Sin": lax.sin, "Cos": lax.cos,
    "Tanh": lax.tanh, "Sigmoid": lax.logistic, "Erf": lax.erf, "IsNaN": lax.isnan,
    "Reciprocal": lambda x: lax.div(1, x), "Not": lax.bitwise_not, "BitwiseNot": lax.bitwise_not,
    "Identity": lambda x: x, "Relu": F.relu, "Softsign": lambda x: lax.div(x, lax.add(lax.abs(x), 1)),
    "Tan": lambda x: lax.div(lax.sin(x), lax.cos(x)),
    "Sinh": lambda x: lax.mul(lax.sub(lax.exp(x), lax.exp(lax.neg(x))), 0.5),
    "Cosh": lambda x: lax.mul(lax.add(lax.exp(x), lax.exp(lax.neg(x))), 0.5),
    "Atan": lambda x: lax.atan2(x, E.ones_like(x)),
    "Asin": lambda x: lax.atan2(x, lax.sqrt(lax.sub(1, lax.mul(x, x)))),
    "Acos": lambda x: lax.atan2(lax.sqrt(lax.sub(1, lax.mul(x, x))), x),
    "Asinh": lambda x: lax.log(lax.add(x, lax.sqrt(lax.add(lax.mul(x, x), 1)))),
    "Acosh": lambda x: lax.log(lax.add(x, lax.sqrt(lax.sub(lax.mul(x, x), 1)))),
    "Atanh": lambda x: lax.mul(lax.log(lax.div(lax.add(1, x), lax.sub(1, x))), 0.5),
    "Softplus": lambda x: F.softplus(x),
    "Mish": lambda x: lax.mul(x, lax.tanh(F.softplus(x))),
}.items():
    _unary(_n, _f)


def _binary(name, fn):
    register(name)(lambda ctx, a, b: fn(a, b))


for _n, _f in {
    "Add": lax.add, "Sub": lax.sub, "Mul": lax.mul, "Equal": lax.eq, "Less": lax.lt, "LessOrEqual": lax.le,
    "Greater": lax.gt, "GreaterOrEqual": lax.ge, "And": lax.bitwise_and, "Or": lax.bitwise_or,
    "Xor": lax.bitwise_xor, "BitwiseAnd": lax.bitwise_and, "BitwiseOr": lax.bitwise_or,
    "BitwiseXor": lax.bitwise_xor,
}.items():
    _binary(_n, _f)


@register("Div")
def div(ctx, a, b):
    if a.dtype.kind == "f":
        return lax.div(a, b)
    q, r = lax.floordiv(a, b), lax.rem(a, b)  # C-style truncation, as ONNX's integer Div
    fix = lax.bitwise_and(lax.ne(r, 0), lax.ne(lax.lt(a, 0), lax.lt(b, 0)))
    return lax.select(fix, lax.add(q, 1), q)


@register("Mod")
def mod(ctx, a, b):
    if ctx.attr("fmod", 0):
        return E.fmod(a, b)
    return lax.rem(a, b)


@register("Pow")
def pow_(ctx, a, b):
    return lax.pow(a, E.convert(b, a.dtype))


@register("BitShift")
def bitshift(ctx, a, b):
    return lax.shift_left(a, b) if ctx.attr("direction") == "LEFT" else lax.shift_right(a, b)


def _variadic(fn):
    def h(ctx, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out
    return h


register("Max")(_variadic(lax.max))
register("Min")(_variadic(lax.min))
register("Sum")(_variadic(lax.add))


@register("Mean")
def mean_(ctx, *xs):
    return lax.div(_variadic(lax.add)(ctx, *xs), len(xs))


@register("Where")
def where(ctx, c, x, y):
    return lax.select(c, x, y)


@register("IsInf")
def isinf(ctx, x):
    pos, neg = ctx.attr("detect_positive", 1), ctx.attr("detect_negative", 1)
    out = E.zeros(x.shape, dtype=dt.bool_)
    if pos:
        out = lax.bitwise_or(out, lax.eq(x, math.inf))
    if neg:
        out = lax.bitwise_or(out, lax.eq(x, -math.inf))
    return out


@register("Clip")
def clip_attr(ctx, x):
    lo, hi = ctx.attr("min", -math.inf), ctx.attr("max", math.inf)
    return lax.min(lax.max(x, lo), hi)


@register("Clip", since=11)
def clip(ctx, x, lo=None, hi=None):
    if lo is not None:
        x = lax.max(x, lo)
    if hi is not None:
        x = lax.min(x, hi)
    return x


# ---- activations with attributes
@register("LeakyRelu")
def leaky_relu(ctx, x):
    return F.leaky_relu(x, ctx.attr("alpha", 0.01))


@register("Elu")
def elu(ctx, x):
    return lax.select(lax.gt(x, 0), x, lax.mul(lax.expm1(x), ctx.attr("alpha", 1.0)))


@register("Selu")
def selu(ctx, x):
    a, g = ctx.attr("alpha", 1.67326319217681884765625), ctx.attr("gamma", 1.05070102214813232421875)
    return lax.mul(lax.select(lax.gt(x, 0), x, lax.mul(lax.expm1(x), a)), g)


@register("Celu")
def celu(ctx, x):
    a = ctx.attr("alpha", 1.0)
    return lax.add(lax.max(x, 0), lax.min(lax.mul(lax.expm1(lax.div(x, a)), a), 0))


@register("HardSigmoid")
def hard_sigmoid(ctx, x):
    y = lax.add(lax.mul(x, ctx.attr("alpha", 0.2)), ctx.attr("beta", 0.5))
    return lax.min(lax.max(y, 0), 1)


@register("HardSwish")
def hard_swish(ctx, x):
    return lax.mul(x, lax.min(lax.max(lax.add(lax.div(x, 6), 0.5), 0), 1))


@register("ThresholdedRelu")
def thresholded_relu(ctx, x):
    return lax.select(lax.gt(x, ctx.attr("alpha", 1.0)), x, 0)


@register("Shrink")
def shrink(ctx, x):
    b, l = ctx.attr("bias", 0.0), ctx.attr("lambd", 0.5)
    return lax.select(lax.lt(x, -l), lax.add(x, b), lax.select(lax.gt(x, l), lax.sub(x, b), 0))


@register("Gelu")
def gelu(ctx, x):
    return F.gelu(x, ctx.attr("approximate", "none"))


@register("Swish")
def swish(ctx, x):
    return lax.mul(x, lax.logistic(lax.mul(x, ctx.attr("alpha", 1.0))))


@register("PRelu")
def prelu(ctx, x, slope):
    return lax.select(lax.lt(x, 0), lax.mul(x, slope), x)


# ------------------------------------------------------------------ types and constants
@register("Cast")
def cast(ctx, x):
    return E.convert(x, onnx_dtype(ctx.attr("to")))


@register("CastLike")
def cast_like(ctx, x, like):
    return E.convert(x, like.dtype)


@register("Constant")
def constant(ctx):
    for name in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if ctx.has(name):
            v = ctx.attr(name)
            if name in ("value_float", "value_floats"):
                v = np.array(v, np.float32)
            elif name in ("value_int", "value_ints"):
                v = np.array(v, np.int64)
            return const(v)
    raise ctx.unsupported("only tensor, float(s) and int(s) constants are supported")


@register("ConstantOfShape")
def constant_of_shape(ctx, shape):
    v = ctx.attr("value")
    v = np.zeros(1, np.float32) if v is None else v
    return lax.full(tuple(ints(shape)), v.reshape(-1)[0].item(), dt.from_numpy_dtype(v.dtype))


@register("Shape")
def shape_(ctx, x):
    s = list(x.shape)
    n = len(s)
    start, end = ctx.attr("start", 0), ctx.attr("end", n)
    start, end = max(0, min(n, _ax(start, n))), max(0, min(n, _ax(end, n)))
    return const(np.array(s[start:end], np.int64))


@register("Size")
def size_(ctx, x):
    return const(np.array(int(np.prod(x.shape)), np.int64))


@register("EyeLike")
def eye_like(ctx, x):
    d = onnx_dtype(ctx.attr("dtype")) if ctx.has("dtype") else x.dtype
    return const(np.eye(x.shape[0], x.shape[1], k=ctx.attr("k", 0)).astype(d.np))


@register("Range")
def range_(ctx, start, limit, delta):
    s, l, d = static(start).item(), static(limit).item(), static(delta).item()
    n = max(int(math.ceil((l - s) / d)), 0)
    return lax.add(lax.mul(lax.iota((n,), 0, start.dtype), delta), start)


@register("OneHot")
def one_hot(ctx, indices, depth, values):
    d = int(static(depth).reshape(-1)[0])
    axis = _ax(ctx.attr("axis", -1), indices.ndim + 1)
    idx = E.convert(indices, dt.int64)
    idx = lax.select(lax.lt(idx, 0), lax.add(idx, d), idx)
    shape = list(idx.shape)
    shape.insert(axis, d)
    hot = lax.eq(lax.keepdims(idx, (axis,)), lax.iota(tuple(shape), axis, dt.int64))
    off, on = lax.slice(values, (0,), (1,), (1,)), lax.slice(values, (1,), (2,), (1,))
    return lax.select(hot, lax.reshape(on, ()), lax.reshape(off, ()))


# ------------------------------------------------------------------ shapes
def _reshape_target(x, shape, allowzero=0):
    shape = list(shape)
    for i, s in enumerate(shape):
        if s == 0 and not allowzero:
            shape[i] = x.shape[i]
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        shape[shape.index(-1)] = int(np.prod(x.shape)) // known if known else 0
    return tuple(shape)


@register("Reshape")
def reshape_attr(ctx, x):
    return lax.reshape(x, _reshape_target(x, ctx.attr("shape")))


@register("Reshape", since=5)
def reshape(ctx, x, shape):
    return lax.reshape(x, _reshape_target(x, ints(shape), ctx.attr("allowzero", 0)))


@register("Flatten")
def flatten(ctx, x):
    a = _ax(ctx.attr("axis", 1), x.ndim)
    return lax.reshape(x, (int(np.prod(x.shape[:a])), int(np.prod(x.shape[a:]))))


def _squeeze(x, axes):
    axes = [_ax(a, x.ndim) for a in axes] if axes else [i for i, s in enumerate(x.shape) if s == 1]
    return lax.reshape(x, tuple(s for i, s in enumerate(x.shape) if i not in axes))


def _unsqueeze(x, axes):
    n = x.ndim + len(axes)
    axes = sorted(_ax(a, n) for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return lax.reshape(x, tuple(shape))


@register("Squeeze")
def squeeze_attr(ctx, x):
    return _squeeze(x, ctx.attr("axes"))


@register("Squeeze", since=13)
def squeeze(ctx, x, axes=None):
    return _squeeze(x, ints(axes) if axes is not None else None)


@register("Unsqueeze")
def unsqueeze_attr(ctx, x):
    return _unsqueeze(x, ctx.attr("axes"))


@register("Unsqueeze", since=13)
def unsqueeze(ctx, x, axes):
    return _unsqueeze(x, ints(axes))


@register("Transpose")
def transpose(ctx, x):
    perm = ctx.attr("perm") or list(reversed(range(x.ndim)))
    return lax.transpose(x, perm)


@register("Concat")
def concat(ctx, *xs):
    xs = [x for x in xs if x is not None]
    return lax.concatenate(xs, _ax(ctx.attr("axis", 0), xs[0].ndim))


def _split(ctx, x, sizes):
    axis = _ax(ctx.attr("axis", 0), x.ndim)
    n = x.shape[axis]
    if sizes is None:
        k = ctx.attr("num_outputs", ctx.n_out)
        if ctx.has("num_outputs"):
            c = -(-n // k)
            sizes = [c] * (n // c) + ([n % c] if n % c else [])
        else:
            sizes = [n // k] * k
    outs, off = [], 0
    for s in sizes:
        start, stop = [0] * x.ndim, list(x.shape)
        start[axis], stop[axis] = off, off + s
        outs.append(lax.slice(x, start, stop, [1] * x.ndim))
        off += s
    return tuple(outs)


@register("Split")
def split_attr(ctx, x, split=None):  # opset 1/2 had an optional second input too
    return _split(ctx, x, ctx.attr("split") or (ints(split) if split is not None else None))


@register("Split", since=13)
def split(ctx, x, split=None):
    return _split(ctx, x, ints(split) if split is not None else None)


def _slice(x, starts, ends, axes, steps):
    axes = [_ax(a, x.ndim) for a in (axes if axes is not None else range(len(starts)))]
    steps = steps if steps is not None else [1] * len(starts)
    lo, hi, st = [0] * x.ndim, list(x.shape), [1] * x.ndim
    flip = []
    for a, s, e, k in zip(axes, starts, ends, steps):
        n = x.shape[a]
        s = s + n if s < 0 else s
        e = e + n if e < 0 else e
        if k > 0:
            s, e = min(max(s, 0), n), min(max(e, 0), n)
            lo[a], hi[a], st[a] = s, max(e, s), k
        else:
            s, e = min(max(s, 0), n - 1), min(max(e, -1), n - 1)
            flip.append(a)
            lo[a], hi[a], st[a] = n - 1 - s, max(n - 1 - e, n - 1 - s), -k
    if flip:
        x = lax.rev(x, flip)
    return lax.slice(x, lo, hi, st)


@register("Slice")
def slice_attr(ctx, x):
    return _slice(x, ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes"), None)


@register("Slice", since=10)
def slice_(ctx, x, starts, ends, axes=None, steps=None):
    return _slice(x, ints(starts), ints(ends), ints(axes) if axes is not None else None,
                  ints(steps) if steps is not None else None)


def _fix_index(idx, n):
    return lax.select(lax.lt(idx, 0), lax.add(idx, n), idx)


@register("Gather")
def gather(ctx, x, idx):
    axis = _ax(ctx.attr("axis", 0), x.ndim)
    return lax.gather(x, _fix_index(idx, x.shape[axis]), axis)


@register("GatherElements")
def gather_elements(ctx, x, idx):
    axis = _ax(ctx.attr("axis", 0), x.ndim)
    return lax.take_along_axis(x, _fix_index(idx, x.shape[axis]), axis)


def _nd_linear(x_shape, idx, b):
    """Flat row index into x reshaped to (prod(batch)*prod(indexed dims), rest) for GatherND/ScatterND."""
    k = idx.shape[-1]
    bshape, kshape = x_shape[:b], x_shape[b:b + k]
    strides = np.array([int(np.prod(kshape[i + 1:])) for i in range(k)], np.int64)
    kdims = np.array(kshape, np.int64)
    idx = E.convert(idx, dt.int64)
    idx = lax.select(lax.lt(idx, 0), lax.add(idx, const(kdims)), idx)
    lin = lax.reduce_sum(lax.mul(idx, const(strides)), (idx.ndim - 1,))
    if b:
        nb = int(np.prod(bshape))
        bpos = np.arange(nb, dtype=np.int64).reshape(bshape + (1,) * (lin.ndim - b)) * int(np.prod(kshape))
        lin = lax.add(lin, const(bpos))
    rows = int(np.prod(bshape)) * int(np.prod(kshape))
    return lin, (rows,) + tuple(x_shape[b + k:])


@register("GatherND")
def gather_nd(ctx, x, idx):
    lin, flat = _nd_linear(x.shape, idx, ctx.attr("batch_dims", 0))
    return lax.gather(lax.reshape(x, flat), lin, 0)


def _scatter(x, mask_src, upd_src, reduction, ctx):
    """Combine `x` with scattered updates: mask_src(ones) marks written places, upd_src(updates) sums them."""
    if reduction == "add":
        return lax.add(x, upd_src)
    if reduction == "none":
        return lax.select(lax.gt(mask_src, 0), upd_src, x)
    raise ctx.unsupported(f"reduction={reduction!r}")


@register("ScatterElements")
def scatter_elements(ctx, x, idx, upd):
    axis = _ax(ctx.attr("axis", 0), x.ndim)
    idx = _fix_index(idx, x.shape[axis])
    zeros = lax.full(x.shape, 0, x.dtype)
    red = ctx.attr("reduction", "none")
    mask = lax.scatter_add_along_axis(lax.full(x.shape, 0, dt.int32), idx, lax.full(upd.shape, 1, dt.int32), axis)
    return _scatter(x, mask, lax.scatter_add_along_axis(zeros, idx, upd, axis), red, ctx)


register("Scatter")(scatter_elements)


@register("ScatterND")
def scatter_nd(ctx, x, idx, upd):
    lin, flat = _nd_linear(x.shape, idx, 0)
    lin = lax.reshape(lin, (-1,) if lin.ndim else (1,))
    lin = lax.reshape(lin, (int(np.prod(lin.shape)),))
    u = lax.reshape(upd, (lin.shape[0],) + flat[1:])
    zeros = lax.full(flat, 0, x.dtype)
    mask = lax.scatter_add(lax.full(flat, 0, dt.int32), lin, lax.full(u.shape, 1, dt.int32), 0)
    out = _scatter(lax.reshape(x, flat), mask, lax.scatter_add(zeros, lin, u, 0), ctx.attr("reduction", "none"), ctx)
    return lax.reshape(out, x.shape)


@register("Expand")
def expand(ctx, x, shape):
    out = tuple(np.broadcast_shapes(tuple(x.shape), tuple(ints(shape))))
    return lax.broadcast_to(x, out)


@register("Tile")
def tile(ctx, x, repeats):
    return E.repeat(x, *ints(repeats)) if x.ndim else x


@register("Trilu")
def trilu(ctx, x, k=None):
    k = int(static(k).reshape(-1)[0]) if k is not None else 0
    n, m = x.shape[-2], x.shape[-1]
    d = np.arange(m)[None, :] - np.arange(n)[:, None]
    keep = d >= k if ctx.attr("upper", 1) else d <= k
    return lax.select(const(keep), x, _zero(x))


@register("DepthToSpace")
def depth_to_space(ctx, x):
    b = ctx.attr("blocksize")
    N, C, H, W = x.shape
    if ctx.attr("mode", "DCR") == "DCR":
        y = lax.transpose(lax.reshape(x, (N, b, b, C // (b * b), H, W)), (0, 3, 4, 1, 5, 2))
    else:
        y = lax.transpose(lax.reshape(x, (N, C // (b * b), b, b, H, W)), (0, 1, 4, 2, 5, 3))
    return lax.reshape(y, (N, C // (b * b), H * b, W * b))


@register("SpaceToDepth")
def space_to_depth(ctx, x):
    b = ctx.attr("blocksize")
    N, C, H, W = x.shape
    perm = (0, 1, 3, 5, 2, 4) if ctx.attr("mode", "DCR") == "CRD" else (0, 3, 5, 1, 2, 4)
    y = lax.transpose(lax.reshape(x, (N, C, H // b, b, W // b, b)), perm)
    return lax.reshape(y, (N, C * b * b, H // b, W // b))


@register("NonZero")
def nonzero(ctx, x):
    nz = np.stack(np.nonzero(static(x))) if x.ndim else np.zeros((0, int(bool(static(x)))), np.int64)
    return const(nz.astype(np.int64))


@register("Compress")
def compress(ctx, x, cond):
    keep = np.nonzero(static(cond).reshape(-1))[0].astype(np.int64)
    if not ctx.has("axis"):
        return lax.gather(lax.reshape(x, (int(np.prod(x.shape)),)), const(keep), 0)
    return lax.gather(x, const(keep), _ax(ctx.attr("axis"), x.ndim))


def _pad(ctx, x, pads, mode, value, axes=None):
    nd = x.ndim
    axes = [_ax(a, nd) for a in axes] if axes is not None else list(range(nd))
    k = len(axes)
    cfg = [(0, 0)] * nd
    for i, a in enumerate(axes):
        cfg[a] = (pads[i], pads[i + k])
    if mode == "constant":
        return lax.pad(x, value, [(lo, hi, 0) for lo, hi in cfg])
    npmode = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}.get(mode)
    if npmode is None:
        raise ctx.unsupported(f"mode={mode!r}")
    for a, (lo, hi) in enumerate(cfg):
        if lo or hi:
            if lo < 0 or hi < 0:
                raise ctx.unsupported(f"negative pads with mode={mode!r}")
            idx = np.pad(np.arange(x.shape[a]), (lo, hi), mode=npmode).astype(np.int64)
            x = lax.gather(x, const(idx), a)
    return x


@register("Pad")
def pad_attr(ctx, x):
    return _pad(ctx, x, ctx.attr("pads") or ctx.attr("paddings"), ctx.attr("mode", "constant"),
                ctx.attr("value", 0.0))


@register("Pad", since=11)
def pad(ctx, x, pads, value=None, axes=None):
    v = static(value).reshape(-1)[0].item() if value is not None else 0
    return _pad(ctx, x, ints(pads), ctx.attr("mode", "constant"), v,
                ints(axes) if axes is not None else None)


# ------------------------------------------------------------------ reductions
def _reduce_axes(ctx, x, axes_in, input_since):
    if ctx.opset >= input_since:
        axes = ints(axes_in) if axes_in is not None else []
    else:
        axes = list(ctx.attr("axes") or [])
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return None
        axes = list(range(x.ndim))
    return tuple(sorted({_ax(a, x.ndim) for a in axes}))


def _reducer(name, fn, input_since=18, empty=None):
    def h(ctx, x, axes=None):
        ax = _reduce_axes(ctx, x, axes, input_since)
        if ax is None:
            return x
        if empty is not None and any(x.shape[a] == 0 for a in ax):  # max/min of nothing: the identity
            out = lax.full(tuple(s for i, s in enumerate(x.shape) if i not in ax), empty(x.dtype), x.dtype)
        else:
            out = fn(x, ax)
        return lax.keepdims(out, ax) if ctx.attr("keepdims", 1) else out
    h.__name__ = name
    register(name)(h)


def _mean(x, ax):
    n = int(np.prod([x.shape[a] for a in ax]))
    s = lax.reduce_sum(x, ax)
    return lax.div(s, n) if x.dtype.kind == "f" else E.convert(lax.trunc(lax.div(s, n)), x.dtype)


def _logsumexp(x, ax):
    m = lax.reduce_max(x, ax).detach()
    m = lax.select(lax.isnan(lax.sub(m, m)), 0, m)  # an infinite max shifts by 0
    s = lax.reduce_sum(lax.exp(lax.sub(x, lax.expand_reduced(m, x.shape, ax))), ax)
    return lax.add(lax.log(s), m)


_reducer("ReduceSum", lax.reduce_sum, input_since=13)
_reducer("ReduceMean", _mean)
def _lowest(d):
    return False if d is dt.bool_ else (-math.inf if d.kind == "f" else int(dt.iinfo(d).min))


def _highest(d):
    return True if d is dt.bool_ else (math.inf if d.kind == "f" else int(dt.iinfo(d).max))


_reducer("ReduceMax", lambda x, ax: lax.reduce_or(x, ax) if x.dtype is dt.bool_ else lax.reduce_max(x, ax),
         empty=_lowest)
_reducer("ReduceMin", lambda x, ax: lax.reduce_and(x, ax) if x.dtype is dt.bool_ else lax.reduce_min(x, ax),
         empty=_highest)
_reducer("ReduceProd", lax.reduce_prod)
_reducer("ReduceL1", lambda x, ax: lax.reduce_sum(lax.abs(x), ax))
_reducer("ReduceL2", lambda x, ax: lax.sqrt(lax.reduce_sum(lax.mul(x, x), ax)) if x.dtype.kind == "f"
         else E.convert(lax.sqrt(E.convert(lax.reduce_sum(lax.mul(x, x), ax), dt.float64)), x.dtype))
_reducer("ReduceSumSquare", lambda x, ax: lax.reduce_sum(lax.mul(x, x), ax))
_reducer("ReduceLogSum", lambda x, ax: lax.log(lax.reduce_sum(x, ax)))
_reducer("ReduceLogSumExp", _logsumexp, empty=lambda d: -math.inf)


def _arg(prim):
    def h(ctx, x):
        axis = _ax(ctx.attr("axis", 0), x.ndim)
        if ctx.attr("select_last_index", 0):
            out = lax.sub(x.shape[axis] - 1, prim(lax.rev(x, (axis,)), axis))
        else:
            out = prim(x, axis)
        out = E.convert(out, dt.int64)
        return lax.keepdims(out, (axis,)) if ctx.attr("keepdims", 1) else out
    return h


register("ArgMax")(_arg(lax.argmax))
register("ArgMin")(_arg(lax.argmin))


def _scan_axis(ctx, x, axis):
    a = _ax(int(static(axis).reshape(-1)[0]), x.ndim)
    rev, excl = ctx.attr("reverse", 0), ctx.attr("exclusive", 0)
    if rev:
        x = lax.rev(x, (a,))
    if excl:  # shift by one along the axis: the first element sees only the identity
        cfg = [(0, 0, 0)] * x.ndim
        cfg[a] = (1, -1, 0)
    else:
        cfg = None
    return x, a, rev, cfg


@register("CumSum")
def cumsum(ctx, x, axis):
    x, a, rev, cfg = _scan_axis(ctx, x, axis)
    if cfg:
        x = lax.pad(x, 0, cfg)
    out = E.convert(lax.cumsum(x, a), x.dtype)
    return lax.rev(out, (a,)) if rev else out


@register("CumProd")
def cumprod(ctx, x, axis):
    x, a, rev, cfg = _scan_axis(ctx, x, axis)
    if cfg:
        x = lax.pad(x, 1, cfg)
    parts, acc = [], None
    for i in range(x.shape[a]):
        lo, hi = [0] * x.ndim, list(x.shape)
        lo[a], hi[a] = i, i + 1
        s = lax.slice(x, lo, hi, [1] * x.ndim)
        acc = s if acc is None else lax.mul(acc, s)
        parts.append(acc)
    out = lax.concatenate(parts, a) if parts else x
    return lax.rev(out, (a,)) if rev else out


# ------------------------------------------------------------------ linear algebra
@register("MatMul")
def matmul(ctx, a, b):
    return E.matmul(a, b)


@register("Gemm")
def gemm(ctx, a, b, c=None):
    if a.ndim != 2:
        a = lax.reshape(a, (a.shape[0], -1) if ctx.attr("transA", 0) == 0 else (-1, a.shape[-1]))
    y = lax.dot_general(a, b, ((0 if ctx.attr("transA", 0) else 1,), (1 if ctx.attr("transB", 0) else 0,)))
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    if alpha != 1.0:
        y = lax.mul(y, alpha)
    if c is not None:
        y = lax.add(y, c if beta == 1.0 else lax.mul(c, beta))
    return y


# ------------------------------------------------------------------ convolution and pooling
def _same_pads(ins, k, s, d, mode):
    pads = []
    for n, kk, ss, dd in zip(ins, k, s, d):
        out = -(-n // ss)
        total = max((out - 1) * ss + (kk - 1) * dd + 1 - n, 0)
        small, big = total // 2, total - total // 2
        pads.append((small, big) if mode == "SAME_UPPER" else (big, small))
    return pads


def _geometry(ctx, x, k):
    nd = len(k)
    s = ctx.attr("strides") or [1] * nd
    d = ctx.attr("dilations") or [1] * nd
    auto = ctx.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(x.shape[2:], k, s, d, auto)
    elif auto == "VALID":
        pads = [(0, 0)] * nd
    else:
        p = ctx.attr("pads") or [0] * (2 * nd)
        pads = [(p[i], p[i + nd]) for i in range(nd)]
    return list(s), list(d), pads


@register("Conv")
def conv(ctx, x, w, b=None):
    k = ctx.attr("kernel_shape") or list(w.shape[2:])
    s, d, pads = _geometry(ctx, x, k)
    y = lax.conv_general(x, w, s, pads, [1] * len(k), d, ctx.attr("group", 1))
    if b is not None:
        y = lax.add(y, lax.reshape(b, (b.shape[0],) + (1,) * len(k)))
    return y


@register("ConvTranspose")
def conv_transpose(ctx, x, w, b=None):
    nd = x.ndim - 2
    g = ctx.attr("group", 1)
    k = ctx.attr("kernel_shape") or list(w.shape[2:])
    s = ctx.attr("strides") or [1] * nd
    d = ctx.attr("dilations") or [1] * nd
    op = ctx.attr("output_padding") or [0] * nd
    auto = ctx.attr("auto_pad", "NOTSET")
    out_shape = ctx.attr("output_shape")
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        ins = x.shape[2:]
        out_shape = list(out_shape)[-nd:] if out_shape is not None else [n * ss for n, ss in zip(ins, s)]
        pads = []
        for i in range(nd):
            total = s[i] * (ins[i] - 1) + op[i] + (k[i] - 1) * d[i] + 1 - out_shape[i]  # < 0: extra output
            pads.append((total // 2, total - total // 2) if auto == "SAME_UPPER" else (total - total // 2, total // 2))
    elif auto == "VALID":
        pads = [(0, 0)] * nd
    else:
        p = ctx.attr("pads") or [0] * (2 * nd)
        pads = [(p[i], p[i + nd]) for i in range(nd)]
    C, Mg = w.shape[0], w.shape[1]
    wt = lax.reshape(w, (g, C // g, Mg) + tuple(w.shape[2:]))
    wt = lax.transpose(wt, (0, 2, 1) + tuple(range(3, 3 + nd)))
    wt = lax.rev(lax.reshape(wt, (g * Mg, C // g) + tuple(w.shape[2:])), tuple(range(2, 2 + nd)))
    cpads = [((k[i] - 1) * d[i] - pads[i][0], (k[i] - 1) * d[i] - pads[i][1] + op[i]) for i in range(nd)]
    y = lax.conv_general(x, wt, [1] * nd, cpads, s, d, g)
    if b is not None:
        y = lax.add(y, lax.reshape(b, (b.shape[0],) + (1,) * nd))
    return y


def _pool_pads(ctx, x, k, s, d, pads):
    """Add the extra high padding ceil_mode needs (PyTorch's rule: the last window starts inside)."""
    if not ctx.attr("ceil_mode", 0):
        return pads, pads
    out = []
    for n, kk, ss, dd, (lo, hi) in zip(x.shape[2:], k, s, d, pads):
        eff = (kk - 1) * dd + 1
        o = -(-(n + lo + hi - eff) // ss) + 1
        if (o - 1) * ss >= n + lo:
            o -= 1
        out.append((lo, max(hi, (o - 1) * ss + eff - n - lo)))
    return out, pads


@register("MaxPool")
def max_pool(ctx, x):
    if ctx.wants(1):
        raise ctx.unsupported("the Indices output")
    k = ctx.attr("kernel_shape")
    s, d, pads = _geometry(ctx, x, k)
    pads, _ = _pool_pads(ctx, x, k, s, d, pads)
    return lax.reduce_window(x, "max", (1, 1) + tuple(k), (1, 1) + tuple(s), [(0, 0), (0, 0)] + pads,
                             None, (1, 1) + tuple(d))


@register("AveragePool")
def avg_pool(ctx, x):
    k = ctx.attr("kernel_shape")
    s, d, pads = _geometry(ctx, x, k)
    full, explicit = _pool_pads(ctx, x, k, s, d, pads)
    win, st, wd = (1, 1) + tuple(k), (1, 1) + tuple(s), (1, 1) + tuple(d)
    total = lax.reduce_window(x, "sum", win, st, [(0, 0), (0, 0)] + full, None, wd)
    ones = lax.full((1, 1) + tuple(x.shape[2:]), 1, x.dtype)
    if ctx.attr("count_include_pad", 0):
        ones = lax.pad(ones, 1, [(0, 0, 0), (0, 0, 0)] + [(lo, hi, 0) for lo, hi in explicit])
        extra = [(0, f[1] - e[1]) for f, e in zip(full, explicit)]
        cnt = lax.reduce_window(ones, "sum", win, st, [(0, 0), (0, 0)] + extra, None, wd)
    else:
        cnt = lax.reduce_window(ones, "sum", win, st, [(0, 0), (0, 0)] + full, None, wd)
    return lax.div(total, cnt.detach())


@register("LpPool")
def lp_pool(ctx, x):
    p = ctx.attr("p", 2)
    k = ctx.attr("kernel_shape")
    s, d, pads = _geometry(ctx, x, k)
    pads, _ = _pool_pads(ctx, x, k, s, d, pads)
    t = lax.reduce_window(lax.pow(lax.abs(x), float(p)), "sum", (1, 1) + tuple(k), (1, 1) + tuple(s),
                          [(0, 0), (0, 0)] + pads, None, (1, 1) + tuple(d))
    return lax.pow(t, 1.0 / p)


@register("GlobalAveragePool")
def global_avg_pool(ctx, x):
    ax = tuple(range(2, x.ndim))
    return lax.keepdims(lax.div(lax.reduce_sum(x, ax), int(np.prod(x.shape[2:]))), ax)


@register("GlobalMaxPool")
def global_max_pool(ctx, x):
    ax = tuple(range(2, x.ndim))
    return lax.keepdims(lax.reduce_max(x, ax), ax)


# ------------------------------------------------------------------ normalisation
def _cshape(x):
    return (x.shape[1],) + (1,) * (x.ndim - 2)


@register("BatchNormalization")
def batch_norm(ctx, x, scale, b, mean, var):
    eps = ctx.attr("epsilon", 1e-5)
    if ctx.attr("training_mode", 0):
        ax = (0,) + tuple(range(2, x.ndim))
        n = int(np.prod([x.shape[a] for a in ax]))
        m = lax.div(lax.reduce_sum(x, ax), n)
        xc = lax.sub(x, lax.reshape(m, _cshape(x)))
        v = lax.div(lax.reduce_sum(lax.mul(xc, xc), ax), n)
        y = lax.mul(xc, lax.reshape(lax.mul(lax.rsqrt(lax.add(v, eps)), scale), _cshape(x)))
        y = lax.add(y, lax.reshape(b, _cshape(x)))
        mom = ctx.attr("momentum", 0.9)
        rm = lax.add(lax.mul(mean, mom), lax.mul(m, 1 - mom))
        rv = lax.add(lax.mul(var, mom), lax.mul(v, 1 - mom))
        return (y, rm, rv)[:ctx.n_out]
    return F.batch_norm(x, mean, var, scale, b, False, 0.0, eps)


@register("InstanceNormalization")
def instance_norm(ctx, x, scale, b):
    ax = tuple(range(2, x.ndim))
    y = _normalize(x, ax, ctx.attr("epsilon", 1e-5))[0]
    return lax.add(lax.mul(y, lax.reshape(scale, _cshape(x))), lax.reshape(b, _cshape(x)))


def _normalize(x, ax, eps):
    n = int(np.prod([x.shape[a] for a in ax]))
    m = lax.div(lax.reduce_sum(x, ax), n)
    xc = lax.sub(x, lax.expand_reduced(m, x.shape, ax))
    v = lax.div(lax.reduce_sum(lax.mul(xc, xc), ax), n)
    inv = lax.rsqrt(lax.add(v, eps))
    return lax.mul(xc, lax.expand_reduced(inv, x.shape, ax)), m, inv


@register("LayerNormalization")
def layer_norm(ctx, x, scale, b=None):
    a = _ax(ctx.attr("axis", -1), x.ndim)
    ax = tuple(range(a, x.ndim))
    xx = E.convert(x, dt.float32) if ctx.attr("stash_type", 1) == 1 and x.dtype.kind == "f" \
        and x.dtype.itemsize < 4 else x
    y, m, inv = _normalize(xx, ax, ctx.attr("epsilon", 1e-5))
    y = lax.mul(E.convert(y, x.dtype), scale)
    if b is not None:
        y = lax.add(y, b)
    return (y, lax.keepdims(m, ax), lax.keepdims(inv, ax))[:ctx.n_out]


@register("RMSNormalization")
def rms_norm(ctx, x, scale):
    a = _ax(ctx.attr("axis", -1), x.ndim)
    ax = tuple(range(a, x.ndim))
    n = int(np.prod([x.shape[i] for i in ax]))
    ms = lax.div(lax.reduce_sum(lax.mul(x, x), ax), n)
    y = lax.mul(x, lax.expand_reduced(lax.rsqrt(lax.add(ms, ctx.attr("epsilon", 1e-5))), x.shape, ax))
    return lax.mul(y, scale)


@register("GroupNormalization", since=18)
def group_norm(ctx, x, scale, b):
    G = ctx.attr("num_groups")
    N, C = x.shape[:2]
    xg = lax.reshape(x, (N, G, -1) if False else (N, G, int(np.prod(x.shape[1:])) // G))
    y = lax.reshape(_normalize(xg, (2,), ctx.attr("epsilon", 1e-5))[0], x.shape)
    if scale.shape[0] != C:  # opset 18: one scale and bias per group
        scale = lax.reshape(lax.broadcast_in_dim(scale, (G, C // G), (0,)), (C,))
        b = lax.reshape(lax.broadcast_in_dim(b, (G, C // G), (0,)), (C,))
    return lax.add(lax.mul(y, lax.reshape(scale, _cshape(x))), lax.reshape(b, _cshape(x)))


@register("LRN")
def lrn(ctx, x):
    size = ctx.attr("size")
    alpha, beta, bias = ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0)
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    nd = x.ndim
    ss = lax.reduce_window(lax.mul(x, x), "sum", (1, size) + (1,) * (nd - 2), (1,) * nd,
                           [(0, 0), (lo, hi)] + [(0, 0)] * (nd - 2))
    return lax.div(x, lax.pow(lax.add(lax.mul(ss, alpha / size), bias), beta))


@register("MeanVarianceNormalization")
def mvn(ctx, x):
    ax = tuple(sorted(_ax(a, x.ndim) for a in (ctx.attr("axes") or [0, 2, 3])))
    n = int(np.prod([x.shape[a] for a in ax]))
    m = lax.expand_reduced(lax.div(lax.reduce_sum(x, ax), n), x.shape, ax)
    xc = lax.sub(x, m)
    v = lax.expand_reduced(lax.div(lax.reduce_sum(lax.mul(xc, xc), ax), n), x.shape, ax)
    return lax.div(xc, lax.add(lax.sqrt(v), 1e-9))


@register("LpNormalization")
def lp_norm(ctx, x):
    a, p = _ax(ctx.attr("axis", -1), x.ndim), ctx.attr("p", 2)
    nrm = lax.reduce_sum(lax.abs(x), (a,)) if p == 1 else lax.sqrt(lax.reduce_sum(lax.mul(x, x), (a,)))
    nrm = lax.keepdims(nrm, (a,))
    return lax.select(lax.eq(nrm, 0), _zero(x), lax.div(x, nrm))


# ---- softmax family: before opset 13 they flatten to 2-D at `axis`
def _flat2d(fn):
    def old(ctx, x):
        a = _ax(ctx.attr("axis", 1), x.ndim)
        y = fn(lax.reshape(x, (int(np.prod(x.shape[:a])), int(np.prod(x.shape[a:])))), 1)
        return lax.reshape(y, x.shape)

    def new(ctx, x):
        return fn(x, _ax(ctx.attr("axis", -1), x.ndim))
    return old, new


def _hardmax(x, a):
    idx = lax.argmax(x, a)
    return E.convert(lax.eq(lax.keepdims(idx, (a,)), lax.iota(x.shape, a, idx.dtype)), x.dtype)


for _n, _f in {"Softmax": F.softmax, "LogSoftmax": F.log_softmax, "Hardmax": _hardmax}.items():
    _old, _new = _flat2d(_f)
    register(_n)(_old)
    register(_n, since=13)(_new)


@register("Dropout")
def dropout(ctx, x, ratio=None, training=None):
    train = bool(static(training).reshape(-1)[0]) if training is not None else False
    r = float(static(ratio).reshape(-1)[0]) if ratio is not None else ctx.attr("ratio", 0.5)
    if train and r > 0:
        raise ctx.unsupported("training_mode=True with ratio > 0 (random mask)")
    if ctx.n_out > 1:
        return x, lax.full(x.shape, True, dt.bool_)
    return x


# ---- losses
def _nll(ctx, logp, target, weight):
    ii = ctx.attr("ignore_index")
    t = E.convert(target, dt.int64)
    valid = lax.ne(t, ii) if ii is not None else None
    safe = lax.select(valid, t, 0) if valid is not None else t
    picked = lax.reshape(lax.take_along_axis(logp, _unsqueeze(safe, [1]), 1), safe.shape)
    w = lax.gather(weight, safe, 0) if weight is not None else lax.full(safe.shape, 1, logp.dtype)
    if valid is not None:
        w = lax.select(valid, w, 0)
    loss = lax.neg(lax.mul(picked, w))
    red = ctx.attr("reduction", "mean")
    if red == "none":
        return loss
    s = lax.reduce_sum(loss, tuple(range(loss.ndim)))
    if red == "sum":
        return s
    return lax.div(s, lax.reduce_sum(w, tuple(range(w.ndim))))


@register("NegativeLogLikelihoodLoss")
def nll_loss(ctx, x, target, weight=None):
    return _nll(ctx, x, target, weight)


@register("SoftmaxCrossEntropyLoss")
def softmax_ce(ctx, scores, labels, weight=None):
    logp = F.log_softmax(scores, 1)
    loss = _nll(ctx, logp, labels, weight)
    return (loss, logp)[:ctx.n_out]


# ------------------------------------------------------------------ control flow
@register("If")
def if_(ctx, cond):
    from .importer import run_graph
    branch = ctx.attr("then_branch") if bool(static(cond).reshape(-1)[0]) else ctx.attr("else_branch")
    env = dict(ctx.env)
    run_graph(branch, env, ctx.opsets)
    return tuple(env[o.name] for o in branch.output)
