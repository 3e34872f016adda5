"""Reading an ONNX model and running its graph eagerly with ember ops."""
from __future__ import annotations

import os
import re

import numpy as np
import onnx
from onnx import numpy_helper

from ..tensor import from_numpy as _from_numpy
from .._core import dtypes as dt
from .._core.errors import ConcretizationError
from ..nn.module import Module
from ..nn.parameter import Parameter
from ..tensor import Tensor
from . import checks, host
from .errors import OnnxError, UnsupportedOpError
from .ops import Ctx, lookup

try:  # protobuf's parse error; onnx re-raises it on a damaged file
    from google.protobuf.message import DecodeError as _DecodeError
except ImportError:  # pragma: no cover
    _DecodeError = Exception

DEFAULT_DOMAINS = ("", "ai.onnx")


def _describe(src) -> str:
    if isinstance(src, (str, os.PathLike)):
        return f"ONNX file {os.fspath(src)!r}"
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"ONNX model bytes ({len(src)} bytes)"
    return "ONNX ModelProto"


def load_model_proto(src) -> onnx.ModelProto:
    """Parse `src` (path, bytes or ModelProto) and check it is a whole model; raise OnnxError if not."""
    what = _describe(src)
    if isinstance(src, onnx.ModelProto):
        model = src
    else:
        try:
            if isinstance(src, (bytes, bytearray, memoryview)):
                model = onnx.load_model_from_string(bytes(src))
            else:
                path = os.fspath(src)
                if not os.path.exists(path):
                    raise OnnxError(f"{what}: no such file")
                if os.path.getsize(path) == 0:
                    raise OnnxError(f"{what}: the file is empty")
                model = onnx.load(path)
        except OnnxError:
            raise
        except _DecodeError as e:
            raise OnnxError(f"{what} is truncated or corrupted: protobuf could not parse it ({e})") from None
        except Exception as e:  # noqa: BLE001 - onnx raises many types for damaged files / external data
            raise OnnxError(f"{what} could not be read: {type(e).__name__}: {e}") from None
    checks.check_model(model, what, _opsets(model))
    return model


def _opsets(model: onnx.ModelProto) -> dict:
    out = {}
    for imp in model.opset_import:
        dom = "" if imp.domain in DEFAULT_DOMAINS else imp.domain
        out[dom] = imp.version
    if "" not in out:
        out[""] = 1 if model.ir_version < 3 else onnx.defs.onnx_opset_version()
    return out


def to_tensor(arr: np.ndarray, what: str = "ONNX tensor") -> Tensor:
    """An ember tensor holding a copy of a numpy array (dtype kept)."""
    arr = np.array(arr, copy=True, order="C")
    if arr.dtype not in dt._BY_NP:
        raise OnnxError(f"{what}: dtype {arr.dtype} has no ember dtype")
    return _from_numpy(arr)


class OnnxModule(Module):
    """An imported ONNX graph as an ember Module.

    Float initializers are Parameters (so `loss.backward()` fills their `.grad`), integer and bool
    initializers are buffers; `onnx_names` maps each ONNX initializer name to its attribute name
    (ONNX names may contain '.', '/' or ':'). `input_names` / `output_names` are the graph's.
    Call with positional tensors in `input_names` order, keyword tensors, or one dict; numpy
    arrays are accepted. Returns one tensor for a one-output graph, else a tuple.
    """

    def __init__(self, model: onnx.ModelProto, *, source: str = "ONNX ModelProto", check_ops: bool = True):
        super().__init__()
        d = self.__dict__
        d["model"] = model
        d["source"] = source
        d["opsets"] = _opsets(model)
        g = model.graph
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
        except Exception:  # noqa: BLE001 - inference is advisory
            inferred = None
        if inferred is not None:
            checks.check_inferred(g, inferred, source)
        vis = inferred if inferred is not None else g
        d["value_info"] = {v.name: v.type for v in list(vis.value_info) + list(vis.output) + list(vis.input)}
        inits = {i.name for i in g.initializer}
        d["input_names"] = [i.name for i in g.input if i.name not in inits]
        d["output_names"] = [o.name for o in g.output]
        d["onnx_names"] = {}
        used = set()
        for name, arr in graph_arrays(g, source):
            self._add_initializer(name, arr, used)
        d["consts"] = {id(sub): (sub, _graph_tensors(sub, source)) for sub in checks.subgraphs(g)}
        d["handlers"] = [self._handler(n, checks.node_label(n, i, g)) if check_ops else None
                         for i, n in enumerate(g.node)]
        if check_ops:
            for sub in checks.subgraphs(g):
                for i, n in enumerate(sub.node):
                    self._handler(n, checks.node_label(n, i, sub))

    def _add_initializer(self, name: str, arr: np.ndarray, used: set) -> None:
        attr = re.sub(r"\W", "_", name) or "_"
        if attr[0].isdigit():
            attr = "_" + attr
        base, k = attr, 1
        while attr in used or attr in type(self).__dict__ or hasattr(Module, attr):
            attr, k = f"{base}_{k}", k + 1
        used.add(attr)
        self.onnx_names[name] = attr
        t = to_tensor(arr, f"{self.source}: initializer {name!r}")
        if t.dtype.kind == "f":
            self.register_parameter(attr, Parameter(t))
        else:
            self.register_buffer(attr, t)

    def _handler(self, node: onnx.NodeProto, label: str):
        dom = "" if node.domain in DEFAULT_DOMAINS else node.domain
        opset = self.opsets.get(dom)
        fn = lookup(dom, node.op_type, opset if opset is not None else 1)
        if fn is None:
            raise UnsupportedOpError(node.op_type, dom, opset)
        checks.check_arity(fn, node, f"{self.source}: {label}", opset)
        return fn

    # ------------------------------------------------------------------ running
    def _bind_inputs(self, args, kwargs) -> dict:
        if len(args) == 1 and isinstance(args[0], dict) and not kwargs:
            kwargs, args = dict(args[0]), ()
        if len(args) > len(self.input_names):
            raise TypeError(f"the model takes {len(self.input_names)} inputs {self.input_names}, got {len(args)}")
        feeds = dict(zip(self.input_names, args))
        for k, v in kwargs.items():
            if k not in self.input_names:
                raise TypeError(f"unknown input {k!r}; the model's inputs are {self.input_names}")
            if k in feeds:
                raise TypeError(f"input {k!r} given twice")
            feeds[k] = v
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise TypeError(f"missing model inputs {missing}")
        return {k: v if isinstance(v, Tensor) else to_tensor(np.asarray(v)) for k, v in feeds.items()}

    def forward(self, *args, **kwargs):
        env = {"": None}
        for onnx_name, attr in self.onnx_names.items():
            env[onnx_name] = host.initializer(getattr(self, attr))
        env.update(self._bind_inputs(args, kwargs))
        run_graph(self.model.graph, env, self.opsets, self.handlers, self.value_info, self.consts)
        outs = tuple(host.tensor(env[n]) for n in self.output_names)
        return outs[0] if len(outs) == 1 else outs

    def extra_repr(self) -> str:
        return f"inputs={self.input_names}, outputs={self.output_names}, nodes={len(self.model.graph.node)}"


def _sparse_dense(sp) -> np.ndarray:
    vals = numpy_helper.to_array(sp.values)
    idx = numpy_helper.to_array(sp.indices)
    out = np.zeros(int(np.prod(sp.dims)), vals.dtype)
    if idx.ndim == 2:
        idx = np.ravel_multi_index(idx.T, tuple(sp.dims))
    out[idx] = vals
    return out.reshape(tuple(sp.dims))


def graph_arrays(g, what: str):
    """(name, numpy array) for each initializer (dense and sparse) of graph `g`; OnnxError if one is bad."""
    tensors = [(t.name, t) for t in g.initializer] + [(sp.values.name, sp) for sp in g.sparse_initializer]
    out = []
    for name, t in tensors:
        try:
            out.append((name, _sparse_dense(t) if isinstance(t, onnx.SparseTensorProto) else numpy_helper.to_array(t)))
        except Exception as e:  # noqa: BLE001 - sizes were checked; anything else is a damaged tensor
            raise OnnxError(f"{what}: initializer {name!r} of graph {g.name!r} cannot be decoded "
                            f"({type(e).__name__}: {e}); truncated or corrupted?") from None
    return out


def _graph_tensors(g, what: str) -> dict:
    return {k: to_tensor(v, f"{what}: initializer {k!r} of graph {g.name!r}") for k, v in graph_arrays(g, what)}


def run_graph(graph, env: dict, opsets: dict, handlers=None, value_info=None, consts=None) -> dict:
    """Run the nodes of `graph` in order over `env` (name -> Tensor or `host.Host`), adding their outputs.

    A node whose inputs are all host values is folded on the host (`host.fold`); any other gets them
    as constant tensors. Each node's sizes are checked (`checks.precheck`) before its handler runs;
    anything a handler raises other than an OnnxError becomes one naming the node
    (ConcretizationError passes, for jit).
    """
    for i, node in enumerate(graph.node):
        dom = "" if node.domain in DEFAULT_DOMAINS else node.domain
        opset = opsets.get(dom, 1)
        fn = handlers[i] if handlers is not None and handlers[i] is not None else None
        if fn is None:
            fn = lookup(dom, node.op_type, opset)
            if fn is None:
                raise UnsupportedOpError(node.op_type, dom, opset)
        label = checks.node_label(node, i, graph)
        try:
            ins = [env[n] if n else None for n in node.input]
            ctx = Ctx(node, opset, opsets, value_info or {}, env, consts)
            outs = None
            if host.foldable(node, ins):
                checks.precheck(ctx, ins, label)
                outs = host.fold(fn, ctx, ins)
            if outs is None:
                ins = [host.tensor(x) for x in ins]
                checks.precheck(ctx, ins, label)
                outs = fn(ctx, *ins)
        except (OnnxError, ConcretizationError):
            raise
        except Exception as e:  # noqa: BLE001 - a malformed node must not escape as TypeError/IndexError...
            raise checks.node_error(label, e) from e
        if not isinstance(outs, (tuple, list)):
            outs = (outs,)
        if len(outs) < len(node.output) and any(node.output[len(outs):]):
            raise OnnxError(f"{label}: gives {len(outs)} outputs, the model reads {len(node.output)}")
        for name, val in zip(node.output, outs):
            if name:
                env[name] = val
    return env


def run_subgraph(ctx, graph) -> tuple:
    """Run a subgraph (an If branch) over the outer scope plus its own initializers; return its outputs."""
    env = dict(ctx.env)
    hit = (ctx.consts or {}).get(id(graph))  # (graph, tensors) decoded at load; the graph kept alive with them
    env.update(hit[1] if hit is not None and hit[0] is graph else _graph_tensors(graph, "subgraph"))
    run_graph(graph, env, ctx.opsets, None, ctx.value_info, ctx.consts)
    return tuple(env[o.name] for o in graph.output)


def load(src, *, check_ops: bool = True, fold_batchnorm: bool = False) -> OnnxModule:
    """Import an ONNX model (a path, the file's bytes, or an `onnx.ModelProto`) as an OnnxModule;
    `fold_batchnorm` folds inference BatchNormalizations into the Convs before them, for
    inference (`optimize.fold_batchnorm`; onnxruntime's default optimizations do the same).

    Raises `OnnxError` for a file that is missing, empty, truncated or corrupted, or whose graph or
    tensor sizes do not hold together (`ember.onnx.checks`), and `UnsupportedOpError` (naming op,
    domain and opset) for an op ember does not implement. Running the module raises OnnxError
    naming the node for a node that fails or asks for more than `checks.MAX_ELEMENTS` elements.
    """
    model = load_model_proto(src)
    if fold_batchnorm:
        from .optimize import fold_batchnorm as fold
        model = fold(model)[0]
    return OnnxModule(model, source=_describe(src), check_ops=check_ops)
