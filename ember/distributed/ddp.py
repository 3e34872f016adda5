"""`DistributedDataParallel`: data parallelism with bucketed, overlapped gradient all-reduce.

(DT-1, DT-11, BE-11; book ch10.2-10.3.)

- At construction rank 0's parameters and buffers are broadcast to all ranks in ONE coalesced
  message (memory fusion, BE-11), so every replica starts equal.
- Parameters are grouped into buckets in *reverse* registration order (the order backward produces
  their gradients): the first bucket holds up to ``first_bucket_cap_mb`` (1 MiB), the others up to
  ``bucket_cap_mb`` (25 MiB). Each bucket owns one flat buffer.
- A post-accumulate-grad hook on each parameter (it fires during backward as soon as that leaf's
  gradient is complete) copies the gradient into its bucket; when the bucket is full its
  all-reduce is queued to the process group's communication thread (comm_thread.py), which runs
  the buckets' all-reduces one after another while backward continues on this thread: MPI's
  non-blocking collectives, and ember's ring rounds, move only while a thread is inside MPI, and
  that thread is. With ``comm_thread=False`` the all-reduce is started by the hook and every later
  hook polls the buckets in flight instead, so they progress only between layers.
- When the last bucket has started, the hook waits for all of them and writes the averaged
  gradients (sum / world_size, not / batch size) back into each ``param.grad``.
- ``no_sync()`` skips all of this for gradient-accumulation micro-batches; the first backward after
  it reduces the accumulated gradients.

Every parameter that requires grad must receive a gradient in each synchronised backward
(PyTorch's default ``find_unused_parameters=False``); otherwise the next forward raises.
``timeline`` records (event, bucket, perf_counter time) for the overlap test and bench/ddp.py:
"start" (queued), "done" (its all-reduce finished), "wait" (bucket -1: backward's last hook
began waiting for them all).
``compression="fp16" | "bf16" | "fp8"`` (or a `compression.Codec`) sends the buckets as 16- or
8-bit values over ember's ring, summed in float32 (compression.py), with error feedback for fp8.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

from ..nn.module import Module
from .collectives import _all_reduce_flat, _bytes_msg, _irecv, _isend, _start
from .compression import ring_all_reduce
from .errors import DistributedError
from .process_group import group as _default_group

__all__ = ["DistributedDataParallel"]

_MiB = 1 << 20


class _Bucket:
    def __init__(self, index, params, dtype):
        self.index = index
        self.params = params  # in the order backward produces them
        self.offsets = []
        off = 0
        for p in params:
            self.offsets.append(off)
            off += p.numel()
        self.buffer = np.zeros(off, dtype)
        self.residual = None  # what the compression lost of this rank's last gradient (error feedback)
        self.pending = len(params)
        self.work = None

    def reset(self):
        self.pending = len(self.params)
        self.work = None


class DistributedDataParallel(Module):
    """Wrap `module` for data-parallel training over the default process group."""

    def __init__(self, module: Module, *, bucket_cap_mb: float = 25.0, first_bucket_cap_mb: float = 1.0,
                 broadcast_buffers: bool = True, algorithm: str = "mpi", process_group=None,
                 gradient_as_average: bool = True, compression=None, comm_thread: bool = True):
        super().__init__()
        from .compression import codec
        object.__setattr__(self, "_codec", codec(compression))
        self.module = module
        g = process_group or _default_group()
        object.__setattr__(self, "_pg", g)
        object.__setattr__(self, "_algorithm", algorithm)
        object.__setattr__(self, "_broadcast_buffers", broadcast_buffers)
        object.__setattr__(self, "_require_sync", True)
        object.__setattr__(self, "timeline", [])
        object.__setattr__(self, "_average", gradient_as_average)
        object.__setattr__(self, "_threaded", bool(comm_thread) and g.size > 1)
        params = [p for p in module.parameters() if p.requires_grad]
        object.__setattr__(self, "_params", params)
        self._sync_module_state()
        # buckets in reverse parameter order; a new bucket when the cap (or the dtype) changes
        buckets, cur, cur_bytes = [], [], 0
        cap = first_bucket_cap_mb * _MiB
        for p in reversed(params):
            nb = p.numel() * p.element_size()
            if cur and (cur_bytes + nb > cap or p.dtype != cur[0].dtype):
                buckets.append(cur)
                cur, cur_bytes, cap = [], 0, bucket_cap_mb * _MiB
            cur.append(p)
            cur_bytes += nb
        if cur:
            buckets.append(cur)
        bl = [_Bucket(i, ps, np.dtype(ps[0]._data.dtype)) for i, ps in enumerate(buckets)]
        if self._codec is not None and any(b.buffer.dtype != np.float32 for b in bl):
            raise DistributedError(f"DDP: {self._codec.name} gradient compression needs float32 parameters, "
                                   f"got {sorted({str(b.buffer.dtype) for b in bl})}")
        object.__setattr__(self, "buckets", bl)
        where = {}
        for b in bl:
            for j, p in enumerate(b.params):
                where[id(p)] = (b, j)
        object.__setattr__(self, "_where", where)
        object.__setattr__(self, "_started", 0)
        object.__setattr__(self, "_hooks", [p.register_post_accumulate_grad_hook(self._grad_ready)
                                            for p in params])

    # ---- state broadcast (one coalesced message)
    def _state_tensors(self, buffers: bool = True, params: bool = True):
        out = []
        if params:
            out += [p for p in self.module.parameters()]
        if buffers:
            out += [b for b in self.module.buffers()]
        return out

    def _coalesced_broadcast(self, tensors) -> None:
        g = self._pg
        if g.size == 1 or not tensors:
            return
        arrs = [t._data for t in tensors]
        flat = np.concatenate([np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in arrs])
        _start(g, "broadcast", "mpi", reqs=[g.comm.Ibcast(_bytes_msg(flat), root=0)])
        off = 0
        for t, a in zip(tensors, arrs):
            nb = a.nbytes
            np.copyto(a, flat[off:off + nb].view(a.dtype).reshape(a.shape))
            t._ensure_storage().version += 1
            off += nb

    def _sync_module_state(self) -> None:
        self._coalesced_broadcast(self._state_tensors())

    # ---- forward
    def forward(self, *args, **kwargs):
        if self._started and self._require_sync:
            raise DistributedError("DDP: the previous backward did not produce gradients for every "
                                   "parameter, so its all-reduce never finished (unused parameters "
                                   "are not supported)")
        if self._broadcast_buffers and self.training:
            self._coalesced_broadcast(self._state_tensors(params=False))
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Accumulate gradients locally (no communication) inside this context."""
        old = self._require_sync
        object.__setattr__(self, "_require_sync", False)
        try:
            yield
        finally:
            object.__setattr__(self, "_require_sync", old)

    # ---- the hooks
    def _grad_ready(self, p) -> None:
        if not self._require_sync:
            return
        b, j = self._where[id(p)]
        n = p.numel()
        off = b.offsets[j]
        np.copyto(b.buffer[off:off + n], p.grad._data.reshape(-1), casting="unsafe")
        b.pending -= 1
        if not self._threaded:
            for other in self.buckets[:self._started]:
                if other.work is not None:
                    other.work.is_completed()  # drive MPI progress / ember's schedule
        if b.pending == 0:
            self.timeline.append(("start", b.index, time.perf_counter()))
            if self._threaded:
                b.work = self._pg.comm_thread.submit(lambda b=b: self._reduce(b))
                b.work.add_done_callback(lambda f, i=b.index: self.timeline.append(("done", i, time.perf_counter())))
            else:
                b.work = self._reduce(b)
            object.__setattr__(self, "_started", self._started + 1)
            if self._started == len(self.buckets):
                self._finish()

    def _reduce(self, b):
        """Start bucket b's all-reduce (compressed: ember's ring with encoded messages)."""
        c = self._codec
        if c is None:
            return _all_reduce_flat(self._pg, b.buffer, _op_sum(), self._algo(), lambda: None, True)
        if c.error_feedback:  # send what this rank's gradient and the earlier loss round to
            if b.residual is None:
                b.residual = np.zeros_like(b.buffer)
            b.buffer += b.residual
            q = c.roundtrip(b.buffer)
            np.subtract(b.buffer, q, out=b.residual)
            b.buffer[:] = q
        g = self._pg
        sched = iter(()) if g.size == 1 else ring_all_reduce(g, b.buffer, c, g.next_tag(), _isend, _irecv)
        return _start(g, "all_reduce", f"ring_{c.name}", schedule=sched, async_op=True)

    def _algo(self):
        return "ring" if self._algorithm in ("ember", "ring") else self._algorithm

    def _finish(self) -> None:
        inv = 1.0 / self._pg.size
        self.timeline.append(("wait", -1, time.perf_counter()))
        for b in self.buckets:
            if self._threaded:
                b.work.result()  # re-raises what the thread met (a dead rank: RankFailureError)
            else:
                b.work.wait()
                self.timeline.append(("done", b.index, time.perf_counter()))
            if self._average and self._pg.size > 1:
                np.multiply(b.buffer, inv, out=b.buffer, casting="unsafe")
            for p, off in zip(b.params, b.offsets):
                gd = p.grad._data
                src = b.buffer[off:off + p.numel()].reshape(gd.shape)
                if gd.flags.writeable:
                    np.copyto(gd, src, casting="unsafe")
                    p.grad._ensure_storage().version += 1
                else:
                    from ..tensor import from_array
                    p.grad = from_array(src.astype(gd.dtype), p.grad._dtype)
            b.reset()
        object.__setattr__(self, "_started", 0)

    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True):
        return self.module.load_state_dict(state_dict, strict)


def _op_sum():
    from .collectives import ReduceOp
    return ReduceOp.SUM
