"""One communication thread per process group: collectives queued from anywhere (DDP's gradient
hooks, in backward) run on it one after another, in the order they were submitted.

Why a thread: MPI's non-blocking operations, and ember's ring schedules built on them, move only
while some thread is inside an MPI call (MPICH has no progress thread unless asked for one). Hooks
that poll between layers leave the network idle while a layer computes; a thread that waits on
the requests keeps every round moving as soon as its peer is ready, so the all-reduce of one
bucket runs during the backward of the next layers.

How it waits: `Work.wait(nap=...)` tests the requests and sleeps `nap` seconds between tests
(releasing the GIL and the core, which the backward needs), and checks the peers' liveness as any
wait does, so a dead rank still turns into `RankFailureError`, delivered to whoever reads the
future. Order: one FIFO queue, one collective at a time, so every rank issues the same
collectives in the same order with the same tags (the tags are drawn on this thread). While work
is queued here, the group's other collectives must wait for it (DDP reads every future before
backward returns). The thread starts on the first submit and stops in `destroy_process_group`.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable

__all__ = ["CommThread"]

NAP_S = 250e-6  # between request tests: ~20k tests/s, a fraction of a core on an idle wait


class CommThread:
    """A FIFO of collectives run by one daemon thread (`submit` returns a Future of the result)."""

    def __init__(self, g, nap: float = NAP_S):
        self._g, self._nap = g, nap
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread = None

    def submit(self, start: Callable) -> Future:
        """Queue `start()` (which starts a collective and returns its Work) for the thread."""
        fut: Future = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"ember-comm-{self._g.rank}", daemon=True)
                self._thread.start()
            self._q.put((start, fut))
        return fut

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            start, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(start().wait(nap=self._nap))
            except BaseException as e:  # delivered to the reader of the future
                fut.set_exception(e)

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._lock:
            t, self._thread = self._thread, None
        if t is not None:
            self._q.put(None)
            t.join()
