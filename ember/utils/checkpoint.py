"""Activation checkpointing (CMU-1, TB-2; PyTorch's `torch.utils.checkpoint`, reentrant form):
`checkpoint(fn, *args)` runs `fn` without keeping its intermediate activations, and runs it again
in the backward pass to get them, trading one more forward of `fn` for its activations' memory.

The forward runs under `no_grad`, so nothing inside `fn` is recorded; one node stands for the
whole call, holding only the arguments. Its backward detaches the arguments, runs `fn` again with
grad on, and backpropagates the incoming gradient through that fresh graph: the parameters `fn`
reads get their `.grad` there (as any backward does), and the arguments' gradients flow on to the
rest of the graph. The default generator's state is restored for the rerun
(`preserve_rng_state`), so dropout draws the same masks twice.

Outputs: one tensor, or a tuple / list of float tensors of one dtype (packed into one buffer for
the node and unpacked as views, so each output's gradient reaches the rerun). As in PyTorch's
reentrant checkpoint, parameters inside `fn` receive gradients through `.backward()`, not through
`ember.grad(...)` with respect to them. Inside an `ember.jit` trace `fn` is traced as it is and
its equations are marked: the jit's rematerialization pass (ember/jit/remat.py) copies the ones
the backward reads to just before the backward of the region, so the memory plan keeps one
region's activations at a time.
"""
from __future__ import annotations

import math
from typing import Callable

from .. import autograd
from .._core.state import TLS, enable_grad
from ..api.random import get_rng_state, set_rng_state
from ..ops import lax
from ..tensor import Tensor


def _outputs(out) -> tuple:
    """(the output tensors, whether fn returned a sequence); TypeError for anything else."""
    if isinstance(out, Tensor):
        return (out,), False
    if isinstance(out, (tuple, list)) and out and all(isinstance(o, Tensor) for o in out):
        if len({o.dtype for o in out}) == 1 and out[0].dtype.kind in "fc":
            return tuple(out), True
    raise TypeError("checkpoint: fn must return a tensor, or a tuple or list of float tensors of one dtype; "
                    f"got {type(out).__name__}" + (f" of {[type(o).__name__ for o in out]}"
                                                   if isinstance(out, (tuple, list)) else ""))


def _pack(outs: tuple) -> Tensor:
    return lax.concatenate([lax.reshape(o, (-1,)) for o in outs], 0) if len(outs) > 1 else outs[0]


class _Checkpoint(autograd.Function):
    always_records = True  # fn's own parameters need the rerun even when no argument needs a gradient

    @staticmethod
    def forward(ctx, fn, kwargs, preserve, *args):
        ctx.fn, ctx.kwargs, ctx.args = fn, kwargs, args
        ctx.rng = get_rng_state() if preserve else None
        outs, ctx.many = _outputs(fn(*args, **kwargs))
        ctx.shapes = [o.shape for o in outs]
        return _pack(outs)

    @staticmethod
    def backward(ctx, g):
        args = [a.detach().requires_grad_(a.requires_grad) if isinstance(a, Tensor) else a for a in ctx.args]
        now = get_rng_state() if ctx.rng is not None else None
        if ctx.rng is not None:
            set_rng_state(ctx.rng)
        try:
            with enable_grad():
                outs, _ = _outputs(ctx.fn(*args, **ctx.kwargs))
        finally:
            if now is not None:
                set_rng_state(now)
        grads, at = [g], 0
        if len(outs) > 1:  # the packed gradient, split back
            grads = []
            for shape in ctx.shapes:
                n = math.prod(shape)
                grads.append(lax.reshape(lax.slice(g, (at,), (at + n,), (1,)), shape))
                at += n
        pairs = [(o, gr) for o, gr in zip(outs, grads) if o.requires_grad]
        if pairs:
            autograd.backward([o for o, _ in pairs], [gr for _, gr in pairs], create_graph=TLS.grad_enabled)
        return (None, None, None) + tuple(a.grad if isinstance(a, Tensor) and a.requires_grad else None
                                          for a in args)


def checkpoint(fn: Callable, *args, preserve_rng_state: bool = True, **kwargs):
    """fn(*args, **kwargs), its activations recomputed in the backward pass instead of kept."""
    top = TLS.interpreters[-1]
    if TLS.grad_enabled and hasattr(top, "remat_region"):  # ember.jit tracing: mark it for the pass
        return top.remat_region(fn, args, kwargs)
    if not TLS.grad_enabled or top.level:
        return fn(*args, **kwargs)
    packed = _Checkpoint.apply(fn, kwargs, preserve_rng_state, *args)
    ctx = packed._node.custom[1] if packed._node is not None else None
    if ctx is None or not ctx.many:  # one output (or one that needs no gradient)
        return packed
    outs, at = [], 0
    for shape in ctx.shapes:
        n = math.prod(shape)
        outs.append(lax.reshape(lax.slice(packed, (at,), (at + n,), (1,)), shape))
        at += n
    return tuple(outs)


def checkpoint_sequential(functions, segments: int, x, *, preserve_rng_state: bool = True):
    """Run the modules (or callables) of `functions` in order on `x`, as `segments` checkpointed
    pieces (PyTorch's checkpoint_sequential; the last piece's activations are kept, as there)."""
    fs = list(functions.children()) if hasattr(functions, "children") else list(functions)
    if not 1 <= segments <= max(len(fs), 1):
        raise ValueError(f"checkpoint_sequential: segments must be 1..{len(fs)}, got {segments}")
    per = -(-len(fs) // segments)

    def run(chunk):
        def f(y):
            for m in chunk:
                y = m(y)
            return y
        return f
    chunks = [fs[i:i + per] for i in range(0, len(fs), per)]
    for chunk in chunks[:-1]:
        x = checkpoint(run(chunk), x, preserve_rng_state=preserve_rng_state)
    return run(chunks[-1])(x)
