"""Pruning (MD-12), with torch.nn.utils.prune's semantics: magnitude masks per layer and global,
structured (Ln) masks, `remove`, a sparsity report, physical filter pruning and a gradual schedule.

A pruned `module.name` is reparametrized as torch does: the Parameter moves to `name_orig` (the
same object: an optimizer built before pruning keeps training it), the mask is a buffer `name_mask`
of the weight's dtype, and `module.name` is `name_orig * name_mask`, computed at every attribute
access rather than in a forward pre-hook (the module's class is swapped for a subclass whose
`__getattr__` knows the name, as torch.nn.utils.parametrize does): under ember.jit the product is
part of the traced step (pruned weights stay exactly 0 through any optimizer step, natively too),
and an eager read after a jitted step is never stale. Pruning a pruned tensor again prunes among
the entries still kept (torch's PruningContainer) and updates the mask buffer in place, so a
jitted step sees it without a retrace.

Ties: torch.topk on the CPU picks tied entries in the order of libstdc++'s std::partial_sort
(k * 64 <= n) or std::nth_element; `_topk_set` replays those algorithms when a tie straddles the
cut, so masks equal torch's (tests/fixtures/prune.*).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .._core.errors import EmberError
from .._core.state import no_grad
from ..nn.conv import Conv2d
from ..nn.linear import Linear
from ..nn.module import Module
from ..nn.normalization import BatchNorm2d
from ..nn.parameter import Parameter
from ..tensor import Tensor, from_numpy

__all__ = ["PruningError", "l1_unstructured", "global_unstructured", "ln_structured", "custom_from_mask",
           "remove", "is_pruned", "sparsity", "SparsityReport", "prune_conv_filters", "select_filters",
           "PruningSchedule"]


class PruningError(EmberError, ValueError):
    """A pruning request that cannot be carried out (bad amount, missing parameter, unsupported layer)."""


# ------------------------------------------------------------------ reparametrized attributes
_CLASSES: dict = {}
_EVAL: dict = {}  # kind -> fn(module, name) computing module.<name>; ember.deploy.compress adds "shared"


def _getattr(self, name: str):
    rep = self.__dict__.get("_ember_reparam")
    if rep is not None and name in rep:
        return _EVAL[rep[name]](self, name)
    return type(self).__mro__[1].__getattr__(self, name)


def _eval_prune(m: Module, name: str) -> Tensor:
    return m._parameters[name + "_orig"] * m._buffers[name + "_mask"]


_EVAL["prune"] = _eval_prune


def install_reparam(module: Module, name: str, kind: str) -> None:
    """Make `module.<name>` computed by the reparametrization `kind` (swapping in a subclass once)."""
    cls = type(module)
    if "_ember_reparam" not in module.__dict__:
        sub = _CLASSES.get(cls)
        if sub is None:
            sub = type(cls.__name__, (cls,), {"__getattr__": _getattr, "__module__": cls.__module__,
                                              "__qualname__": cls.__qualname__})
            _CLASSES[cls] = sub
        module.__dict__["_ember_reparam"] = {}
        module.__class__ = sub
    module.__dict__["_ember_reparam"][name] = kind


def uninstall_reparam(module: Module, name: str) -> None:
    """Undo `install_reparam` for `name` (and the class swap once no name is left)."""
    rep = module.__dict__.get("_ember_reparam", {})
    rep.pop(name, None)
    if not rep and "_ember_reparam" in module.__dict__:
        del module.__dict__["_ember_reparam"]
        module.__class__ = type(module).__mro__[1]


def reparam_kind(module: Module, name: str) -> str | None:
    """'prune', 'shared' (compress), ... when `module.<name>` is reparametrized, else None."""
    return module.__dict__.get("_ember_reparam", {}).get(name)


# ------------------------------------------------------------------ torch.topk's choice among ties
def _adjust_heap(q: list, first: int, hole: int, length: int, value) -> None:
    top = second = hole
    while second < (length - 1) // 2:
        second = 2 * (second + 1)
        if q[first + second][0] < q[first + second - 1][0]:
            second -= 1
        q[first + hole] = q[first + second]
        hole = second
    if length & 1 == 0 and second == (length - 2) // 2:
        second = 2 * (second + 1)
        q[first + hole] = q[first + second - 1]
        hole = second - 1
    parent = (hole - 1) // 2
    while hole > top and q[first + parent][0] < value[0]:
        q[first + hole] = q[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    q[first + hole] = value


def _heap_select(q: list, first: int, middle: int, last: int) -> None:
    n = middle - first
    if n >= 2:
        parent = (n - 2) // 2
        while True:
            _adjust_heap(q, first, parent, n, q[first + parent])
            if parent == 0:
                break
            parent -= 1
    for i in range(middle, last):
        if q[i][0] < q[first][0]:
            v = q[i]
            q[i] = q[first]
            _adjust_heap(q, first, 0, n, v)


def _introselect(q: list, first: int, nth: int, last: int, depth: int) -> None:
    while last - first > 3:
        if depth == 0:
            _heap_select(q, first, nth + 1, last)
            q[first], q[nth] = q[nth], q[first]
            return
        depth -= 1
        a, b, c = first + 1, first + (last - first) // 2, last - 1  # median of three to `first`
        A, B, C = q[a][0], q[b][0], q[c][0]
        if A < B:
            m = b if B < C else (c if A < C else a)
        else:
            m = a if A < C else (c if B < C else b)
        q[first], q[m] = q[m], q[first]
        pv, lo, hi = q[first][0], first + 1, last  # unguarded partition around q[first]
        while True:
            while q[lo][0] < pv:
                lo += 1
            hi -= 1
            while pv < q[hi][0]:
                hi -= 1
            if not lo < hi:
                break
            q[lo], q[hi] = q[hi], q[lo]
            lo += 1
        if lo <= nth:
            first = lo
        else:
            last = lo
    for i in range(first + 1, last):  # insertion sort
        v, j = q[i], i
        if v[0] < q[first][0]:
            q[first + 1:i + 1] = q[first:i]
            q[first] = v
            continue
        while v[0] < q[j - 1][0]:
            q[j] = q[j - 1]
            j -= 1
        q[j] = v


def _topk_set(scores: np.ndarray, k: int, largest: bool) -> np.ndarray:
    """The indices torch.topk(scores, k, largest=largest) picks on the CPU, as a sorted array."""
    s = np.asarray(scores, np.float64).reshape(-1)
    n = s.size
    if k <= 0:
        return np.zeros(0, np.int64)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    nan = np.isnan(s)
    if not nan.any():
        v = np.partition(-s if largest else s, k - 1)[k - 1]
        key = -s if largest else s
        below, tied = key < v, key == v
        if below.sum() + tied.sum() == k:  # no tie straddles the cut: any algorithm agrees
            return np.flatnonzero(below | tied)
    uniq, rank = np.unique(np.where(nan, 0.0, s), return_inverse=True)
    rank = np.where(nan, len(uniq), rank.reshape(-1))  # NaN: above everything, equal to itself
    if largest:
        rank = np.where(nan, -1, len(uniq) - rank)
    q = list(zip(rank.tolist(), range(n)))
    if k * 64 <= n:
        _heap_select(q, 0, k, n)
    else:
        _introselect(q, 0, k - 1, n, 2 * (n.bit_length() - 1))
    return np.sort(np.fromiter((q[i][1] for i in range(k)), np.int64, k))


# ------------------------------------------------------------------ amounts and masks
def _n_to_prune(amount, size: int, what: str) -> int:
    """torch's amount checks and _compute_nparams_toprune: a count, or round(fraction * size)."""
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise PruningError(f"amount={amount!r} must be an int (a count) or a float in [0, 1] (a fraction)")
    integral = isinstance(amount, numbers.Integral)
    if (integral and amount < 0) or (not integral and not 0.0 <= float(amount) <= 1.0):
        raise PruningError(f"amount={amount} should either be a float in the range [0, 1] or a non-negative integer")
    if integral and amount > size:
        raise PruningError(f"amount={amount} should be smaller than the number of parameters to prune={size} ({what})")
    return int(amount) if integral else round(float(amount) * size)


def _slot(module: Module, name: str):
    """(current effective value as numpy, mask as numpy or None) of module.<name>; error if absent."""
    if not isinstance(module, Module):
        raise PruningError(f"expected an ember.nn.Module to prune, got {type(module).__name__}")
    kind = reparam_kind(module, name)
    if kind is None and module._parameters.get(name) is None:
        have = [k for k, v in module._parameters.items() if v is not None]
        raise PruningError(f"{type(module).__name__} has no parameter named {name!r} to prune "
                           f"(its parameters: {have})")
    with no_grad():
        value = getattr(module, name).detach().numpy()
    mask = module._buffers.get(name + "_mask")
    return value, (None if mask is None else mask.detach().numpy())


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().numpy() if isinstance(x, Tensor) else x)


def custom_from_mask(module: Module, name: str, mask) -> Module:
    """Prune module.<name> with an explicit 0/1 `mask` (combined with any mask it already has)."""
    value, old = _slot(module, name)
    mask = _np(mask)
    if mask.shape != value.shape:
        raise PruningError(f"mask of shape {mask.shape} does not fit {name!r} of shape {value.shape}")
    new = (mask != 0).astype(value.dtype)
    if old is not None:
        new = new * old
    kind = reparam_kind(module, name)
    if kind is None:
        orig = module._parameters[name]
        delattr(module, name)
        module.register_parameter(name + "_orig", orig)
        module.register_buffer(name + "_mask", from_numpy(np.ascontiguousarray(new)))
        install_reparam(module, name, "prune")
    else:
        with no_grad():  # in place: the mask buffer, and any jitted step reading it, stay the same
            module._buffers[name + "_mask"].copy_(from_numpy(np.ascontiguousarray(new)))
    return module


def _unstructured_mask(scores: np.ndarray, mask: np.ndarray | None, amount, what: str) -> np.ndarray:
    """Zero the `amount` smallest scores among the entries `mask` still keeps (torch's container)."""
    flat = scores.reshape(-1)
    keep = np.ones(flat.shape, bool) if mask is None else mask.reshape(-1) == 1
    live = np.flatnonzero(keep)
    k = _n_to_prune(amount, live.size, what)
    out = keep.astype(scores.dtype)
    out[live[_topk_set(np.abs(flat[live]), k, largest=False)]] = 0
    return out.reshape(scores.shape)


def l1_unstructured(module: Module, name: str, amount, importance_scores=None) -> Module:
    """Prune the `amount` (fraction or count) entries of module.<name> with the smallest |value|."""
    value, mask = _slot(module, name)
    scores = value if importance_scores is None else _np(importance_scores)
    if scores.shape != value.shape:
        raise PruningError(f"importance_scores of shape {scores.shape} do not fit {name!r} of shape {value.shape}")
    return custom_from_mask(module, name, _unstructured_mask(scores, mask, amount, f"{type(module).__name__}.{name}"))


def global_unstructured(parameters: Iterable, amount, importance_scores: dict | None = None) -> None:
    """L1-prune the `amount` smallest entries across all (module, name) pairs together."""
    parameters = list(parameters)
    if not parameters:
        raise PruningError("global_unstructured needs at least one (module, name) pair")
    scores, masks, shapes = [], [], []
    for pair in parameters:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise PruningError(f"expected (module, name) pairs, got {pair!r}")
        module, name = pair
        value, mask = _slot(module, name)
        s = (importance_scores or {}).get((module, name))
        s = value if s is None else _np(s)
        scores.append(s.reshape(-1).astype(np.float64))
        masks.append(np.ones(value.size) if mask is None else mask.reshape(-1).astype(np.float64))
        shapes.append(value.shape)
    final = _unstructured_mask(np.concatenate(scores), np.concatenate(masks), amount, "all parameters together")
    at = 0
    for (module, name), shape in zip(parameters, shapes):
        n = int(np.prod(shape))
        custom_from_mask(module, name, final[at:at + n].reshape(shape))
        at += n


def _ln_norms(value: np.ndarray, n, dim: int) -> np.ndarray:
    n = 2 if n == "fro" else n
    if isinstance(n, bool) or not isinstance(n, numbers.Real) or n < 0:
        raise PruningError(f"n={n!r} must be a norm order >= 0 (1 for L1, 2 or 'fro' for L2, inf)")
    axes = tuple(d for d in range(value.ndim) if d != dim)
    a = np.abs(value.astype(np.float64))
    if n == float("inf"):
        return a.max(axis=axes)
    if n == 0:
        return (a != 0).sum(axis=axes).astype(np.float64)
    return (a ** n).sum(axis=axes) ** (1.0 / n)


def ln_structured(module: Module, name: str, amount, n, dim: int, importance_scores=None) -> Module:
    """Zero whole slices along `dim` (e.g. conv filters, dim=0) with the smallest L`n` norm."""
    value, mask = _slot(module, name)
    value = value if importance_scores is None else _np(importance_scores)
    if value.ndim <= 1:
        raise PruningError(f"structured pruning needs a tensor of at least 2 dims; {name!r} has shape {value.shape}")
    if not -value.ndim <= dim < value.ndim:
        raise PruningError(f"dim={dim} is out of range for {name!r} of shape {value.shape}")
    dim %= value.ndim
    cur = value if mask is None else value * mask  # torch prunes the already-pruned tensor
    live = np.arange(value.shape[dim]) if mask is None else \
        np.flatnonzero(mask.sum(axis=tuple(d for d in range(value.ndim) if d != dim)) != 0)
    k = _n_to_prune(amount, live.size, f"{type(module).__name__}.{name} along dim {dim}")
    if k == 0:
        return custom_from_mask(module, name, np.ones_like(value) if mask is None else mask)
    keep = live[_topk_set(_ln_norms(np.take(cur, live, axis=dim), n, dim), live.size - k, largest=True)]
    sel = np.zeros(value.shape[dim], value.dtype)
    sel[keep] = 1
    shape = [1] * value.ndim
    shape[dim] = -1
    return custom_from_mask(module, name, np.broadcast_to(sel.reshape(shape), value.shape))


def is_pruned(module: Module) -> bool:
    """Whether any submodule of `module` holds a pruning mask."""
    return any(k == "prune" for m in module.modules() for k in m.__dict__.get("_ember_reparam", {}).values())


def remove(module: Module, name: str) -> Module:
    """Make the pruning of module.<name> permanent: a plain Parameter again (the `name_orig` object)."""
    kind = reparam_kind(module, name)
    if kind != "prune":
        hint = ": use ember.deploy.compress.unshare" if kind == "shared" else ", nothing to remove"
        raise PruningError(f"parameter {name!r} of {type(module).__name__} has not been pruned{hint}")
    with no_grad():
        w = getattr(module, name).detach()
        orig = module._parameters[name + "_orig"]
        orig.copy_(w)
    delattr(module, name + "_orig")
    delattr(module, name + "_mask")
    uninstall_reparam(module, name)
    module.register_parameter(name, orig)
    return module


# ------------------------------------------------------------------ report
@dataclass
class SparsityReport:
    """Zero counts per tensor ('fc1.weight' -> (zeros, numel)) and over all of them."""

    layers: dict = field(default_factory=dict)

    @property
    def zeros(self) -> int:
        """Exact zeros over all reported tensors."""
        return sum(z for z, _ in self.layers.values())

    @property
    def numel(self) -> int:
        """Entries over all reported tensors."""
        return sum(n for _, n in self.layers.values())

    @property
    def global_sparsity(self) -> float:
        """The fraction of zeros over all reported tensors."""
        return self.zeros / self.numel if self.numel else 0.0

    def layer_sparsity(self, name: str) -> float:
        """The fraction of zeros in one tensor."""
        z, n = self.layers[name]
        return z / n if n else 0.0

    def __str__(self) -> str:
        rows = [f"{k:<32} {z:>9}/{n:<9} {z / max(n, 1):7.2%}" for k, (z, n) in self.layers.items()]
        return "\n".join(rows + [f"{'global':<32} {self.zeros:>9}/{self.numel:<9} {self.global_sparsity:7.2%}"])


def sparsity(model: Module, names: Sequence[str] = ("weight",)) -> SparsityReport:
    """The fraction of exact zeros in each module's `names` tensors (pruned or not), and globally."""
    rep = SparsityReport()
    with no_grad():
        for prefix, m in model.named_modules():
            for name in names:
                if reparam_kind(m, name) is None and m._parameters.get(name) is None:
                    continue
                v = getattr(m, name).detach().numpy()
                rep.layers[f"{prefix}.{name}" if prefix else name] = (int(v.size - np.count_nonzero(v)), int(v.size))
    return rep


# ------------------------------------------------------------------ physical filter pruning
def _resolve(model: Module, m) -> Module:
    if isinstance(m, str):
        try:
            return model.get_submodule(m)
        except AttributeError as e:
            raise PruningError(f"the model has no submodule {m!r}: {e}") from None
    if not isinstance(m, Module):
        raise PruningError(f"expected a module or a submodule name, got {type(m).__name__}")
    return m


def select_filters(conv: Conv2d, amount, norm: float = 1) -> np.ndarray:
    """The sorted indices of the filters that `ln_structured(conv, 'weight', amount, norm, 0)` keeps."""
    w = conv.weight.detach().numpy()
    k = _n_to_prune(amount, w.shape[0], f"the {w.shape[0]} filters of {conv!r}")
    return _topk_set(_ln_norms(w, norm, 0), w.shape[0] - k, largest=True)


def _set(m: Module, name: str, arr: np.ndarray) -> None:
    old = getattr(m, name)
    new = from_numpy(np.ascontiguousarray(arr))
    if isinstance(old, Parameter):
        setattr(m, name, Parameter(new, requires_grad=old.requires_grad))
    else:
        setattr(m, name, new)


def prune_conv_filters(model: Module, conv, next_layer, amount, *, norm: float = 1) -> np.ndarray:
    """Remove conv's `amount` filters of smallest L`norm` and the matching inputs of `next_layer`.

    `next_layer` is the consumer of conv's output: a Conv2d, or a Linear after a flatten (its
    in_features a multiple of conv's out_channels), optionally preceded by BatchNorm2d layers given
    as a sequence `(bn, next)`. Parameters are replaced by new, smaller ones: build the optimizer
    afterwards. Returns the kept filter indices."""
    conv = _resolve(model, conv)
    chain = [_resolve(model, m) for m in (next_layer if isinstance(next_layer, (list, tuple)) else [next_layer])]
    if not isinstance(conv, Conv2d) or conv.groups != 1:
        raise PruningError(f"prune_conv_filters prunes an ungrouped Conv2d, got {conv!r}")
    for m in (conv, *chain):
        if reparam_kind(m, "weight") is not None:
            raise PruningError(f"{type(m).__name__}'s weight is reparametrized (pruned or shared): call remove() first")
    c = conv.out_channels
    keep = select_filters(conv, amount, norm)
    if keep.size == 0:
        raise PruningError(f"amount={amount} would remove all {c} filters of the conv")
    *bns, nxt = chain
    for bn in bns:
        if not isinstance(bn, BatchNorm2d) or bn.num_features != c:
            raise PruningError(f"between the conv and the next layer only BatchNorm2d layers with {c} features "
                               f"are supported, got {bn!r}")
    if isinstance(nxt, Conv2d) and (nxt.in_channels != c or nxt.groups != 1):
        raise PruningError(f"the next Conv2d takes {nxt.in_channels} channels (groups={nxt.groups}); "
                           f"expected {c} (groups=1)")
    if isinstance(nxt, Linear) and nxt.in_features % c:
        raise PruningError(f"the next Linear takes {nxt.in_features} features, not a multiple of the conv's {c}")
    if not isinstance(nxt, (Conv2d, Linear)):
        raise PruningError(f"the layer after the conv must be a Conv2d or a Linear, got {type(nxt).__name__}")
    with no_grad():
        _set(conv, "weight", conv.weight.detach().numpy()[keep])
        if conv.bias is not None:
            _set(conv, "bias", conv.bias.detach().numpy()[keep])
        conv.out_channels = int(keep.size)
        for bn in bns:
            for k in ("weight", "bias", "running_mean", "running_var"):
                if getattr(bn, k, None) is not None:
                    _set(bn, k, getattr(bn, k).detach().numpy()[keep])
            bn.num_features = int(keep.size)
        w = nxt.weight.detach().numpy()
        if isinstance(nxt, Conv2d):
            _set(nxt, "weight", w[:, keep])
            nxt.in_channels = int(keep.size)
        else:  # flatten of (N, C, H, W) is channel-major: each channel owns in_features // C columns
            per = w.shape[1] // c
            _set(nxt, "weight", w.reshape(w.shape[0], c, per)[:, keep].reshape(w.shape[0], -1))
            nxt.in_features = int(keep.size * per)
    return keep


# ------------------------------------------------------------------ gradual pruning
@dataclass
class PruningSchedule:
    """Zhu & Gupta (2017) / TF-MOT PolynomialDecay: sparsity s_f + (s_i - s_f)(1 - t)^power."""

    final_sparsity: float
    begin_step: int = 0
    end_step: int = 1000
    initial_sparsity: float = 0.0
    frequency: int = 100
    power: float = 3.0

    def __post_init__(self):
        for k, v in (("initial_sparsity", self.initial_sparsity), ("final_sparsity", self.final_sparsity)):
            if not (isinstance(v, numbers.Real) and 0.0 <= v <= 1.0):
                raise PruningError(f"{k}={v!r} must be in [0, 1]")
        if not 0 <= self.begin_step < self.end_step or self.frequency < 1:
            raise PruningError(f"need 0 <= begin_step < end_step and frequency >= 1, got {self.begin_step}, "
                               f"{self.end_step}, {self.frequency}")

    def sparsity(self, step: int) -> float:
        """The target sparsity at `step` (initial before begin_step, final after end_step)."""
        t = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - t) ** self.power

    def should_prune(self, step: int) -> bool:
        """True every `frequency` steps from begin_step, and at end_step."""
        return self.begin_step <= step <= self.end_step and (
            (step - self.begin_step) % self.frequency == 0 or step == self.end_step)

    def step(self, step: int, parameters: Iterable, scope: str = "global") -> float | None:
        """At a pruning step, raise the masks of (module, name) pairs to the target; return it (else None)."""
        if not self.should_prune(step):
            return None
        if scope not in ("global", "layer"):
            raise PruningError(f"scope={scope!r} must be 'global' or 'layer'")
        target, pairs = self.sparsity(step), list(parameters)
        for group in ([pairs] if scope == "global" else [[p] for p in pairs]):
            masked = total = 0
            for module, name in group:
                value, mask = _slot(module, name)
                total += value.size
                masked += 0 if mask is None else int(value.size - np.count_nonzero(mask))
            extra = max(0, int(math.floor(target * total + 0.5)) - masked)
            if extra:
                global_unstructured(group, extra)
        return target
