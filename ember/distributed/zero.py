"""`ZeroRedundancyOptimizer`: ZeRO stages 1 and 2 (DT-12; PyTorch's ZeroRedundancyOptimizer,
DeepSpeed's ZeRO-1/2): each rank keeps the optimizer state of one shard of the parameters only.

The parameters (of one floating dtype) are laid end to end in one flat vector, zero-padded to a
multiple of the world size and cut into equal shards: rank r owns elements [r S, (r + 1) S).
Each rank's local optimizer (any `ember.optim` class) steps one Parameter holding its shard, so
its state (Adam's moments: twice the parameter bytes) is 1/world_size of the unsharded one.
`step()`:

1. the local gradients, flattened, are reduce-scattered (ember's ring, or MPI): rank r receives
   the sum of its shard's gradients over the ranks, divided by the world size (DDP's average);
   nothing else of the gradient is kept past this point (stage 2);
2. the local optimizer steps the shard;
3. the updated shards are all-gathered and written back into the model's parameters.

So the model is not wrapped in DDP (the reduce-scatter replaces DDP's all-reduce) and every rank
ends each step with the same parameters; the trajectory is DDP's with the same optimizer, up to
the order of the float sums. Elementwise optimizers (SGD, Adam, AdamW, RMSprop, Adagrad, Lion)
step a shard exactly as they would step the whole; LBFGS is refused, and an update that looks
across a tensor (LAMB's per-tensor trust ratio) sees the shard as one tensor.
"""
from __future__ import annotations

import numpy as np

from ..nn.parameter import Parameter
from ..tensor import from_array
from .collectives import ReduceOp, all_gather, reduce_scatter
from .errors import DistributedError
from .process_group import group as _default_group

__all__ = ["ZeroRedundancyOptimizer"]


def flatten_padded(arrays, sizes, length: int, dtype) -> np.ndarray:
    """The arrays (None: zeros) end to end in one zero-padded vector of `length` elements."""
    flat = np.zeros(length, dtype)
    off = 0
    for a, k in zip(arrays, sizes):
        if a is not None:
            flat[off:off + k] = np.asarray(a).reshape(-1)
        off += k
    return flat


class ZeroRedundancyOptimizer:
    """Shard `optimizer_class(params, **defaults)`'s state over the process group's ranks."""

    def __init__(self, params, optimizer_class, *, process_group=None, algorithm: str = "ember", **defaults):
        from ..optim import LBFGS
        if optimizer_class is LBFGS:
            raise DistributedError("ZeroRedundancyOptimizer: LBFGS's update couples every element; it cannot be sharded")
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise DistributedError("ZeroRedundancyOptimizer: no parameters that require grad")
        dts = {p._data.dtype for p in self.params}
        if len(dts) != 1 or next(iter(dts)).kind != "f":
            raise DistributedError(f"ZeroRedundancyOptimizer: the parameters must share one float dtype, got {dts}")
        self.group = process_group or _default_group()
        self.algorithm = algorithm
        n, r = self.group.size, self.group.rank
        self.sizes = [p.numel() for p in self.params]
        self.total = sum(self.sizes)
        self.shard_size = -(-self.total // n)
        self.dtype = next(iter(dts))
        flat = self._flatten([p._data for p in self.params])
        self.shard = Parameter(from_array(flat[r * self.shard_size:(r + 1) * self.shard_size].copy()))
        self.optim = optimizer_class([self.shard], **defaults)

    def _flatten(self, arrays) -> np.ndarray:
        return flatten_padded(arrays, self.sizes, self.shard_size * self.group.size, self.dtype)

    @property
    def param_groups(self):
        """The local optimizer's groups (lr, betas, ...: what schedulers change)."""
        return self.optim.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the model parameters' gradients."""
        for p in self.params:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = from_array(np.zeros_like(p.grad._data), p.grad._dtype)

    def step(self) -> None:
        """Reduce-scatter the gradients, step this rank's shard, all-gather the parameters."""
        g, n, S = self.group, self.group.size, self.shard_size
        grads = self._flatten([None if p.grad is None else p.grad._data for p in self.params])
        chunks = [from_array(grads[i * S:(i + 1) * S]) for i in range(n)]
        mine = from_array(np.empty(S, self.dtype))
        reduce_scatter(mine, chunks, op=ReduceOp.SUM, group=g, algorithm=self.algorithm)
        mine._data /= n
        self.shard.grad = mine
        self.optim.step()
        parts = [from_array(np.empty(S, self.dtype)) for _ in range(n)]
        all_gather(parts, self.shard.detach(), group=g, algorithm=self.algorithm)
        flat = np.concatenate([t._data for t in parts])
        off = 0
        for p, k in zip(self.params, self.sizes):
            np.copyto(p._data, flat[off:off + k].reshape(p._data.shape))
            p._ensure_storage().version += 1
            off += k
        self.shard.grad = None

    def state_bytes(self) -> int:
        """Bytes of this rank's optimizer state (its tensors)."""
        return sum(v._data.nbytes for st in self.optim.state.values() for v in st.values()
                   if hasattr(v, "_data"))

    def state_dict(self) -> dict:
        """This rank's shard of the optimizer state (a sharded checkpoint: one per rank)."""
        return {"rank": self.group.rank, "world_size": self.group.size, "optimizer": self.optim.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Load a state_dict this rank wrote (the same world size)."""
        if (state.get("rank"), state.get("world_size")) != (self.group.rank, self.group.size):
            raise DistributedError(f"ZeroRedundancyOptimizer: this shard is rank {state.get('rank')} of "
                                   f"{state.get('world_size')}, not rank {self.group.rank} of {self.group.size}")
        self.optim.load_state_dict(state["optimizer"])
