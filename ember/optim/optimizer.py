"""The `Optimizer` base class: parameter groups, per-parameter state, state dicts.

Everything an update reads or writes is a tensor, so that `ember.jit` can trace `opt.step()` into
the training step (docs/design.md, "State that must be traceable is tensors"):

- each parameter group's learning rate is a 0-d float64 tensor, created once; `group["lr"] = x`
  and the schedulers *write into* it (the tensor keeps its identity, so a traced step that reads
  it sees the new value on the next replay). float64 so that it holds the Python float the user
  gave exactly, as PyTorch's Python-float `lr` does; each update casts it to the parameter's dtype.
- per-parameter state (step counts as 0-d float32 tensors like PyTorch's, moment buffers as zeros)
  is created by the constructor, not by the first `step()`; first-step special cases are selected
  with tensor ops on the step count.
- `step()` runs under `ember.no_grad()`, uses only ember ops plus in-place writes
  (`ember.autograd.assign_`), and never reads a tensor's value into Python (`.item()`,
  `float()`, `bool()`): no control flow depends on values, only on structure (which parameters
  have a `.grad`, the Python hyperparameters).

Other hyperparameters (momentum, betas, eps, weight decay, ...) are Python numbers, constants of
a trace, as in PyTorch.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable

import numpy as np

from .._core import dtypes as dt
from .._core.state import enable_grad, no_grad
from ..autograd import assign_
from ..ops import lax
from ..tensor import Tensor, as_tensor, tensor as _tensor

__all__ = ["Optimizer", "ParamGroup", "LR_DTYPE", "STEP_DTYPE"]

LR_DTYPE = dt.float64     # learning-rate tensors and the scalar math derived from them
STEP_DTYPE = dt.float32   # step counts: PyTorch's dtype; exact up to 2**24 steps
_TENSOR_HYPERPARAMS = ("lr",)


def _new_scalar(value, dtype=LR_DTYPE) -> Tensor:
    """A fresh 0-d tensor holding `value` (a Python number or a one-element tensor)."""
    if isinstance(value, Tensor):
        value = value.detach()
        if value.numel() != 1:
            raise ValueError(f"expected a number or a one-element tensor, got shape {value.shape}")
        return _tensor(value.reshape(()), dtype=dtype)
    return _tensor(value, dtype=dtype)


def write_scalar(dst: Tensor, value) -> Tensor:
    """Write a Python number or a one-element tensor into the 0-d tensor `dst`, in place."""
    with no_grad():
        if isinstance(value, Tensor):
            v = value.detach()
            if v.shape != dst.shape:
                if v.numel() != 1:
                    raise ValueError(f"expected a one-element value for a 0-d tensor, got shape {v.shape}")
                v = lax.reshape(v, dst.shape)
            return assign_(dst, lax.convert(v, dst.dtype) if v.dtype is not dst.dtype else v)
        if isinstance(value, (np.ndarray, np.generic)):
            return write_scalar(dst, as_tensor(np.asarray(value)))
        return assign_(dst, lax.full(dst.shape, value, dst.dtype))


class ParamGroup(dict):
    """One entry of `Optimizer.param_groups`: a dict whose `"lr"` is a 0-d tensor.

    Reading `group["lr"]` gives the tensor. Assigning a number or a tensor to `group["lr"]`
    copies the value into the existing tensor rather than replacing it, so anything holding the
    tensor (a scheduler, a traced training step) sees the change.
    """

    def __setitem__(self, key, value):
        if key in _TENSOR_HYPERPARAMS:
            cur = dict.get(self, key)
            if isinstance(cur, Tensor):
                if value is not cur:
                    write_scalar(cur, value)
                return
            value = _new_scalar(value)
        dict.__setitem__(self, key, value)

    def update(self, *args, **kwargs):  # dict.update bypasses __setitem__
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)


def _compute_dtype(p: Tensor) -> dt.DType:
    """The dtype an update of `p` computes its scalars in (float16/bfloat16 use float32)."""
    d = p.dtype
    return d if d is dt.float32 or d is dt.float64 else dt.float32


def check_hyperparameters(lr=None, betas=(), *, betas_closed: bool = False, **non_negative) -> None:
    """PyTorch's argument checks, with its messages: lr >= 0 (a tensor lr is not checked), each
    named value >= 0, and each beta in [0, 1) (in [0, 1] with `betas_closed`)."""
    if isinstance(lr, float | int) and lr < 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")
    for name, v in non_negative.items():
        if v < 0.0:
            raise ValueError(f"Invalid {'epsilon' if name == 'eps' else name} value: {v}")
    for i, b in enumerate(betas):
        if not (0.0 <= b <= 1.0 if betas_closed else 0.0 <= b < 1.0):
            raise ValueError(f"Invalid beta parameter at index {i}: {b}")


class Optimizer:
    """Base class of ember's optimizers (PyTorch's interface).

    Subclasses pass their hyperparameter `defaults`, create a parameter's state in
    `_init_state(p, group)` and update one group in `_update_group(group)`, which `step()` calls
    under `no_grad()` for every group. An update is "multi-tensor" in the sense of PyTorch's
    foreach path: a Python loop over the group's parameters issuing elementwise tensor ops only,
    with the scalar work (learning rate casts, bias corrections) done on 0-d tensors.
    """

    def __init__(self, params: Iterable, defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        self.state: defaultdict = defaultdict(dict)
        self.param_groups: list[ParamGroup] = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors "
                            "or dicts, but got a Tensor")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    # ---------------------------------------------------------------- groups and state
    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters (with its own hyperparameters) and create their state."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the "
                            "ordering of tensors in sets will change between runs; use a list instead")
        else:
            params = list(params)
        seen = set()
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
            if p.dtype.kind != "f":
                raise TypeError(f"optimizer can only optimize floating-point tensors, got {p.dtype.name}")
            if id(p) in seen:
                raise ValueError("a parameter appears twice in one parameter group")
            seen.add(id(p))
        for g in self.param_groups:
            if any(id(q) in seen for q in g["params"]):
                raise ValueError("some parameters appear in more than one parameter group")
        group = ParamGroup()
        dict.__setitem__(group, "params", params)
        for k, v in param_group.items():
            if k != "params":
                group[k] = v
        for k, v in self.defaults.items():
            if k not in group:
                if v is _REQUIRED:
                    raise ValueError(f"parameter group didn't specify a value of required optimization "
                                     f"parameter {k}")
                group[k] = v
        self.param_groups.append(group)
        with no_grad():
            for p in params:
                self.state[p] = self._init_state(p, group)

    def _init_state(self, p: Tensor, group: ParamGroup) -> dict:
        """The state of parameter `p` before any step (tensors only). Subclasses override."""
        return {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to None (default) or to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:  # written without reading: a traced step does not depend on it
                    p.grad = None
                    continue
                g = p.grad
                if g is None:
                    continue
                else:
                    if g.grad_fn is not None:
                        g = p.grad = g.detach()
                    else:
                        g.requires_grad_(False)
                    with no_grad():
                        if g._data.flags.writeable:
                            g.zero_()
                        else:  # a read-only (broadcast) gradient cannot be written in place
                            p.grad = lax.full(g.shape, 0, g.dtype)

    # ---------------------------------------------------------------- the update
    def step(self, closure: Callable[[], Any] | None = None):
        """Update every parameter that has a `.grad`; `closure` re-evaluates the loss first."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                self._update_group(group)
        return loss

    def _update_group(self, group: ParamGroup) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------- state dicts
    def state_dict(self) -> dict:
        """PyTorch's layout: ``{"state": {index: {name: tensor}}, "param_groups": [{..., "params": [index]}]}``.

        Parameters are numbered in the order of the groups. State values are the live state
        tensors (not copies, as in PyTorch); a group's `lr` is given as a Python float.
        """
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {}
            for k, v in group.items():
                if k == "params":
                    continue
                packed[k] = v.item() if isinstance(v, Tensor) else v
            ids = []
            for p in group["params"]:
                if id(p) not in index:
                    index[id(p)] = len(index)
                ids.append(index[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if st:
                    state[index[id(p)]] = dict(st)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a `state_dict()` (ember's or PyTorch's layout), copying into the existing tensors.

        State tensors keep their identity; values may be ember tensors, numpy arrays or numbers.
        Floating state is cast to the parameter's dtype, step counts to `STEP_DTYPE`.
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        id_map = {}
        for group, saved in zip(self.param_groups, saved_groups):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the "
                                 "size of optimizer's group")
            for idx, p in zip(saved["params"], group["params"]):
                id_map[int(idx)] = p
        owner = {}
        for group, saved in zip(self.param_groups, saved_groups):
            for key, val in saved.items():
                if key != "params":
                    group[key] = val  # "lr" is copied into the group's tensor
            for p in group["params"]:
                owner[id(p)] = group
        for k, saved_state in state_dict["state"].items():
            p = id_map.get(int(k))
            if p is None:
                continue
            cur = self.state[p]
            for key, val in saved_state.items():
                self._load_state_value(p, cur, key, val)
            self._after_load_state(p, cur, saved_state, owner[id(p)])

    def _load_state_value(self, p: Tensor, cur: dict, key: str, val) -> None:
        if val is None:
            return
        is_step = key == "step"
        existing = cur.get(key)
        if isinstance(existing, Tensor):
            if existing.ndim == 0:
                write_scalar(existing, val)
                return
            src = val if isinstance(val, Tensor) else as_tensor(np.asarray(val))
            if tuple(src.shape) != tuple(existing.shape):
                raise ValueError(f"state {key!r} of a parameter of shape {tuple(p.shape)} has shape "
                                 f"{tuple(existing.shape)}, but the state dict gives {tuple(src.shape)}")
            with no_grad():
                existing.copy_(src.detach())
            return
        if isinstance(val, (Tensor, np.ndarray, np.generic, int, float)) and not isinstance(val, bool):
            src = val.detach() if isinstance(val, Tensor) else as_tensor(np.asarray(val))
            target = STEP_DTYPE if is_step else (p.dtype if src.dtype.kind == "f" else src.dtype)
            cur[key] = _tensor(src, dtype=target)
        else:
            cur[key] = val

    def _after_load_state(self, p: Tensor, cur: dict, saved: dict, group: ParamGroup) -> None:
        """Hook for optimizers whose saved state needs translating (e.g. SGD's None buffer)."""

    # ---------------------------------------------------------------- helpers for subclasses
    @staticmethod
    def _cast(cache: dict, key, value: Tensor, dtype: dt.DType) -> Tensor:
        """`value` (a float64 0-d tensor) cast to `dtype`, computed once per step per key."""
        k = (key, dtype)
        r = cache.get(k)
        if r is None:
            r = cache[k] = lax.convert(value, dtype) if value.dtype is not dtype else value
        return r

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    v = g[k]
                    lines.append(f"    {k}: {v.item() if isinstance(v, Tensor) else v}")
        lines.append(")")
        return "\n".join(lines)


class _RequiredParameter:
    def __repr__(self) -> str:
        return "<required parameter>"


_REQUIRED = _RequiredParameter()
required = _REQUIRED
