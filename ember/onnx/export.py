"""ONNX export: `ember.onnx.export(model_or_fn, example_inputs, path)` through ember.jit's traced IR.

The model is traced (`ember.jit.trace`) and optimized (O2), then every primitive is converted by one
converter of `_export_ops.CONVERTERS`. Captured tensors (parameters, buffers) become initializers
named by their `state_dict` key. Graph passes then rewrite quantized layers into QuantizeLinear /
DequantizeLinear with int8 weights (QDQ, MD-8, `export_quant.py`), fold constant subgraphs into
initializers (MD-2) and per-channel affine ops after a convolution into its weights and bias
(Conv+BN folding, MD-3).
"""
from __future__ import annotations

import math
import os
import re

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .._core.files import atomic_write
from ..ir.core import Literal
from . import export_quant
from ._export_ops import CONVERTERS, i64
from .errors import OnnxError

MIN_OPSET = 17
_FOLD_MAX_ELEMENTS = 1 << 22
_AFFINE = ("Add", "Sub", "Mul", "Div")
_FOLDED = re.compile(r"\.folded(_\d+)?$")


class ExportError(OnnxError):
    """A model that cannot be exported to ONNX: an unsupported primitive or option."""


def _key(aval):
    if aval.weak:
        k = aval.dtype.kind
        return "b" if k == "b" else "i" if k in "ui" else "f"
    return aval.dtype


class _Context:
    """Converter state: nodes, initializers, ONNX names, dtypes, producing equations and dynamic dims of values."""

    def __init__(self, opset: int, sym_sizes: dict, sym_src: dict):
        self.opset = opset
        self.nodes: list = []
        self.inits: dict = {}
        self.dtypes: dict = {}
        self.names: dict = {}
        self.producers: dict = {}
        self.dyns: dict = {}
        self.sym_sizes, self.sym_src = sym_sizes, sym_src
        self._sym_tensor: dict = {}
        self._n = 0

    # ---- names and values
    def fresh(self, base: str) -> str:
        self._n += 1
        return f"/{base}_{self._n}"

    def const(self, arr, name: str | None = None) -> str:
        arr = np.asarray(arr)
        name = name or self.fresh("const")
        self.inits[name] = arr
        self.dtypes[name] = arr.dtype
        return name

    def node(self, op: str, inputs: list, **attrs) -> str:
        out = self.fresh(op)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def np_dtype(self, name: str) -> np.dtype:
        return np.dtype(self.dtypes[name])

    @staticmethod
    def onnx_type(dtype) -> int:
        return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    @staticmethod
    def onnx_tensor(arr: np.ndarray):
        return numpy_helper.from_array(arr)

    # ---- dynamic dims: per value, per dim, None (static) or a sorted tuple of symbols
    def dyn_of(self, a) -> list:
        if isinstance(a, Literal):
            return []
        return list(self.dyns.get(a) or [None] * len(a.aval.shape))

    def set_dyn(self, var, dyn) -> None:
        self.dyns[var] = [tuple(d) if d is not None else None for d in dyn]

    def sym_size(self, syms) -> int:
        return math.prod(self.sym_sizes[s] for s in syms)

    def _dim(self, size: int, syms) -> str:
        parts = []
        for s in syms:
            if s not in self._sym_tensor:
                src, axis = self.sym_src[s]
                self._sym_tensor[s] = self.node("Shape", [src], start=axis, end=axis + 1)
            parts.append(self._sym_tensor[s])
        factor = size // self.sym_size(syms)
        if factor != 1:
            parts.append(self.const(i64([factor])))
        out = parts[0]
        for p in parts[1:]:
            out = self.node("Mul", [out, p])
        return out

    def shape_tensor(self, shape, dyn) -> str:
        """A 1-D int64 tensor holding `shape`, with dynamic dims read from the inputs' shapes."""
        if all(d is None for d in dyn):
            return self.const(i64(list(shape)))
        parts = [self.const(i64([s])) if d is None else self._dim(s, d) for s, d in zip(shape, dyn)]
        return self.node("Concat", parts, axis=0)

    def unsupported(self, eqn, detail: str):
        raise ExportError(f"cannot export primitive {eqn.prim.name!r} (at {eqn.loc or '?'}): {detail}")

    # ---- equations
    def convert(self, eqn) -> None:
        fn = CONVERTERS.get(eqn.prim.name)
        if fn is None:
            self.unsupported(eqn, "ember has no ONNX converter for it")
        ins, compute = self._inputs(eqn)
        try:
            out = fn(self, eqn, *ins)
        except (ExportError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - named with the primitive and the user's line
            raise ExportError(f"cannot export primitive {eqn.prim.name!r} (at {eqn.loc or '?'}): "
                              f"{type(e).__name__}: {e}") from e
        want = np.dtype(eqn.out.aval.dtype.np)
        exact = compute is None or want == np.bool_ or eqn.prim.name in ("argmax", "argmin", "convert", "full", "iota")
        natural = want if exact else np.dtype(compute.np)
        if out in self.inits and self.inits[out].dtype != want:
            out = self.const(self.inits[out].astype(want))
        elif natural != want:
            out = self.node("Cast", [out], to=self.onnx_type(want))
        self.dtypes[out] = want
        self.names[eqn.out] = out
        self.producers[eqn.out] = eqn

    def _inputs(self, eqn):
        prim, avals = eqn.prim, [a.aval for a in eqn.inputs]
        pa = prim.promote_args
        idx = tuple(range(len(avals))) if pa is None else tuple(pa)
        compute = prim.resolve_dtypes(tuple(_key(avals[i]) for i in idx))[0] if idx and avals else None
        names = []
        for i, a in enumerate(eqn.inputs):
            target = np.dtype(compute.np if compute is not None and i in idx else a.aval.dtype.np)
            if isinstance(a, Literal):
                name = self.const(np.asarray(a.value, target))
            else:
                name = self.names[a]
                if self.np_dtype(name) != target:
                    if name in self.inits:
                        name = self.const(self.inits[name].astype(target))
                    else:
                        name = self.node("Cast", [name], to=self.onnx_type(target))
                        self.dtypes[name] = target
            names.append(name)
        return names, compute


# ---------------------------------------------------------------- graph passes
def _eval_node(node, inits: dict, opset: int):
    from onnx.reference import ReferenceEvaluator
    g = helper.make_graph([node], "fold", [], [helper.make_empty_tensor_value_info(o) for o in node.output],
                          initializer=[numpy_helper.from_array(inits[i], i) for i in dict.fromkeys(node.input) if i])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return [np.asarray(v) for v in ReferenceEvaluator(m).run(None, {})]


def fold_constants(nodes: list, inits: dict, opset: int, outputs: list) -> list:
    """Evaluate every node whose inputs are all initializers; its results become initializers (MD-2).

    A result computed from one named tensor (a parameter) is named after it: `<name>.folded`."""
    uses: dict = {}
    for name in [i for n in nodes for i in n.input] + list(outputs):
        uses[name] = uses.get(name, 0) + 1
    alias, out = {}, []
    for n in nodes:
        for k, name in enumerate(n.input):
            if name in alias:
                n.input[k] = alias[name]
        if n.input and n.op_type not in export_quant.NO_FOLD and all(i in inits for i in n.input if i):
            try:
                vals = _eval_node(n, inits, opset)
            except Exception:  # noqa: BLE001 - leave the node to the runtime
                vals = None
            if vals is not None and sum(v.size for v in vals) <= _FOLD_MAX_ELEMENTS:
                named = [i for i in dict.fromkeys(n.input) if i and not i.startswith("/") and inits[i].ndim]
                if len(vals) == 1 and len(named) == 1 and n.output[0] not in outputs:
                    name = _folded_name(named[0], inits, uses)
                    alias[n.output[0]] = name
                    uses[name] = uses.get(n.output[0], 0)
                    inits[name] = np.asarray(vals[0], order="C")
                else:
                    for name, v in zip(n.output, vals):
                        inits[name] = np.asarray(v, order="C")
                continue
        out.append(n)
    return out


def _channel_vector(c: np.ndarray, rank: int, channels: int):
    if c.ndim > rank:
        return None
    full = c.reshape((1,) * (rank - c.ndim) + c.shape)
    if any(s != 1 for i, s in enumerate(full.shape) if i != 1) or full.shape[1] not in (1, channels):
        return None
    return np.broadcast_to(full.reshape(-1), (channels,))


def _folded_name(name: str, inits: dict, uses: dict) -> str:
    """`name.folded`, reused in place when only the folded node reads it, else made unique."""
    if _FOLDED.search(name) and uses.get(name, 0) <= 1:
        return name
    name = base = _FOLDED.sub("", name) + ".folded"
    k = 0
    while name in inits:
        k += 1
        name = f"{base}_{k}"
    return name


def _scale_out_channels(w: np.ndarray, vec: np.ndarray, op_type: str, group: int, divide: bool) -> np.ndarray:
    """w times (or over) vec along its output channels: Conv (O, I/g, *k), ConvTranspose (I, O/g, *k)."""
    if op_type == "Conv":
        view, col = w, vec.reshape((-1,) + (1,) * (w.ndim - 1))
    else:
        view = w.reshape((group, w.shape[0] // group) + w.shape[1:])
        col = vec.reshape((group, 1, w.shape[1]) + (1,) * (w.ndim - 2))
    return (view / col if divide else view * col).reshape(w.shape)


def _bias_name(wbase: str) -> str:
    stem = _FOLDED.sub("", wbase)
    return stem[:-len("weight")] + "bias" if stem == "weight" or stem.endswith(".weight") else stem + ".bias"


def fold_conv_affine(nodes: list, inits: dict, outputs: list) -> list:
    """Fold per-channel Add/Sub/Mul/Div by constants after a Conv or ConvTranspose into its weights and
    bias (MD-3)."""
    nodes = list(nodes)
    changed = True
    while changed:
        changed = False
        uses: dict = {}
        for n in nodes:
            for i in n.input:
                uses[i] = uses.get(i, 0) + 1
        producers = {o: k for k, n in enumerate(nodes) for o in n.output}
        for k, n in enumerate(nodes):
            if n.op_type not in ("Conv", "ConvTranspose") or n.input[1] not in inits \
                    or (len(n.input) > 2 and n.input[2] not in inits):
                continue
            y = n.output[0]
            if y in outputs or uses.get(y) != 1:
                continue
            j = next(j for j in range(k + 1, len(nodes)) if y in nodes[j].input)
            c = nodes[j]
            if c.op_type not in _AFFINE or len(c.input) != 2 or c.input[0] == c.input[1]:
                continue
            other = c.input[1] if c.input[0] == y else c.input[0]
            if other not in inits or other in producers or (c.op_type in ("Sub", "Div") and c.input[0] != y):
                continue
            w = inits[n.input[1]]
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            channels = w.shape[0] if n.op_type == "Conv" else w.shape[1] * group
            vec = _channel_vector(inits[other], w.ndim, channels)
            if vec is None or inits[other].dtype != w.dtype:
                continue
            b = inits[n.input[2]] if len(n.input) > 2 else np.zeros(channels, w.dtype)
            if c.op_type == "Add":
                b = b + vec
            elif c.op_type == "Sub":
                b = b - vec
            else:
                w = _scale_out_channels(w, vec, n.op_type, group, c.op_type == "Div")
                b = b / vec if c.op_type == "Div" else b * vec
            wbase = n.input[1] if not n.input[1].startswith("/") else f"{n.name}.weight"
            bbase = n.input[2] if len(n.input) > 2 and not n.input[2].startswith("/") else \
                other if c.op_type == "Add" and not other.startswith("/") else _bias_name(wbase)
            wn, bn = (_folded_name(base, inits, uses) for base in (wbase, bbase))
            if c.op_type in ("Add", "Sub"):  # only the bias changes
                wn = n.input[1]
            inits[wn], inits[bn] = np.asarray(w, w.dtype, order="C"), np.asarray(b, w.dtype, order="C")
            conv = helper.make_node(n.op_type, [n.input[0], wn, bn], [c.output[0]], name=n.name)
            conv.attribute.extend(n.attribute)
            nodes[k] = conv
            del nodes[j]
            changed = True
            break
    return nodes


def prune(nodes: list, inits: dict, outputs: list) -> list:
    """Drop nodes no output needs, and initializers no node reads."""
    live = set(outputs)
    keep = []
    for n in reversed(nodes):
        if any(o in live for o in n.output):
            keep.append(n)
            live.update(i for i in n.input if i)
    for name in [k for k in inits if k not in live]:
        del inits[name]
    return keep[::-1]


def _rename_outputs(nodes: list, outputs: list, out_names: list, fixed: set) -> list:
    produced = {o for n in nodes for o in n.output}
    renames, extra = {}, []
    for src, want in zip(outputs, out_names):
        if src in produced and src not in fixed and src not in renames:
            renames[src] = want
        else:
            extra.append((src, want))
    for n in nodes:
        for seq in (n.input, n.output):
            for i, name in enumerate(seq):
                if name in renames:
                    seq[i] = renames[name]
    return nodes + [helper.make_node("Identity", [renames.get(src, src)], [want], name=f"/Identity_{want}")
                    for src, want in extra]


# ---------------------------------------------------------------- the entry point
def _value_info(name: str, dtype, shape, dims: dict):
    return helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
        [dims.get(i, s) for i, s in enumerate(shape)])


def _axes_map(spec, name: str) -> dict:
    if spec is None:
        return {}
    if isinstance(spec, dict):
        return {int(k): str(v) for k, v in spec.items()}
    return {int(a): f"{name}_dynamic_axes_{a}" for a in spec}


def _bn_in_training(model, traced) -> bool:
    from ..nn import BatchNorm1d, BatchNorm2d
    mods = list(traced.modules) + (list(model.modules()) if hasattr(model, "modules") else [])
    return any(isinstance(m, (BatchNorm1d, BatchNorm2d)) and m.training for m in mods)


def _dynamic_symbols(args, in_names: list, dynamic_axes: dict) -> tuple:
    """(traced size per symbol, (input, axis) each symbol is read from, {input index: {axis: symbol}})."""
    sym_sizes, sym_src, in_dims = {}, {}, {}
    for i, (name, a) in enumerate(zip(in_names, args)):
        in_dims[i] = _axes_map(dynamic_axes.get(name), name)
        for axis, sym in in_dims[i].items():
            if not 0 <= axis < a.ndim:
                raise ExportError(f"dynamic axis {axis} of input {name!r} is out of range for shape {tuple(a.shape)}")
            if sym_sizes.setdefault(sym, a.shape[axis]) != a.shape[axis]:
                raise ExportError(f"dynamic axis {sym!r} has sizes {sym_sizes[sym]} and {a.shape[axis]} "
                                  "in the example inputs")
            sym_src.setdefault(sym, (name, axis))
    return sym_sizes, sym_src, in_dims


def export(model_or_fn, example_inputs, path, *, opset: int = 17, input_names=None, output_names=None,
           dynamic_axes: dict | None = None, constant_folding: bool = True,
           fold_conv_bn: bool = True) -> onnx.ModelProto:
    """Export a Module or function, traced at `example_inputs`, to an ONNX file; returns the ModelProto."""
    from .._core.state import no_grad
    from ..jit.passes import optimize
    from ..jit.trace import trace
    from ..ir.core import Graph
    from ..tensor import Tensor

    max_opset = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= max_opset:
        raise ExportError(f"opset {opset!r} is not supported: ember exports opset {MIN_OPSET} to {max_opset}")
    args = (example_inputs,) if isinstance(example_inputs, Tensor) else tuple(example_inputs)
    if not all(isinstance(a, Tensor) for a in args):
        raise ExportError("example_inputs must be a Tensor or a tuple of Tensors")
    with no_grad():
        tr = trace(model_or_fn, args)
    if fold_conv_bn and _bn_in_training(model_or_fn, tr):
        raise ExportError("Conv+BN folding is for deployment only and the model's BatchNorm is in training mode: "
                          "call model.eval() first, or pass fold_conv_bn=False")
    g = tr.graph
    g = optimize(Graph(g.constvars, g.consts, g.invars, g.eqns, g.outvars[:tr.n_user]), 2)

    n_in, n_out = len(args), len(g.outvars)
    in_names = list(input_names or (["input"] if n_in == 1 else [f"input_{i}" for i in range(n_in)]))
    out_names = list(output_names or (["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]))
    if len(in_names) != n_in or len(out_names) != n_out:
        raise ExportError(f"got {len(in_names)} input names for {n_in} inputs and {len(out_names)} output "
                          f"names for {n_out} outputs")
    dynamic_axes = dynamic_axes or {}
    unknown = set(dynamic_axes) - set(in_names) - set(out_names)
    if unknown:
        raise ExportError(f"dynamic_axes names {sorted(unknown)} are neither input nor output names")

    sym_sizes, sym_src, in_dims = _dynamic_symbols(args, in_names, dynamic_axes)
    ctx = _Context(opset, sym_sizes, sym_src)
    param_names = {}
    if hasattr(model_or_fn, "state_dict"):
        param_names = {id(t): k for k, t in model_or_fn.state_dict(keep_vars=True).items()}
    for v, c in zip(g.constvars, g.consts):
        ctx.names[v] = ctx.const(np.asarray(c))
    graph_inputs = []
    for v, src in zip(g.invars, tr.sources):
        if src[0] == "arg":
            i = src[1]
            name = in_names[i]
            ctx.names[v], ctx.dtypes[name] = name, np.dtype(v.aval.dtype.np)
            ctx.set_dyn(v, [in_dims[i].get(ax) and (in_dims[i][ax],) for ax in range(len(v.aval.shape))])
            graph_inputs.append(_value_info(name, v.aval.dtype.np, v.aval.shape, in_dims[i]))
        elif src[0] == "obj":
            t = src[1]
            name = param_names.get(id(t))
            if name is None or name in ctx.inits:
                name = ctx.fresh("captured")
            ctx.names[v] = ctx.const(np.array(t.detach().numpy(), copy=True), name)
        else:
            raise ExportError("the traced function reads a .grad, which an ONNX model cannot")
    for eqn in g.eqns:
        ctx.convert(eqn)

    outputs, out_vis = [], []
    for a, name in zip(g.outvars, out_names):
        if isinstance(a, Literal):
            outputs.append(ctx.const(np.asarray(a.value, a.aval.dtype.np)))
            dyn = []
        else:
            outputs.append(ctx.names[a])
            dyn = ctx.dyn_of(a)
        dims = {i: d[0] if len(d) == 1 and ctx.sym_size(d) == a.aval.shape[i] else None
                for i, d in enumerate(dyn) if d is not None}
        dims.update(_axes_map(dynamic_axes.get(name), name))
        out_vis.append(_value_info(name, a.aval.dtype.np, a.aval.shape, dims))

    nodes, inits = ctx.nodes, ctx.inits
    nodes = prune(nodes, inits, outputs)  # e.g. a weight chain a converter bypassed: nothing to fold
    nodes = prune(export_quant.to_qdq(nodes, inits, outputs, opset), inits, outputs)  # MD-8: quantized layers
    if constant_folding:
        nodes = fold_constants(nodes, inits, opset, outputs)
    if fold_conv_bn:
        nodes = fold_conv_affine(nodes, inits, outputs)
    nodes = prune(nodes, inits, outputs)
    nodes = _rename_outputs(nodes, outputs, out_names, set(inits) | set(in_names))

    tensors = [numpy_helper.from_array(np.asarray(v, order="C"), k) for k, v in inits.items()]
    graph = helper.make_graph(nodes, "ember", graph_inputs, out_vis, initializer=tensors)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="ember",
                              ir_version=helper.find_min_ir_version_for(opsets))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported graph is not valid ONNX: {e}") from e
    data = model.SerializeToString()
    atomic_write(os.fspath(path), lambda f: f.write(data))
    return model
