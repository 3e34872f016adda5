"""Host constants: values of an imported graph that are known without running it on tensors.

Exported models compute their reshape targets at run time: `Shape -> Gather -> Unsqueeze ->
Concat -> Reshape`, `Range` over a sequence length, `ConstantOfShape`/`Equal`/`Where` chains
that normalise a -1. Under ember.jit every tensor is abstract, so reading such a value back
(`ints(shape)`) raises ConcretizationError. Instead the importer carries these values as `Host`:
a numpy array that `Shape`, `Size` and `Constant` produce (and integer initializers start as).
A node whose inputs are all `Host` is *folded*: its handler runs eagerly, outside any trace, on
tensors made from the arrays, and its outputs are `Host` again. Anything else gets its `Host`
inputs as constant tensors (`tensor`); `value` still reads the array behind such a tensor, so a
handler's `static(shape)` works while tracing. Under ember.jit a trace is specialised on its
input shapes already (another shape retraces), so the folded sizes are exact for that trace.
"""
from __future__ import annotations

import weakref

import numpy as np

from .._core.errors import ConcretizationError
from .._core.state import TLS, interpreter, no_grad
from ..tensor import Tensor
from ..tensor import from_numpy as _from_numpy

FOLD_MAX = 1 << 22  # the most elements a folded node may read, or write as a Host value, while tracing

# ops never folded: random draws (a fold would freeze one draw into a trace), and ops running subgraphs,
# which may read outer-scope tensors the fold cannot see
NO_FOLD = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli", "Dropout", "If", "Loop", "Scan"})

_VALUES: dict = {}  # id(tensor made by `tensor`) -> (weakref to it, the array it holds)


class Host:
    """A value known on the host (a numpy array), made an ember tensor only when a tensor op reads it."""

    __slots__ = ("value", "_tensor")

    def __init__(self, value, tensor: Tensor | None = None):
        self.value = np.asarray(value)
        self._tensor = tensor  # the tensor that already holds the value (an initializer), if any

    @property
    def shape(self) -> tuple:
        return self.value.shape

    @property
    def ndim(self) -> int:
        return self.value.ndim

    def __repr__(self) -> str:
        return f"Host({self.value.dtype}{list(self.value.shape)})"


def tracing() -> bool:
    """True while ember.jit traces on this thread."""
    return bool(TLS.interpreters[-1].level)


def tensor(v):
    """`v` as something a tensor op takes: a Host becomes a constant tensor (once), the rest is as is."""
    if not isinstance(v, Host):
        return v
    t = v._tensor
    if t is None:
        t = v._tensor = _from_numpy(np.array(v.value, copy=True, order="C"))
        key = id(t)
        _VALUES[key] = (weakref.ref(t, lambda _, k=key: _VALUES.pop(k, None)), v.value)
    return t


def value(t):
    """The array behind a Host, or behind a tensor `tensor` made from one; None for anything else."""
    if isinstance(t, Host):
        return t.value
    hit = _VALUES.get(id(t))
    if hit is not None and hit[0]() is t:
        return hit[1]
    return None


def initializer(t: Tensor):
    """An integer or bool initializer as a Host over its own tensor (a float one, or one whose value a
    trace already holds abstractly, stays the tensor)."""
    if t.dtype.kind == "f" or t.dtype.kind == "c":
        return t
    try:
        arr = t.detach().numpy()
    except ConcretizationError:  # this trace already holds it as an abstract value
        return t
    return Host(arr, t)


def foldable(node, ins) -> bool:
    """Whether `node` runs on the host: every input it has is a Host, small enough, and the op is pure."""
    if not ins or node.op_type in NO_FOLD or any(a.HasField("g") or a.graphs for a in node.attribute):
        return False
    n = 0
    for x in ins:
        if x is not None:
            if not isinstance(x, Host):
                return False
            n += x.value.size
    return n <= FOLD_MAX or not tracing()


def _contiguous(a: np.ndarray) -> np.ndarray:
    return a if a.flags.c_contiguous else np.array(a, order="C")  # (np.ascontiguousarray makes 0-d 1-d)


def fold(fn, ctx, ins) -> tuple | None:
    """Run handler `fn` eagerly on the Host inputs `ins`; its outputs as Hosts, or None when, while
    tracing, one is too large to bake into the trace (the caller then runs the node as tensor ops)."""
    traced = tracing()
    with interpreter(TLS.interpreters[0]), no_grad():  # the bottom of the stack: the eager interpreter
        outs = fn(ctx, *[_from_numpy(_contiguous(x.value)) if isinstance(x, Host) else x for x in ins])
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        res = []
        for o in outs:
            if isinstance(o, Tensor):
                if traced and o.numel() > FOLD_MAX:
                    return None
                o = Host(o.numpy(), None if traced else o)  # an eager result can serve as its own tensor
            res.append(o)
    return tuple(res)
