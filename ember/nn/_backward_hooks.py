"""`Module.register_full_backward_hook` and `register_full_backward_pre_hook`'s machinery (PyTorch's
torch.utils.hooks.BackwardHook).

A hooked call wraps the module's tensor inputs and outputs in one identity node each side: the
tensors requiring grad are flattened, cast to a common dtype and concatenated into one "packed"
tensor, and the module sees (or returns) slices of it. The tape runs nodes newest first, so the
output node's gradient is complete before anything inside the module runs, and the input node's
before anything upstream: a tensor hook on each packed node sees every output gradient at once,
then every input gradient at once, and may replace the latter (as PyTorch's hook may). Backward
pre hooks run on the output node first, see grad_output and may replace it: the replacement is
the gradient the module's backward pass gets, and the grad_output the full backward hooks see.

As in PyTorch: grad_input has one entry per positional argument (None for non-tensors and tensors
that do not require grad; zeros for an input the outputs do not depend on), grad_output one per
output (None for an output no gradient reached); with no input requiring grad the hook fires from
the outputs' node with all-None grad_input and may not replace anything.
"""
from __future__ import annotations

import warnings
from typing import Callable

from .. import api as E
from .._core import dtypes as dt
from ..autograd import Function, register_tensor_hook
from ..ops import lax
from ..tensor import Tensor, from_array


class _Identity(Function):
    """x, as a new node whose gradient a tensor hook can read and replace."""

    @staticmethod
    def forward(ctx, x):
        return from_array(x._data, x.dtype)  # a new tensor object: Function.apply must not adopt x itself

    @staticmethod
    def backward(ctx, g):
        return g


def _common(ts: list) -> dt.DType:
    d = ts[0].dtype
    for t in ts[1:]:
        d = dt.promote_types(d, t.dtype)
    return d


def _pack(ts: list) -> Tensor:
    """One fresh tensor holding every tensor of `ts` (flattened, in their common dtype)."""
    if len(ts) == 1:
        return _Identity.apply(ts[0])
    d = _common(ts)
    flat = [lax.reshape(t if t.dtype is d else lax.convert(t, d), (t.numel(),)) for t in ts]
    return _Identity.apply(E.cat(flat, 0))


def _split(p: Tensor, ts: list) -> list:
    """The pieces of packed `p` shaped and typed like `ts` (values, or gradients)."""
    if len(ts) == 1:
        return [p]
    out, off = [], 0
    for t in ts:
        n = t.numel()
        piece = lax.reshape(lax.slice(p, (off,), (off + n,), (1,)), tuple(t.shape))
        out.append(piece if piece.dtype is t.dtype else lax.convert(piece, t.dtype))
        off += n
    return out


def _merge(gs: list, ts: list, what: str = "backward hook returned a grad_input", of: str = "an input") -> Tensor:
    """The packed gradient of replacement gradients `gs` (None: zeros) for `ts`."""
    for g, t in zip(gs, ts):
        if g is not None and tuple(g.shape) != tuple(t.shape):
            raise RuntimeError(f"{what} of shape {tuple(g.shape)} for {of} of shape {tuple(t.shape)}")
    gs = [g if g is not None else lax.full(tuple(t.shape), 0, t.dtype) for g, t in zip(gs, ts)]
    if len(ts) == 1:
        return gs[0] if gs[0].dtype is ts[0].dtype else lax.convert(gs[0], ts[0].dtype)
    d = _common(ts)
    return E.cat([lax.reshape(g if g.dtype is d else lax.convert(g, d), (t.numel(),)) for g, t in zip(gs, ts)], 0)


class BackwardHook:
    """The state of one hooked module call: its inputs, outputs and the output gradients seen."""

    def __init__(self, module, hooks: list[Callable], pre_hooks: list[Callable] = ()):
        self.module = module
        self.hooks = hooks
        self.pre_hooks = list(pre_hooks)
        self.grad_outputs = None
        self.n_inputs = 0
        self.in_idx = None
        self.in_ts: list = []
        self.out_idx: list = []
        self.out_ts: list = []
        self.reached: list = []

    def setup_inputs(self, args: tuple) -> tuple:
        """The args the module's forward sees: inputs requiring grad become slices of one node."""
        self.n_inputs = len(args)
        idx = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]
        if not idx:
            return args
        self.in_idx, self.in_ts = idx, [args[i] for i in idx]
        packed = _pack(self.in_ts)
        register_tensor_hook(packed, self._input_hook)
        new = list(args)
        for i, t in zip(idx, _split(packed, self.in_ts)):
            new[i] = t
        return tuple(new)

    def setup_outputs(self, out):
        """The outputs the caller gets: those requiring grad become slices of one node."""
        single = not isinstance(out, tuple)
        outs = (out,) if single else out
        self.n_outputs = len(outs)
        idx = [i for i, o in enumerate(outs) if isinstance(o, Tensor) and o.requires_grad]
        if not idx:
            return out
        self.out_idx, self.out_ts = idx, [outs[i] for i in idx]
        packed = _pack(self.out_ts)
        register_tensor_hook(packed, self._output_hook)
        pieces = _split(packed, self.out_ts)
        self.reached = [len(pieces) == 1] * len(pieces)
        if len(pieces) > 1:
            for k, piece in enumerate(pieces):
                register_tensor_hook(piece, self._reached(k))
        new = list(outs)
        for i, t in zip(idx, pieces):
            new[i] = t
        return new[0] if single else tuple(new)

    def _reached(self, k: int) -> Callable:
        def mark(g):
            self.reached[k] = True
        return mark

    def _output_hook(self, g: Tensor):
        full = [None] * self.n_outputs
        for k, (i, gk) in enumerate(zip(self.out_idx, _split(g, self.out_ts))):
            if self.reached[k]:
                full[i] = gk
        self.grad_outputs = tuple(full)
        replaced = False
        for hook in self.pre_hooks:
            out = hook(self.module, self.grad_outputs)
            if out is None:
                continue
            out = (out,) if isinstance(out, Tensor) else tuple(out)
            if len(out) != len(self.grad_outputs):
                raise RuntimeError(f"Backward pre hook returned an invalid number of grad_output, got {len(out)}, "
                                   f"but expected {len(self.grad_outputs)}")
            self.grad_outputs, replaced = out, True
        new_g = _merge([self.grad_outputs[i] for i in self.out_idx], self.out_ts,
                       "backward pre hook returned a grad_output", "an output") if replaced else None
        if self.in_idx is None and self.hooks:  # no input requires grad: fire now, nothing to replace
            warnings.warn("Full backward hook is firing when gradients are computed with respect to module "
                          "outputs since no inputs require gradients.", stacklevel=2)
            grad_inputs = (None,) * self.n_inputs
            for hook in self.hooks:
                res = hook(self.module, grad_inputs, self.grad_outputs)
                if res is not None and not (isinstance(res, tuple) and all(r is None for r in res)):
                    raise RuntimeError("Backward hook for Modules where no input requires gradient should always "
                                       "return None or None for all gradients.")
        if self.in_idx is None:
            self.grad_outputs = None
        return new_g

    def _input_hook(self, g: Tensor):
        if self.grad_outputs is None:  # the gradient did not come through this call's outputs
            return None
        res = [None] * self.n_inputs
        for i, gi in zip(self.in_idx, _split(g, self.in_ts)):
            res[i] = gi
        res = tuple(res)
        replaced = False
        for hook in self.hooks:
            out = hook(self.module, res, self.grad_outputs)
            if out is None:
                continue
            out = tuple(out)
            if len(out) != len(res):
                raise RuntimeError(f"Backward hook returned an invalid number of grad_input, got {len(out)}, but "
                                   f"expected {len(res)}")
            res, replaced = out, True
        self.grad_outputs = None
        return _merge([res[i] for i in self.in_idx], self.in_ts) if replaced else None
