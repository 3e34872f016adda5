"""Inference rewrites: a lone BatchNorm as a per-channel affine (MD-4), crops moved before
elementwise ops on ember's traced IR (MD-5).

- `fold_batchnorm_alone(model)`: every BatchNorm (1d/2d, and 3d where ember.nn has it) that does
  not directly follow a Conv/ConvTranspose/Linear in a Sequential becomes a `ChannelAffine`,
  ``y = scale * x + offset`` with ``scale = weight / sqrt(running_var + eps)`` and ``offset = bias -
  running_mean * scale`` (computed in float64, stored in the BatchNorm's dtype). A BatchNorm right
  after a convolution is left alone: `ember.onnx.export` folds it into the convolution's weights
  (`fold_conv_bn`, MD-3), and ember has no module-level Conv+BN fold to reuse. Only eval-mode
  BatchNorms with running statistics are folded (their output no longer depends on the batch).
  Only a Sequential tells what precedes a layer: a BatchNorm held by another module is replaced
  too, which costs nothing at export (the export folds the affine's Mul/Add after a Conv as well).
- `sink_slices(graph)`: a pass over ember.jit's IR, Graph -> Graph as the passes in
  `ember.jit.passes` (usable in a `PassManager`): ``slice(f(a, b))`` with f elementwise becomes
  ``f(slice(a), slice(b))`` (a broadcast operand is sliced only along the dims it really has),
  repeated until no slice can move, so the elementwise work shrinks to the kept elements. A slice
  never moves past anything but an elementwise op (a conv, a matmul, a reduction, a reshape are
  barriers), nor past an op whose result has other users (that would compute it twice).
"""
from __future__ import annotations

import numpy as np

from .._core.errors import EmberError
from .._core.state import no_grad
from ..ir.core import Eqn, Graph, Literal, Var
from ..jit.passes import cse, dce
from ..nn import normalization as _norm
from ..nn.containers import Sequential
from ..nn.conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from ..nn.linear import Linear
from ..nn.module import Module
from ..ops import P
from ..tensor import Tensor, from_numpy

__all__ = ["RewriteError", "ChannelAffine", "fold_batchnorm_alone", "sink_slices", "elementwise_ops",
           "ELEMENTWISE", "BATCHNORMS"]


class RewriteError(EmberError, ValueError):
    """An inference rewrite cannot be applied (a BatchNorm in training mode, without running stats...)."""


BATCHNORMS = tuple(getattr(_norm, n) for n in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d") if hasattr(_norm, n))
_PRODUCERS = (Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d, Linear)


# ---------------------------------------------------------------- MD-4: BatchNorm alone -> affine
class ChannelAffine(Module):
    """Per-channel ``y = scale[c] * x + offset[c]`` over dim 1 of an (N, C, ...) input (a folded BatchNorm)."""

    def __init__(self, scale, offset):
        super().__init__()
        s = scale if isinstance(scale, Tensor) else from_numpy(np.ascontiguousarray(scale))
        o = offset if isinstance(offset, Tensor) else from_numpy(np.ascontiguousarray(offset))
        if s.ndim != 1 or tuple(o.shape) != tuple(s.shape):
            raise RewriteError(f"ChannelAffine needs 1-D scale and offset of one length, got {tuple(s.shape)} "
                               f"and {tuple(o.shape)}")
        self.num_features = int(s.shape[0])
        self.register_buffer("scale", s)
        self.register_buffer("offset", o)

    def forward(self, input):
        if input.ndim < 2 or input.shape[1] != self.num_features:
            raise ValueError(f"ChannelAffine({self.num_features}) expects (N, {self.num_features}, ...) input, "
                             f"got shape {tuple(input.shape)}")
        shape = (self.num_features,) + (1,) * (input.ndim - 2)
        return input * self.scale.reshape(shape) + self.offset.reshape(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}"


def batchnorm_as_affine(bn: Module, name: str = "BatchNorm") -> ChannelAffine:
    """The ChannelAffine equal to an eval-mode BatchNorm `bn` (raises RewriteError if it cannot be)."""
    if bn.training:
        raise RewriteError(f"{name} is in training mode: its output depends on the batch, so it cannot be "
                           "folded (call model.eval() first)")
    if bn.running_mean is None or bn.running_var is None:
        raise RewriteError(f"{name} has no running statistics (track_running_stats=False): it normalises "
                           "with batch statistics even in eval mode and cannot be folded")
    with no_grad():
        mean = bn.running_mean.detach().numpy().astype(np.float64)
        var = bn.running_var.detach().numpy().astype(np.float64)
        w = np.ones_like(mean) if bn.weight is None else bn.weight.detach().numpy().astype(np.float64)
        b = np.zeros_like(mean) if bn.bias is None else bn.bias.detach().numpy().astype(np.float64)
    dtype = bn.running_mean.detach().numpy().dtype
    scale = w / np.sqrt(var + float(bn.eps))
    offset = b - mean * scale
    if not (np.isfinite(scale).all() and np.isfinite(offset).all()):
        raise RewriteError(f"{name}: its statistics give a non-finite scale or offset (negative running_var?)")
    return ChannelAffine(scale.astype(dtype), offset.astype(dtype))


def fold_batchnorm_alone(model: Module, *, inplace: bool = True) -> Module:
    """Replace each eval-mode BatchNorm not right after a Conv/Linear by a `ChannelAffine`; returns the model."""
    if isinstance(model, BATCHNORMS):  # the model itself is one lone BatchNorm
        return batchnorm_as_affine(model, type(model).__name__)
    if not inplace:
        import copy
        model = copy.deepcopy(model)
    for pname, parent in list(model.named_modules()):
        prev = None
        for cname, child in list(parent.named_children()):
            follows = isinstance(parent, Sequential) and isinstance(prev, _PRODUCERS)
            if isinstance(child, BATCHNORMS) and not follows:
                full = f"{pname}.{cname}" if pname else cname
                setattr(parent, cname, batchnorm_as_affine(child, f"{type(child).__name__} {full!r}"))
            prev = child
    return model


# ---------------------------------------------------------------- MD-5: crops before elementwise ops
# the built-in elementwise primitives (output = broadcast of the operands, computed element by
# element); `bitcast` is left out (it may change the last dim), and so is any user primitive
ELEMENTWISE = frozenset({
    "abs", "add", "atan2", "bitwise_and", "bitwise_not", "bitwise_or", "bitwise_xor", "ceil", "complex",
    "complex_abs", "conj", "convert", "cos", "div", "eq", "erf", "exp", "expm1", "floor", "floordiv", "fmod",
    "ge", "gt", "imag", "isnan", "le", "log", "log1p", "logaddexp", "logistic", "lt", "max", "min", "mul",
    "ne", "neg", "pow", "real", "rem", "round", "rsqrt", "select", "shift_left", "shift_right", "sign",
    "sin", "sqrt", "sub", "tanh", "trunc"})


def _is_elementwise(e: Eqn) -> bool:
    return e.prim.name in ELEMENTWISE  # names are unique in the registry: a user primitive cannot take one


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def elementwise_ops(g: Graph) -> int:
    """The number of element operations the graph's elementwise equations perform (sum of their output sizes)."""
    return sum(_size(e.out.aval.shape) for e in g.eqns if e.prim.name in ELEMENTWISE)


def _slice_operand(a, out_shape: tuple, start, stop, step, new_eqns: list, loc: str):
    """`a` (an operand broadcast to `out_shape`) sliced as the output is; appends the slice equation."""
    if isinstance(a, Literal) or a.aval.ndim == 0:
        return a
    off = len(out_shape) - a.aval.ndim
    st, sp, sl = [], [], []
    for i, d in enumerate(a.aval.shape):
        j = i + off
        if d == out_shape[j]:
            st.append(start[j]), sp.append(stop[j]), sl.append(step[j])
        else:  # a broadcast dim of size 1: every output element reads its one element
            st.append(0), sp.append(1), sl.append(1)
    if tuple(st) == (0,) * a.aval.ndim and tuple(sp) == a.aval.shape and all(s == 1 for s in sl):
        return a
    params = {"start": tuple(st), "stop": tuple(sp), "step": tuple(sl)}
    v = Var(P.slice.abstract(a.aval, **params))
    new_eqns.append(Eqn(P.slice, [a], v, params, loc))
    return v


def _sink_once(g: Graph) -> tuple[Graph, bool]:
    users: dict = {}
    for e in g.eqns:
        for a in {a for a in e.inputs if isinstance(a, Var)}:
            users[a] = users.get(a, 0) + 1
    outs = {a for a in g.outvars if isinstance(a, Var)}
    prod = {e.out: e for e in g.eqns}
    moved, out, changed = set(), [], False
    for e in g.eqns:
        src = prod.get(e.inputs[0]) if e.prim is P.slice and isinstance(e.inputs[0], Var) else None
        if (src is None or src.out in moved or not _is_elementwise(src) or users.get(src.out) != 1
                or src.out in outs):
            out.append(e)
            continue
        p, new = e.params, []
        shape = src.out.aval.shape
        ins = [_slice_operand(a, shape, p["start"], p["stop"], p["step"], new, e.loc) for a in src.inputs]
        try:
            ok = src.prim.abstract(*[a.aval for a in ins], **src.params) == e.out.aval
        except Exception:  # noqa: BLE001 - a rule that refuses the sliced operands: keep the graph
            ok = False
        if not ok:
            out.append(e)
            continue
        out.extend(new)
        out.append(Eqn(src.prim, ins, e.out, src.params, src.loc))
        moved.add(src.out)
        changed = True
    if not changed:
        return g, False
    eqns = [e for e in out if e.out not in moved]
    return Graph(g.constvars, g.consts, g.invars, eqns, g.outvars, g.aliases), True


def sink_slices(g: Graph, max_rounds: int | None = None) -> Graph:
    """Move each slice of an elementwise result before the elementwise op, repeatedly (MD-5); a new Graph."""
    rounds = max_rounds if max_rounds is not None else len(g.eqns) + 1
    for _ in range(rounds):
        g, changed = _sink_once(cse(g))  # cse merges the equal slices two users of one value get
        if not changed:
            break
    return dce(g)
