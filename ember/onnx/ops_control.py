"""ONNX control-flow and optional-value op handlers: Loop, Scan, OptionalHasElement and
OptionalGetElement (registered into `ops.OPS` when `ops` is imported).

Loop and Scan run their body graph eagerly once per iteration over the outer scope, so the trip
count and the loop condition are read at run time; the carried values stay ember tensors.
"""
from __future__ import annotations

import numpy as np

from ..ops import lax
from . import host
from .ops import _ax, const, register, static


def _run_body(ctx, graph, values):
    """Run `graph` with its inputs bound to `values` over the outer scope; return its outputs."""
    from .importer import _graph_tensors, run_graph
    env = dict(ctx.env)
    hit = (ctx.consts or {}).get(id(graph))
    env.update(hit[1] if hit is not None and hit[0] is graph else _graph_tensors(graph, "subgraph"))
    for inp, v in zip(graph.input, values):
        env[inp.name] = v
    run_graph(graph, env, ctx.opsets, None, ctx.value_info, ctx.consts)
    return [env[o.name] for o in graph.output]


def _stack(xs, axis):
    """Stack same-shaped tensors (or host values) along a new `axis`."""
    xs = [host.tensor(x) for x in xs]
    axis = _ax(axis, xs[0].ndim + 1)
    return lax.concatenate([lax.reshape(x, x.shape[:axis] + (1,) + x.shape[axis:]) for x in xs], axis)


def _slice_at(x, axis, i):
    lo, hi = [0] * x.ndim, list(x.shape)
    lo[axis], hi[axis] = i, i + 1
    return lax.reshape(lax.slice(x, lo, hi, [1] * x.ndim), x.shape[:axis] + x.shape[axis + 1:])


@register("Loop")
def loop(ctx, trip_count=None, cond=None, *carried):
    """Run the body while iteration < M and cond holds; (final carried values, stacked scan outputs)."""
    body = ctx.attr("body")
    m = int(static(trip_count).reshape(-1)[0]) if trip_count is not None else None
    go = bool(static(cond).reshape(-1)[0]) if cond is not None else True
    n_carried = len(carried)
    state, scans, i = list(carried), None, 0
    while go and (m is None or i < m):
        if m is None and cond is None:
            raise ctx.unsupported("a Loop with neither a trip count nor a condition")
        outs = _run_body(ctx, body, [host.Host(np.array(i, np.int64)), host.Host(np.array(go))] + state)
        go = bool(static(outs[0]).reshape(-1)[0]) if cond is not None else True
        state = list(outs[1:1 + n_carried])
        step = outs[1 + n_carried:]
        scans = [[s] for s in step] if scans is None else [acc + [s] for acc, s in zip(scans, step)]
        i += 1
    n_scan = len(body.output) - 1 - n_carried
    if n_scan and scans is None:
        raise ctx.unsupported("scan outputs of a Loop that runs no iteration")
    return tuple(state) + tuple(_stack(acc, 0) for acc in (scans or []))


def _scan(ctx, states, xs, in_axes, in_dirs, out_axes, out_dirs):
    """Scan-9 semantics over already-split state and scan-input tensors."""
    body = ctx.attr("body")
    n = xs[0].shape[in_axes[0]] if xs else 0
    if any(x.shape[a] != n for x, a in zip(xs, in_axes)):
        raise ctx.unsupported("scan inputs of different lengths")
    state, scans = list(states), []
    for t in range(n):
        elems = [_slice_at(x, a, n - 1 - t if d else t) for x, a, d in zip(xs, in_axes, in_dirs)]
        outs = _run_body(ctx, body, state + elems)
        state, step = list(outs[:len(states)]), outs[len(states):]
        scans.append(step)
    k = len(body.output) - len(states)
    if k and not scans:
        raise ctx.unsupported("scan outputs of a Scan over no elements")
    res = []
    for j in range(k):
        seq = [s[j] for s in scans]
        if out_dirs[j]:
            seq = seq[::-1]
        res.append(_stack(seq, out_axes[j]))
    return state, res


@register("Scan", since=9)
def scan(ctx, *inputs):
    """Scan-9+: iterate the body over scan inputs along their axes, carrying the state variables."""
    m = ctx.attr("num_scan_inputs")
    states, xs = list(inputs[:len(inputs) - m]), list(inputs[len(inputs) - m:])
    k = len(ctx.attr("body").output) - len(states)
    in_axes = [_ax(a, x.ndim) for a, x in zip(ctx.attr("scan_input_axes") or [0] * m, xs)]
    in_dirs = ctx.attr("scan_input_directions") or [0] * m
    out_axes = ctx.attr("scan_output_axes") or [0] * k
    out_dirs = ctx.attr("scan_output_directions") or [0] * k
    state, res = _scan(ctx, states, xs, in_axes, in_dirs, out_axes, out_dirs)
    return tuple(state) + tuple(res)


@register("Scan", since=8)
def scan_8(ctx, seq_lens=None, *inputs):
    """Scan-8: batch axis 0, scan axis 1, one Scan-9 run per batch entry."""
    m = ctx.attr("num_scan_inputs")
    states, xs = list(inputs[:len(inputs) - m]), list(inputs[len(inputs) - m:])
    batch = (xs[0] if xs else states[0]).shape[0]
    if seq_lens is not None and (static(seq_lens).reshape(-1) != xs[0].shape[1]).any():
        raise ctx.unsupported("sequence_lens shorter than the scan axis")
    k = len(ctx.attr("body").output) - len(states)
    dirs = ctx.attr("directions") or [0] * m
    per = [_scan(ctx, [_slice_at(s, 0, b) for s in states], [_slice_at(x, 0, b) for x in xs],
                 [0] * m, dirs, [0] * k, [0] * k) for b in range(batch)]
    return tuple(_stack([p[0][i] for p in per], 0) for i in range(len(states))) + \
        tuple(_stack([p[1][j] for p in per], 0) for j in range(k))


@register("OptionalHasElement", since=15)
def optional_has_element(ctx, x=None):
    """True when the (optional) input is present."""
    return const(np.array(x is not None))


@register("OptionalGetElement", since=15)
def optional_get_element(ctx, x=None):
    """The tensor inside a present optional (a plain tensor passes through)."""
    if x is None:
        raise ctx.unsupported("an empty optional")
    return x
