"""Inference rewrites of an imported ONNX graph, as onnxruntime's default graph optimizations make
them: `fold_batchnorm` folds each inference-mode BatchNormalization into the Conv before it.

A folded model computes the same function with one elementwise pass less per convolution (the
normalization's sub, mul, add); its parameters are no longer the file's (the BatchNormalization's
scale, bias, mean and variance are gone into the Conv's weight and bias), so it is for inference:
`ember.onnx.load(path, fold_batchnorm=True)`.
"""
from __future__ import annotations

import collections

import numpy as np
import onnx
from onnx import numpy_helper


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def fold_batchnorm(model: onnx.ModelProto) -> tuple:
    """(a copy of `model` with Conv -> BatchNormalization pairs folded, how many were folded).

    A pair folds when the BatchNormalization is in inference mode with one output, its input is
    read by nothing else and is not a graph output, and the Conv's weight (and bias) and the
    normalization's four tensors are float initializers of the main graph. With s = scale /
    sqrt(var + eps), computed in float64: weight[o] * s[o], and (bias - mean) * s + B."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    readers = collections.Counter(i for n in g.node for i in n.input)
    readers.update(o.name for o in g.output)
    producer = {o: n for n in g.node for o in n.output}
    taken = set(inits) | {v.name for v in list(g.input) + list(g.output) + list(g.value_info)}
    taken |= {o for n in g.node for o in n.output}
    drop, new_inits, folded = set(), [], 0

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name
    for bn in g.node:
        if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx") or len(bn.input) != 5:
            continue
        if _attr(bn, "training_mode", 0) or len([o for o in bn.output if o]) != 1:
            continue
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") or readers[bn.input[0]] != 1:
            continue
        consts = [_constant(n, inits, producer) for n in list(conv.input[1:]) + list(bn.input[1:])]
        if any(c is None for c in consts):
            continue
        w, b = consts[0], (consts[1] if len(conv.input) > 2 and conv.input[2] else None)
        scale, beta, mean, var = (c.astype(np.float64) for c in consts[-4:])
        if w.dtype.kind != "f" or w.ndim < 3 or not all(a.shape == (w.shape[0],) for a in (scale, beta, mean, var)):
            continue
        s = scale / np.sqrt(var + float(_attr(bn, "epsilon", 1e-5)))
        w2 = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        b2 = (((b.astype(np.float64) if b is not None else 0.0) - mean) * s + beta).astype(w.dtype)
        wn, bn_name = fresh(conv.input[1] + "_bnfold"), fresh((conv.input[2] if b is not None else conv.name or "conv")
                                                              + "_bnfold_bias")
        new_inits += [numpy_helper.from_array(w2, wn), numpy_helper.from_array(b2, bn_name)]
        del conv.input[1:]
        conv.input.extend([wn, bn_name])
        conv.output[0] = bn.output[0]
        drop.add(id(bn))
        folded += 1
    if folded:
        keep = [n for n in g.node if id(n) not in drop]
        while True:  # constants (Constant, ConstantOfShape) nothing reads any more go too
            read = {i for n in keep for i in n.input} | {o.name for o in g.output}
            left = [n for n in keep if n.op_type not in _CONSTANT_OPS or any(o in read for o in n.output)]
            if len(left) == len(keep):
                break
            keep = left
        del g.node[:]
        g.node.extend(keep)
        g.initializer.extend(new_inits)
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        for sub in (n for n in g.node for a in n.attribute if a.type in (a.GRAPH, a.GRAPHS)):
            used |= {i for sn in _nodes(sub) for i in sn.input}  # names a subgraph reads from the outer scope
        gone = {t.name for t in g.initializer if t.name not in used}
        kept = [t for t in g.initializer if t.name not in gone]
        del g.initializer[:]
        g.initializer.extend(kept)
        inputs = [i for i in g.input if i.name not in gone]  # (older models list initializers as inputs too)
        if m.ir_version < 4:  # where every initializer must be a graph input
            inputs += [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in new_inits]
        del g.input[:]
        g.input.extend(inputs)
    return m, folded


_CONSTANT_OPS = ("Constant", "ConstantOfShape")


def _constant(name: str, inits: dict, producer: dict):
    """The array `name` always holds: an initializer, a Constant's tensor, or a ConstantOfShape of a
    constant shape; None for anything computed at run time."""
    if name in inits:
        return numpy_helper.to_array(inits[name])
    n = producer.get(name)
    if n is None or n.domain not in ("", "ai.onnx"):
        return None
    if n.op_type == "Constant":
        v = _attr(n, "value", None)
        return None if v is None else numpy_helper.to_array(v)
    if n.op_type == "ConstantOfShape":
        shape = _constant(n.input[0], inits, producer)
        v = _attr(n, "value", None)
        fill = numpy_helper.to_array(v).reshape(()) if v is not None else np.float32(0)
        return None if shape is None else np.full(tuple(int(d) for d in shape.reshape(-1)), fill, fill.dtype)
    return None


def _nodes(node):
    """Every node of the subgraphs of `node`, recursively."""
    for a in node.attribute:
        for sub in ([a.g] if a.type == a.GRAPH else list(a.graphs) if a.type == a.GRAPHS else []):
            for n in sub.node:
                yield n
                yield from _nodes(n)
