"""QDQ export of quantized models (MD-8): the graph pass `to_qdq` that `export` runs before folding.

Quantized layers (`ember.deploy.qat.QuantizedLinear` / `QuantizedConv2d`, from `qat.convert` or
`ember.deploy.qdq.quantize_static`) and `qdq.QuantStub` compute with two ember functions
(`ember.deploy.qat.dequantize_weight` and `quant_dequant`), which trace to fixed chains of ONNX
nodes. This pass finds those chains and replaces them:

- weights: ``Mul(Sub(Cast(W), Z), S)`` with W an int8/uint8 initializer, Z and S constants per
  tensor or along one axis -> ``DequantizeLinear(W, S, Z, axis)``; W stays an int8 initializer.
  A Transpose of it (nn.Linear) is folded into W and the axis; a per-channel constant added after
  a Conv on such a weight becomes the Conv's bias;
- activations: ``Mul(Sub(Min(Max(Add(Round(Mul(X, 1/S)), Z), qmin), qmax), Z), S)`` ->
  ``QuantizeLinear(X, S, Z) -> DequantizeLinear`` (uint8 or int8 by the range; a range narrower
  than the type's gets a Clip on the integers);
- ops that keep values on the grid of a dequantized input (Relu, written `x <= 0 ? 0 : x` by ember,
  MaxPool, Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Identity, Slice, a Concat of inputs
  with the same qparams: reflect padding) get a QuantizeLinear ->
  DequantizeLinear with the same qparams after them: exact, and the next layer then reads a
  dequantized input, the pattern onnxruntime fuses into QLinearConv / QLinearMatMul / QGemm.

`fold_constants` leaves DequantizeLinear nodes alone (`NO_FOLD`), so weights stay int8.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

NO_FOLD = ("DequantizeLinear",)
_GRID = {"Relu", "MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Slice"}
_TYPES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}
_CONST_MAX = 1 << 16


def _attr(node, name: str, default=None) -> Any:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


class _Graph:
    """Nodes with their producers, constant values of small computed tensors and fresh names."""

    def __init__(self, nodes: list, inits: dict, opset: int):
        self.inits, self.opset = inits, opset
        self._values: dict = {}
        self._n = 0
        self.reset(nodes)

    def reset(self, nodes: list) -> None:
        """Take a new node list (and index its producers and uses)."""
        self.nodes = list(nodes)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.uses: dict = {}
        self.consts = set(self.inits)  # names computed from initializers alone (the nodes are in order)
        for n in self.nodes:
            for i in n.input:
                self.uses[i] = self.uses.get(i, 0) + 1
            if n.input and n.op_type not in NO_FOLD and all(i in self.consts for i in n.input if i):
                self.consts.update(n.output)

    def fresh(self, base: str) -> str:
        self._n += 1
        return f"/QDQ_{base}_{self._n}"

    def value(self, name: str) -> np.ndarray | None:
        """The value of a constant (an initializer or small nodes over them), else None."""
        if name in self.inits:
            return self.inits[name]
        if name not in self.consts:
            return None
        if name not in self._values:
            self._values[name] = None
            n = self.producer[name]
            ins = {i: self.value(i) for i in n.input if i}
            if all(v is not None and v.size <= _CONST_MAX for v in ins.values()):
                from .export import _eval_node
                try:
                    self._values.update(zip(n.output, _eval_node(n, ins, self.opset)))
                except Exception:  # noqa: BLE001 - not a constant we can read
                    pass
        return self._values[name]

    def scalar(self, name: str) -> np.ndarray | None:
        v = self.value(name)
        return None if v is None or v.size != 1 else v.reshape(())

    def op(self, name: str, *types: str) -> onnx.NodeProto | None:
        n = self.producer.get(name)
        return n if n is not None and n.op_type in types else None

    def root(self, name: str) -> str | None:
        """The named initializer a constant was computed from (through one-input chains), if any."""
        while name not in self.inits or name.startswith("/"):
            n = self.producer.get(name)
            if n is None or not n.input:
                return None
            name = n.input[0]
        return name

    def init(self, src: str, arr: np.ndarray) -> str:
        """An initializer holding arr: `src` when it already does, else `<root of src>.folded` (made unique)."""
        arr = np.asarray(arr, order="C")
        if src in self.inits and _same(self.inits[src], arr):
            return src
        root = self.root(src)
        name = base = f"{root}.folded" if root else src
        k = 0
        while name in self.inits and not _same(self.inits[name], arr):
            k += 1
            name = f"{base}_{k}"
        self.inits[name] = arr
        return name


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def _make(op: str, inputs: list, output: str, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=f"{output}_{op}", **attrs)


def _pairs(node) -> tuple:
    a, b = node.input[0], node.input[1]
    return ((a, b), (b, a))


# ---------------------------------------------------------------- weights
def _axis_params(shape: tuple, s: np.ndarray, z: np.ndarray, dtype: np.dtype) -> tuple | None:
    """(scale, zero point in dtype, axis or None) for S and Z broadcast onto a tensor of `shape`."""
    rank = len(shape)
    if s.ndim > rank or z.ndim > rank or s.dtype != np.float32:
        return None
    sf, zf = (v.reshape((1,) * (rank - v.ndim) + v.shape) for v in (s, z))
    if any(d not in (1, shape[i]) for v in (sf, zf) for i, d in enumerate(v.shape)):
        return None
    lo, hi = _TYPES[dtype]
    if not (np.all(zf == np.round(zf)) and zf.min() >= lo and zf.max() <= hi and np.all(sf > 0)):
        return None
    axes = sorted({i for v in (sf, zf) for i, d in enumerate(v.shape) if d > 1})
    if not axes or (np.all(sf == sf.flat[0]) and np.all(zf == zf.flat[0])):
        return np.float32(sf.flat[0]).reshape(()), np.asarray(zf.flat[0]).astype(dtype).reshape(()), None
    if len(axes) > 1:
        return None
    ax, n = axes[0], shape[axes[0]]
    col = [n if i == ax else 1 for i in range(rank)]
    return (np.broadcast_to(sf, col).reshape(n).astype(np.float32),
            np.broadcast_to(zf, col).reshape(n).astype(dtype), ax)


def _weight(g: _Graph, m) -> tuple | None:
    """(W, S, Z, their sources, axis) when Mul node m dequantizes an int8 initializer."""
    for s_name, u_name in _pairs(m):
        u = g.op(u_name, "Sub")
        c = u and g.op(u.input[0], "Cast")
        s = c and g.value(s_name)
        if s is None or c is None:
            continue
        z = g.value(u.input[1])
        if z is None or c.input[0] not in g.inits or _attr(c, "to") != TensorProto.FLOAT:
            continue
        w = g.inits[c.input[0]]
        if w.dtype not in _TYPES:
            continue
        qp = _axis_params(w.shape, np.asarray(s), np.asarray(z), w.dtype)
        if qp is not None:
            return c.input[0], qp, s_name, u.input[1]
    return None


def _dequantize(g: _Graph, w: str, qp: tuple, s_src: str, z_src: str, out: str) -> onnx.NodeProto:
    scale, zp, axis = qp
    attrs = {} if axis is None else {"axis": axis}
    return _make("DequantizeLinear", [w, g.init(s_src, scale), g.init(z_src, zp)], out, **attrs)


def _transposed(g: _Graph, t) -> onnx.NodeProto | None:
    """DequantizeLinear(W^T, axis') for a Transpose of a dequantized int8 initializer."""
    d = g.op(t.input[0], "DequantizeLinear")
    if d is None or d.input[0] not in g.inits:
        return None
    w = g.inits[d.input[0]]
    perm = list(_attr(t, "perm") or range(w.ndim)[::-1])
    axis = _attr(d, "axis", 1) % w.ndim if g.inits[d.input[1]].ndim else None
    wt = g.init(d.input[0], np.ascontiguousarray(w.transpose(perm)))
    attrs = {} if axis is None else {"axis": perm.index(axis)}
    return _make("DequantizeLinear", [wt] + list(d.input[1:]), t.output[0], **attrs)


def _conv_bias(g: _Graph, a, outputs: set) -> onnx.NodeProto | None:
    """Conv(x, DQ(W)) + per-channel constant -> Conv(x, DQ(W), bias)."""
    from .export import _channel_vector
    for y, b_name in _pairs(a):
        conv = g.op(y, "Conv")
        if conv is None or len(conv.input) != 2 or g.uses.get(y) != 1 or y in outputs \
                or g.op(conv.input[1], "DequantizeLinear") is None:
            continue
        b = g.value(b_name)
        w = g.inits.get(g.producer[conv.input[1]].input[0])
        if b is None or w is None or b.dtype != np.float32:
            continue
        vec = _channel_vector(b, w.ndim, w.shape[0])
        if vec is None:
            continue
        new = helper.make_node("Conv", [conv.input[0], conv.input[1], g.init(g.root(b_name) or b_name,
                                                                           np.array(vec, np.float32))],
                               [a.output[0]], name=conv.name)
        new.attribute.extend(conv.attribute)
        return new
    return None


# ---------------------------------------------------------------- activations
def _clamp(g: _Graph, name: str) -> tuple | None:
    """(x, lo, hi) for Min(Max(x, lo), hi) or Max(Min(x, hi), lo) with scalar constants."""
    bounds, x = {}, name
    for _ in range(2):
        n = g.op(x, "Min", "Max")
        if n is None or len(n.input) != 2:
            return None
        for a, b in _pairs(n):
            v = g.scalar(b)
            if v is not None and g.value(a) is None:
                bounds[n.op_type], x = float(v), a
                break
        else:
            return None
    if set(bounds) != {"Min", "Max"}:
        return None
    return x, bounds["Max"], bounds["Min"]


def _activation(g: _Graph, m) -> tuple | None:
    """(X, S source, S, Z source, Z, qmin, qmax) when Mul node m ends a fake quantization of X."""
    for s_name, u_name in _pairs(m):
        u = g.op(u_name, "Sub")
        s = u and g.scalar(s_name)
        if s is None or u is None or s.dtype != np.float32 or not s > 0:
            continue
        z, cl = g.scalar(u.input[1]), _clamp(g, u.input[0])
        add = cl and g.op(cl[0], "Add")
        if z is None or add is None:
            continue
        for r_name, z2_name in _pairs(add):
            r, z2 = g.op(r_name, "Round"), g.scalar(z2_name)
            mul = r and g.op(r.input[0], "Mul")
            if mul is None or z2 is None or float(z2) != float(z):
                continue
            for x, inv_name in _pairs(mul):
                inv = g.scalar(inv_name)
                if inv is not None and g.value(x) is None and abs(float(inv) * float(s) - 1) < 1e-5:
                    return x, s_name, s, u.input[1], float(z), cl[1], cl[2]
    return None


def _qtype(lo: float, hi: float, z: float) -> np.dtype | None:
    if not (lo == int(lo) and hi == int(hi) and lo <= z <= hi and z == int(z)):
        return None
    for d, (a, b) in _TYPES.items():
        if a <= lo and hi <= b:
            return d
    return None


def _quant_nodes(g: _Graph, act: tuple, out: str) -> list | None:
    x, s_src, s, z_src, z, lo, hi = act
    d = _qtype(lo, hi, z)
    if d is None:
        return None
    sn = g.init(s_src, np.asarray(s, np.float32).reshape(()))
    zn = g.init(z_src, np.asarray(z).astype(d))
    q = g.fresh("QuantizeLinear")
    nodes = [_make("QuantizeLinear", [x, sn, zn], q)]
    if (lo, hi) != _TYPES[d]:
        c = g.fresh("Clip")
        bounds = [g.init(f"/QDQ_{k}", np.asarray(v).astype(d)) for k, v in (("qmin", lo), ("qmax", hi))]
        nodes.append(_make("Clip", [q] + bounds, c))
        q = c
    return nodes + [_make("DequantizeLinear", [q, sn, zn], out)]


# ---------------------------------------------------------------- requantization after grid-preserving ops
def _zero(g: _Graph, name: str) -> bool:
    v = g.value(name)
    return v is not None and v.size > 0 and not np.any(v)


def _grid_input(g: _Graph, n, act: dict) -> str | None:
    """The dequantized input whose grid node n keeps, or None."""
    if n.op_type in _GRID and n.input and n.input[0] in act and len(n.output) == 1:
        return n.input[0]
    if n.op_type == "Concat" and all(i in act and act[i] == act[n.input[0]] for i in n.input):
        return n.input[0]
    if n.op_type == "Max" and len(n.input) == 2:
        return next((a for a, b in _pairs(n) if a in act and _zero(g, b)), None)
    if n.op_type == "Where" and n.input[2] in act and _zero(g, n.input[1]):
        c = g.op(n.input[0], "LessOrEqual", "Less")
        if c is not None and c.input[0] == n.input[2] and _zero(g, c.input[1]):
            return n.input[2]
    return None


def _requantize(g: _Graph) -> list:
    act, out = {}, []
    for n in g.nodes:
        x = _grid_input(g, n, act) if n.input else None
        if n.op_type == "DequantizeLinear" and n.input[0] not in g.inits and g.value(n.input[1]) is not None \
                and g.value(n.input[1]).size == 1:
            act[n.output[0]] = list(n.input[1:])
        elif x is not None:
            y, mid = n.output[0], g.fresh(n.op_type)
            if n.op_type in ("Max", "Where"):
                n = _make("Relu", [x], mid)  # the same values on a dequantized (finite) input
            else:
                n.output[0] = mid
            q = g.fresh("QuantizeLinear")
            out += [n, _make("QuantizeLinear", [mid] + act[x], q), _make("DequantizeLinear", [q] + act[x], y)]
            act[y] = act[x]
            continue
        out.append(n)
    return out


# ---------------------------------------------------------------- the pass
def _rewrite(g: _Graph, fn: Callable) -> None:
    out = []
    for n in g.nodes:
        new = fn(n)
        out.extend(new if isinstance(new, list) else [new if new is not None else n])
    g.reset(out)


def to_qdq(nodes: list, inits: dict, outputs: list, opset: int) -> list:
    """Replace the quantized layers' float chains by QuantizeLinear / DequantizeLinear (see the module doc)."""
    g = _Graph(nodes, inits, opset)

    def weights_and_activations(n):
        if n.op_type != "Mul" or len(n.input) != 2:
            return None
        w = _weight(g, n)
        if w is not None:
            return _dequantize(g, w[0], w[1], w[2], w[3], n.output[0])
        act = _activation(g, n)
        return _quant_nodes(g, act, n.output[0]) if act is not None else None

    _rewrite(g, weights_and_activations)
    _rewrite(g, lambda n: _transposed(g, n) if n.op_type == "Transpose" else None)
    _rewrite(g, lambda n: _conv_bias(g, n, set(outputs)) if n.op_type == "Add" else None)
    return _requantize(g)
