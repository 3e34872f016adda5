"""Converters from ember primitives to ONNX nodes, one function per primitive, in `CONVERTERS`.

A converter gets the export context and the equation, with its inputs already cast to the
primitive's compute dtype, and returns the ONNX name of the result. It also sets the dynamic dims
of the result (`ctx.dyn`), so that shapes baked into the IR (reshape, broadcast, slice bounds)
are emitted relative to the runtime shape on dynamic axes.
"""
from __future__ import annotations

import math

import numpy as np

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min

CONVERTERS: dict = {}


def converter(*names):
    def deco(fn):
        for n in names:
            CONVERTERS[n] = fn
        return fn
    return deco


def i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


# ---------------------------------------------------------------- elementwise
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "max": "Max",
           "min": "Min", "eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater",
           "ge": "GreaterOrEqual"}
_UNARY = {"neg": "Neg", "abs": "Abs", "sign": "Sign", "exp": "Exp", "log": "Log", "sqrt": "Sqrt",
          "sin": "Sin", "cos": "Cos", "tanh": "Tanh", "erf": "Erf", "logistic": "Sigmoid",
          "floor": "Floor", "ceil": "Ceil", "round": "Round", "isnan": "IsNaN"}
_LOGICAL = {"bitwise_and": ("And", "BitwiseAnd"), "bitwise_or": ("Or", "BitwiseOr"),
            "bitwise_xor": ("Xor", "BitwiseXor"), "bitwise_not": ("Not", "BitwiseNot")}


def _elementwise_dyn(ctx, eqn):
    out = eqn.out.aval.shape
    dyn = [None] * len(out)
    for a in eqn.inputs:
        shape, d = a.aval.shape, ctx.dyn_of(a)
        off = len(out) - len(shape)
        for i, s in enumerate(shape):
            if d[i] is not None and s == out[off + i] and dyn[off + i] is None:
                dyn[off + i] = d[i]
    ctx.set_dyn(eqn.out, dyn)


@converter(*_BINARY)
def _binary(ctx, eqn, x, y):
    _elementwise_dyn(ctx, eqn)
    return ctx.node(_BINARY[eqn.prim.name], [x, y])


@converter("ne")
def _ne(ctx, eqn, x, y):
    _elementwise_dyn(ctx, eqn)
    return ctx.node("Not", [ctx.node("Equal", [x, y])])


@converter(*_UNARY)
def _unary(ctx, eqn, x):
    _elementwise_dyn(ctx, eqn)
    return ctx.node(_UNARY[eqn.prim.name], [x])


@converter("rsqrt")
def _rsqrt(ctx, eqn, x):
    _elementwise_dyn(ctx, eqn)
    return ctx.node("Reciprocal", [ctx.node("Sqrt", [x])])


@converter("log1p", "expm1")
def _log1p_expm1(ctx, eqn, x):
    _elementwise_dyn(ctx, eqn)
    one = ctx.const(np.ones((), ctx.np_dtype(x)))
    if eqn.prim.name == "log1p":
        return ctx.node("Log", [ctx.node("Add", [x, one])])
    return ctx.node("Sub", [ctx.node("Exp", [x]), one])


@converter("trunc")
def _trunc(ctx, eqn, x):
    _elementwise_dyn(ctx, eqn)
    neg = ctx.node("Less", [x, ctx.const(np.zeros((), ctx.np_dtype(x)))])
    return ctx.node("Where", [neg, ctx.node("Ceil", [x]), ctx.node("Floor", [x])])


@converter("floordiv")
def _floordiv(ctx, eqn, x, y):
    _elementwise_dyn(ctx, eqn)
    if ctx.np_dtype(x).kind == "f":
        return ctx.node("Floor", [ctx.node("Div", [x, y])])
    fx, fy = ctx.node("Cast", [x], to=ctx.onnx_type(np.float64)), ctx.node("Cast", [y], to=ctx.onnx_type(np.float64))
    return ctx.node("Cast", [ctx.node("Floor", [ctx.node("Div", [fx, fy])])], to=ctx.onnx_type(ctx.np_dtype(x)))


@converter("fmod")
def _fmod(ctx, eqn, x, y):
    _elementwise_dyn(ctx, eqn)
    return ctx.node("Mod", [x, y], fmod=1)


@converter("rem")
def _rem(ctx, eqn, x, y):
    _elementwise_dyn(ctx, eqn)
    dtype = ctx.np_dtype(x)
    if dtype.kind in "iub":
        return ctx.node("Mod", [x, y], fmod=0)
    m = ctx.node("Mod", [x, y], fmod=1)
    zero = ctx.const(np.zeros((), dtype))
    flip = ctx.node("And", [ctx.node("Not", [ctx.node("Equal", [m, zero])]),
                            ctx.node("Xor", [ctx.node("Less", [m, zero]), ctx.node("Less", [y, zero])])])
    return ctx.node("Where", [flip, ctx.node("Add", [m, y]), m])


@converter(*_LOGICAL)
def _logical(ctx, eqn, *xs):
    _elementwise_dyn(ctx, eqn)
    boolean, bitwise = _LOGICAL[eqn.prim.name]
    if ctx.np_dtype(xs[0]) == np.bool_:
        return ctx.node(boolean, list(xs))
    if ctx.opset < 18:
        ctx.unsupported(eqn, f"{bitwise} on integers needs opset >= 18")
    return ctx.node(bitwise, list(xs))


@converter("select")
def _select(ctx, eqn, c, x, y):
    _elementwise_dyn(ctx, eqn)
    return ctx.node("Where", [c, x, y])


@converter("convert")
def _convert(ctx, eqn, x):
    _elementwise_dyn(ctx, eqn)
    return ctx.node("Cast", [x], to=ctx.onnx_type(eqn.out.aval.dtype.np))


@converter("check_classes")
def _check_classes(ctx, eqn, x):  # ONNX has no assertion: the targets pass through
    _elementwise_dyn(ctx, eqn)
    return ctx.node("Identity", [x])


# ---------------------------------------------------------------- reductions
def _reduce_dyn(ctx, eqn, axes):
    d = ctx.dyn_of(eqn.inputs[0])
    ctx.set_dyn(eqn.out, [x for i, x in enumerate(d) if i not in axes])


def reduce(ctx, op: str, x: str, axes) -> str:
    """`op` over `axes` without keepdims, with the axes as input or attribute as the opset wants."""
    axes = [int(a) for a in axes]
    if op == "ReduceSum" or ctx.opset >= 18:
        return ctx.node(op, [x, ctx.const(i64(axes))], keepdims=0)
    return ctx.node(op, [x], axes=axes, keepdims=0)


@converter("reduce_sum", "reduce_prod", "reduce_max", "reduce_min")
def _reduce(ctx, eqn, x):
    axes = eqn.params["axes"]
    _reduce_dyn(ctx, eqn, axes)
    if not axes:
        return ctx.node("Identity", [x])
    op = {"reduce_sum": "ReduceSum", "reduce_prod": "ReduceProd", "reduce_max": "ReduceMax",
          "reduce_min": "ReduceMin"}[eqn.prim.name]
    return reduce(ctx, op, x, axes)


@converter("reduce_and", "reduce_or")
def _reduce_bool(ctx, eqn, x):
    axes = eqn.params["axes"]
    _reduce_dyn(ctx, eqn, axes)
    if ctx.np_dtype(x) != np.bool_:
        x = ctx.node("Cast", [x], to=ctx.onnx_type(np.bool_))
    if not axes:
        return x
    xi = ctx.node("Cast", [x], to=ctx.onnx_type(np.int32))
    r = reduce(ctx, "ReduceMin" if eqn.prim.name == "reduce_and" else "ReduceMax", xi, axes)
    return ctx.node("Cast", [r], to=ctx.onnx_type(np.bool_))


@converter("argmax", "argmin")
def _arg(ctx, eqn, x):
    axis = eqn.params["axis"]
    _reduce_dyn(ctx, eqn, (axis,))
    if not eqn.inputs[0].aval.shape:
        return ctx.const(np.zeros((), np.int64))
    return ctx.node("ArgMax" if eqn.prim.name == "argmax" else "ArgMin", [x], axis=axis, keepdims=0)


@converter("cumsum")
def _cumsum(ctx, eqn, x):
    ctx.set_dyn(eqn.out, ctx.dyn_of(eqn.inputs[0]))
    if not eqn.inputs[0].aval.shape:
        return ctx.node("Identity", [x])
    return ctx.node("CumSum", [x, ctx.const(i64(eqn.params["axis"]))], reverse=int(eqn.params["reverse"]))


# ---------------------------------------------------------------- shapes
def reshape_groups(a: tuple, b: tuple) -> list:
    """Split two shapes of equal size into groups of consecutive dims with equal products."""
    i = j = 0
    out = []
    while i < len(a) or j < len(b):
        gi, gj = [], []
        pa = pb = 1
        if i < len(a):
            pa, gi, i = a[i], [i], i + 1
        if j < len(b):
            pb, gj, j = b[j], [j], j + 1
        while pa != pb:
            if pa < pb and i < len(a):
                pa, i = pa * a[i], i + 1
                gi.append(i - 1)
            elif pb < pa and j < len(b):
                pb, j = pb * b[j], j + 1
                gj.append(j - 1)
            else:
                break
        out.append((gi, gj))
    return out


def reshape(ctx, x: str, in_shape: tuple, in_dyn: list, out_shape: tuple) -> tuple:
    """Emit a Reshape to `out_shape` that follows the dynamic dims; returns (name, out_dyn)."""
    out_dyn = [None] * len(out_shape)
    same = set()
    for gi, gj in reshape_groups(tuple(in_shape), tuple(out_shape)):
        syms = tuple(sorted(s for i in gi if in_dyn[i] is not None for s in in_dyn[i]))
        if not syms or not gj:
            continue
        if len(gi) == 1 and len(gj) == 1:
            out_dyn[gj[0]] = syms
            if gi[0] == gj[0]:
                same.add(gj[0])
            continue
        n = ctx.sym_size(syms)
        for j in gj:
            if out_shape[j] != 1 and out_shape[j] % n == 0:
                out_dyn[j] = syms
                break
    if tuple(in_shape) == tuple(out_shape) and list(in_dyn) == out_dyn:
        return x, out_dyn
    other = [j for j, d in enumerate(out_dyn) if d is not None and j not in same]
    if len(other) <= 1:
        shape = [0 if j in same else -1 if j in other else s for j, s in enumerate(out_shape)]
        shape_name = ctx.const(i64(shape))
    else:
        shape_name = ctx.shape_tensor(out_shape, out_dyn)
    return ctx.node("Reshape", [x, shape_name]), out_dyn


@converter("reshape")
def _reshape(ctx, eqn, x):
    a = eqn.inputs[0]
    name, dyn = reshape(ctx, x, a.aval.shape, ctx.dyn_of(a), eqn.params["shape"])
    ctx.set_dyn(eqn.out, dyn)
    return name if name != x else ctx.node("Identity", [x])


@converter("broadcast_in_dim")
def _broadcast_in_dim(ctx, eqn, x):
    a = eqn.inputs[0]
    shape, dims = tuple(eqn.params["shape"]), tuple(eqn.params["dims"])
    in_dyn = ctx.dyn_of(a)
    if list(dims) != sorted(dims):
        order = sorted(range(len(dims)), key=lambda i: dims[i])
        x = ctx.node("Transpose", [x], perm=order)
        in_dyn = [in_dyn[i] for i in order]
        in_shape = tuple(a.aval.shape[i] for i in order)
        dims = tuple(sorted(dims))
    else:
        in_shape = tuple(a.aval.shape)
    missing = [j for j in range(len(shape)) if j not in dims]
    if missing:
        x = ctx.node("Unsqueeze", [x, ctx.const(i64(missing))])
    dyn = [None] * len(shape)
    target = list(shape)
    for i, j in enumerate(dims):
        if in_dyn[i] is not None and in_shape[i] == shape[j]:
            dyn[j] = in_dyn[i]
            target[j] = 1
    ctx.set_dyn(eqn.out, dyn)
    if all(t == 1 or (j in dims and in_shape[dims.index(j)] == t) for j, t in enumerate(target)):
        return x if missing else ctx.node("Identity", [x])
    return ctx.node("Expand", [x, ctx.const(i64(target))])


@converter("transpose")
def _transpose(ctx, eqn, x):
    perm = tuple(eqn.params["perm"])
    d = ctx.dyn_of(eqn.inputs[0])
    ctx.set_dyn(eqn.out, [d[p] for p in perm])
    return ctx.node("Transpose", [x], perm=list(perm))


@converter("slice")
def _slice(ctx, eqn, x):
    a = eqn.inputs[0]
    shape, d = a.aval.shape, ctx.dyn_of(a)
    start, stop, step = eqn.params["start"], eqn.params["stop"], eqn.params["step"]
    dyn, axes, starts, ends, steps = [], [], [], [], []
    for i, (n, b, e, s) in enumerate(zip(shape, start, stop, step)):
        whole = b == 0 and e == n and s == 1
        dyn.append(d[i] if whole else None)
        if not whole:
            axes.append(i)
            starts.append(b)
            ends.append(e)
            steps.append(s)
    ctx.set_dyn(eqn.out, dyn)
    if not axes:
        return ctx.node("Identity", [x])
    return ctx.node("Slice", [x, ctx.const(i64(starts)), ctx.const(i64(ends)), ctx.const(i64(axes)),
                              ctx.const(i64(steps))])


@converter("rev")
def _rev(ctx, eqn, x):
    axes = list(eqn.params["axes"])
    ctx.set_dyn(eqn.out, ctx.dyn_of(eqn.inputs[0]))
    if not axes:
        return ctx.node("Identity", [x])
    n = len(axes)
    return ctx.node("Slice", [x, ctx.const(i64([-1] * n)), ctx.const(i64([INT64_MIN] * n)),
                              ctx.const(i64(axes)), ctx.const(i64([-1] * n))])


@converter("pad")
def _pad(ctx, eqn, x):
    config = eqn.params["config"]
    if any(it for _, _, it in config):
        ctx.unsupported(eqn, "interior padding has no ONNX equivalent")
    d = ctx.dyn_of(eqn.inputs[0])
    ctx.set_dyn(eqn.out, [d[i] if lo == hi == 0 else None for i, (lo, hi, _) in enumerate(config)])
    pads = [lo for lo, _, _ in config] + [hi for _, hi, _ in config]
    value = ctx.const(np.asarray(eqn.params["value"], ctx.np_dtype(x)))
    return ctx.node("Pad", [x, ctx.const(i64(pads)), value], mode="constant")


@converter("concatenate")
def _concatenate(ctx, eqn, *xs):
    axis = eqn.params["axis"]
    d = list(ctx.dyn_of(eqn.inputs[0]))
    d[axis] = None
    ctx.set_dyn(eqn.out, d)
    return ctx.node("Concat", list(xs), axis=axis)


# ---------------------------------------------------------------- linear algebra
@converter("dot_general")
def _dot_general(ctx, eqn, x, y):
    (xc, yc), (xb, yb) = eqn.params["contract"], eqn.params["batch"]
    a, b = eqn.inputs
    xs, ys = a.aval.shape, b.aval.shape
    xd, yd = ctx.dyn_of(a), ctx.dyn_of(b)
    xf = [i for i in range(len(xs)) if i not in xc and i not in xb]
    yf = [i for i in range(len(ys)) if i not in yc and i not in yb]
    out_dyn = [xd[i] for i in xb] + [xd[i] for i in xf] + [yd[i] for i in yf]
    ctx.set_dyn(eqn.out, out_dyn)

    def arrange(name, shape, dyn, perm):
        if list(perm) != list(range(len(shape))):
            name = ctx.node("Transpose", [name], perm=list(perm))
        return name, tuple(shape[p] for p in perm), [dyn[p] for p in perm]

    x, xt, xtd = arrange(x, xs, xd, list(xb) + xf + list(xc))
    y, yt, ytd = arrange(y, ys, yd, list(yb) + list(yc) + yf)
    nb, k = len(xb), math.prod(xs[i] for i in xc)
    m, n = math.prod(xs[i] for i in xf), math.prod(ys[i] for i in yf)
    if nb:
        x2_shape, y2_shape = xt[:nb] + (m, k), yt[:nb] + (k, n)
    else:
        x2_shape = xt[:len(xf)] + (k,)
        y2_shape = (k, n) if yf else (k,)
    x2, x2d = reshape(ctx, x, xt, xtd, x2_shape)
    y2, y2d = reshape(ctx, y, yt, ytd, y2_shape)
    mm = ctx.node("MatMul", [x2, y2])
    if nb:
        mm_shape, mm_dyn = x2_shape[:-1] + y2_shape[-1:], x2d[:-1] + y2d[-1:]
    else:
        mm_shape = x2_shape[:-1] + (y2_shape[-1:] if yf else ())
        mm_dyn = x2d[:-1] + (y2d[-1:] if yf else [])
    name, _ = reshape(ctx, mm, mm_shape, mm_dyn, tuple(eqn.out.aval.shape))
    return name


# ---------------------------------------------------------------- indexing
@converter("gather")
def _gather(ctx, eqn, x, idx):
    axis = eqn.params["axis"]
    xd, idd = ctx.dyn_of(eqn.inputs[0]), ctx.dyn_of(eqn.inputs[1])
    ctx.set_dyn(eqn.out, list(xd[:axis]) + list(idd) + list(xd[axis + 1:]))
    if not eqn.inputs[0].aval.shape:
        return ctx.node("Identity", [x])
    return ctx.node("Gather", [x, idx], axis=axis)


def _expand_index(ctx, eqn, idx):
    axis = eqn.params["axis"]
    xs, ids = eqn.inputs[0].aval.shape, eqn.inputs[1].aval.shape
    xd = ctx.dyn_of(eqn.inputs[0])
    if all(a == b or i == axis for i, (a, b) in enumerate(zip(ids, xs))):
        return idx
    shape = [ids[i] if i == axis else xs[i] for i in range(len(xs))]
    dyn = [ctx.dyn_of(eqn.inputs[1])[i] if i == axis else xd[i] for i in range(len(xs))]
    return ctx.node("Expand", [idx, ctx.shape_tensor(shape, dyn)])


@converter("take_along_axis")
def _take_along_axis(ctx, eqn, x, idx):
    axis = eqn.params["axis"]
    xd, idd = ctx.dyn_of(eqn.inputs[0]), ctx.dyn_of(eqn.inputs[1])
    ctx.set_dyn(eqn.out, [idd[i] if i == axis else xd[i] for i in range(len(xd))])
    return ctx.node("GatherElements", [x, _expand_index(ctx, eqn, idx)], axis=axis)


@converter("scatter_add_along_axis")
def _scatter_add_along_axis(ctx, eqn, x, idx, upd):
    ctx.set_dyn(eqn.out, ctx.dyn_of(eqn.inputs[0]))
    return ctx.node("ScatterElements", [x, idx, upd], axis=eqn.params["axis"], reduction="add")


@converter("scatter_along_axis")
def _scatter_along_axis(ctx, eqn, x, idx, upd):
    ctx.set_dyn(eqn.out, ctx.dyn_of(eqn.inputs[0]))
    return ctx.node("ScatterElements", [x, idx, upd], axis=eqn.params["axis"])


@converter("det")
def _det(ctx, eqn, x):
    return ctx.node("Det", [x])


# ---------------------------------------------------------------- creation
@converter("full", "iota")
def _creation(ctx, eqn):
    ctx.set_dyn(eqn.out, [None] * len(eqn.out.aval.shape))
    value = eqn.prim.impl(**eqn.params)
    if eqn.prim.name == "full" and value.size > 1024:
        dtype = value.dtype
        fill = ctx.onnx_tensor(np.asarray([eqn.params["value"]], dtype))
        return ctx.node("ConstantOfShape", [ctx.const(i64(value.shape))], value=fill)
    return ctx.const(np.asarray(value, order="C"))


# ---------------------------------------------------------------- convolution and pooling
def crop_negative_padding(ctx, x: str, shape: tuple, padding) -> tuple:
    """Slice away negative (cropping) spatial padding, which ONNX rejects; returns (x, padding >= 0)."""
    crop = [(i, -min(lo, 0), shape[i] + min(hi, 0)) for i, (lo, hi) in enumerate(padding, 2) if min(lo, hi) < 0]
    if crop:
        x = ctx.node("Slice", [x, ctx.const(i64([c[1] for c in crop])), ctx.const(i64([c[2] for c in crop])),
                               ctx.const(i64([c[0] for c in crop]))])
    return x, [(max(lo, 0), max(hi, 0)) for lo, hi in padding]


@converter("conv_general")
def _conv(ctx, eqn, x, w):
    p = eqn.params
    d = ctx.dyn_of(eqn.inputs[0])
    ctx.set_dyn(eqn.out, [d[0]] + [None] * (len(d) - 1))
    wt = transposed_weight(ctx, eqn.inputs[1], w, p["groups"])
    if wt is not None or any(s != 1 for s in p["lhs_dilation"]):
        return _conv_transpose(ctx, eqn, x, w, wt)
    x, padding = crop_negative_padding(ctx, x, eqn.inputs[0].aval.shape, p["padding"])
    pads = [lo for lo, _ in padding] + [hi for _, hi in padding]
    return ctx.node("Conv", [x, w], strides=list(p["window_strides"]), pads=pads,
                    dilations=list(p["rhs_dilation"]), group=p["groups"],
                    kernel_shape=list(eqn.inputs[1].aval.shape[2:]))


# ---------------------------------------------------------------- transposed convolution
# ember lowers ConvTranspose (nn/functional_spatial.py) to conv_general with lhs_dilation = stride, padding
# d (k - 1) - p, plus output_padding at the high end, and the weight (C_in, C_out / g, *k) regrouped to
# (C_out, C_in / g, *k) and flipped. ONNX ConvTranspose wants the original weight and attributes back.
_LAYOUT = ("reshape", "transpose", "rev")


def to_transpose_layout(w, shape: tuple, groups: int, reshape, transpose, flip):
    """Conv weight (g * og, cg, *k) -> ConvTranspose weight (g * cg, og, *k): regroup, swap, flip."""
    o, cg, *k = shape
    og, sp = o // groups, tuple(range(2, 2 + len(k)))
    if groups == 1:
        return flip(transpose(w, (1, 0) + sp), sp)
    w = transpose(reshape(w, (groups, og, cg, *k)), (0, 2, 1) + tuple(a + 1 for a in sp))
    return flip(reshape(w, (groups * cg, og, *k)), sp)


def _np_layout(prim: str, a: np.ndarray, params: dict) -> np.ndarray:
    if prim == "reshape":
        return a.reshape(params["shape"])
    if prim == "transpose":
        return a.transpose(params["perm"])
    return np.flip(a, tuple(params["axes"]))


def transposed_weight(ctx, wvar, w: str, groups: int):
    """The ONNX name of the value that the conv weight `wvar` (ONNX name `w`) was regrouped and flipped from,
    when that is exactly a ConvTranspose weight (the reshape/transpose/rev chain replayed on an index array)."""
    chain, v = [], wvar
    while v in ctx.producers and ctx.producers[v].prim.name in _LAYOUT:
        chain.append(ctx.producers[v])
        v = ctx.producers[v].inputs[0]
    shape = tuple(wvar.aval.shape)
    if not chain or len(shape) < 3 or shape[0] % groups:
        return None
    for depth in range(len(chain), 0, -1):
        src = chain[depth - 1].inputs[0]
        if src not in ctx.names or ctx.np_dtype(ctx.names[src]) != ctx.np_dtype(w):
            continue
        idx = np.arange(math.prod(src.aval.shape)).reshape(src.aval.shape)
        a = idx
        for e in reversed(chain[:depth]):
            a = _np_layout(e.prim.name, a, e.params)
        a = to_transpose_layout(a, shape, groups, np.reshape, np.transpose, np.flip)
        if a.shape == idx.shape and np.array_equal(a, idx):
            return ctx.names[src]
    return None


def _weight_nodes(ctx, w: str, shape: tuple, groups: int) -> str:
    """ConvTranspose's weight from a conv weight: computed with numpy for an initializer, else as nodes."""
    if w in ctx.inits:
        name = f"{w}.transposed"
        name = name if not w.startswith("/") and name not in ctx.inits else None
        arr = to_transpose_layout(ctx.inits[w], shape, groups, np.reshape, np.transpose, np.flip)
        return ctx.const(np.ascontiguousarray(arr), name)

    def reshape(a, s):
        return ctx.node("Reshape", [a, ctx.const(i64(s))])

    def transpose(a, perm):
        return ctx.node("Transpose", [a], perm=list(perm))

    def flip(a, axes):
        n = len(axes)
        return ctx.node("Slice", [a, ctx.const(i64([-1] * n)), ctx.const(i64([INT64_MIN] * n)),
                                  ctx.const(i64(axes)), ctx.const(i64([-1] * n))])
    return to_transpose_layout(w, shape, groups, reshape, transpose, flip)


def _conv_transpose(ctx, eqn, x, w, wt):
    p = eqn.params
    shape, g = tuple(eqn.inputs[1].aval.shape), p["groups"]
    if wt is None:
        wt = _weight_nodes(ctx, w, shape, g)
    begin, end, out_pad, lo_zeros, hi_zeros = [], [], [], [], []
    for (lo, hi), s, d, k in zip(p["padding"], p["lhs_dilation"], p["rhs_dilation"], shape[2:]):
        b = d * (k - 1) - lo
        if 0 <= hi - lo < s:  # PyTorch's form: symmetric pads plus output_padding (which ORT wants < stride)
            e, op = b, hi - lo
        else:
            e, op = d * (k - 1) - hi, 0
        begin.append(max(b, 0))
        end.append(max(e, 0))
        out_pad.append(op)
        lo_zeros.append(max(-b, 0))
        hi_zeros.append(max(-e, 0))
    y = ctx.node("ConvTranspose", [x, wt], strides=list(p["lhs_dilation"]), pads=begin + end,
                 dilations=list(p["rhs_dilation"]), group=g, kernel_shape=list(shape[2:]), output_padding=out_pad)
    if any(lo_zeros + hi_zeros):  # padding beyond the kernel's reach: zeros that ConvTranspose cannot make
        y = ctx.node("Pad", [y, ctx.const(i64([0, 0] + lo_zeros + [0, 0] + hi_zeros))])
    nd = len(shape) - 2
    if any(s != 1 for s in p["window_strides"]):
        y = ctx.node("Slice", [y, ctx.const(i64([0] * nd)), ctx.const(i64([INT64_MAX] * nd)),
                               ctx.const(i64(range(2, 2 + nd))), ctx.const(i64(p["window_strides"]))])
    return y


@converter("reduce_window_max", "reduce_window_sum")
def _reduce_window(ctx, eqn, x):
    p = eqn.params
    window, strides, padding = p["window"], p["strides"], p["padding"]
    lead = 2
    if len(window) < 3 or not all(window[i] == 1 and strides[i] == 1 and tuple(padding[i]) == (0, 0)
                                  for i in range(lead)) or any(b != 1 for b in p["base_dilation"]) \
            or any(w != 1 for w in p["window_dilation"][:lead]):
        ctx.unsupported(eqn, "a window over the batch/channel dims or with base dilation "
                        "(ONNX pools only window the spatial dims of N, C, ... inputs)")
    d = ctx.dyn_of(eqn.inputs[0])
    ctx.set_dyn(eqn.out, list(d[:2]) + [None] * (len(d) - 2))
    kernel, dtype = list(window[2:]), ctx.np_dtype(x)
    x, padding = crop_negative_padding(ctx, x, eqn.inputs[0].aval.shape, padding[2:])
    pads = [lo for lo, _ in padding] + [hi for _, hi in padding]
    attrs = dict(kernel_shape=kernel, strides=list(strides[2:]), pads=pads)
    if eqn.prim.name == "reduce_window_max":
        return ctx.node("MaxPool", [x], dilations=list(p["window_dilation"][2:]), **attrs)
    if any(w != 1 for w in p["window_dilation"]):
        ctx.unsupported(eqn, "a dilated sum window")
    avg = ctx.node("AveragePool", [x], count_include_pad=1, **attrs)
    return ctx.node("Mul", [avg, ctx.const(np.asarray(math.prod(kernel), dtype))])
