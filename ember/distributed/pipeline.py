"""Pipeline parallelism (DT-3, DT-5; GPipe and PipeDream's 1F1B): a model cut into stages, stage r
on rank r, a batch cut into M micro-batches that flow through the stages, activations sent
forward and their gradients sent back.

`PipelineStage(module)` on every rank of the group (rank r holding the r-th piece);
`stage.train_step(x, y, loss_fn, micro_batches=M, schedule="gpipe" | "1f1b")` runs one step:

- GPipe: every micro-batch forward, then every micro-batch backward (in reverse);
- 1F1B: stage r runs S - r - 1 forwards (the warm-up), then alternates one forward and one
  backward, then the remaining backwards, so it holds at most S - r micro-batches' activations
  (GPipe holds M).

Rank 0 reads x, the last rank y; each micro-batch's loss is loss_fn(output, y_m) / M, so the
parameters' gradients (accumulated over the micro-batches, as `.backward()` accumulates) are the
full batch's mean loss's; `train_step` returns that loss on the last rank (None elsewhere).
Messages are a 9-value int64 header (rank, shape) then the float32 values; sends are
non-blocking and waited for at the end of the step, receives block, so the schedules cannot
deadlock. `timeline` holds (kind, micro-batch, start, end) of this rank's forwards and backwards
in the last step; `bubble()` is the fraction of the step the stage was not computing, against
the ideal (S - 1) / (M + S - 1).
"""
from __future__ import annotations

import time

import numpy as np

from .. import autograd
from ..tensor import Tensor, from_array
from .collectives import isend, recv
from .errors import DistributedError
from .process_group import group as _default_group

__all__ = ["PipelineStage"]
_FWD, _BWD = 101, 102  # message tags: activations forward, their gradients back
_MAX_RANK = 8


class PipelineStage:
    """This rank's stage of a pipeline over the process group (stage r on rank r)."""

    def __init__(self, module, process_group=None):
        self.module = module
        self.group = process_group or _default_group()
        self.rank, self.stages = self.group.rank, self.group.size
        self.timeline: list = []
        self._sends: list = []
        self._t0 = self._t1 = 0.0

    # ---- messages
    def _send(self, t: Tensor, dst: int, tag: int) -> None:
        a = np.ascontiguousarray(t._data, np.float32)
        if a.ndim > _MAX_RANK:
            raise DistributedError(f"pipeline: a message of rank {a.ndim} (at most {_MAX_RANK})")
        head = np.zeros(_MAX_RANK + 1, np.int64)
        head[0], head[1:1 + a.ndim] = a.ndim, a.shape
        for arr in (head, a):
            self._sends.append((arr, isend(from_array(arr), dst, self.group, tag)))

    def _recv(self, src: int, tag: int) -> Tensor:
        head = from_array(np.zeros(_MAX_RANK + 1, np.int64))
        recv(head, src, self.group, tag)
        h = head._data
        out = from_array(np.empty(tuple(int(d) for d in h[1:1 + int(h[0])]), np.float32))
        recv(out, src, self.group, tag)
        return out

    # ---- one micro-batch
    def _forward(self, m: int, x, state):
        t0 = time.perf_counter()
        if self.rank == 0:
            inp = x
        else:
            inp = self._recv(self.rank - 1, _FWD).requires_grad_(True)
            t0 = time.perf_counter()
        out = self.module(inp)
        if self.rank == self.stages - 1:
            loss = state["loss_fn"](out, state["ys"][m]) / state["M"]
            state["losses"].append(float(loss.detach().numpy()))
            state["saved"][m] = (inp, loss, None)
        else:
            state["saved"][m] = (inp, out, None)
        self.timeline.append(("F", m, t0, time.perf_counter()))
        if self.rank < self.stages - 1:
            self._send(out.detach(), self.rank + 1, _FWD)

    def _backward(self, m: int, state):
        inp, out, _ = state["saved"].pop(m)
        g = None if self.rank == self.stages - 1 else self._recv(self.rank + 1, _BWD)
        t0 = time.perf_counter()
        autograd.backward([out], None if g is None else [g])
        self.timeline.append(("B", m, t0, time.perf_counter()))
        if self.rank > 0:
            if inp.grad is None:
                raise DistributedError(f"pipeline: stage {self.rank}'s output does not depend on its input")
            self._send(inp.grad, self.rank - 1, _BWD)

    def train_step(self, x, y, loss_fn, *, micro_batches: int, schedule: str = "1f1b"):
        """One step over the micro-batches (see the module doc); the loss on the last rank."""
        M, S, r = int(micro_batches), self.stages, self.rank
        if schedule not in ("gpipe", "1f1b"):
            raise ValueError(f"unknown pipeline schedule {schedule!r}: use 'gpipe' or '1f1b'")
        if M < 1:
            raise ValueError(f"micro_batches must be >= 1, got {M}")
        xs = _split(x, M, "x") if r == 0 else [None] * M
        ys = _split(y, M, "y") if r == S - 1 else None
        state = {"loss_fn": loss_fn, "ys": ys, "M": M, "losses": [], "saved": {}}
        self.timeline, self._sends = [], []
        self._t0 = time.perf_counter()
        if schedule == "gpipe":
            for m in range(M):
                self._forward(m, xs[m], state)
            for m in reversed(range(M)):
                self._backward(m, state)
        else:
            warm = min(S - r - 1, M)
            for m in range(warm):
                self._forward(m, xs[m], state)
            for m in range(warm, M):
                self._forward(m, xs[m], state)
                self._backward(m - warm, state)
            for m in range(M - warm, M):
                self._backward(m, state)
        for _, w in self._sends:
            w.wait()
        self._sends = []
        self._t1 = time.perf_counter()
        return sum(state["losses"]) if r == S - 1 else None

    def bubble(self) -> float:
        """The fraction of the last step this stage spent not computing."""
        busy = sum(e - s for _, _, s, e in self.timeline)
        total = self._t1 - self._t0
        return 1.0 - busy / total if total > 0 else 0.0

    @staticmethod
    def ideal_bubble(stages: int, micro_batches: int) -> float:
        """GPipe's and 1F1B's bubble with equal stages and free communication: (S-1) / (M+S-1)."""
        return (stages - 1) / (micro_batches + stages - 1)


def _split(t, M: int, what: str) -> list:
    n = t.shape[0]
    if n % M:
        raise DistributedError(f"pipeline: a batch of {n} does not split into {M} equal micro-batches ({what})")
    k = n // M
    return [t[i * k:(i + 1) * k] for i in range(M)]
