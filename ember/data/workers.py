"""Worker processes for `DataLoader(num_workers>0)` (DP-8, DP-12): shared memory, no pickled data.

How it works
------------
* Workers are started with the ``forkserver`` context (``spawn`` where forkserver is missing, or
  on request). The forkserver preloads ``ember`` so a new worker starts in milliseconds. A child
  forked from the main process instead would inherit libgomp's thread pool without its threads,
  and hang in its first parallel region once OpenMP ran in the parent.
* ``fork`` is used where spawn/forkserver cannot work, as PyTorch does on Linux: a main script
  read from stdin, a DataLoader loop at the top level of a script without
  ``if __name__ == "__main__":`` (every spawned worker would run the script again), or a dataset
  defined in the ``__main__`` of ``python -c`` / a REPL; also on request
  (``multiprocessing_context="fork"``). A forked worker runs ember's kernels and BLAS with one
  thread (``set_num_threads(1)``), which never touches the inherited OpenMP pool. What fork still
  risks is a lock held by another Python thread of the parent at that moment (accepted, as in
  PyTorch); OpenBLAS's pool has its own fork handler. Where fork is not available, or another
  method was asked for, these cases raise one short `WorkerError` saying what to do.
* Each worker has its own duplex pipe. Messages on it are small JSON documents sent with
  ``send_bytes`` -- index lists, task ids, seeds, error texts, and descriptions of shared-memory
  blocks (name, dtype, shape, offset). No ``multiprocessing.Queue`` and no pickle is used for
  messages, and user data (arrays, Tensors) never goes through pickle: a worker writes every array
  of a batch into one fresh ``multiprocessing.shared_memory`` block named
  ``ember_dl_<pid>_<start>_<ns>_<loader>_<worker>_<seq>`` and sends its description; the main
  process copies the arrays out and unlinks the block.
* The only pickle involved is the one multiprocessing itself uses to start a process: the user's
  dataset object, collate_fn and worker_init_fn are pickled once per worker start (as PyTorch
  does; they are the user's own objects). Inside that pickle every numpy array and ember Tensor is
  replaced by a reference to a shared-memory block created by the loader, so the dataset's data is
  not copied per worker and tensors are never pickled.
* Task ``t`` is owned by worker ``t % num_workers`` (round-robin ownership, DP-12). A worker answers
  its tasks in the order it got them, so the main process reads task ``t``'s answer from worker
  ``t % N``'s pipe and delivery is strictly in order without a reorder buffer. At most
  ``prefetch_factor`` tasks per worker are outstanding.
* Failure: an exception in a worker comes back as a JSON error naming the op and the sample index
  and is re-raised in the main process (DP-4). A worker that dies (e.g. SIGKILL) is seen at once
  through its process sentinel: the loader raises within ~0.1 s. On exhaustion, an exception,
  KeyboardInterrupt, ``del`` or a dead worker, the loader stops all workers (stop message, then
  terminate/kill) and unlinks every block with its prefix from ``/dev/shm``. A worker whose main
  process died (SIGKILL, OOM) sees its pipe close or its parent pid change and exits within ~1 s;
  the blocks such a main process left are removed by the next `WorkerPool` (`ember.data.shm`).
"""
from __future__ import annotations

import ast
import builtins
import io
import itertools
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
import weakref
from dataclasses import dataclass
from multiprocessing import connection as mpc

import numpy as np

from .._core.errors import EmberError
from .shm import (SHM_PREFIX, ShmPickler, ShmUnpickler, cleanup_prefix, owner_tag, read_result,
                  sweep_orphans, unlink_name, write_result)

__all__ = ["WorkerInfo", "get_worker_info", "WorkerError", "SHM_PREFIX", "cleanup_prefix"]

_counter = itertools.count()


@dataclass(frozen=True)
class WorkerInfo:
    """What `get_worker_info()` returns inside a worker (PyTorch's fields)."""

    id: int
    num_workers: int
    seed: int
    dataset: object


_worker_info: WorkerInfo | None = None


def get_worker_info() -> WorkerInfo | None:
    """The current worker's `WorkerInfo`, or None in the main process."""
    return _worker_info


class WorkerError(EmberError, RuntimeError):
    """A DataLoader worker failed or died; the message names the worker, op and sample index."""


# ------------------------------------------------------------------ the worker process
def _send(conn, obj) -> None:
    conn.send_bytes(json.dumps(obj).encode())


def _recv(conn):
    return json.loads(conn.recv_bytes().decode())


def _seed_worker(seed: int) -> None:
    import random
    from ..api.random import manual_seed
    manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))


def _recv_or_orphaned(conn, ppid: int):
    """The next message, or None once the pipe closed or the parent died (reparented)."""
    try:
        while not conn.poll(1.0):
            if os.getppid() != ppid:
                return None
        return _recv(conn)
    except (EOFError, OSError):
        return None


def _worker_main(payload: bytes, wid: int, nworkers: int, conn, prefix: str, parent=None) -> None:
    """A worker process: receive requests, fetch and collate batches, send them back."""
    # one function on purpose (over 100 lines): the message loop and its two fetchers close over
    # the dataset, its configuration and the (op, index) state every error report names
    global _worker_info
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    # `parent` is the main process's pid when forked. A forked worker also holds its siblings'
    # pipe ends, so EOF alone may never come when the main process is SIGKILLed: the loop also
    # watches its parent pid (see _recv_or_orphaned).
    ppid = parent or os.getppid()
    if parent is not None:
        # libgomp's thread pool does not survive fork: a parallel region with >1 thread in the
        # child hangs. One thread (as PyTorch's workers do) never touches the pool; BLAS follows.
        from .._core.state import set_num_threads
        set_num_threads(1)
    keep: list = []
    seq = itertools.count()
    try:
        cfg = ShmUnpickler(io.BytesIO(payload), keep).load()
    except Exception as e:  # pragma: no cover - reported to the main process
        _send(conn, {"id": -1, "err": {"type": type(e).__name__, "msg": str(e), "op": "worker start",
                                       "index": None, "tb": traceback.format_exc()}})
        return
    from .dataloader import _tensor_source
    ds = cfg["dataset"]
    fast_src, fast_index = (None, None)
    if cfg["auto_collation"] and not cfg["custom_collate"] and not cfg["iterable"]:
        fast_src, fast_index = _tensor_source(ds)
    collate = cfg["collate_fn"]
    stream = None
    busy = 0.0
    state = {"index": None, "op": None}

    def fetch(idx):
        from ..tensor import from_array
        if not cfg["auto_collation"]:
            state["op"], state["index"] = f"{type(ds).__name__}.__getitem__", idx
            sample = ds[idx]
            state["op"] = "collate_fn"
            return collate(sample)
        if fast_src is not None:
            state["op"], state["index"] = "TensorDataset gather", idx
            b = np.asarray(idx, dtype=np.int64)
            if fast_index is not None:
                b = fast_index[b]
            return [from_array(np.take(t._data, b, axis=0), t.dtype) for t in fast_src.tensors]
        samples = []
        state["op"] = f"{type(ds).__name__}.__getitem__"
        for i in idx:
            state["index"] = i
            samples.append(ds[i])
        state["op"], state["index"] = "collate_fn", idx
        return collate(samples)

    def next_from_stream():
        state["op"] = f"{type(ds).__name__}.__iter__"
        if not cfg["auto_collation"]:
            state["index"] = state["pos"]
            x = next(stream)
            state["pos"] += 1
            state["op"] = "collate_fn"
            return collate(x)
        batch = []
        for x in stream:
            state["index"] = state["pos"]
            state["pos"] += 1
            batch.append(x)
            if len(batch) == cfg["batch_size"]:
                break
        if not batch or (len(batch) < cfg["batch_size"] and cfg["drop_last"]):
            raise StopIteration
        state["op"] = "collate_fn"
        return collate(batch)

    try:
        while True:
            msg = _recv_or_orphaned(conn, ppid)
            op = None if msg is None else msg.get("op")
            if op is None or op == "stop":
                break  # stopped, or the main process went away
            if op == "epoch":
                if msg.get("init"):
                    _worker_info = WorkerInfo(wid, nworkers, msg["seed"], ds)
                    _seed_worker(msg["seed"])
                    if cfg["worker_init_fn"] is not None:
                        try:
                            cfg["worker_init_fn"](wid)
                        except Exception as e:
                            _send(conn, {"id": -1, "err": {"type": type(e).__name__, "msg": str(e),
                                                           "op": "worker_init_fn", "index": None,
                                                           "tb": traceback.format_exc()}})
                if cfg["iterable"]:
                    stream, state["pos"] = iter(ds), 0
                continue
            tid = msg["id"]
            t0 = time.perf_counter()
            try:
                if op == "next":
                    if stream is None:
                        _send(conn, {"id": tid, "end": True})
                        continue
                    try:
                        out = next_from_stream()
                    except StopIteration:
                        stream = None
                        _send(conn, {"id": tid, "end": True})
                        continue
                else:
                    out = fetch(msg["idx"])
                res = write_result(out, f"{prefix}{wid}_{next(seq)}")
            except Exception as e:
                _send(conn, {"id": tid, "err": {"type": type(e).__name__, "msg": str(e), "op": state["op"],
                                                "index": state["index"], "tb": traceback.format_exc()}})
                continue
            busy += time.perf_counter() - t0
            res["id"], res["busy"] = tid, busy
            try:
                _send(conn, res)
            except OSError:  # the main process is gone: nobody will unlink this block
                if res["shm"]:
                    unlink_name(res["shm"])
                break
    except OSError:  # a send failed: the main process went away
        pass
    for shm in keep:
        try:
            shm.close()
        except Exception:
            pass


# ------------------------------------------------------------------ the pool, in the main process
_LIVE_POOLS: "weakref.WeakSet" = weakref.WeakSet()


_EXIT_REIMPORT = 87  # a spawned/forkserver worker found itself re-running an unguarded script
_FIX = ('put the DataLoader loop in a script file under `if __name__ == "__main__":`, or pass '
        'multiprocessing_context="fork"')


def _is_main_guard(node) -> bool:
    t = getattr(node, "test", None)
    if not isinstance(node, ast.If) or not isinstance(t, ast.Compare) or len(t.ops) != 1 \
            or not isinstance(t.ops[0], ast.Eq):
        return False
    sides = [t.left, t.comparators[0]]
    return any(isinstance(a, ast.Name) and a.id == "__name__" for a in sides) and \
        any(isinstance(a, ast.Constant) and a.value == "__main__" for a in sides)


def _unguarded_call(main, path: str) -> bool:
    """True if __main__'s top-level code is running now outside an ``if __name__ == "__main__":``."""
    for f in (sys._getframe(1), sys._current_frames().get(threading.main_thread().ident)):
        while f is not None and not (f.f_code.co_name == "<module>" and f.f_globals is main.__dict__):
            f = f.f_back
        if f is not None:
            break
    else:
        return False  # the script's top level is not running (e.g. a call from a REPL)
    try:
        with open(path, "rb") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError, ValueError):
        return False  # cannot tell; a re-run is still caught in the worker (_EXIT_REIMPORT)
    line = f.f_lineno
    return not any(_is_main_guard(n) and n.lineno <= line <= n.end_lineno for n in tree.body)


def _main_issue(uses_main: bool) -> str | None:
    """Why spawn/forkserver workers cannot start from this __main__ (mirrors multiprocessing.spawn)."""
    main = sys.modules.get("__main__")
    spec = getattr(getattr(main, "__spec__", None), "name", None)
    path = getattr(main, "__file__", None)
    if spec is not None:  # python -m pkg.mod: re-imported by name, except a package's __main__
        rerun = not (spec == "__main__" or spec.endswith(".__main__"))
    elif path is None or os.path.splitext(os.path.basename(path))[0] == "ipython":
        rerun = False  # python -c, a REPL, a notebook: the workers never see __main__
    elif not os.path.isfile(os.path.join(mp.process.ORIGINAL_DIR or "", path)):
        return ("the main script was read from stdin (or is not a file), so worker processes cannot "
                "import it")
    else:
        rerun = True
    if rerun and path is not None and _unguarded_call(main, path):
        return ('the loop runs at the top level of the main script, not under `if __name__ == '
                '"__main__":`, so every worker process would run the script again')
    if not rerun and uses_main:
        return ("the dataset, collate_fn or worker_init_fn is defined in the __main__ of python -c, a "
                "REPL or a notebook, which worker processes cannot import")
    return None


def _start_error(n: int, why: str) -> WorkerError:
    e = WorkerError(f"DataLoader(num_workers={n}) cannot start worker processes: {why}. "
                    f"To fix it, {_FIX}.")
    e.start_method_error = True  # mp_iter drops ember's own frames from its traceback
    return e


def _context(name, n: int = 1, uses_main: bool = False):
    """The multiprocessing context for the workers (module docstring: why forkserver, when fork)."""
    method = name if name is None or isinstance(name, str) else name.get_start_method()
    issue = None if method == "fork" else _main_issue(uses_main)
    if name is None:
        if issue is not None and "fork" in mp.get_all_start_methods():
            name, issue = "fork", None
        elif issue is None:
            name = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    if issue is not None:
        raise _start_error(n, issue)
    ctx = mp.get_context(name) if isinstance(name, str) else name
    if ctx.get_start_method() == "forkserver":
        try:
            ctx.set_forkserver_preload(["ember", "ember.data.workers"])
        except Exception:  # pragma: no cover
            pass
    return ctx


class WorkerPool:
    """`num_workers` worker processes serving one DataLoader (kept across epochs when persistent)."""

    def __init__(self, loader, mp_context=None):
        sweep_orphans()  # blocks left behind by SIGKILLed / OOM-killed loaders (see .shm)
        self.n = loader.num_workers
        self.prefix = f"{SHM_PREFIX}{owner_tag()}_{next(_counter)}_"
        self.blocks: list = []
        self.closed = False
        self.procs, self.conns = [], []
        self.outstanding = [0] * self.n
        self.busy = [0.0] * self.n
        self.items = [0] * self.n
        self.iterable = loader._iterable
        cfg = {"dataset": loader.dataset, "collate_fn": loader.collate_fn,
               "worker_init_fn": loader.worker_init_fn, "auto_collation": loader._auto_collation,
               "custom_collate": loader._custom_collate, "iterable": loader._iterable,
               "batch_size": loader.batch_size, "drop_last": loader.drop_last}
        buf = io.BytesIO()
        pickler = ShmPickler(buf, self.prefix, self.blocks)
        try:
            pickler.dump(cfg)
        except Exception as e:
            cleanup_prefix(self.prefix)
            raise TypeError(f"DataLoader(num_workers={self.n}): the dataset, collate_fn and "
                            f"worker_init_fn must be picklable to start worker processes "
                            f"(define them at module level): {e}") from e
        try:
            ctx = _context(mp_context, self.n, pickler.uses_main)
        except BaseException:
            cleanup_prefix(self.prefix)  # a refused context leaks nothing
            raise
        parent = os.getpid() if ctx.get_start_method() == "fork" else None
        payload = buf.getvalue()
        _LIVE_POOLS.add(self)
        try:
            for w in range(self.n):
                a, b = ctx.Pipe(duplex=True)
                p = ctx.Process(target=_worker_main, args=(payload, w, self.n, b, self.prefix, parent),
                                name=f"ember-dataloader-{w}", daemon=True)
                p.start()
                b.close()
                self.procs.append(p)
                self.conns.append(a)
        except BaseException:
            self.shutdown()
            raise
        self._finalizer = weakref.finalize(self, WorkerPool._final, self.procs, self.conns, self.prefix)

    @staticmethod
    def _final(procs, conns, prefix):
        for c in conns:
            try:
                _send(c, {"op": "stop"})
            except Exception:
                pass
        deadline = time.monotonic() + 1.0
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.exitcode is None:
                p.kill()
                p.join(1.0)
        for c in conns:
            try:
                c.close()
            except Exception:
                pass
        cleanup_prefix(prefix)

    def start_epoch(self, base_seed: int, init: bool) -> None:
        for w, c in enumerate(self.conns):
            self.send(w, {"op": "epoch", "seed": int(base_seed + w) & 0x7FFFFFFFFFFFFFFF, "init": init})

    def send(self, w: int, msg: dict) -> None:
        try:
            _send(self.conns[w], msg)
        except (OSError, EOFError, BrokenPipeError):
            self._dead(w)

    def _dead(self, w: int):
        p = self.procs[w]
        p.join(0.5)
        code = p.exitcode
        why = f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0 else \
            f"exit code {code}"
        self.shutdown()
        if code == _EXIT_REIMPORT:
            raise _start_error(self.n, f"worker {w} ran the main script again and reached its DataLoader "
                                       "loop (it is not under `if __name__ == \"__main__\":`)")
        raise WorkerError(f"DataLoader worker {w} (pid {p.pid}) exited unexpectedly ({why})")

    def recv(self, w: int, timeout: float | None):
        """The next message from worker `w`; raises `WorkerError` if it died, TimeoutError on timeout."""
        conn, p = self.conns[w], self.procs[w]
        deadline = None if not timeout else time.monotonic() + timeout
        while True:
            wait_for = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            ready = mpc.wait([conn, p.sentinel], wait_for)
            if conn in ready:
                try:
                    msg = _recv(conn)
                except (EOFError, OSError):
                    self._dead(w)
                if msg.get("id") == -1 and "err" in msg:
                    self.shutdown()
                    _raise_worker_error(w, msg["err"])
                self.outstanding[w] -= 1
                return msg
            if p.sentinel in ready or p.exitcode is not None:
                if conn.poll(0):
                    continue
                self._dead(w)
            if deadline is not None and time.monotonic() >= deadline:
                self.shutdown()
                raise TimeoutError(f"DataLoader timed out after {timeout} s waiting for worker {w}")

    def drain(self) -> None:
        """Read and discard outstanding answers (an epoch left early), freeing their blocks."""
        for w in range(self.n):
            while self.outstanding[w] > 0 and not self.closed:
                msg = self.recv(w, 10.0)
                if msg.get("shm"):
                    unlink_name(msg["shm"])

    def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._finalizer() if hasattr(self, "_finalizer") else WorkerPool._final(self.procs, self.conns, self.prefix)


def _raise_worker_error(w: int, err: dict):
    where = f" at sample index {err['index']}" if err.get("index") is not None else ""
    text = (f"DataLoader worker {w}: {err['type']} in {err.get('op')}{where}: {err['msg']}\n"
            f"--- worker traceback ---\n{err.get('tb', '')}")
    cls = getattr(builtins, err["type"], None)
    if isinstance(cls, type) and issubclass(cls, Exception) and cls not in (KeyError,):
        try:
            exc = cls(text)
        except Exception:
            exc = WorkerError(text)
    else:
        exc = WorkerError(text)
    raise exc


class MultiProcessIter:
    """One epoch over a DataLoader with worker processes; yields batches strictly in order."""

    def __init__(self, loader, pool: WorkerPool, persistent: bool, first: bool):
        self.loader, self.pool, self.persistent = loader, pool, persistent
        self.n = pool.n
        self.prefetch = loader.prefetch_factor
        self.timeout = loader.timeout or None
        from ..api.random import default_generator
        gen = loader.generator if loader.generator is not None else default_generator()
        bits = gen.bits((2,)).numpy().astype(np.uint64)
        base_seed = int(bits[0]) | (int(bits[1]) << 31)
        if not persistent or first or pool.iterable:
            pool.start_epoch(base_seed, init=(not persistent) or first)
        if pool.iterable:
            self.tasks = None
            self.active = list(range(self.n))
            self.rr = 0
        else:
            self.tasks = iter(loader.batch_sampler) if loader._auto_collation else iter(loader.sampler)
        self.sent = 0
        self.recvd = 0
        self.done = False
        self.wait = 0.0
        self.t_start = time.perf_counter()
        self.pending: list = [None] * self.n  # per worker FIFO of task ids (for iterables)
        if not pool.iterable:
            for _ in range(self.prefetch * self.n):
                if not self._send_next():
                    break
        else:
            for w in range(self.n):
                for _ in range(self.prefetch):
                    self._request(w)

    def _send_next(self) -> bool:
        try:
            idx = next(self.tasks)
        except StopIteration:
            return False
        idx = [int(i) for i in idx] if isinstance(idx, (list, tuple, np.ndarray)) else int(idx)
        w = self.sent % self.n
        self.pool.send(w, {"op": "task", "id": self.sent, "idx": idx})
        self.pool.outstanding[w] += 1
        self.sent += 1
        return True

    def _request(self, w: int) -> None:
        self.pool.send(w, {"op": "next", "id": self.sent})
        self.pool.outstanding[w] += 1
        self.sent += 1

    def __iter__(self):
        return self

    def __next__(self):
        if self.done:
            raise StopIteration
        try:
            return self._next()
        except StopIteration:
            self._finish()
            raise
        except BaseException:
            self._abort()
            raise

    def _next(self):
        pool = self.pool
        if not pool.iterable:
            if self.recvd >= self.sent:
                raise StopIteration
            w = self.recvd % self.n
            msg = self._get(w)
            self.recvd += 1
            self._send_next()
            return self._result(w, msg)
        while self.active:
            w = self.active[self.rr % len(self.active)]
            msg = self._get(w)
            if msg.get("end"):
                self.active.remove(w)
                continue
            self.rr += 1
            self._request(w)
            return self._result(w, msg)
        raise StopIteration

    def _get(self, w):
        t0 = time.perf_counter()
        msg = self.pool.recv(w, self.timeout)
        self.wait += time.perf_counter() - t0
        if "err" in msg:
            self._abort()
            _raise_worker_error(w, msg["err"])
        return msg

    def _result(self, w, msg):
        self.pool.busy[w] = msg.get("busy", 0.0)
        self.pool.items[w] += 1
        out = read_result(msg)
        _record_stats(self.loader, self)
        return out

    def _finish(self):
        self.done = True
        _record_stats(self.loader, self)
        if self.persistent:
            self.pool.drain()
        else:
            self.pool.shutdown()

    def _abort(self):
        self.done = True
        _record_stats(self.loader, self)
        _drop_pool(self.loader, self.pool)
        self.pool.shutdown()

    def close(self):
        if not self.done:
            self.done = True
            if self.persistent and not self.pool.closed:
                try:
                    self.pool.drain()
                except Exception:
                    _drop_pool(self.loader, self.pool)
                    self.pool.shutdown()
            else:
                self.pool.shutdown()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def mp_iter(loader) -> MultiProcessIter:
    """The DataLoader's iterator when ``num_workers > 0``."""
    if getattr(mp.current_process(), "_inheriting", False):
        # a spawn/forkserver worker importing an unguarded main script has reached its loop again:
        # leave quietly, the main process turns the exit code into one clear error (WorkerPool._dead)
        os._exit(_EXIT_REIMPORT)
    pool = loader._pool
    first = False
    if pool is None or pool.closed or not loader.persistent_workers:
        try:
            pool = WorkerPool(loader, loader.multiprocessing_context)
        except WorkerError as e:
            if getattr(e, "start_method_error", False):  # a usage error: the message says it all
                raise e.with_traceback(None) from None
            raise
        first = True
        if loader.persistent_workers:
            loader._pool = pool
    return MultiProcessIter(loader, pool, loader.persistent_workers, first)


def _drop_pool(loader, pool) -> None:
    if loader._pool is pool:
        loader._pool = None


def _record_stats(loader, it: MultiProcessIter) -> None:
    from .stats import StageStats, StatsTable
    pool = it.pool
    rows = []
    for w in range(pool.n):
        rows.append(StageStats(f"worker {w}", items=pool.items[w], busy=pool.busy[w], wait=0.0))
    total = sum(pool.items)
    wall = time.perf_counter() - it.t_start
    rows.append(StageStats("main (receive)", items=total, busy=max(wall - it.wait, 0.0), wait=it.wait))
    loader._stats = StatsTable(rows, wall=wall)


def _shutdown_all():  # at interpreter exit: no orphaned workers, no /dev/shm leftovers
    for p in list(_LIVE_POOLS):
        try:
            p.shutdown()
        except Exception:
            pass


import atexit  # noqa: E402

atexit.register(_shutdown_all)
