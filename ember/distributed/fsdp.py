"""`FullyShardedDataParallel`: ZeRO stage 3 (DT-12; PyTorch's FSDP, DeepSpeed's ZeRO-3): the
parameters themselves are sharded, as well as their gradients and the optimizer state.

The model is cut into *units* (by default each direct child that has parameters; or the given
submodules). A unit's trainable parameters (one float dtype) are laid end to end in one flat
vector, zero-padded to a multiple of the world size and cut into equal shards: rank r keeps
elements [r S, (r + 1) S) as one Parameter, `flat_param_<i>`, and nothing else of them. These
shards are what `fsdp.parameters()` yields, so any elementwise `ember.optim` optimizer built on
them holds 1/world_size of the state. Outside a unit's forward its modules' parameters are empty
(shape (0,)), as in PyTorch's FSDP.

A unit's forward runs as one autograd node:

1. forward: all-gather the shards into the full flat vector, point the unit's parameters at it,
   run the unit without recording (no_grad), and free the full parameters again;
2. backward: all-gather again, rerun the unit's forward with grad on (its activations were not
   kept: the same trade as activation checkpointing, one more forward per unit), backpropagate
   the incoming gradient through it, reduce-scatter the full gradient so rank r receives the sum
   over ranks of its shard's gradient, divided by the world size (DDP's average), which becomes
   the shard's `.grad`; then free the full parameters and gradients.

Why the rerun: an eager tape holds the parameter arrays its nodes read (a transposed weight is a
numpy view of it), and numpy cannot release an array's memory under live views, so the full
parameters could not be freed between forward and backward. PyTorch frees them by resizing the
storage under its tensors; the rerun is the equivalent that numpy allows, and peak memory holds
one unit's full parameters and the activations at the units' boundaries.

The rerun restores the default generator's state (dropout draws the same masks) and the unit's
buffers afterwards (a BatchNorm's running statistics move once per step, not twice). Frozen
parameters (requires_grad False) are not sharded: they stay whole on every rank. Rank 0's
parameters and buffers are broadcast at construction, so every rank starts equal. Every
collective is all-gather or reduce-scatter: no all-reduce. Sharded checkpoints:
`ember.distributed.save_sharded_checkpoint` / `load_sharded_checkpoint` (checkpoint.py), which
load into a different number of ranks.
"""
from __future__ import annotations

import numpy as np

from .. import autograd
from .._core.state import TLS, enable_grad
from ..api.random import get_rng_state, set_rng_state
from ..nn.module import Module
from ..nn.parameter import Parameter
from ..tensor import Tensor, from_array
from .collectives import ReduceOp, _reduce_scatter_flat, _algo, all_gather_into_tensor, broadcast
from .errors import DistributedError
from .process_group import group as _default_group
from .zero import flatten_padded

__all__ = ["FullyShardedDataParallel"]


def reshard(parts, total: int, world: int, rank: int) -> np.ndarray:
    """Rank `rank`'s shard, among `world`, of the vector whose old shards are `parts` (of any
    number of ranks): their concatenation cut to `total` elements, zero-padded, sliced."""
    full = np.concatenate([np.asarray(p).reshape(-1) for p in parts])[:total]
    S = -(-total // world)
    out = np.zeros(S, full.dtype)
    piece = full[rank * S:(rank + 1) * S]
    out[:piece.size] = piece
    return out


def _bcast(algorithm):
    return "mpi" if algorithm == "mpi" else None  # the ring names no broadcast: ember's default (tree)


class _Unit:
    """One sharded unit: its module, its trainable parameters and this rank's flat shard."""

    def __init__(self, index: int, module: Module, params: list, g, algorithm):
        self.index, self.module, self.params, self.group, self.algorithm = index, module, params, g, algorithm
        dts = {p._data.dtype for p in params}
        if len(dts) != 1 or next(iter(dts)).kind != "f":
            raise DistributedError(f"FullyShardedDataParallel: unit {index} ({type(module).__name__}) has "
                                   f"parameters of dtypes {sorted(str(d) for d in dts)}; a unit shards one float dtype")
        self.dtype = next(iter(dts))
        self.shapes = [tuple(p._data.shape) for p in params]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.total = sum(self.sizes)
        self.S = -(-self.total // g.size)
        flat = self.flatten([p._data for p in params])
        broadcast(from_array(flat), src=0, group=g, algorithm=_bcast(algorithm))  # rank 0's weights everywhere
        self.shard = Parameter(from_array(flat[g.rank * self.S:(g.rank + 1) * self.S].copy()))
        self.empty = np.empty(0, self.dtype)
        self.release()

    def flatten(self, arrays) -> np.ndarray:
        return flatten_padded(arrays, self.sizes, self.S * self.group.size, self.dtype)

    def gather(self) -> None:
        """All-gather the shards and point the unit's parameters at the full values."""
        flat = from_array(np.empty(self.S * self.group.size, self.dtype))
        all_gather_into_tensor(flat, self.shard.detach(), group=self.group, algorithm=self.algorithm)
        off = 0
        for p, shape, k in zip(self.params, self.shapes, self.sizes):
            p._data = flat._data[off:off + k].reshape(shape)
            off += k

    def release(self) -> None:
        for p in self.params:
            p._data = self.empty
            p.grad = None

    def reduce_grads(self) -> Tensor:
        """Reduce-scatter the full gradients: this rank's shard of their average over ranks."""
        n, S = self.group.size, self.S
        flat = self.flatten([None if p.grad is None else p.grad._data for p in self.params])
        for p in self.params:
            p.grad = None
        mine = from_array(np.empty(S, self.dtype))
        _reduce_scatter_flat(self.group, flat.reshape(n, S), mine, ReduceOp.SUM,
                             _algo("reduce_scatter", self.algorithm), False)  # flat is ours to overwrite
        mine._data /= n
        return mine


class _ShardedCall(autograd.Function):
    always_records = True  # the unit's shard needs its gradient even when no input does

    @staticmethod
    def forward(ctx, unit, fwd, kwargs, shard, *args):
        ctx.unit, ctx.fwd, ctx.kwargs, ctx.args = unit, fwd, kwargs, args
        ctx.rng = get_rng_state()
        unit.gather()
        try:
            out = fwd(*args, **kwargs)
        finally:
            unit.release()
        if not isinstance(out, Tensor):
            raise DistributedError(f"FullyShardedDataParallel: unit {unit.index} ({type(unit.module).__name__}) "
                                   f"must return one tensor, got {type(out).__name__}")
        return out

    @staticmethod
    def backward(ctx, g):
        unit = ctx.unit
        args = [a.detach().requires_grad_(a.requires_grad) if isinstance(a, Tensor) else a for a in ctx.args]
        buffers = [(b, b._data.copy()) for b in unit.module.buffers()]
        now = get_rng_state()
        unit.gather()
        try:
            set_rng_state(ctx.rng)
            try:
                with enable_grad():
                    out = ctx.fwd(*args, **ctx.kwargs)
            finally:
                set_rng_state(now)
                for b, saved in buffers:
                    np.copyto(b._data, saved)
            if out.requires_grad:
                autograd.backward([out], [g])
            grad = unit.reduce_grads()
        finally:
            unit.release()
        return (None, None, None, grad) + tuple(a.grad if isinstance(a, Tensor) and a.requires_grad else None
                                                for a in args)


class FullyShardedDataParallel(Module):
    """Shard `module`'s parameters, gradients and optimizer state over the process group (ZeRO-3)."""

    def __init__(self, module: Module, units=None, *, process_group=None, algorithm: str = "ember"):
        super().__init__()
        self.module = module
        g = process_group or _default_group()
        object.__setattr__(self, "group", g)
        if units is None:
            units = [m for m in module.children() if any(True for _ in m.parameters())]
            if any(p is not None for p in module._parameters.values()) or not units:
                units = [module]
        seen, built = {}, []
        for i, m in enumerate(units):
            params = [p for p in m.parameters() if p.requires_grad]
            for p in params:
                if id(p) in seen:
                    raise DistributedError(f"FullyShardedDataParallel: a parameter of unit {i} "
                                           f"({type(m).__name__}) is also in unit {seen[id(p)]}; units must not "
                                           "share parameters")
                seen[id(p)] = i
            if params:
                built.append(_Unit(len(built), m, params, g, algorithm))
        for p in module.parameters():  # frozen (and unit-less) parameters stay whole: rank 0's
            if id(p) not in seen:
                broadcast(p.detach(), src=0, group=g, algorithm=_bcast(algorithm))
        for b in module.buffers():
            broadcast(b, src=0, group=g, algorithm=_bcast(algorithm))
        if any(p.requires_grad and id(p) not in seen for p in module.parameters()):
            raise DistributedError("FullyShardedDataParallel: some trainable parameters are in no unit; "
                                   "give units that cover them, or leave units=None")
        object.__setattr__(self, "units", built)
        for u in built:
            self.register_parameter(f"flat_param_{u.index}", u.shard)
            self._route(u)

    @staticmethod
    def _route(u: _Unit) -> None:
        """Send the unit's calls through its sharded node (its hooks still run around it)."""
        fwd = u.module.forward

        def sharded_forward(*args, **kwargs):
            if TLS.interpreters and TLS.interpreters[-1].level:
                raise DistributedError("FullyShardedDataParallel cannot run under ember.jit or a transform: "
                                       "its collectives run in eager mode only")
            return _ShardedCall.apply(u, fwd, kwargs, u.shard, *args)
        object.__setattr__(u.module, "forward", sharded_forward)

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """The shards only (`flat_param_<i>`): what the optimizer steps."""
        for u in self.units:
            yield f"{prefix}{'.' if prefix else ''}flat_param_{u.index}", u.shard

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def state_dict(self, *args, **kwargs) -> dict:
        """`full_state_dict()`: a collective, as in PyTorch's FSDP (every rank must call it)."""
        return self.full_state_dict()

    def load_state_dict(self, state_dict, strict: bool = True):
        """`load_full_state_dict(state_dict)`."""
        self.load_full_state_dict(state_dict)

    def full_state_dict(self) -> dict:
        """The wrapped module's whole state_dict on every rank (a collective: all ranks call it)."""
        for u in self.units:
            u.gather()
        try:
            return {k: from_array(np.array(v._data)) for k, v in self.module.state_dict().items()}
        finally:
            for u in self.units:
                u.release()

    def load_full_state_dict(self, state: dict) -> None:
        """Load a whole state_dict (the same on every rank) and re-shard it."""
        for u in self.units:
            u.gather()
        try:
            self.module.load_state_dict(state)
            for u in self.units:
                flat = u.flatten([p._data for p in u.params])
                np.copyto(u.shard._data, flat[u.group.rank * u.S:(u.group.rank + 1) * u.S])
                u.shard._ensure_storage().version += 1
        finally:
            for u in self.units:
                u.release()

    def sharded_state(self) -> dict:
        """This rank's shards, its buffers and frozen parameters, and the layout that reshards them."""
        g = self.group
        return {"shards": {str(u.index): u.shard.detach().numpy().copy() for u in self.units},
                "whole": {k: v.detach().numpy().copy() for k, v in self.module.state_dict().items()
                          if v.numel()},  # buffers and frozen parameters (the sharded ones are empty here)
                "layout": {"world_size": g.size, "rank": g.rank,
                           "totals": [u.total for u in self.units], "S": [u.S for u in self.units]}}

    def load_sharded_state(self, states: list) -> None:
        """Take this rank's shard out of every old rank's `sharded_state()` (any old world size)."""
        old = states[0]["layout"]
        if old["totals"] != [u.total for u in self.units]:
            raise DistributedError(f"FullyShardedDataParallel: the checkpoint's units hold {old['totals']} "
                                   f"elements, this model's {[u.total for u in self.units]}")
        g = self.group
        for u in self.units:
            new = reshard([s["shards"][str(u.index)] for s in states], u.total, g.size, g.rank)
            np.copyto(u.shard._data, new)
            u.shard._ensure_storage().version += 1
        self.module.load_state_dict({k: from_array(np.asarray(v)) for k, v in states[0]["whole"].items()},
                                    strict=False)

    def state_bytes(self) -> int:
        """Bytes this rank keeps of the parameters (its shards)."""
        return sum(u.shard._data.nbytes for u in self.units)
