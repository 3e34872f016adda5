"""The dynamic batcher: a bounded queue per model version and one thread per model instance.

Algorithm (each instance thread, in a loop):
1. wait until the queue holds a request; the batch window closes `max_queue_delay_microseconds`
   after the oldest queued request arrived;
2. take requests from the head, in arrival order, while their batch sizes add up to at most
   `max_batch_size`;
3. run now if that reaches the largest preferred batch size (max_batch_size when none is given),
   or the next queued request does not fit, or the window has closed, or the batcher is stopping;
   otherwise wait for more requests until the window closes, and go to 2;
4. concatenate the inputs along dim 0, run the model once (outside the lock), split the outputs back
   and set each request's future.
Without `dynamic_batching` each request runs alone. A request still queued after its timeout is
rejected (REJECT) whenever a thread looks at the queue, and at the latest when it would have run.
`submit` on a full queue raises QueueFull at once: the caller answers 429 and nothing waits.
"""
from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future

import numpy as np

from .errors import ModelError, QueueFull, ServeError, Unavailable, Unloading
from .metrics import Metrics
from .models import ServedModel


class _Pending:
    __slots__ = ("inputs", "batch", "arrived", "deadline", "future")

    def __init__(self, inputs: dict, batch: int, arrived: int, deadline: int | None):
        self.inputs, self.batch, self.arrived, self.deadline = inputs, batch, arrived, deadline
        self.future = Future()


class Batcher:
    """Queues requests for one loaded model version and runs them in batches on its own threads."""

    def __init__(self, model: ServedModel, metrics: Metrics):
        cfg = model.config
        self.model, self.metrics = model, metrics
        self.labels = (cfg.name, str(model.version))
        self.max_batch = max(cfg.max_batch_size, 1)
        self.batching = cfg.dynamic_batching is not None
        db = cfg.dynamic_batching
        self.delay_ns = db.max_queue_delay_us * 1000 if db else 0
        self.target = db.preferred_batch_size[-1] if db and db.preferred_batch_size else self.max_batch
        self.max_queue = cfg.queue.max_queue_size
        self.timeout_us = cfg.queue.default_timeout_us
        self.allow_override = cfg.queue.allow_timeout_override
        self._q: collections.deque = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._deadlines = 0  # how many queued requests have a deadline
        self._stopping = False
        self._threads = [threading.Thread(target=self._loop, daemon=True,
                                          name=f"ember-serve-{cfg.name}-v{model.version}-{i}")
                         for i in range(cfg.instance_count)]

    def start(self) -> "Batcher":
        for t in self._threads:
            t.start()
        return self

    def queued(self) -> int:
        """How many requests wait in the queue now."""
        with self._cond:
            return len(self._q)

    def submit(self, inputs: dict, batch: int, timeout_us: int | None = None) -> Future:
        """Queue one request of `batch` items; its future gets {output name: array}.
        Raises QueueFull when the queue is full and Unavailable when the batcher is stopping."""
        now = time.monotonic_ns()
        t = timeout_us if timeout_us is not None and self.allow_override else self.timeout_us
        p = _Pending(inputs, batch, now, now + t * 1000 if t > 0 else None)
        with self._cond:
            if self._stopping:
                raise Unloading(f"model {self.labels[0]!r} version {self.labels[1]} is unloading")
            if len(self._q) >= self.max_queue:
                raise QueueFull(f"model {self.labels[0]!r} version {self.labels[1]}: the request queue is "
                                f"full ({self.max_queue} requests); retry later")
            self._q.append(p)
            self._deadlines += p.deadline is not None
            self._cond.notify()
        return p.future

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new requests, run every queued one, and join the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            if t.is_alive() and t is not threading.current_thread():
                t.join(timeout)

    # ---- the instance threads
    def _expire(self, now: int) -> None:
        """Reject the queued requests whose deadline passed (holding the lock: setting a future only
        schedules the waiting handler on the event loop)."""
        if not self._deadlines:
            return
        late = [p for p in self._q if p.deadline is not None and p.deadline <= now]
        if not late:
            return
        gone = set(map(id, late))
        self._q = collections.deque(p for p in self._q if id(p) not in gone)
        self._deadlines -= len(late)
        for p in late:
            if p.future.set_running_or_notify_cancel():
                p.future.set_exception(Unavailable(
                    f"model {self.labels[0]!r} version {self.labels[1]}: the request waited in the queue "
                    f"past its timeout and was rejected"))

    def _take(self) -> list | None:
        """The next batch of requests, or None once stopping with an empty queue."""
        with self._cond:
            while True:
                now = time.monotonic_ns()
                self._expire(now)
                if not self._q:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                k = 1
                if self.batching:
                    total = k = 0
                    for p in self._q:
                        if total + p.batch > self.max_batch:
                            break
                        total, k = total + p.batch, k + 1
                    k = max(k, 1)
                    window_end = self._q[0].arrived + self.delay_ns
                    if not (k < len(self._q) or total >= self.target or now >= window_end or self._stopping):
                        wake = window_end
                        if self._deadlines:
                            wake = min([wake] + [p.deadline for p in self._q if p.deadline is not None])
                        self._cond.wait(max(wake - now, 0) / 1e9)
                        continue
                batch = [self._q.popleft() for _ in range(k)]
                self._deadlines -= sum(p.deadline is not None for p in batch)
                if self._q:
                    self._cond.notify()  # another idle instance may start on the rest
                return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            # a future the client gave up on (a cancelled await) is dropped here
            batch = [p for p in batch if p.future.set_running_or_notify_cancel()]
            if batch:
                self._run(batch)

    def _run(self, batch: list) -> None:
        start = time.monotonic_ns()
        n = sum(p.batch for p in batch)
        try:
            if len(batch) == 1:
                inputs = batch[0].inputs
            else:
                inputs = {k: np.concatenate([p.inputs[k] for p in batch]) for k in batch[0].inputs}
            outs = self.model.run(inputs, n)
        except Exception as e:  # noqa: BLE001 - a model error fails these requests, never the thread
            err = e if isinstance(e, ServeError) else ModelError(
                f"model {self.labels[0]!r} version {self.labels[1]} failed: {type(e).__name__}: {e}")
            for p in batch:
                p.future.set_exception(err)
            return
        end = time.monotonic_ns()
        self.metrics.executed(*self.labels, n, len(batch), end - start, sum(start - p.arrived for p in batch))
        if self.model.config.max_batch_size <= 0:
            batch[0].future.set_result(outs)
            return
        off = 0
        for p in batch:
            p.future.set_result({k: v[off:off + p.batch] for k, v in outs.items()})
            off += p.batch
