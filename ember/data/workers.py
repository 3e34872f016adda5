"""Worker processes for `DataLoader(num_workers>0)` (DP-8, DP-12): shared memory, no pickled data.

How it works
------------
* Workers are started with the ``forkserver`` context (``spawn`` where forkserver is missing, or
  on request); never plain ``fork``, which hangs once OpenMP has run in the parent (DESIGN.md).
  The forkserver preloads ``ember`` so a new worker starts in milliseconds.
* Each worker has its own duplex pipe. Messages on it are small JSON documents sent with
  ``send_bytes`` -- index lists, task ids, seeds, error texts, and descriptions of shared-memory
  blocks (name, dtype, shape, offset). No ``multiprocessing.Queue`` and no pickle is used for
  messages, and user data (arrays, Tensors) never goes through pickle: a worker writes every array
  of a batch into one fresh ``multiprocessing.shared_memory`` block named
  ``ember_dl_<pid>_<loader>_<worker>_<seq>`` and sends its description; the main process copies the
  arrays out and unlinks the block.
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
  terminate/kill) and unlinks every block with its prefix from ``/dev/shm``.
"""
from __future__ import annotations

import builtins
import io
import itertools
import json
import math
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
import traceback
import weakref
from dataclasses import dataclass
from multiprocessing import connection as mpc
from multiprocessing import resource_tracker, shared_memory

import numpy as np

__all__ = ["WorkerInfo", "get_worker_info", "WorkerError", "SHM_PREFIX"]

SHM_PREFIX = "ember_dl_"
_ALIGN = 64
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


class WorkerError(RuntimeError):
    """A DataLoader worker failed or died; the message names the worker, op and sample index."""


# ------------------------------------------------------------------ shared memory helpers
def _untrack(shm) -> None:
    # Python < 3.13 registers every SharedMemory with the resource tracker; ember cleans up its own
    # blocks by name prefix, so the tracker must not unlink them behind the loader's back.
    try:
        resource_tracker.unregister(shm._name, "shared_memory")
    except Exception:  # pragma: no cover
        pass


def _create_block(name: str, size: int):
    shm = shared_memory.SharedMemory(name=name, create=True, size=max(int(size), 1))
    _untrack(shm)
    return shm


def _attach(name: str):
    shm = shared_memory.SharedMemory(name=name, create=False)
    _untrack(shm)
    return shm


def _unlink_name(name: str) -> None:
    try:
        os.unlink("/dev/shm/" + name)
    except FileNotFoundError:
        pass
    except OSError:  # pragma: no cover - non-Linux: fall back to the portable call
        try:
            s = shared_memory.SharedMemory(name=name)
            _untrack(s)
            s.close()
            s.unlink()
        except Exception:
            pass


def cleanup_prefix(prefix: str) -> list:
    """Unlink every /dev/shm entry starting with `prefix`; returns the names removed."""
    removed = []
    try:
        names = os.listdir("/dev/shm")
    except OSError:  # pragma: no cover
        return removed
    for n in names:
        if n.startswith(prefix):
            _unlink_name(n)
            removed.append(n)
    return removed


def _np_dtype(name: str) -> np.dtype:
    from .._core import dtypes as dt
    d = dt._BY_NAME.get(name)
    return np.dtype(d.np) if d is not None else np.dtype(name)


def _dtype_name(a: np.ndarray) -> str:
    return a.dtype.name if a.dtype.kind == "V" else a.dtype.str


# ------------------------------------------------------------------ result encoding (JSON + shm)
_NT_ERR = ("DataLoader worker results must be Tensors, numpy arrays, numbers, str, None, or "
           "lists/tuples/dicts of them (nothing is pickled across processes); got {}")


def _c(a: np.ndarray) -> np.ndarray:
    return a if a.flags.c_contiguous else np.array(a, order="C")  # keeps 0-d arrays 0-d


def _encode(obj, arrays: list):
    """A JSON-able tree for `obj`; arrays and Tensors are appended to `arrays` and referenced."""
    from ..tensor import Tensor
    if isinstance(obj, Tensor):
        arrays.append(_c(obj._data))
        return {"T": len(arrays) - 1, "dt": obj.dtype.name}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "OUS" or obj.dtype.fields is not None:
            raise TypeError(_NT_ERR.format(f"a numpy array of dtype {obj.dtype}"))
        arrays.append(_c(obj))
        return {"A": len(arrays) - 1}
    if isinstance(obj, np.generic) and not isinstance(obj, (np.str_, np.bytes_)):
        arrays.append(np.asarray(obj).reshape(1))
        return {"G": len(arrays) - 1}
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"F": repr(obj)}
    if isinstance(obj, tuple):
        if hasattr(obj, "_fields"):
            return {"N": f"{type(obj).__module__}:{type(obj).__qualname__}",
                    "v": [_encode(v, arrays) for v in obj]}
        return {"U": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(_NT_ERR.format(f"a dict key of type {type(k).__name__}"))
            items.append([k, _encode(v, arrays)])
        return {"D": items}
    raise TypeError(_NT_ERR.format(type(obj).__name__))


def _decode(tree, arrays: list):
    if isinstance(tree, list):
        return [_decode(v, arrays) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "T" in tree:
        from .._core import dtypes as dt
        from ..tensor import _wrap
        return _wrap(arrays[tree["T"]], dt._by_name(tree["dt"]))
    if "A" in tree:
        return arrays[tree["A"]]
    if "G" in tree:
        return arrays[tree["G"]][0]
    if "F" in tree:
        return float(tree["F"])
    if "U" in tree:
        return tuple(_decode(v, arrays) for v in tree["U"])
    if "D" in tree:
        return {k: _decode(v, arrays) for k, v in tree["D"]}
    if "N" in tree:
        import importlib
        mod, qual = tree["N"].split(":")
        cls = importlib.import_module(mod)
        for part in qual.split("."):
            cls = getattr(cls, part)
        return cls(*(_decode(v, arrays) for v in tree["v"]))
    raise ValueError(f"bad worker message {tree!r}")  # pragma: no cover


def _write_result(obj, name: str) -> dict:
    """Encode `obj`; its arrays go into one new shared-memory block `name` (if there are any)."""
    arrays: list = []
    tree = _encode(obj, arrays)
    if not arrays:
        return {"tree": tree, "shm": None, "arrays": []}
    layout, off = [], 0
    for a in arrays:
        off = -(-off // _ALIGN) * _ALIGN
        layout.append([_dtype_name(a), list(a.shape), off])
        off += a.nbytes
    shm = _create_block(name, off)
    try:
        for a, (_, shape, o) in zip(arrays, layout):
            if a.nbytes:
                np.ndarray(a.shape, a.dtype, buffer=shm.buf, offset=o)[...] = a
    finally:
        shm.close()
    return {"tree": tree, "shm": name, "arrays": layout}


def _read_result(msg: dict):
    """Copy the arrays of a result out of its block, unlink the block, rebuild the object."""
    name = msg.get("shm")
    arrays = []
    if name is not None:
        shm = _attach(name)
        try:
            for dts, shape, off in msg["arrays"]:
                d = _np_dtype(dts)
                n = math.prod(shape)
                if n == 0:
                    arrays.append(np.zeros(shape, d))
                else:
                    arrays.append(np.ndarray(shape, d, buffer=shm.buf, offset=off).copy())
        finally:
            shm.close()
            _unlink_name(name)
    return _decode(msg["tree"], arrays)


# ------------------------------------------------------------------ shipping the dataset
class _ShmPickler(pickle.Pickler):
    """Pickles the worker's configuration (dataset, collate_fn, ...) with every numpy array and
    ember Tensor of at least `min_bytes` moved into a shared-memory block and referenced by name."""

    def __init__(self, f, prefix: str, blocks: list, min_bytes: int = 4096):
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self.prefix, self.blocks, self.min_bytes = prefix, blocks, min_bytes
        self._seen: dict = {}

    def persistent_id(self, obj):
        from ..tensor import Tensor
        if isinstance(obj, Tensor):
            arr, kind, dname = obj._data, "T", obj.dtype.name
        elif type(obj) is np.ndarray and obj.dtype.kind not in "OUSV" and obj.dtype.fields is None:
            arr, kind, dname = obj, "A", None
        else:
            return None
        if arr.nbytes < self.min_bytes and kind == "A":
            return None
        key = id(obj)
        if key not in self._seen:
            name = f"{self.prefix}d{len(self.blocks)}"
            shm = _create_block(name, arr.nbytes)
            if arr.nbytes:
                np.ndarray(arr.shape, arr.dtype, buffer=shm.buf)[...] = arr
            shm.close()
            self.blocks.append(name)
            self._seen[key] = (kind, name, _dtype_name(arr), tuple(arr.shape), dname,
                               bool(getattr(obj, "requires_grad", False)))
        return self._seen[key]


class _ShmUnpickler(pickle.Unpickler):
    def __init__(self, f, keep: list):
        super().__init__(f)
        self.keep = keep

    def persistent_load(self, pid):
        kind, name, dts, shape, dname, rg = pid
        shm = _attach(name)
        d = _np_dtype(dts)
        arr = np.ndarray(shape, d, buffer=shm.buf) if math.prod(shape) else np.zeros(shape, d)
        if arr.nbytes < 4096:  # small (e.g. a generator's state): a private, writable copy
            arr = arr.copy()
            shm.close()
        else:  # large: a read-only view shared by all workers; the mapping must outlive it
            arr.flags.writeable = False
            self.keep.append(shm)
        if kind == "A":
            return arr
        from .._core import dtypes as dt
        from ..tensor import _wrap
        t = _wrap(arr, dt._by_name(dname))
        if rg:
            t.requires_grad_(True)
        return t


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


def _worker_main(payload: bytes, wid: int, nworkers: int, conn, prefix: str) -> None:
    global _worker_info
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    keep: list = []
    seq = itertools.count()
    try:
        cfg = _ShmUnpickler(io.BytesIO(payload), keep).load()
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
        from ..tensor import _wrap
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
            return [_wrap(np.take(t._data, b, axis=0), t.dtype) for t in fast_src.tensors]
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

    while True:
        try:
            msg = _recv(conn)
        except (EOFError, OSError):
            break  # the main process went away
        op = msg.get("op")
        if op == "stop":
            break
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
            res = _write_result(out, f"{prefix}{wid}_{next(seq)}")
        except Exception as e:
            _send(conn, {"id": tid, "err": {"type": type(e).__name__, "msg": str(e), "op": state["op"],
                                            "index": state["index"], "tb": traceback.format_exc()}})
            continue
        busy += time.perf_counter() - t0
        res["id"], res["busy"] = tid, busy
        _send(conn, res)
    for shm in keep:
        try:
            shm.close()
        except Exception:
            pass


# ------------------------------------------------------------------ the pool, in the main process
_LIVE_POOLS: "weakref.WeakSet" = weakref.WeakSet()


def _context(name):
    if name is None:
        name = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    if isinstance(name, str):
        if name == "fork":
            raise ValueError("DataLoader: the 'fork' start method is not allowed (a forked child of a "
                             "process that ran OpenMP hangs); use 'forkserver' or 'spawn'")
        ctx = mp.get_context(name)
    else:
        ctx = name
        if ctx.get_start_method() == "fork":
            raise ValueError("DataLoader: the 'fork' start method is not allowed; use 'forkserver' or 'spawn'")
    if ctx.get_start_method() == "forkserver":
        try:
            ctx.set_forkserver_preload(["ember", "ember.data.workers"])
        except Exception:  # pragma: no cover
            pass
    return ctx


class WorkerPool:
    """`num_workers` worker processes serving one DataLoader (kept across epochs when persistent)."""

    def __init__(self, loader, mp_context=None):
        ctx = _context(mp_context)  # before any block exists: a refused context leaks nothing
        self.n = loader.num_workers
        self.prefix = f"{SHM_PREFIX}{os.getpid()}_{next(_counter)}_"
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
        try:
            _ShmPickler(buf, self.prefix, self.blocks).dump(cfg)
        except Exception as e:
            cleanup_prefix(self.prefix)
            raise TypeError(f"DataLoader(num_workers={self.n}): the dataset, collate_fn and "
                            f"worker_init_fn must be picklable to start worker processes "
                            f"(define them at module level): {e}") from e
        payload = buf.getvalue()
        _LIVE_POOLS.add(self)
        try:
            for w in range(self.n):
                a, b = ctx.Pipe(duplex=True)
                p = ctx.Process(target=_worker_main, args=(payload, w, self.n, b, self.prefix),
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
                    _unlink_name(msg["shm"])

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
        from ..api.random import _gen
        bits = _gen(loader.generator).bits((2,)).numpy().astype(np.uint64)
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
        out = _read_result(msg)
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
    pool = loader._pool
    first = False
    if pool is None or pool.closed or not loader.persistent_workers:
        pool = WorkerPool(loader, loader.multiprocessing_context)
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
