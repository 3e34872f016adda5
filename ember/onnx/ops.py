"""ONNX op handlers, one small function per op, written in ember ops: the registry, `Ctx`,
elementwise math, constants, reductions, linear algebra and If here; shape/indexing ops in
`ops_shape.py`, convolution/pooling/normalisation/losses in `ops_nn.py`, Attention and friends in
`ops_attention.py`, Resize/GridSample in `ops_resize.py`, RNN/GRU/LSTM in `ops_rnn.py`, Loop/Scan
in `ops_control.py`, MaxUnpool/Col2Im/RoiAlign/DeformConv/NMS in `ops_vision.py`, the rest
(TopK, Unique, Einsum, DFT...) in `ops_misc.py`.

A handler is `fn(ctx, *inputs) -> Tensor | tuple`, where missing optional inputs are None and
`ctx` gives the node's attributes and the opset version. `register(op_type, since=v)` files it
under (domain, op_type); `lookup` picks the handler with the largest `since` <= the model's opset,
so ops whose semantics changed (Reduce* axes, Split/Squeeze/Unsqueeze, Clip, Pad, Softmax...) get
one handler per version. Values an op needs at import time (shapes, axes, pads) are read with
`static`/`ints`: from the host value behind them (`host.py`: shape arithmetic folded at trace
time) or with `.numpy()`; the data path stays in ember ops, so autograd flows through.
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
from . import host
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

    __slots__ = ("node", "opset", "opsets", "value_info", "env", "consts", "_attrs")

    def __init__(self, node, opset, opsets, value_info, env, consts=None):
        self.node, self.opset, self.opsets, self.value_info, self.env = node, opset, opsets, value_info, env
        self.consts = consts  # id(subgraph) -> (subgraph, its initializers as tensors), decoded at load
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
    v = host.value(t)
    if v is not None:
        return v
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
            v = np.array(v, order="C")
            dt.from_numpy_dtype(v.dtype)  # a dtype ember lacks (strings) fails here, naming this node
            return host.Host(v)
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
    return host.Host(np.array(s[start:end], np.int64))  # known while tracing: the trace is per shape


@register("Size")
def size_(ctx, x):
    return host.Host(np.array(int(np.prod(x.shape)), np.int64))


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


# ------------------------------------------------------------------ control flow
@register("If")
def if_(ctx, cond):
    from .importer import run_subgraph
    return run_subgraph(ctx, ctx.attr("then_branch") if bool(static(cond).reshape(-1)[0]) else ctx.attr("else_branch"))


from . import ops_nn, ops_shape  # noqa: E402,F401 - register the other op families
from . import ops_attention, ops_control, ops_misc, ops_quant, ops_resize, ops_rnn, ops_vision  # noqa: E402,F401
