"""Validation of an ONNX model before ember allocates or runs anything (checklist MD-4).

`check_model` runs at load: every graph (subgraphs included) reads only names its scope defines,
every tensor's dims and data type agree with the bytes the file holds, attributes have the type the
op's schema gives; `check_inferred` refuses outputs that onnx shape inference sizes over the cap.
`precheck` runs before each node: it works out the sizes the op is about to allocate from its
inputs' shapes and static values and refuses, with `OnnxError`, anything over `MAX_ELEMENTS`.
`node_error` turns any other exception a handler raises into an `OnnxError` naming the node.
"""
from __future__ import annotations

import inspect
import math

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper

from . import host
from .errors import OnnxError, UnsupportedOpError

MAX_ELEMENTS = 1 << 31  # the largest tensor (in elements) a model may ask ember to allocate

_T = TensorProto
_KNOWN_TYPES = set(_T.DataType.values()) - {_T.UNDEFINED}
_BITS = {_T.INT4: 4, _T.UINT4: 4, _T.FLOAT4E2M1: 4, _T.INT2: 2, _T.UINT2: 2, _T.FLOAT6E2M3: 6, _T.FLOAT6E3M2: 6}
_ATTR_NAMES = {v: k for k, v in AttributeProto.AttributeType.items()}


def node_label(node, index: int, graph=None) -> str:
    """'node 3 "fc1" (Gemm) of graph "mlp"': how errors name a node."""
    name = f" {node.name!r}" if node.name else ""
    where = f" of graph {graph.name!r}" if graph is not None and graph.name else ""
    return f"node {index}{name} ({node.op_type}){where}"


def node_error(label: str, e: BaseException) -> OnnxError:
    """An OnnxError for exception `e` raised while running the node `label` names."""
    if isinstance(e, MemoryError):
        return OnnxError(f"{label}: ran out of memory ({str(e) or 'MemoryError'})")
    return OnnxError(f"{label}: {type(e).__name__}: {e}")


def check_shape(shape, what: str) -> None:
    """Refuse a shape with a negative dim or more than MAX_ELEMENTS elements."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise OnnxError(f"{what} {dims}: a negative dim")
    n = math.prod(d or 1 for d in dims)  # a 0-size dim does not excuse huge others (masks, loops over dims)
    if n > MAX_ELEMENTS:
        raise OnnxError(f"{what} {dims}: {math.prod(dims)} elements, over the {MAX_ELEMENTS}-element cap "
                        "(ember.onnx.checks.MAX_ELEMENTS)")


# ------------------------------------------------------------------ at load
def check_tensor(t: onnx.TensorProto, what: str) -> None:
    """Refuse a TensorProto whose dims, data type or data length disagree, before numpy reads it."""
    if t.data_location == _T.EXTERNAL or t.external_data:
        raise OnnxError(f"{what}: its data is in an external file that was not loaded "
                        "(load the model from its path, next to the data file)")
    if t.HasField("segment"):
        raise OnnxError(f"{what}: segmented tensors are not supported")
    if t.data_type not in _KNOWN_TYPES:
        raise OnnxError(f"{what}: unknown ONNX data type {t.data_type}")
    check_shape(t.dims, f"{what} has dims")
    n, kind = math.prod(t.dims), _T.DataType.Name(t.data_type)
    if t.HasField("raw_data"):
        if t.data_type == _T.STRING:
            raise OnnxError(f"{what}: a STRING tensor cannot have raw_data")
        bits = _BITS.get(t.data_type)
        want = -(-n * bits // 8) if bits else n * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        if len(t.raw_data) != want:
            raise OnnxError(f"{what}: dims {list(t.dims)} of {kind} need {want} bytes of raw_data, "
                            f"the file holds {len(t.raw_data)}")
        return
    if t.data_type in _BITS:
        return  # packed into int32_data; numpy_helper checks the count against dims
    field = helper.tensor_dtype_to_field(t.data_type)
    got = len(getattr(t, field))
    want = 2 * n if t.data_type in (_T.COMPLEX64, _T.COMPLEX128) else n
    if got != want:
        raise OnnxError(f"{what}: dims {list(t.dims)} of {kind} need {want} values in {field}, "
                        f"the file holds {got}")


def _check_attrs(node, label: str, opset: int | None) -> None:
    schema = _schema(node, opset)
    for a in node.attribute:
        if a.ref_attr_name:
            continue
        if a.type not in _ATTR_NAMES or a.type == AttributeProto.UNDEFINED:
            raise OnnxError(f"{label}: attribute {a.name!r} has no valid type ({a.type})")
        want = schema.attributes.get(a.name) if schema is not None else None
        if want is not None and want.type != a.type:
            raise OnnxError(f"{label}: attribute {a.name!r} is {_ATTR_NAMES[a.type]}, "
                            f"{node.op_type} wants {_ATTR_NAMES.get(int(want.type), want.type)}")


def check_graph(g, what: str, opsets: dict, outer=frozenset()) -> None:
    """Check `g` and its subgraphs: names in scope, tensor sizes, declared dims, attribute types."""
    for init in g.initializer:
        check_tensor(init, f"{what}: initializer {init.name!r}")
    for sp in g.sparse_initializer:
        check_tensor(sp.values, f"{what}: sparse initializer {sp.values.name!r} (values)")
        check_tensor(sp.indices, f"{what}: sparse initializer {sp.values.name!r} (indices)")
        check_shape(sp.dims, f"{what}: sparse initializer {sp.values.name!r} has dims")
    known = set(outer) | {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    known |= {i.values.name for i in g.sparse_initializer}
    for i, n in enumerate(g.node):
        label = node_label(n, i, g)
        for name in n.input:
            if name not in known:
                raise OnnxError(f"{what}: {label} reads {name!r}, which no input, initializer or earlier "
                                "node defines (truncated or corrupted?)")
        _check_attrs(n, f"{what}: {label}", opsets.get("" if n.domain in ("", "ai.onnx") else n.domain))
        for a in n.attribute:
            if a.HasField("t"):
                check_tensor(a.t, f"{what}: {label} attribute {a.name!r}")
            for j, t in enumerate(a.tensors):
                check_tensor(t, f"{what}: {label} attribute {a.name!r}[{j}]")
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                check_graph(sub, f"{what}: {label} attribute {a.name!r}", opsets, known)
        known.update(n.output)
    for o in g.output:
        if o.name not in known:
            raise OnnxError(f"{what}: graph output {o.name!r} is never produced (truncated or corrupted?)")


def check_model(model: onnx.ModelProto, what: str, opsets: dict) -> None:
    """Structural and size checks of a parsed model; raise OnnxError naming the first problem."""
    if not model.HasField("graph") or model.ir_version <= 0:
        raise OnnxError(f"{what} is not an ONNX model (no graph or IR version; truncated or corrupted?)")
    if len(model.graph.output) == 0:
        raise OnnxError(f"{what}: the graph has no outputs (truncated or corrupted?)")
    check_graph(model.graph, what, opsets)


def check_inferred(graph, inferred, what: str) -> None:
    """Refuse a model whose shape inference gives some node's output more than MAX_ELEMENTS elements."""
    producer = {o: (i, n) for i, n in enumerate(graph.node) for o in n.output}
    for v in list(inferred.value_info) + list(inferred.output):
        dims = v.type.tensor_type.shape.dim if v.type.HasField("tensor_type") else ()
        if dims and all(d.HasField("dim_value") and d.dim_value >= 0 for d in dims) and v.name in producer:
            i, n = producer[v.name]
            check_shape([d.dim_value for d in dims],
                        f"{what}: {node_label(n, i, graph)} output {v.name!r} has inferred shape")


def subgraphs(g):
    """Every graph nested in the attributes of `g`'s nodes (not `g` itself), depth first."""
    for n in g.node:
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield sub
                yield from subgraphs(sub)


def _schema(node, opset):
    if node.domain not in ("", "ai.onnx") or opset is None or opset < 1:
        return None
    try:
        return onnx.defs.get_schema(node.op_type, opset, "")
    except Exception:  # noqa: BLE001 - an op or opset onnx does not know: the handler lookup reports it
        return None


def check_arity(fn, node, label: str, opset: int | None) -> None:
    """Refuse a node with fewer inputs than its handler needs or more than it takes.

    More inputs than the handler takes, but no more than the op's schema allows, is an optional
    input ember does not implement: UnsupportedOpError.
    """
    params = list(inspect.signature(fn).parameters.values())[1:]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    need, n = sum(p.default is p.empty for p in params), len(node.input)
    if need <= n <= len(params):
        return
    schema = _schema(node, opset)
    if schema is not None and len(params) < n <= schema.max_input and any(node.input[len(params):]):
        raise UnsupportedOpError(node.op_type, node.domain, opset, f"{label}: optional input {len(params)}")
    want = f"{need}" if need == len(params) else f"{need} to {len(params)}"
    raise OnnxError(f"{label}: {node.op_type} takes {want} inputs, the node has {n}")


# ------------------------------------------------------------------ before each node
def _np(t) -> np.ndarray:
    v = host.value(t)
    return np.asarray(v if v is not None else t.detach().numpy())


def _ints(t) -> list:
    return [int(v) for v in _np(t).reshape(-1)]


def _scalar(t) -> float:
    v = _np(t).reshape(-1)
    if v.size != 1:
        raise OnnxError(f"expected a scalar, got {v.size} values")
    return float(v[0])


def _broadcast(*shapes):
    n = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (n - len(s)) + tuple(s) for s in shapes]):
        big = [d for d in dims if d != 1]
        out.append(max(big) if big else 1)
    return out


def _window_sizes(ctx, x, k, transpose=False):
    """(padded input, output) spatial sizes of a conv / pool window op, from its attributes."""
    nd = len(k)
    s = list(ctx.attr("strides") or [1] * nd)
    d = list(ctx.attr("dilations") or [1] * nd)
    p = list(ctx.attr("pads") or [0] * (2 * nd))
    if len(s) != nd or len(d) != nd or len(p) != 2 * nd or x.ndim != nd + 2:
        raise OnnxError(f"kernel_shape {list(k)}, strides {s}, dilations {d} and pads {p} do not fit an "
                        f"input of shape {list(x.shape)}")
    if any(v < 1 for v in s + d) or any(v < 0 for v in k):
        raise OnnxError(f"strides {s} and dilations {d} must be positive, kernel_shape {list(k)} non-negative")
    eff = [(kk - 1) * dd + 1 for kk, dd in zip(k, d)]
    if transpose:
        op = list(ctx.attr("output_padding") or [0] * nd)
        out = [ss * (n - 1) + o + e for n, ss, o, e in zip(x.shape[2:], s, op, eff)]
        out = [max(a, b) for a, b in zip(out, list(ctx.attr("output_shape") or out)[-nd:])]
        return [o + 2 * e for o, e in zip(out, eff)], out
    same = ctx.attr("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER")
    padded = [n + max(p[i], 0) + max(p[i + nd], 0) + s[i] + (eff[i] if same else 0)  # + ceil_mode's extra
              for i, n in enumerate(x.shape[2:])]
    return padded, [max((n - e) // ss + 1, 0) for n, e, ss in zip(padded, eff, s)]


def _conv(ctx, x, w, b=None):
    k = list(ctx.attr("kernel_shape") or w.shape[2:])
    padded, out = _window_sizes(ctx, x, k, ctx.node.op_type == "ConvTranspose")
    c = w.shape[0] if ctx.node.op_type == "ConvTranspose" else x.shape[1]
    m = max(w.shape[0], w.shape[1] * max(int(ctx.attr("group", 1)), 1))
    return [x.shape[:2] + tuple(padded), (x.shape[0], m) + tuple(out), (c, math.prod(k), math.prod(out))]


def _pool(ctx, x):
    k = list(ctx.attr("kernel_shape") or [])
    padded, out = _window_sizes(ctx, x, k)
    return [x.shape[:2] + tuple(padded), x.shape[:2] + tuple(out) + (math.prod(k),)]


def _range(ctx, start, limit, delta):
    s, lim, d = _scalar(start), _scalar(limit), _scalar(delta)
    if d == 0 or not all(map(math.isfinite, (s, lim, d))):
        raise OnnxError(f"Range({s}, {lim}, {d}) has no finite length")
    return [(max(math.ceil((lim - s) / d), 0),)]


def _pad(ctx, x, pads=None, value=None, axes=None):
    p = _ints(pads) if pads is not None else list(ctx.attr("pads") or ctx.attr("paddings") or [])
    ax = _ints(axes) if axes is not None else list(range(x.ndim))
    k = len(p) // 2
    if len(p) != 2 * len(ax):
        raise OnnxError(f"pads {p} do not fit {len(ax)} axes of an input of shape {list(x.shape)}")
    out = list(x.shape)
    for i, a in enumerate(ax):
        out[a + x.ndim if a < 0 else a] += p[i] + p[i + k]
    return [out]


def _gather(ctx, x, idx):
    a = int(ctx.attr("axis", 0))
    a = a + x.ndim if a < 0 else a
    return [tuple(x.shape[:a]) + tuple(idx.shape) + tuple(x.shape[a + 1:])]


def _matmul(ctx, a, b):
    if a.ndim < 2 or b.ndim < 2:
        return [a.shape, b.shape]
    return [_broadcast(a.shape[:-2], b.shape[:-2]) + [a.shape[-2], b.shape[-1]]]


def _gemm(ctx, a, b, c=None):
    if a.ndim != 2 or b.ndim != 2:
        return []
    return [(a.shape[1] if ctx.attr("transA", 0) else a.shape[0], b.shape[0] if ctx.attr("transB", 0) else b.shape[1])]


def _compress(ctx, x, cond):
    if not ctx.has("axis"):
        return [(math.prod(cond.shape),)]
    a = int(ctx.attr("axis")) % max(x.ndim, 1)
    return [(math.prod(cond.shape),) + tuple(d for i, d in enumerate(x.shape) if i != a)]


def _elementwise(ctx, *xs):
    return [_broadcast(*[x.shape for x in xs if x is not None])] if any(x is not None for x in xs) else []


_SIZES = {
    "ConstantOfShape": lambda ctx, shape: [_ints(shape)],
    "Expand": lambda ctx, x, shape: [_ints(shape), _broadcast(x.shape, [max(v, 0) for v in _ints(shape)])],
    "Tile": lambda ctx, x, r: [[n * k for n, k in zip(x.shape, _ints(r))]],
    "Reshape": lambda ctx, x, shape=None: [[v for v in (_ints(shape) if shape is not None else ctx.attr("shape") or [])
                                             if v > 0]],  # 0 copies a dim, -1 is inferred
    "OneHot": lambda ctx, idx, depth, values: [tuple(idx.shape) + (int(_scalar(depth)),)],
    "Range": _range, "Pad": _pad, "Gather": _gather, "MatMul": _matmul, "Gemm": _gemm,
    "Conv": _conv, "ConvTranspose": _conv, "MaxPool": _pool, "AveragePool": _pool, "LpPool": _pool,
    "LRN": lambda ctx, x: [(x.shape[0], x.shape[1] + int(ctx.attr("size", 1))) + tuple(x.shape[2:]),
                           (math.prod(x.shape), int(ctx.attr("size", 1)))],
    "Concat": lambda ctx, *xs: [(sum(math.prod(x.shape) for x in xs if x is not None),)],
    "Compress": _compress,
}
for _op in ("Add", "Sub", "Mul", "Div", "Pow", "Mod", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual",
            "And", "Or", "Xor", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitShift", "Where", "Max", "Min", "Sum",
            "Mean", "PRelu"):
    _SIZES[_op] = _elementwise


def precheck(ctx, ins, label: str) -> None:
    """Refuse a node whose output (or working buffer) would be over MAX_ELEMENTS or have negative dims."""
    est = _SIZES.get(ctx.node.op_type)
    if est is None or ctx.node.domain not in ("", "ai.onnx"):
        return
    try:
        shapes = est(ctx, *ins)
    except OnnxError as e:
        raise OnnxError(f"{label}: {e}") from None
    for shape in shapes:
        check_shape(shape, f"{label} needs a tensor of shape")
